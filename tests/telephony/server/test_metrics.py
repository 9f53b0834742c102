"""Prometheus metrics: the helpers update the right series, and ``GET /metrics`` after a call."""

from __future__ import annotations

import pytest
from prometheus_client import REGISTRY

from support import run_stack, silence
from telephony.call.summary import CallSummary, Interruption, Outcome, Turn
from telephony.server.metrics import Metrics


def value(m: Metrics, name: str, **labels: str) -> float:
    v = m.registry.get_sample_value(name, labels or None)
    assert v is not None, name
    return v


def interruption(clear_ms: float) -> Interruption:
    return Interruption(
        at_s=1.0,
        clear_latency_ms=clear_ms,
        sent_ms=800,
        heard_ms=500,
        confirmed_ms=400,
        transcript_heard="hello",
    )


def test_each_app_has_its_own_registry() -> None:
    a, b = Metrics(), Metrics()
    a.call_started()
    assert value(a, "voice_agent_active_calls") == 1
    assert value(b, "voice_agent_active_calls") == 0
    assert REGISTRY.get_sample_value("voice_agent_active_calls") is None


def test_live_gauge_and_turned_away() -> None:
    m = Metrics()
    m.call_started()
    m.call_started()
    m.call_turned_away(draining=False)
    m.call_turned_away(draining=True)
    m.call_turned_away(draining=True)
    assert value(m, "voice_agent_active_calls") == 2
    assert value(m, "voice_agent_calls_turned_away_total", reason="busy") == 1
    assert value(m, "voice_agent_calls_turned_away_total", reason="draining") == 2
    m.call_finished(CallSummary(outcome=Outcome.COMPLETED))
    assert value(m, "voice_agent_active_calls") == 1


def test_a_call_summary_is_recorded() -> None:
    m = Metrics()
    m.call_started()
    summary = CallSummary(
        outcome=Outcome.COMPLETED,
        first_audio_ms=350.0,
        model_connect_ms=120.0,
        interruptions=[interruption(0.4), interruption(2.0)],
        frames_in=500,
        frames_out=120,
        bad_frames=2,
        stalls=1,
        stalls_recovered=1,
        caller_audio_dropped_ms=40.0,
        rest_failures=1,
        recording_failed=True,
        turns=[
            Turn(at_s=1.0, caller="", agent="Hello!"),  # the greeting: no response latency
            Turn(at_s=5.0, caller="hi", agent="Hi there", response_ms=640.0),
            Turn(at_s=9.0, caller="and?", agent="Well", response_ms=1200.0),
        ],
        model_connections=[
            {"reason": "initial"},
            {"reason": "go_away"},
            {"reason": "stall"},
            {"reason": "go_away"},
        ],
    )
    m.call_finished(summary)
    assert value(m, "voice_agent_active_calls") == 0
    assert value(m, "voice_agent_calls_total", outcome="completed") == 1
    assert value(m, "voice_agent_calls_total", outcome="failed") == 0
    assert value(m, "voice_agent_greeting_latency_seconds_count") == 1
    assert value(m, "voice_agent_greeting_latency_seconds_sum") == pytest.approx(0.35)
    assert value(m, "voice_agent_greeting_latency_seconds_bucket", le="0.3") == 0
    assert value(m, "voice_agent_greeting_latency_seconds_bucket", le="0.5") == 1
    assert value(m, "voice_agent_model_connect_seconds_sum") == pytest.approx(0.12)
    assert value(m, "voice_agent_response_latency_seconds_count") == 2
    assert value(m, "voice_agent_response_latency_seconds_sum") == pytest.approx(1.84)
    assert value(m, "voice_agent_response_latency_seconds_bucket", le="0.75") == 1
    assert value(m, "voice_agent_barge_ins_total") == 2
    assert value(m, "voice_agent_clear_latency_seconds_count") == 2
    assert value(m, "voice_agent_clear_latency_seconds_bucket", le="0.0005") == 1
    assert value(m, "voice_agent_model_reconnects_total", reason="go_away") == 2
    assert value(m, "voice_agent_model_reconnects_total", reason="stall") == 1
    assert value(m, "voice_agent_model_reconnects_total", reason="error") == 0
    assert value(m, "voice_agent_model_stalls_total") == 1
    assert value(m, "voice_agent_model_stalls_recovered_total") == 1
    assert value(m, "voice_agent_audio_frames_in_total") == 500
    assert value(m, "voice_agent_audio_frames_out_total") == 120
    assert value(m, "voice_agent_caller_audio_dropped_ms_total") == 40
    assert value(m, "voice_agent_errors_total", kind="bad_frame") == 2
    assert value(m, "voice_agent_errors_total", kind="rest_failed") == 1
    assert value(m, "voice_agent_errors_total", kind="recording_failed") == 1
    assert value(m, "voice_agent_errors_total", kind="model_failed") == 0


def test_failed_calls_count_their_error_kind() -> None:
    m = Metrics()
    m.record(CallSummary(outcome=Outcome.FAILED, reason="model session: quota exceeded"))
    m.record(CallSummary(outcome=Outcome.FAILED, reason="internal error"))
    m.record(CallSummary(outcome=Outcome.REJECTED))
    assert value(m, "voice_agent_errors_total", kind="model_failed") == 1
    assert value(m, "voice_agent_errors_total", kind="crashed") == 1
    assert value(m, "voice_agent_calls_total", outcome="failed") == 2
    assert value(m, "voice_agent_calls_total", outcome="rejected") == 1
    # A call that never got audio out adds nothing to the latency histograms.
    assert value(m, "voice_agent_greeting_latency_seconds_count") == 0


def sample(text: str, line: str) -> float:
    for row in text.splitlines():
        if row.startswith(line + " "):
            return float(row.rsplit(" ", 1)[1])
    raise AssertionError(f"{line} not in /metrics")


async def test_metrics_endpoint_after_a_call(monkeypatch: pytest.MonkeyPatch) -> None:
    async with run_stack(monkeypatch) as stack:
        async with stack.client() as http:
            before = await http.get("/metrics")
            assert before.status_code == 200
            assert before.headers["content-type"].startswith("text/plain")
            assert sample(before.text, 'voice_agent_calls_total{outcome="completed"}') == 0
            await stack.call(silence(3.0), linger_s=0.5)
            await stack.summary()
            response = await http.get("/metrics")
    text = response.text
    assert sample(text, "voice_agent_active_calls") == 0
    assert sample(text, 'voice_agent_calls_total{outcome="completed"}') == 1
    assert sample(text, "voice_agent_greeting_latency_seconds_count") == 1
    assert sample(text, "voice_agent_model_connect_seconds_count") == 1
    assert sample(text, "voice_agent_audio_frames_in_total") > 0
    assert sample(text, "voice_agent_audio_frames_out_total") > 0
    assert sample(text, 'voice_agent_errors_total{kind="bad_frame"}') == 0
