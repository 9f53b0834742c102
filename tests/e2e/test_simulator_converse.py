"""End to end: the simulator's converse dialogue (NOT A REAL MODEL) over the real SDK and server.

A human recording (LibriVox, telephony/caller/samples) goes through the phone path (8 kHz
μ-law); the simulator recognises it with pocketsphinx, searches the knowledge base through the
real tool-call protocol and speaks the first sentence of the passage with espeak-ng; a typed
goodbye ends the call through ``end_call``; talking over the answer stops it.
"""

from __future__ import annotations

import asyncio
import shutil
import wave
from pathlib import Path
from typing import Any

import orjson
import pytest

from agent.simulator import SimBehaviour
from support import ROOT, run_stack, silence
from telephony.audio import pcm16_to_ulaw_8k
from telephony.call.summary import Outcome
from telephony.caller import BargeIn

pytest.importorskip("pocketsphinx")
pytestmark = pytest.mark.skipif(shutil.which("espeak-ng") is None, reason="needs espeak-ng")

SAMPLES = ROOT / "telephony" / "caller" / "samples"
CONVERSE = SimBehaviour(dialogue="converse", think_ms=100)

#: librivox-0890 says "unless to be rather cold hearted and rather selfish is to be ill
#: disposed"; through the phone path pocketsphinx hears e.g. "the list to be rather cold
#: hearted and rather selfish is to be old clothes". This document shares its key words.
TEMPERAMENT = """\
# Paws and Whiskers pet behaviour clinic

## Cold hearted cats
A cat that seems rather cold hearted or selfish is usually anxious, not unkind. Our
behaviourist sees such cats on Tuesday mornings, and the first visit costs forty dollars.
"""
PARKING = """\
# Visiting the clinic

## Parking
Free parking is available behind the building; the entrance is on Elm Street.
"""
ANSWER = "A cat that seems rather cold hearted or selfish is usually anxious, not unkind."


def clip(name: str) -> bytes:
    """A sample recording as the phone carries it (8 kHz μ-law)."""
    with wave.open(str(SAMPLES / f"{name}.wav")) as w:
        return pcm16_to_ulaw_8k(w.readframes(w.getnframes()), w.getframerate())


def env(tmp_path: Path, **extra: str) -> dict[str, str]:
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "temperament.md").write_text(TEMPERAMENT)
    (docs / "parking.md").write_text(PARKING)
    return {
        "AGENT_KNOWLEDGE": str(docs),
        "KNOWLEDGE_INDEX": str(tmp_path / "knowledge.db"),
        "KNOWLEDGE_EMBEDDINGS": "off",
        "AGENT_GREETING": "Hello, thanks for calling.",
        **extra,
    }


def heard_words(text: str, name: str) -> int:
    """How many of the words of sample ``name``'s transcript occur in ``text``."""
    said = set((SAMPLES / f"{name}.txt").read_text().split())
    return len(said & set(text.lower().split()))


def caller_text(summary: Any) -> str:
    return " ".join(t.caller for t in summary.turns)


async def test_a_recorded_question_is_answered_from_the_knowledge_base(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with run_stack(monkeypatch, env(tmp_path), behaviour=CONVERSE) as stack:
        audio = clip("librivox-0890") + silence(1.0)
        result = await stack.call(audio, after_greeting_s=5.0, linger_s=3.0, max_duration_s=40)
        summary = await stack.summary()
        session = stack.sim.sessions[-1]
    assert session.heard and "cold hearted" in session.heard[0]
    assert "rather cold hearted" in caller_text(summary)
    [search] = [t for t in summary.tool_calls if t["name"] == "search_knowledge"]
    assert search["outcome"] == "ok"
    assert "cold hearted" in search["args"]["query"]
    agent = [t.agent for t in summary.turns]
    assert agent[0].strip() == "Hello, thanks for calling."
    assert any(ANSWER in a for a in agent), agent
    assert len(result.agent_spurts) >= 2  # greeting and answer were both heard


async def test_a_goodbye_ends_the_call_through_end_call(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # No sample recording says goodbye: the caller types it (the console's typed turn, the
    # same path into the model as speech transcripts).
    async with run_stack(monkeypatch, env(tmp_path), behaviour=CONVERSE) as stack:
        call = asyncio.create_task(stack.call(silence(2.0), linger_s=20.0, max_duration_s=30))
        session = await stack.sim.next_session()
        await session.wait_turns_completed(1, timeout=15)  # the greeting
        [active] = stack.service.calls.values()
        await active.caller_text("Thanks, that is all. Goodbye!")
        await call
        summary = await stack.summary()
    assert [t["name"] for t in summary.tool_calls] == ["end_call"]
    assert summary.outcome is Outcome.ENDED_BY_AGENT
    assert any("Goodbye, and thank you for calling." in t.agent for t in summary.turns)


async def test_talking_over_the_answer_stops_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    async with run_stack(monkeypatch, env(tmp_path), behaviour=CONVERSE) as stack:
        # The caller asks (0890, 5.3 s, after the greeting) and, half a second into the
        # spoken answer, talks over it with another recording (0880). The answer cannot start
        # before the question has ended (about 7.5 s into the stream), so the greeting is safe.
        question = clip("librivox-0890") + silence(1.0)
        barge = BargeIn(clip("librivox-0880"), after_s=0.5, not_before_s=8.0)
        await stack.call(
            question, after_greeting_s=5.0, barge_in=barge, linger_s=6.0, max_duration_s=50
        )
        summary = await stack.summary()
        session = stack.sim.sessions[-1]
    assert not summary.turns[0].interrupted  # the greeting was heard whole
    [answer] = [t for t in summary.turns if t.agent.startswith("A cat that seems")]
    assert answer.interrupted
    # Stopped part-way: the rest of the passage was neither generated nor played.
    heard = (answer.agent_heard or "").strip()
    assert heard and ANSWER.startswith(heard) and len(heard) < len(ANSWER)
    assert ANSWER.startswith(answer.agent.strip()) and answer.agent.strip() != ANSWER
    assert session.interruptions >= 1
    [cut] = summary.interruptions
    assert cut.clear_latency_ms < 50
    # The barge-in was recognised too, as its own utterance. Where the detector starts it
    # depends on timing, so the words vary from run to run ("he was not …", "you must not
    # … young man"): at least three of the sentence's words, not an exact phrase.
    assert len(session.heard) == 2
    assert heard_words(session.heard[1], "librivox-0880") >= 3


async def test_the_embedded_simulator_converses_by_default(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # No credentials: `voice-agent serve` starts its own simulator (LIVE_SIMULATOR_DIALOGUE
    # defaults to converse), so records show the caller's words, not "[caller speech N s]".
    async with run_stack(monkeypatch, env(tmp_path, GEMINI_API_KEY="")) as stack:
        audio = clip("librivox-0880") + silence(1.0)
        await stack.call(audio, after_greeting_s=5.0, linger_s=3.0, max_duration_s=40)
        summary = await stack.summary()
    assert heard_words(caller_text(summary), "librivox-0880") >= 3
    assert "[caller speech" not in caller_text(summary)


API_TOKEN = "converse-test-token-0123456789"


async def test_the_load_tester_checks_answers_against_expected_phrases(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from telephony.caller.cli import main as call_main
    from telephony.loadtest.cli import main as loadtest_main

    calls = tmp_path / "calls"
    calls.mkdir()
    shutil.copy(SAMPLES / "librivox-0890.wav", calls / "selfish.wav")
    (calls / "selfish.expect").write_text("# the clinic's answer\nusually anxious\n")
    shutil.copy(SAMPLES / "librivox-0880.wav", calls / "young.wav")
    (calls / "young.expect").write_text("Tuesday mornings\n")  # not what it answers
    stack_env = env(tmp_path, API_TOKEN=API_TOKEN)
    async with run_stack(monkeypatch, stack_env, behaviour=CONVERSE) as stack:
        code = await asyncio.to_thread(
            loadtest_main,
            [
                "--url",
                stack.media_url,
                "--recordings",
                str(calls),
                "--calls",
                "2",
                "--concurrency",
                "2",
                "--think-time",
                "0.3",
                "--linger",
                "1.0",
                "--answer-timeout",
                "12",
                "--max-call-s",
                "40",
                "--api-token",
                API_TOKEN,
                "--max-answer-miss-rate",
                "0",
                "--out",
                str(tmp_path / "run"),
                "--quiet",
            ],
        )
        out = capsys.readouterr().out
        said = await asyncio.to_thread(
            call_main,
            [
                str(calls / "selfish.wav"),
                "--url",
                stack.media_url,
                "--out",
                str(tmp_path / "heard.wav"),
                "--api-token",
                API_TOKEN,
                "--expect",
                "usually anxious",
            ],
        )
        call_out = capsys.readouterr().out
    assert code == 1, out  # one of the two phrases was not said: the SLO fails
    assert "answer accuracy:   50.0 % (1 of 2 expected phrases said)" in out
    assert "FAIL share of expected phrases the agent did not say" in out
    rows = [
        orjson.loads(line) for line in (tmp_path / "run" / "calls.jsonl").read_bytes().splitlines()
    ]
    by_name = {r["recording"]: r for r in rows}
    assert by_name["selfish.wav"]["missed"] == []
    assert "usually anxious" in by_name["selfish.wav"]["answer"]
    assert by_name["young.wav"]["missed"] == ["Tuesday mornings"]
    assert "You said:" in by_name["young.wav"]["answer"]
    summary = orjson.loads((tmp_path / "run" / "summary.json").read_bytes())
    assert summary["answers"] == {
        "expected": 2,
        "said": 1,
        "unread": 0,
        "accuracy": 0.5,
    }
    assert "Answer accuracy 50.0 %" in (tmp_path / "run" / "report.html").read_text()
    # `voice-agent call` prints the agent's words from the record and checks the phrase.
    assert said == 0, call_out
    # What was said, in the timeline at its time, from the server's record.
    assert "s: agent says: 'Hello, thanks for calling.'" in call_out
    assert "s: caller says: '" in call_out
    assert "expected 'usually anxious': said" in call_out


async def converse_typed(stack: Any, text: str, turns: int) -> Any:
    """A call in which the caller types ``text`` after the greeting; its summary once the
    agent has finished ``turns`` turns (greeting included)."""
    call = asyncio.create_task(stack.call(silence(2.0), linger_s=30.0, max_duration_s=40))
    session = await stack.sim.next_session()
    await session.wait_turns_completed(1, timeout=15)  # the greeting
    [active] = stack.service.calls.values()
    await active.caller_text(text)
    await session.wait_turns_completed(turns, timeout=20)
    await active.caller_text("Goodbye!")
    await call
    return await stack.summary()


async def test_a_tool_whose_name_the_caller_says_is_called_with_the_value_they_said(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    extra = {"AGENT_TOOLS_MODULE": "support.sample_tools"}
    async with run_stack(monkeypatch, env(tmp_path, **extra), behaviour=CONVERSE) as stack:
        summary = await converse_typed(stack, "What are your opening hours on Saturday?", 2)
    hours = next(t for t in summary.tool_calls if t["name"] == "opening_hours")
    assert hours["args"] == {"day": "saturday"}  # the one allowed value the caller said
    assert hours["outcome"] == "ok"
    assert any("hours 9 am to 1 pm" in t.agent for t in summary.turns)
    assert not any("+1500" in t.agent for t in summary.turns)  # the call's identity unread


async def test_a_non_blocking_tool_runs_while_the_conversation_goes_on(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    extra = {"AGENT_TOOLS_MODULE": "support.converse_tools"}
    async with run_stack(monkeypatch, env(tmp_path, **extra), behaviour=CONVERSE) as stack:
        summary = await converse_typed(stack, "Can you check my order status?", 3)
    [status] = [t for t in summary.tool_calls if t["name"] == "order_status"]
    assert status["behavior"] == "non_blocking" and status["outcome"] == "ok"
    agent = [t.agent.strip() for t in summary.turns if t.agent.strip()]
    # The hold line while it runs, then its answer once the agent is idle (WHEN_IDLE).
    said = agent.index("Let me check that for you.")
    assert agent[said + 1] == "Your order shipped on Monday and arrives on Thursday."
