"""End to end, with real parts: uvicorn on loopback, the caller simulator playing Twilio, and
the real google-genai SDK talking to the Live API simulator over TLS."""

from __future__ import annotations

import numpy as np
import pytest

from agent.config import DEFAULT_GREETING
from support import run_stack, silence, speech
from telephony.audio import ulaw_8k_to_pcm16


def rms_dbfs(ulaw: bytes) -> float:
    pcm = np.frombuffer(ulaw_8k_to_pcm16(ulaw), dtype=np.int16).astype(np.float64)
    if pcm.size == 0:
        return -120.0
    return float(20 * np.log10(max(np.sqrt(np.mean(pcm**2)), 1e-9) / 32768))


def heard_between(result, start_s: float, end_s: float) -> bytes:  # type: ignore[no-untyped-def]
    return result.heard_audio[int(start_s * 8000) : int(end_s * 8000)]


async def test_greeting_is_heard_without_the_caller_speaking(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with run_stack(monkeypatch) as stack:
        result = await stack.call(silence(5.0), linger_s=1.0)
        sim_session = stack.sim.sessions[0]
    # The model was told to greet, with the configured greeting, right after setup.
    assert any(DEFAULT_GREETING in text for text in sim_session.texts)
    assert result.time_to_first_audio_s is not None
    assert result.time_to_first_audio_s < 2.0
    greeting = heard_between(
        result, result.time_to_first_audio_s, result.time_to_first_audio_s + 1.0
    )
    assert rms_dbfs(greeting) > -35.0  # clearly audible speech, not silence
    summary = await stack.summary()
    assert summary.outcome == "completed"
    assert summary.first_audio_ms is not None
    assert summary.turns and DEFAULT_GREETING in summary.turns[0].agent


async def test_a_caller_turn_is_answered(monkeypatch: pytest.MonkeyPatch) -> None:
    utterance = speech("I would like to book a table for two people tonight please")
    async with run_stack(monkeypatch) as stack:
        result = await stack.call(utterance, lead_silence_s=5.0, linger_s=2.0)
        sim_session = stack.sim.sessions[0]
    assert len(sim_session.utterances) == 1
    assert abs(sim_session.utterances[0].duration_ms / 1000 - len(utterance) / 8000) < 0.5
    answered = [t for t in result.turns if t.utterance_start_s >= 4.0]
    assert answered and answered[0].latency_s is not None
    # The simulator thinks ~0.3 s after ~0.5 s of silence; the bridge adds next to nothing.
    assert 0.3 < answered[0].latency_s < 2.0
    answer = heard_between(result, answered[0].response_s, answered[0].response_s + 1.0)
    assert rms_dbfs(answer) > -35.0
    summary = await stack.summary()
    assert summary.frames_in > 200
    assert summary.bad_frames == 0


async def test_the_sdk_path_works_without_the_fast_path(monkeypatch: pytest.MonkeyPatch) -> None:
    utterance = speech("what time do you close today")
    async with run_stack(monkeypatch, {"MODEL_FAST_PATH": "false"}) as stack:
        assert stack.service.agent is not None and not stack.service.agent.fast_path
        result = await stack.call(utterance, after_greeting_s=5.0, linger_s=2.0)
        summary = await stack.summary()
    assert result.time_to_first_audio_s is not None
    answered = [t for t in result.turns if t.latency_s is not None]
    assert answered and 0.3 < answered[-1].latency_s < 2.0  # type: ignore[operator]
    assert summary.tokens["total"] > 0
    assert DEFAULT_GREETING in summary.turns[0].agent
