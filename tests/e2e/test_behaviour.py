"""End to end: barge-in, end_call, DTMF, persona, and the failure path (real parts)."""

from __future__ import annotations

import asyncio
import xml.etree.ElementTree as ET

import pytest

from agent.config import DEFAULT_GREETING
from agent.simulator import SimBehaviour
from agent.simulator.voice import synthesize
from support import run_stack, silence, speech
from telephony.caller import BargeIn


async def test_barge_in_clears_at_once_and_no_stale_audio_follows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    interjection = speech("sorry, hold on a second")
    async with run_stack(monkeypatch) as stack:
        # The caller talks over the greeting one second into it.
        result = await stack.call(b"", barge_in=BargeIn(interjection, after_s=1.0), linger_s=2.0)
        summary = await stack.summary()
        sim_session = stack.sim.sessions[0]
    assert sim_session.interruptions == 1
    assert len(result.clears) == 1
    [it] = result.interruptions
    assert it.speech_start_s is not None and it.clear_s is not None
    assert 0 < it.latency_ms < 1000  # type: ignore[operator]
    # Nothing of the interrupted greeting plays after the clear: the next audio the caller
    # hears is the answer to what they said, after they stopped talking.
    barge_end = it.speech_start_s + len(interjection) / 8000
    after = [p for p in result.played if p.end > it.clear_s + 1e-3]
    assert after, "the agent answered the interjection"
    assert all(p.start >= barge_end for p in after)
    # The server knows what the caller heard of the cut-off greeting (from the marks).
    [cut] = summary.interruptions
    assert cut.clear_latency_ms > 0
    greeting_ms = synthesize(DEFAULT_GREETING, "Puck").duration_s * 1000
    assert cut.sent_ms > cut.heard_ms
    # The simulator generates faster than real time, but the server paces it: at most the
    # lead (1 s) had left for Twilio ahead of what was heard; the rest was dropped with it.
    assert cut.sent_ms - cut.heard_ms <= 1000 + 60
    assert cut.sent_ms < greeting_ms
    assert 900 < cut.heard_ms < 2000
    assert DEFAULT_GREETING.startswith(cut.transcript_heard)
    assert 0 < len(cut.transcript_heard) < len(DEFAULT_GREETING)
    assert summary.turns[0].interrupted is True


async def test_end_call_waits_for_the_goodbye_to_play(monkeypatch: pytest.MonkeyPatch) -> None:
    goodbye = "Thank you for calling, have a lovely evening, goodbye!"
    async with run_stack(monkeypatch, {"AGENT_GREETING": ""}) as stack:
        call = asyncio.create_task(stack.call(silence(0.5), linger_s=30.0))
        sim_session = await stack.sim.next_session()
        await sim_session.wait_setup()
        # The model says goodbye (sent 4x faster than real time), then asks to hang up.
        await sim_session.say(goodbye)
        fc_id = await sim_session.send_tool_call("end_call", {"reason": "caller is done"})
        response = await sim_session.wait_tool_response(fc_id)
        result = await call
        summary = await stack.summary()
        async with stack.client() as http:
            after = await http.post("/twilio/after", data={"CallSid": summary.call_sid})
    assert response["response"]["result"] == "ok"
    assert result.ended_by == "server"
    assert result.close_code == 1000
    # Every bit of the goodbye played before the line was closed.
    played_s = sum(p.end - p.start for p in result.played)
    assert played_s >= synthesize(goodbye, "Puck").duration_s - 0.05
    assert max(p.end for p in result.played) <= result.duration_s
    assert summary.outcome == "ended_by_agent"
    assert summary.tool_calls[0]["name"] == "end_call"
    assert [el.tag for el in ET.fromstring(after.text)] == ["Hangup"]


async def test_dtmf_reaches_the_model(monkeypatch: pytest.MonkeyPatch) -> None:
    async with run_stack(monkeypatch, {"AGENT_GREETING": ""}) as stack:
        result = await stack.call(silence(1.0), dtmf=[(1.0, "4")], linger_s=2.0)
        sim_session = stack.sim.sessions[0]
        summary = await stack.summary()
    assert any("pressed 4" in text for text in sim_session.texts)
    assert summary.dtmf == ["4"]
    # The simulator answers "You pressed 4." and the caller hears it.
    assert result.played and result.played[0].start > 1.0
    assert any("You pressed 4" in turn.agent for turn in summary.turns)


async def test_persona_env_reaches_the_setup_message(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {
        "AGENT_INSTRUCTIONS": "You are Ada, the bakery's phone assistant.",
        "AGENT_VOICE": "Kore",
        "AGENT_LANGUAGE": "de-DE",
        "AGENT_GREETING": "Guten Tag, Bäckerei Ada!",
        "AGENT_TRANSFER_NUMBER": "+14155550100",
        "AGENT_VAD_START_SENSITIVITY": "high",
        "AGENT_VAD_END_SENSITIVITY": "low",
        "AGENT_VAD_SILENCE_MS": "700",
        "AGENT_VAD_PREFIX_PADDING_MS": "60",
        "GEMINI_MODEL": "gemini-2.5-flash-native-audio-preview-12-2025",
    }
    async with run_stack(monkeypatch, env) as stack:
        await stack.call(silence(1.0), linger_s=0.5)
        s = stack.sim.sessions[0]
    assert s.model == "models/gemini-2.5-flash-native-audio-preview-12-2025"
    assert s.system_instruction == "You are Ada, the bakery's phone assistant."
    assert s.voice == "Kore"
    assert s.language == "de-DE"
    assert s.function_names == ["end_call", "transfer_call"]
    assert s.input_transcription and s.output_transcription
    assert s.session_resumption is not None
    assert s.context_window_compression is not None
    assert s.api_key == "test-key"
    assert any("Guten Tag, Bäckerei Ada!" in text for text in s.texts)
    # VAD knobs, whatever key casing the SDK used on the wire.
    flat = str(s.setup).replace("_", "").lower()
    assert "startsensitivityhigh" in flat
    assert "endsensitivitylow" in flat
    assert "'silencedurationms': 700" in flat
    assert "'prefixpaddingms': 60" in flat


async def test_model_refusing_setup_fails_the_call_with_an_apology(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    behaviour = SimBehaviour(reject_setup=(1008, "Quota exceeded for this project."))
    async with run_stack(monkeypatch, behaviour=behaviour) as stack:
        result = await stack.call(silence(3.0), linger_s=0.5)
        summary = await stack.summary()
        async with stack.client() as http:
            after = await http.post("/twilio/after", data={"CallSid": summary.call_sid})
        sessions = len(stack.sim.sessions)
    assert result.ended_by == "server"
    assert summary.outcome == "failed"
    assert "Quota" in summary.reason
    assert sessions == 1  # a quota error is not retried
    doc = ET.fromstring(after.text)
    assert [el.tag for el in doc] == ["Say", "Hangup"]
    assert "unavailable" in (doc[0].text or "")


async def test_model_lost_and_unreachable_apologises_and_transfers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    env = {"AGENT_TRANSFER_NUMBER": "+14155550100"}
    async with run_stack(monkeypatch, env) as stack:
        call = asyncio.create_task(stack.call(silence(12.0), linger_s=1.0))
        sim_session = await stack.sim.next_session()
        await sim_session.wait_turns_completed(1)  # the greeting
        # From now on the model can't be reached at all: every reconnect is refused.
        stack.sim.behaviour = SimBehaviour(reject_setup=(1011, "Internal error encountered."))
        await sim_session.close(1011, "Internal error encountered.")
        result = await call
        summary = await stack.summary()
        async with stack.client() as http:
            after = await http.post("/twilio/after", data={"CallSid": summary.call_sid})
    assert result.ended_by == "server"
    assert result.duration_s < 11.0
    assert summary.outcome == "failed"
    assert summary.reconnects == 0  # tried (bounded, with backoff), never connected again
    assert len(summary.model_connections) == 1
    doc = ET.fromstring(after.text)
    assert [el.tag for el in doc] == ["Say", "Dial"]
    assert doc.findtext("./Dial/Number") == "+14155550100"


async def test_digits_and_speech_during_model_setup_are_not_lost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    words = speech("hello, is anybody there")
    behaviour = SimBehaviour(setup_delay_s=1.0)
    async with run_stack(monkeypatch, {"AGENT_GREETING": ""}, behaviour) as stack:
        # The caller presses 7 and starts talking before the model session is ready.
        await stack.call(words + silence(1.5), dtmf=[(0.1, "7")], lead_silence_s=0.2)
        sim_session = stack.sim.sessions[0]
        summary = await stack.summary()
    assert summary.model_connect_ms is not None and summary.model_connect_ms >= 1000
    assert any("pressed 7" in text for text in sim_session.texts)
    # Everything the caller said while we waited reached the model, in one utterance.
    assert len(sim_session.utterances) == 1
    assert abs(sim_session.utterances[0].duration_ms / 1000 - len(words) / 8000) < 0.3
    assert summary.dropped_pre_session_frames == 0


async def test_transfer_call_dials_the_transfer_number(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"AGENT_GREETING": "", "AGENT_TRANSFER_NUMBER": "+14155550100"}
    async with run_stack(monkeypatch, env) as stack:
        call = asyncio.create_task(stack.call(silence(0.5), linger_s=30.0))
        sim_session = await stack.sim.next_session()
        await sim_session.wait_setup()
        await sim_session.say("Let me put you through to a colleague.")
        fc_id = await sim_session.send_tool_call("transfer_call", {"reason": "billing question"})
        response = await sim_session.wait_tool_response(fc_id)
        result = await call
        summary = await stack.summary()
        async with stack.client() as http:
            after = await http.post("/twilio/after", data={"CallSid": summary.call_sid})
    assert response["response"]["result"] == "ok"
    assert result.ended_by == "server"
    assert summary.outcome == "transfer"
    doc = ET.fromstring(after.text)
    assert [el.tag for el in doc] == ["Dial"]
    assert doc.findtext("./Dial/Number") == "+14155550100"
