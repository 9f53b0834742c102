"""What one load-test call measured, the run's summary, and the SLO verdict. Pure.

Every measure is taken as the caller experiences it (from :class:`telephony.caller.CallResult`):

- greeting: stream start → first agent audio played, when it plays before the caller's
  first words (else the call had no greeting);
- response latency: end of a caller utterance → first agent audio played after it;
- barge-in latency: caller starts talking over the agent → ``clear`` received;
- audio gaps: holes > 100 ms in the agent's audio inside one answer, as played
  (:func:`telephony.caller.find_gaps`);
- connect: webhook POST (if any) + WebSocket handshake.

Latency samples carry the run time at which they happened (seconds since the run started),
so the report can plot them over time.

A call fails, for the first reason that applies: it could not be placed (``connect_refused``,
``connect_timeout``, ``connect_error``, ``handshake_rejected``, ``handshake_error``,
``webhook_rejected``, ``webhook_error``, ``webhook_timeout``, ``turned_away``,
``bad_twiml``); it was cut off by the run's deadline (``run_deadline``) or its own bound
(``call_timeout``: ``max_call_s`` reached or the socket stuck); the server closed it with a
code other than 1000/1001 (``closed_abnormally``); the server hung up normally before the
caller had said everything (``dropped``); the agent said nothing before the caller's first
words while a greeting was expected (``no_greeting``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from telephony.caller import CallResult

__all__ = [
    "SLO_METRICS",
    "CallRecord",
    "Distribution",
    "Slo",
    "SloResult",
    "Summary",
    "check_slos",
    "failed_record",
    "percentile",
    "record_call",
    "summarize",
]

#: Close codes of a normal end (1000) or a server going away (1001, e.g. a drain).
NORMAL_CLOSE_CODES: Final = (None, 1000, 1001)


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100), interpolating linearly between closest ranks
    (NumPy's default method); None for no values."""
    if not values:
        return None
    if not 0 <= q <= 100:
        raise ValueError("q must be within 0..100")
    xs = sorted(values)
    pos = (len(xs) - 1) * q / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


@dataclass(frozen=True, slots=True)
class Distribution:
    """Count and percentiles of one measure (None when there are no samples)."""

    count: int
    p50: float | None
    p95: float | None
    p99: float | None
    min: float | None
    max: float | None
    mean: float | None

    @classmethod
    def of(cls, values: Sequence[float]) -> Distribution:
        return cls(
            count=len(values),
            p50=percentile(values, 50),
            p95=percentile(values, 95),
            p99=percentile(values, 99),
            min=min(values, default=None),
            max=max(values, default=None),
            mean=sum(values) / len(values) if values else None,
        )

    def brief(self, unit: str = "ms") -> str:
        """``p50 312 / p95 480 / p99 501 ms (n=40)``, or ``no samples``."""
        if not self.count:
            return "no samples"
        return (
            f"p50 {self.p50:.0f} / p95 {self.p95:.0f} / p99 {self.p99:.0f} {unit} "
            f"(n={self.count}, max {self.max:.0f})"
        )


Sample = tuple[float, float]  # (run time in s, value in ms)


@dataclass
class CallRecord:
    """One call of a run: what happened and what the caller measured."""

    index: int
    recording: str
    call_sid: str
    started_s: float
    duration_s: float
    ok: bool
    failure: str = ""
    detail: str = ""
    connect_ms: float | None = None
    greeting_ms: float | None = None
    response_ms: list[Sample] = field(default_factory=list)
    barge_in_ms: list[Sample] = field(default_factory=list)
    gap_ms: list[Sample] = field(default_factory=list)
    turns: int = 0
    unanswered: int = 0
    barge_ins_without_clear: int = 0
    close_code: int | None = None
    ended_by: str = ""
    max_send_lag_ms: float = 0.0
    #: The stream was opened (False: the webhook or the connection failed).
    connected: bool = True
    #: Phrases the agent had to say, those it did not, and what it said (from the server's
    #: record; ``None``: not read, see ``answer_error``).
    expected: tuple[str, ...] = ()
    missed: tuple[str, ...] = ()
    answer: str | None = None
    answer_error: str = ""

    def row(self) -> dict[str, Any]:
        """A flat row (CSV/JSONL): lists of milliseconds joined with ``;`` for CSV."""
        return {
            "index": self.index,
            "recording": self.recording,
            "call_sid": self.call_sid,
            "started_s": round(self.started_s, 3),
            "duration_s": round(self.duration_s, 3),
            "ok": self.ok,
            "failure": self.failure,
            "detail": self.detail,
            "connect_ms": _r(self.connect_ms),
            "greeting_ms": _r(self.greeting_ms),
            "response_ms": [_r(ms) for _, ms in self.response_ms],
            "barge_in_ms": [_r(ms) for _, ms in self.barge_in_ms],
            "gap_ms": [_r(ms) for _, ms in self.gap_ms],
            "turns": self.turns,
            "unanswered": self.unanswered,
            "barge_ins_without_clear": self.barge_ins_without_clear,
            "close_code": self.close_code,
            "ended_by": self.ended_by,
            "max_send_lag_ms": _r(self.max_send_lag_ms),
            "expected": list(self.expected),
            "missed": list(self.missed),
            "answer": self.answer,
            "answer_error": self.answer_error,
        }


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 1)


def failed_record(
    index: int,
    recording: str,
    call_sid: str,
    started_s: float,
    duration_s: float,
    failure: str,
    detail: str,
) -> CallRecord:
    """A call that never got a stream (webhook or connection failure)."""
    return CallRecord(
        index,
        recording,
        call_sid,
        started_s,
        duration_s,
        False,
        failure,
        detail,
        ended_by="error",
        connected=False,
    )


def record_call(
    index: int,
    recording: str,
    result: CallResult,
    *,
    started_s: float,
    stream_started_s: float,
    duration_s: float,
    connect_ms: float | None = None,
    expect_greeting: bool = True,
) -> CallRecord:
    """Measure one call. ``started_s``: when the attempt began (run time);
    ``stream_started_s``: when its stream started (time zero of ``result``)."""
    at = stream_started_s
    first_words = result.caller_segments[0][0] if result.caller_segments else math.inf
    first_audio = result.time_to_first_audio_s
    greeting = first_audio if first_audio is not None and first_audio < first_words else None
    response = [
        (at + t.utterance_end_s, t.latency_s * 1000)
        for t in result.turns
        if t.latency_s is not None
    ]
    barge = [
        (at + it.speech_start_s, ms)
        for it in result.interruptions
        if it.speech_start_s is not None and (ms := it.latency_ms) is not None
    ]
    record = CallRecord(
        index=index,
        recording=recording,
        call_sid=result.call_sid,
        started_s=started_s,
        duration_s=duration_s,
        ok=True,
        connect_ms=connect_ms,
        greeting_ms=None if greeting is None else greeting * 1000,
        response_ms=response,
        barge_in_ms=barge,
        gap_ms=[(at + g.start_s, g.duration_s * 1000) for g in result.gaps],
        turns=len(result.turns),
        unanswered=sum(t.response_s is None for t in result.turns),
        barge_ins_without_clear=sum(
            it.speech_start_s is not None and it.clear_s is None for it in result.interruptions
        ),
        close_code=result.close_code,
        ended_by=result.ended_by,
        max_send_lag_ms=result.max_send_lag_s * 1000,
    )
    failure, detail = _failure(result, greeting is not None, expect_greeting)
    if failure:
        record.ok, record.failure, record.detail = False, failure, detail
    return record


def _failure(result: CallResult, greeted: bool, expect_greeting: bool) -> tuple[str, str]:
    if result.ended_by == "error":
        if result.error.startswith("run deadline"):
            return "run_deadline", result.error
        if result.error.startswith("overall timeout"):
            return "call_timeout", result.error
        return "error", result.error
    if result.close_code not in NORMAL_CLOSE_CODES:
        reason = f" {result.close_reason}" if result.close_reason else ""
        return "closed_abnormally", f"close code {result.close_code}{reason}"
    if result.ended_by == "max_duration":
        return "call_timeout", f"still going after {result.duration_s:.1f} s"
    if result.ended_by == "server" and not result.caller_done:
        return "dropped", f"server hung up at {result.duration_s:.1f} s, before the caller was done"
    if expect_greeting and not greeted:
        return "no_greeting", "no agent audio before the caller's first words"
    return "", ""


@dataclass(frozen=True, slots=True)
class Summary:
    """The run as a whole."""

    wall_s: float
    calls: int
    ok: int
    failed: int
    failures: Mapping[str, int]
    greeting_ms: Distribution
    response_ms: Distribution
    barge_in_ms: Distribution
    gap_ms: Distribution
    connect_ms: Distribution
    send_lag_ms: Distribution
    turns: int
    unanswered: int
    calls_with_gaps: int
    barge_ins_without_clear: int
    #: Expected phrases over all calls that had some, and of those the ones the agent said.
    #: A call whose record could not be read counts all its phrases as not said.
    expected: int = 0
    expected_said: int = 0
    #: Calls with expectations whose record could not be read.
    answers_unread: int = 0

    @property
    def answer_accuracy(self) -> float | None:
        """Fraction of the expected phrases the agent said (``None``: nothing expected)."""
        return self.expected_said / self.expected if self.expected else None

    @property
    def answer_miss_rate(self) -> float | None:
        accuracy = self.answer_accuracy
        return None if accuracy is None else 1.0 - accuracy

    @property
    def failure_rate(self) -> float | None:
        return self.failed / self.calls if self.calls else None

    @property
    def unanswered_rate(self) -> float | None:
        return self.unanswered / self.turns if self.turns else None

    @property
    def gap_rate(self) -> float | None:
        """Fraction of the calls that had at least one audio gap."""
        return self.calls_with_gaps / self.calls if self.calls else None

    def to_json(self) -> dict[str, Any]:
        def dist(d: Distribution) -> dict[str, Any]:
            return {
                "count": d.count,
                **{k: _r(getattr(d, k)) for k in ("p50", "p95", "p99", "min", "max", "mean")},
            }

        return {
            "wall_s": round(self.wall_s, 3),
            "calls": {
                "total": self.calls,
                "ok": self.ok,
                "failed": self.failed,
                "failure_rate": self.failure_rate,
                "failures": dict(self.failures),
            },
            "greeting_ms": dist(self.greeting_ms),
            "response_ms": dist(self.response_ms),
            "barge_in_ms": dist(self.barge_in_ms),
            "gap_ms": dist(self.gap_ms),
            "connect_ms": dist(self.connect_ms),
            "load_generator_send_lag_ms": dist(self.send_lag_ms),
            "turns": {
                "total": self.turns,
                "unanswered": self.unanswered,
                "unanswered_rate": self.unanswered_rate,
            },
            "gaps": {
                "count": self.gap_ms.count,
                "calls_with_gaps": self.calls_with_gaps,
                "gap_rate": self.gap_rate,
            },
            "barge_ins_without_clear": self.barge_ins_without_clear,
            "answers": {
                "expected": self.expected,
                "said": self.expected_said,
                "unread": self.answers_unread,
                "accuracy": self.answer_accuracy,
            },
        }


def summarize(records: Iterable[CallRecord], wall_s: float = 0.0) -> Summary:
    """Pool every call's samples (failed calls' too: what they measured did happen)."""
    rows = list(records)
    failures = Counter(r.failure for r in rows if not r.ok)
    return Summary(
        wall_s=wall_s,
        calls=len(rows),
        ok=sum(r.ok for r in rows),
        failed=sum(not r.ok for r in rows),
        failures=dict(failures.most_common()),
        greeting_ms=Distribution.of([r.greeting_ms for r in rows if r.greeting_ms is not None]),
        response_ms=Distribution.of([ms for r in rows for _, ms in r.response_ms]),
        barge_in_ms=Distribution.of([ms for r in rows for _, ms in r.barge_in_ms]),
        gap_ms=Distribution.of([ms for r in rows for _, ms in r.gap_ms]),
        connect_ms=Distribution.of([r.connect_ms for r in rows if r.connect_ms is not None]),
        send_lag_ms=Distribution.of([r.max_send_lag_ms for r in rows if r.connected]),
        turns=sum(r.turns for r in rows),
        unanswered=sum(r.unanswered for r in rows),
        calls_with_gaps=sum(bool(r.gap_ms) for r in rows),
        barge_ins_without_clear=sum(r.barge_ins_without_clear for r in rows),
        expected=sum(len(r.expected) for r in rows),
        expected_said=sum(len(r.expected) - len(r.missed) for r in rows),
        answers_unread=sum(bool(r.expected) and r.answer is None for r in rows),
    )


# ---------------------------------------------------------------------------------------------
# Service level objectives
# ---------------------------------------------------------------------------------------------

#: SLO name → (how to read it from a summary, unit, description).
SLO_METRICS: Final[Mapping[str, tuple[Callable[[Summary], float | None], str, str]]] = {
    "p95_response_ms": (lambda s: s.response_ms.p95, "ms", "p95 response latency"),
    "p99_response_ms": (lambda s: s.response_ms.p99, "ms", "p99 response latency"),
    "p95_greeting_ms": (lambda s: s.greeting_ms.p95, "ms", "p95 time to greeting"),
    "p95_barge_in_ms": (lambda s: s.barge_in_ms.p95, "ms", "p95 barge-in latency"),
    # No gap at all is the best case, not a missing measurement.
    "p95_gap_ms": (lambda s: (s.gap_ms.p95 or 0.0) if s.calls else None, "ms", "p95 audio gap"),
    "failure_rate": (lambda s: s.failure_rate, "", "failure rate"),
    "unanswered_rate": (lambda s: s.unanswered_rate, "", "unanswered turn rate"),
    "gap_rate": (lambda s: s.gap_rate, "", "share of calls with audio gaps"),
    "answer_miss_rate": (
        lambda s: s.answer_miss_rate,
        "",
        "share of expected phrases the agent did not say",
    ),
}


@dataclass(frozen=True, slots=True)
class Slo:
    """``metric`` (a key of :data:`SLO_METRICS`) must be at most ``limit``."""

    metric: str
    limit: float

    def __post_init__(self) -> None:
        if self.metric not in SLO_METRICS:
            raise ValueError(f"unknown SLO metric {self.metric!r}")


@dataclass(frozen=True, slots=True)
class SloResult:
    slo: Slo
    value: float | None
    passed: bool

    def describe(self) -> str:
        """``PASS p95 response latency 480 ms <= 1500 ms`` (``no samples`` when unmeasured)."""
        _, unit, label = SLO_METRICS[self.slo.metric]
        verdict = "PASS" if self.passed else "FAIL"
        if self.value is None:
            return f"{verdict} {label}: no samples (limit {_fmt(self.slo.limit, unit)})"
        op = "<=" if self.passed else ">"
        return f"{verdict} {label} {_fmt(self.value, unit)} {op} {_fmt(self.slo.limit, unit)}"


def _fmt(value: float, unit: str) -> str:
    return f"{value:.0f} {unit}" if unit else f"{value:.3g}"


def check_slos(summary: Summary, slos: Iterable[Slo]) -> list[SloResult]:
    """Each SLO's verdict. A measure with no samples fails its SLO: asking for a barge-in
    objective and measuring no barge-in at all is not a pass."""
    results: list[SloResult] = []
    for slo in slos:
        value = SLO_METRICS[slo.metric][0](summary)
        results.append(SloResult(slo, value, value is not None and value <= slo.limit))
    return results


#: The load generator sending a frame later than this (p95 of each call's worst) inflates
#: every latency it measures.
LATE_SEND_MS: Final = 20.0


def result_warnings(summary: Summary, *, mode: str, deadline_hit: bool) -> list[str]:
    """What makes this run's figures incomplete or untrustworthy, in plain words."""
    warnings: list[str] = []
    lag = summary.send_lag_ms
    if lag.p95 is not None and lag.p95 > LATE_SEND_MS:
        warnings.append(
            "the load generator itself ran late (p95 of the worst send lag per call "
            f"{lag.p95:.0f} ms); latencies are inflated. Lower the load or spread it over "
            "more machines (Locust)."
        )
    if deadline_hit:
        warnings.append("the run hit its overall deadline; calls still going were cut off")
    if mode == "barge-in" and summary.barge_in_ms.count == 0 and summary.ok:
        warnings.append(
            "no barge-in was measured: no caller turn started while the agent was speaking "
            "(see the warning about single-utterance recordings, or raise --answer-timeout "
            "if the agent answers slowly)"
        )
    if summary.turns and summary.unanswered == summary.turns:
        warnings.append(
            f"the agent answered none of the {summary.turns} caller turns: response latency "
            "has no samples"
        )
    if summary.answers_unread:
        warnings.append(
            f"the agent's words could not be read for {summary.answers_unread} call(s) with "
            "expected answers (see answer_error in calls.jsonl); their phrases count as not said"
        )
    return warnings
