"""Load test, pure parts: percentiles, per-call measures and failure reasons, the summary,
SLO verdicts and the exit code they give."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import numpy as np
import pytest

from telephony.caller import AudioGap, CallResult, Interruption, ResponseTurn
from telephony.loadtest.cli import SLO_FLAGS, build_parser, slos_from_args
from telephony.loadtest.metrics import (
    SLO_METRICS,
    CallRecord,
    Distribution,
    Slo,
    check_slos,
    failed_record,
    percentile,
    record_call,
    summarize,
)


@pytest.mark.parametrize("n", [1, 2, 3, 10, 101, 1000])
def test_percentile_matches_numpy_linear(n: int) -> None:
    values = list(np.random.default_rng(n).gamma(2.0, 300.0, n))
    for q in (0, 1, 50, 66.6, 95, 99, 100):
        assert percentile(values, q) == pytest.approx(float(np.percentile(values, q)))


def test_percentile_edges() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 99) == 5.0
    assert percentile([1.0, 2.0], 50) == 1.5
    assert percentile([3.0, 1.0, 2.0], 50) == 2.0  # unsorted input
    with pytest.raises(ValueError):
        percentile([1.0], 101)


def test_distribution() -> None:
    d = Distribution.of([100.0, 200.0, 300.0, 400.0])
    assert (d.count, d.min, d.max, d.mean, d.p50) == (4, 100.0, 400.0, 250.0, 250.0)
    assert d.p95 == pytest.approx(385.0)
    assert d.brief() == "p50 250 / p95 385 / p99 397 ms (n=4, max 400)"
    empty = Distribution.of([])
    assert (empty.count, empty.p50, empty.mean) == (0, None, None)
    assert empty.brief() == "no samples"


def result(**changes: Any) -> CallResult:
    """A made-up call: greeting at 0.3 s, the caller 2-3 s and 5-6 s, answers at 3.8 and 6.9 s,
    one barge-in answered by a clear after 120 ms, one gap."""
    base = CallResult(
        call_sid="CA1",
        stream_sid="MZ1",
        duration_s=9.0,
        ended_by="caller",
        caller_audio=b"",
        heard_audio=b"",
        played=[],
        time_to_first_audio_s=0.3,
        caller_segments=[(2.0, 3.0), (5.0, 6.0)],
        agent_spurts=[(0.3, 1.3), (3.8, 5.5), (6.9, 8.0)],
        turns=[ResponseTurn(2.0, 3.0, 3.8), ResponseTurn(5.0, 6.0, 6.9)],
        interruptions=[Interruption(5.0, 5.12, 0.4)],
        clears=[],
        marks_received=[],
        marks_echoed=[],
        dtmf_sent=[],
        frames_sent=450,
        media_bytes_received=0,
        unknown_frames=0,
        malformed_frames=0,
        close_code=1000,
        close_reason="",
        gaps=[AudioGap(7.2, 7.5)],
        max_send_lag_s=0.004,
    )
    return replace(base, **changes)


def flat(pairs: list[tuple[float, float]]) -> list[float]:
    return [x for pair in pairs for x in pair]


def test_record_call_measures_as_the_caller_hears() -> None:
    r = record_call(3, "a.wav", result(), started_s=1.0, stream_started_s=1.05, duration_s=9.2)
    assert r.ok and r.failure == ""
    assert r.greeting_ms == pytest.approx(300.0)
    # Samples are stamped with run time: stream start + their time in the call.
    assert flat(r.response_ms) == pytest.approx([4.05, 800.0, 7.05, 900.0])
    assert flat(r.barge_in_ms) == pytest.approx([6.05, 120.0])
    assert flat(r.gap_ms) == pytest.approx([8.25, 300.0])
    assert (r.turns, r.unanswered, r.barge_ins_without_clear) == (2, 0, 0)
    assert r.max_send_lag_ms == pytest.approx(4.0)
    row = r.row()
    assert row["response_ms"] == [800.0, 900.0] and row["index"] == 3 and row["ok"] is True


def test_record_call_counts_unanswered_turns_and_missed_clears() -> None:
    r = record_call(
        0,
        "a",
        result(
            turns=[ResponseTurn(2.0, 3.0, None), ResponseTurn(5.0, 6.0, 6.9)],
            interruptions=[Interruption(5.0, None), Interruption(None, 4.0, 0.1)],
        ),
        started_s=0,
        stream_started_s=0,
        duration_s=9,
    )
    assert (r.unanswered, r.barge_ins_without_clear, r.barge_in_ms) == (1, 1, [])
    assert r.ok


@pytest.mark.parametrize(
    ("changes", "kind"),
    [
        ({"ended_by": "error", "error": "run deadline"}, "run_deadline"),
        ({"ended_by": "error", "error": "overall timeout"}, "call_timeout"),
        ({"ended_by": "error", "error": "error: ValueError()"}, "error"),
        ({"ended_by": "server", "close_code": 1011, "close_reason": "boom"}, "closed_abnormally"),
        ({"ended_by": "caller", "close_code": 1006}, "closed_abnormally"),
        ({"ended_by": "max_duration"}, "call_timeout"),
        ({"ended_by": "server", "caller_done": False}, "dropped"),
        ({"time_to_first_audio_s": None}, "no_greeting"),
        ({"time_to_first_audio_s": 2.5}, "no_greeting"),  # first audio after the caller spoke
        ({"ended_by": "server", "close_code": 1000}, ""),  # the agent hung up at the end
        ({"ended_by": "server", "close_code": 1001}, ""),
    ],
)
def test_failure_reasons(changes: dict[str, Any], kind: str) -> None:
    r = record_call(0, "a", result(**changes), started_s=0, stream_started_s=0, duration_s=1)
    assert (r.failure, r.ok) == (kind, not kind)
    if kind == "closed_abnormally":
        assert "close code" in r.detail


def test_no_greeting_is_fine_when_not_expected() -> None:
    r = record_call(
        0,
        "a",
        result(time_to_first_audio_s=None),
        started_s=0,
        stream_started_s=0,
        duration_s=1,
        expect_greeting=False,
    )
    assert r.ok and r.greeting_ms is None


def records() -> list[CallRecord]:
    ok = [
        CallRecord(
            i,
            "a",
            f"CA{i}",
            float(i),
            5.0,
            True,
            greeting_ms=300.0 + i,
            response_ms=[(i + 1.0, 800.0 + 10 * i), (i + 2.0, 820.0)],
            barge_in_ms=[(i + 3.0, 100.0 + i)] if i % 2 else [],
            gap_ms=[(i + 2.5, 150.0)] if i == 3 else [],
            turns=3,
            unanswered=1 if i == 0 else 0,
            connect_ms=20.0,
            max_send_lag_ms=2.0,
        )
        for i in range(8)
    ]
    failed = [
        failed_record(8, "b", "CA8", 8.0, 0.1, "connect_refused", "refused"),
        failed_record(9, "b", "CA9", 9.0, 0.1, "connect_refused", "refused"),
    ]
    return ok + failed


def test_summarize() -> None:
    s = summarize(records(), wall_s=20.0)
    assert (s.calls, s.ok, s.failed) == (10, 8, 2)
    assert s.failures == {"connect_refused": 2}
    assert s.failure_rate == pytest.approx(0.2)
    assert s.response_ms.count == 16
    assert s.response_ms.p50 == pytest.approx(
        float(np.percentile([800.0 + 10 * i for i in range(8)] + [820.0] * 8, 50))
    )
    assert s.greeting_ms.count == 8 and s.barge_in_ms.count == 4
    assert (s.turns, s.unanswered) == (24, 1)
    assert s.unanswered_rate == pytest.approx(1 / 24)
    assert (s.gap_ms.count, s.calls_with_gaps) == (1, 1)
    assert s.gap_rate == pytest.approx(0.1)
    assert s.send_lag_ms.count == 8  # calls that never connected have no lag to report
    doc = s.to_json()
    assert doc["calls"] == {
        "total": 10,
        "ok": 8,
        "failed": 2,
        "failure_rate": 0.2,
        "failures": {"connect_refused": 2},
    }
    assert set(doc["response_ms"]) == {"count", "p50", "p95", "p99", "min", "max", "mean"}
    empty = summarize([])
    assert (empty.failure_rate, empty.unanswered_rate, empty.gap_rate) == (None, None, None)


def test_slos() -> None:
    s = summarize(records())
    verdicts = check_slos(
        s,
        [
            Slo("p95_response_ms", 1000),
            Slo("p95_response_ms", 800),
            Slo("failure_rate", 0.25),
            Slo("failure_rate", 0.0),
            Slo("p95_barge_in_ms", 200),
            Slo("p95_gap_ms", 200),
            Slo("gap_rate", 0.0),
        ],
    )
    assert [v.passed for v in verdicts] == [True, False, True, False, True, True, False]
    assert verdicts[0].describe().startswith("PASS p95 response latency")
    assert verdicts[1].describe().startswith("FAIL p95 response latency") and "> 800 ms" in (
        verdicts[1].describe()
    )
    assert verdicts[3].describe() == "FAIL failure rate 0.2 > 0"
    # A measure with no samples fails its SLO; no gaps at all passes a gap SLO.
    no_barge = summarize([replace(r, barge_in_ms=[], gap_ms=[]) for r in records()])
    barge, gap = check_slos(no_barge, [Slo("p95_barge_in_ms", 1e9), Slo("p95_gap_ms", 100)])
    assert not barge.passed and "no samples" in barge.describe()
    assert gap.passed and gap.value == 0.0
    with pytest.raises(ValueError):
        Slo("p42_mood", 1)


def test_every_slo_flag_maps_to_a_metric() -> None:
    assert set(SLO_FLAGS.values()) == set(SLO_METRICS)
    args = build_parser().parse_args(
        ["--url", "ws://x", "--recordings", "a.wav", "--max-p95-response-ms", "900"]
    )
    # --max-failure-rate defaults to 0: any failed call fails the run.
    assert slos_from_args(args) == [Slo("p95_response_ms", 900), Slo("failure_rate", 0.0)]
