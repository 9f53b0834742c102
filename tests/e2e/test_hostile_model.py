"""A broken or hostile model endpoint: bounded reconnects, a circuit breaker, untrusted
messages, pacing, silent and rejected answers, make-before-break rotation.

End to end with real parts (uvicorn, the caller simulator, the real SDK, the Live API simulator
over TLS); the simulator plays the broken model.
"""

from __future__ import annotations

import asyncio
import base64
import time
from dataclasses import replace

import numpy as np
import pytest

from agent.simulator import SimBehaviour
from support import run_stack, silence, speech
from telephony.audio import ulaw_8k_to_pcm16
from telephony.caller import CallResult

SENTENCE = "I would like to change my booking to Saturday evening please"


def tone_24k(seconds: float, hz: float = 440.0) -> bytes:
    t = np.arange(round(seconds * 24_000)) / 24_000
    return (np.sin(2 * np.pi * hz * t) * 8000).astype("<i2").tobytes()


def audio_message(pcm: bytes) -> dict[str, object]:
    data = base64.b64encode(pcm).decode()
    return {"serverContent": {"modelTurn": {"parts": [{"inlineData": {"data": data}}]}}}


def played_s(result: CallResult, at: float) -> float:
    """Seconds of agent audio the caller had heard at stream time ``at``."""
    return sum(min(len(p.audio) / 8000, max(0.0, at - p.start)) for p in result.played)


async def worst_loop_lag(seconds: float) -> float:
    """The longest the event loop was late for a 10 ms tick, over ``seconds``."""
    loop = asyncio.get_running_loop()
    worst, end = 0.0, loop.time() + seconds
    while loop.time() < end:
        before = loop.time()
        await asyncio.sleep(0.01)
        worst = max(worst, loop.time() - before - 0.01)
    return worst


def first_audible_after(result: CallResult, at: float) -> float | None:
    """Stream time of the first audible agent audio (not near-silence) after ``at``."""
    heard = np.frombuffer(ulaw_8k_to_pcm16(result.heard_audio), "<i2").astype(float)
    frame = 160
    for i in range(round(at * 8000) // frame, len(heard) // frame):
        chunk = heard[i * frame : (i + 1) * frame]
        if np.sqrt(np.mean(chunk**2)) > 300:
            return i * frame / 8000
    return None


def worst_lead_s(result: CallResult) -> float:
    """The most agent audio queued at Twilio ahead of what the caller had heard (media
    arrival times are stream times)."""
    return max(
        (before / 8000 - played_s(result, at) for at, before in result.media_received),
        default=0.0,
    )


# --- connections that die right after setup --------------------------------------------------


@pytest.mark.parametrize("code", [1000, 1011])
async def test_a_model_that_drops_every_connection_after_setup_is_given_up_on_quickly(
    monkeypatch: pytest.MonkeyPatch, code: int
) -> None:
    """Before: every reconnect "succeeded", so one call opened ~2,400 connections in 12 s."""
    async with run_stack(monkeypatch) as stack:
        call = asyncio.create_task(
            stack.call(speech(SENTENCE), after_greeting_s=1.0, max_duration_s=30)
        )
        first = await stack.sim.next_session()
        await first.wait_turns_completed(1)  # the call is up: the greeting has played
        stack.sim.behaviour = SimBehaviour(close_after_setup=(code, "bye"))
        await first.close(1011, "Internal error encountered.")
        began = time.monotonic()
        result = await call
        elapsed = time.monotonic() - began
        summary = await stack.summary()
        connections = len(stack.sim.sessions)
    assert summary.outcome == "failed"
    assert "right after setup" in summary.reason
    assert result.close_code == 1011  # the stream closes: Twilio asks <Connect action>
    assert connections <= 1 + 5 + 1  # the first, the budget, and nothing more
    assert elapsed < 15


async def test_the_circuit_opens_when_most_connections_fail_and_closes_when_they_serve(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with run_stack(monkeypatch) as stack:
        stack.sim.behaviour = SimBehaviour(reject_setup=(1011, "Internal error encountered."))
        async with stack.client() as http:
            for _ in range(8):  # a burst of calls the model cannot take
                await stack.call(speech("hello"), after_greeting_s=0.5, max_duration_s=10)
                if (await http.get("/readyz")).status_code == 503:
                    break
            ready = (await http.get("/readyz")).json()
            # While open: calls fail at once, without a single connection attempt.
            before = len(stack.sim.sessions)
            began = time.monotonic()
            refused = await stack.call(speech("hello"), after_greeting_s=0.5, max_duration_s=10)
            quick = time.monotonic() - began
            after = len(stack.sim.sessions)
            form = {"CallSid": "CA" + "9" * 32, "From": "+15005550006", "To": "+15005550001"}
            answer = await http.post("/twilio/voice", data=form)
            metrics = (await http.get("/metrics")).text
            # The model recovers: once the cooldown is over a probe call goes through.
            stack.sim.behaviour = SimBehaviour()
            for _ in range(300):
                if (await http.get("/readyz")).status_code == 200:
                    break
                await asyncio.sleep(0.1)
            result = await stack.call(speech(SENTENCE), after_greeting_s=5.0, max_duration_s=30)
            closed = (await http.get("/readyz")).json()
    assert ready["ready"] is False and ready["model_circuit"] == "open"
    assert after == before and refused.close_code == 1011 and quick < 2.0
    # The webhook answers with the apology at once (no stream, no connection).
    assert "<Say" in answer.text and "<Stream" not in answer.text
    assert "voice_agent_model_circuit_open 1.0" in metrics
    assert 'voice_agent_calls_turned_away_total{reason="model_unavailable"} 1.0' in metrics
    assert "voice_agent_model_connections_refused_total" in metrics
    assert result.turns and result.turns[0].latency_s is not None
    assert closed["ready"] is True and closed["model_circuit"] == "closed"


# --- untrusted messages ----------------------------------------------------------------------


async def test_an_oversized_model_message_costs_one_reconnect_and_stalls_no_one(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: one 10 MB message blocked the event loop ~2.5 s (every call stalled) and went
    to Twilio as one 1.25 MB media frame."""
    script = silence(1.0) + speech(SENTENCE) + silence(4.0) + speech("and for four people")
    long_answer = " ".join(["Our opening hours are nine to five on weekdays."] * 4)
    async with run_stack(monkeypatch) as stack:
        call = asyncio.create_task(stack.call(script, after_greeting_s=5.0, linger_s=2.0))
        first = await stack.sim.next_session()
        await first.wait_turns_completed(1)
        # Another call, speaking meanwhile: its audio must not stall.
        other = asyncio.create_task(stack.call(silence(10.0), after_greeting_s=0.2))
        second = await stack.sim.next_session()
        await second.wait_turns_completed(1)
        await second.say(long_answer)
        lag = asyncio.create_task(worst_loop_lag(3.0))
        await first.send_raw(audio_message(tone_24k(80.0)))  # ~5 MB on the wire
        worst_lag = await lag
        result, bystander = await asyncio.gather(call, other)
        summaries = list(stack.service.recent)
    summary = next(s for s in summaries if s.call_sid == result.call_sid)
    assert summary.reconnects >= 1
    assert any(c["reason"] == "error" for c in summary.model_connections[1:])
    assert result.turns[-1].latency_s is not None  # the call went on and was answered
    # The event loop (server and simulator share it here) was never blocked for long, and
    # the other caller heard no break in its answer.
    assert worst_lag < 0.25
    assert all(g.end_s - g.start_s < 0.3 for g in bystander.gaps)


async def test_a_large_answer_is_split_into_normal_messages_and_paced(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with run_stack(monkeypatch) as stack:
        call = asyncio.create_task(
            stack.call(silence(12.0), after_greeting_s=0.2, linger_s=1.0, max_duration_s=40)
        )
        first = await stack.sim.next_session()
        await first.wait_turns_completed(1)
        await first.send_raw(audio_message(tone_24k(8.0)))  # 8 s in one 0.5 MB message
        result = await call
    sizes = np.diff([0] + [b for _, b in result.media_received] + [result.media_bytes_received])
    assert sizes.max() <= 1600  # 200 ms messages, never one huge frame
    assert worst_lead_s(result) <= 1.3


async def test_an_odd_length_chunk_does_not_turn_the_rest_into_noise(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Before: a 440 Hz answer went from 37 dB SNR to -7 dB after one odd-length chunk."""
    tone = tone_24k(3.0)
    async with run_stack(monkeypatch, {"AGENT_GREETING": ""}) as stack:
        call = asyncio.create_task(
            stack.call(silence(6.0), lead_silence_s=0.0, linger_s=1.0, max_duration_s=20)
        )
        first = await stack.sim.next_session()
        await first.wait_setup()
        await first.send_raw(audio_message(tone[:4801]))  # odd: one dangling byte
        await first.send_raw(audio_message(tone[4800:]))
        result = await call
        summary = await stack.summary()
    assert summary.model_audio_damaged == 1
    assert summary.reconnects == 0
    heard = np.frombuffer(ulaw_8k_to_pcm16(result.heard_audio), "<i2").astype(float)
    start = round(result.played[0].start * 8000)
    after = heard[start + 4000 : start + 20000]  # 0.5-2.5 s into the answer
    spectrum = np.abs(np.fft.rfft(after * np.hanning(len(after)))) ** 2
    freqs = np.fft.rfftfreq(len(after), 1 / 8000)
    band = spectrum[(freqs > 400) & (freqs < 480)].sum()
    snr_db = 10 * np.log10(band / (spectrum.sum() - band))
    assert snr_db > 25


async def test_undecodable_audio_is_skipped_without_a_reconnect(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with run_stack(monkeypatch) as stack:
        call = asyncio.create_task(stack.call(speech(SENTENCE), after_greeting_s=5.0))
        first = await stack.sim.next_session()
        await first.wait_turns_completed(1)
        bad = {"serverContent": {"modelTurn": {"parts": [{"inlineData": {"data": "abcde"}}]}}}
        await first.send_raw(bad)
        result = await call
        summary = await stack.summary()
    assert summary.model_audio_damaged == 1
    assert summary.reconnects == 0
    assert result.turns and result.turns[-1].latency_s is not None


async def test_a_model_twenty_times_faster_than_real_time_stays_a_bounded_lead_ahead(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    long_greeting = " ".join(["Thank you for calling our office today."] * 12)
    behaviour = SimBehaviour(pace=20.0)
    env = {"AGENT_GREETING": long_greeting}
    async with run_stack(monkeypatch, env, behaviour=behaviour) as stack:
        result = await stack.call(silence(12.0), lead_silence_s=0.0, linger_s=0.5)
    assert result.media_bytes_received > 8 * 8000
    assert worst_lead_s(result) <= 1.3  # before: everything queued at Twilio at once


# --- answers that are no answer -------------------------------------------------------------


@pytest.mark.parametrize(
    ("fault", "counter"),
    [({"answer_gain": 0.0005}, "silent_answers"), ({"reject_answers": True}, "rejected_answers")],
)
async def test_a_silent_or_rejected_answer_is_recovered_like_a_stall(
    monkeypatch: pytest.MonkeyPatch, fault: dict[str, object], counter: str
) -> None:
    script = speech(SENTENCE) + silence(9.0)
    async with run_stack(monkeypatch) as stack:
        call = asyncio.create_task(stack.call(script, after_greeting_s=5.0, linger_s=2.0))
        first = await stack.sim.next_session()
        await first.wait_turns_completed(1)  # the greeting played normally
        first.behaviour = replace(first.behaviour, **fault)  # type: ignore[arg-type]
        stack.sim.behaviour = SimBehaviour()  # a new connection answers properly
        result = await call
        summary = await stack.summary()
    assert getattr(summary, counter) >= 1
    assert summary.stalls >= 1
    assert any(c["reason"] == "stall" for c in summary.model_connections[1:])
    # The caller hears a real answer within seconds (before: dead air for 14 s and more).
    assert result.caller_segments
    spoke_until = result.caller_segments[0][1]
    audible = first_audible_after(result, spoke_until)
    assert audible is not None and audible - spoke_until < 9.0


# --- goAway: make before break ---------------------------------------------------------------


async def test_go_away_in_a_pause_switches_with_no_gap(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """With a realistic setup time (0.6 s), the replacement is set up while the old connection
    serves; the switch falls in a pause and the caller's next answer is not delayed."""
    behaviour = SimBehaviour(setup_delay_s=0.6)
    script = speech(SENTENCE) + silence(6.0) + speech("and for four people")
    async with run_stack(monkeypatch, behaviour=behaviour) as stack:
        call = asyncio.create_task(stack.call(script, after_greeting_s=5.0, linger_s=2.0))
        first = await stack.sim.next_session()
        await first.wait_utterances(1, timeout=30)
        await first.wait_turns_completed(2)  # the first answer has completed
        await first.go_away(30.0, close_after=False)
        result = await call
        summary = await stack.summary()
    [rotation] = summary.model_connections[1:]
    assert rotation["reason"] == "go_away" and rotation["resumed"]
    first_latency, second_latency = (t.latency_s for t in result.turns)
    assert first_latency is not None and second_latency is not None
    assert second_latency < first_latency + 0.25  # no setup time added to the caller's wait
    [switch] = [r for r in caplog.records if r.getMessage() == "model.reconnected"]
    assert switch.event_fields["pause_ms"] == 0.0  # type: ignore[attr-defined]
