"""Calls that never drop: rotations, drops, stalls, refused resumption, hung setup, limits.

End to end with real parts (uvicorn, the caller simulator, the real SDK, the Live API simulator
over TLS); the simulator injects the faults.
"""

from __future__ import annotations

import asyncio

import pytest

from agent.prompts import NUDGE, SILENT_GOODBYE_PROMPT, STILL_THERE_PROMPT
from agent.simulator import SimBehaviour
from support import run_stack, silence, speech

SENTENCE = "I would like to change my booking to Saturday evening please"


def audio_received_ms(stack) -> float:  # type: ignore[no-untyped-def]
    return sum(s.audio_in_ms for s in stack.sim.sessions)


async def test_many_go_away_rotations_never_drop_the_call(monkeypatch: pytest.MonkeyPatch) -> None:
    # A goAway 4 s into every connection (8 s before it is cut): ~8 rotations in ~40 s.
    behaviour = SimBehaviour(go_away_after_s=4.0, go_away_time_left_s=8.0)
    script = (speech(SENTENCE) + silence(3.0)) * 7
    async with run_stack(monkeypatch, behaviour=behaviour) as stack:
        result = await stack.call(script, after_greeting_s=5.0, linger_s=2.0, max_duration_s=90)
        summary = await stack.summary()
        sessions = list(stack.sim.sessions)
        received = audio_received_ms(stack)
    assert summary.outcome == "completed"
    assert result.ended_by == "caller"
    assert summary.reconnects >= 5
    later = summary.model_connections[1:]
    assert all(c["reason"] == "go_away" and c["resumed"] for c in later)
    # The resumption handle was used every time.
    assert all(s.resumed_from is not None for s in sessions[1:])
    # Everything the caller said reached the model: nothing dropped, nothing beyond the
    # frames in flight when the call ended.
    assert summary.caller_audio_dropped_ms == 0
    assert summary.caller_audio_ms - received < 100
    # And every utterance was answered.
    assert len(result.turns) == 7
    assert all(t.latency_s is not None for t in result.turns)


async def test_drop_mid_answer_resumes_and_the_call_goes_on(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    script = speech(SENTENCE) + silence(5.0) + speech("and a table for four")
    async with run_stack(monkeypatch) as stack:
        call = asyncio.create_task(stack.call(script, after_greeting_s=5.0, linger_s=2.0))
        first = await stack.sim.next_session()
        await first.wait_utterances(1, timeout=20)
        await asyncio.sleep(0.45)  # think time is 0.3 s: the echo is being sent now
        await first.close(1011, "Internal error encountered.")
        result = await call
        summary = await stack.summary()
        second = stack.sim.sessions[1]
    assert summary.outcome == "completed"
    assert summary.reconnects == 1
    assert summary.model_connections[1]["reason"] == "error"
    assert summary.model_connections[1]["resumed"] is True
    assert second.resumed_from is not None
    assert result.turns[-1].latency_s is not None  # the next utterance was answered


async def test_drop_mid_caller_speech_loses_nothing(monkeypatch: pytest.MonkeyPatch) -> None:
    words = speech(SENTENCE)
    async with run_stack(monkeypatch) as stack:
        call = asyncio.create_task(stack.call(words, after_greeting_s=5.0, linger_s=2.5))
        first = await stack.sim.next_session()
        await first.wait_turns_completed(1)  # the greeting has played
        await asyncio.sleep(1.6)  # the caller is about a second into the sentence
        await first.close(1011, "Internal error encountered.")
        result = await call
        summary = await stack.summary()
        received = audio_received_ms(stack)
        second = stack.sim.sessions[1]
    assert summary.reconnects == 1
    assert summary.caller_audio_dropped_ms == 0
    assert summary.caller_audio_ms - received < 100
    # The rest of the sentence reached the new connection, which answered it.
    assert second.utterances
    assert result.turns and result.turns[-1].latency_s is not None


async def test_a_stall_is_nudged_then_recovered(monkeypatch: pytest.MonkeyPatch) -> None:
    script = speech(SENTENCE) + silence(7.0) + speech("are you there")
    env = {"MODEL_STALL_TIMEOUT_S": "1.5"}
    async with run_stack(monkeypatch, env) as stack:
        call = asyncio.create_task(stack.call(script, after_greeting_s=5.0, linger_s=2.0))
        first = await stack.sim.next_session()
        await first.wait_turns_completed(1)
        first.stall()  # silent from now on, socket open
        result = await call
        summary = await stack.summary()
        nudged = NUDGE in first.texts
    assert nudged
    assert summary.stalls == 1
    assert summary.stalls_recovered == 1
    assert [c["reason"] for c in summary.model_connections] == ["initial", "stall"]
    assert summary.outcome == "completed"
    assert result.turns[-1].latency_s is not None  # answered on the new connection


async def test_refused_resumption_primes_a_fresh_session(monkeypatch: pytest.MonkeyPatch) -> None:
    behaviour = SimBehaviour(refuse_resumption=True)
    async with run_stack(monkeypatch, behaviour=behaviour) as stack:
        call = asyncio.create_task(
            stack.call(speech(SENTENCE), after_greeting_s=5.0, lead_silence_s=0, linger_s=2.0)
        )
        first = await stack.sim.next_session()
        await first.wait_turns_completed(1)
        await first.close(1011, "Internal error encountered.")
        result = await call
        summary = await stack.summary()
        refused = stack.sim.sessions[1]  # the resumption attempt, refused at setup
        fresh = stack.sim.sessions[-1]
    assert not refused.setup_completed and refused.session_resumption is not None
    assert fresh.setup_completed and fresh.resumed_from is None
    last = summary.model_connections[-1]
    assert last["primed"] is True and last["resumed"] is False
    instructions = fresh.system_instruction or ""
    assert "Do not greet the caller again" in instructions
    assert "You: Hello! Thanks for calling." in instructions  # the transcript so far
    assert not any("Greet the caller" in text for text in fresh.texts)
    assert summary.outcome == "completed"
    assert result.turns and result.turns[-1].latency_s is not None


async def test_setup_that_never_completes_is_retried(monkeypatch: pytest.MonkeyPatch) -> None:
    behaviour = SimBehaviour(complete_setup=False)
    async with run_stack(monkeypatch, {"MODEL_SETUP_TIMEOUT_S": "1"}, behaviour) as stack:
        call = asyncio.create_task(stack.call(silence(6.0), linger_s=1.0))
        await stack.sim.next_session()
        stack.sim.behaviour = SimBehaviour()  # the next attempt works
        result = await call
        summary = await stack.summary()
    assert summary.model_connect_ms is not None and summary.model_connect_ms >= 1000
    assert summary.outcome == "completed"
    assert result.time_to_first_audio_s is not None  # the greeting, after the retry


async def test_a_tool_call_survives_a_reconnect_and_runs_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with run_stack(monkeypatch, {"AGENT_GREETING": ""}) as stack:
        call = asyncio.create_task(stack.call(silence(1.0), linger_s=30.0))
        first = await stack.sim.next_session()
        await first.wait_setup()
        await first.say("Goodbye then!")
        fc_id = await first.send_tool_call("end_call", {"reason": "done"})
        await first.close(1011, "Internal error encountered.")
        second = await stack.sim.next_session()
        await second.wait_setup()
        # The resumed model asks again for the call it made before the drop.
        await second.send_tool_call("end_call", {"reason": "done"}, id=fc_id)
        await second.wait_tool_response(fc_id)
        result = await call
        summary = await stack.summary()
        answers = sum(fc_id in s.tool_responses for s in (first, second))
    assert answers >= 1  # never lost
    assert len(summary.tool_calls) == 1  # and executed once
    assert summary.outcome == "ended_by_agent"
    assert result.ended_by == "server"


async def test_max_call_seconds_wraps_up_then_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"MAX_CALL_SECONDS": "10", "CALLER_SILENCE_TIMEOUT_S": "0"}
    async with run_stack(monkeypatch, env) as stack:
        result = await stack.call(silence(30.0), linger_s=30.0, max_duration_s=40)
        summary = await stack.summary()
        texts = list(stack.sim.sessions[0].texts)
    assert any("must end in about" in text for text in texts)
    assert summary.outcome == "ended_by_agent"
    assert summary.reason == "maximum call duration reached"
    assert result.ended_by == "server"
    assert 10 <= result.duration_s < 20


async def test_a_silent_caller_is_asked_then_the_call_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"CALLER_SILENCE_TIMEOUT_S": "2"}
    async with run_stack(monkeypatch, env) as stack:
        result = await stack.call(silence(30.0), linger_s=30.0, max_duration_s=40)
        summary = await stack.summary()
        texts = list(stack.sim.sessions[0].texts)
    assert STILL_THERE_PROMPT in texts
    assert SILENT_GOODBYE_PROMPT in texts
    assert summary.outcome == "ended_by_agent"
    assert summary.reason == "caller silent"
    assert result.ended_by == "server"
    assert result.duration_s < 20
