"""Prometheus metrics for one server (``GET /metrics``).

Each app gets its own ``CollectorRegistry`` (never the process-wide default): tests run many
apps in one process, and each must start from zero. Almost everything is recorded once per
call, from its ``CallSummary``, when the call ends; only what must be live (active calls,
calls turned away) is updated as it happens. The per-frame audio path has no metric calls.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from telephony.call.summary import CallSummary, Outcome
from telephony.ops.records import INTERRUPTED

__all__ = ["CONTENT_TYPE_LATEST", "Metrics"]

#: Phone latencies: tens of milliseconds to a few seconds.
LATENCY_BUCKETS_S = (0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0, 5.0)
#: A tool round trip: a local lookup in milliseconds, a slow backend up to its timeout.
TOOL_BUCKETS_S = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0)
#: Setting up a Live session: a few hundred ms, up to the retries' backoff.
CONNECT_BUCKETS_S = (0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 3.0, 5.0, 10.0)
#: `interrupted` received → `clear` sent: one socket write (~30 µs measured), up to ~100 ms.
CLEAR_BUCKETS_S = (
    0.00002,
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
)

PREFIX = "voice_agent_"
#: Why the server itself closes an HTTP connection (``telephony.server.connections``).
CONNECTION_CLOSE_REASONS = (
    "header_timeout",
    "body_timeout",
    "body_too_large",
    "evicted",
    "refused",
)

log = logging.getLogger(__name__)


class Metrics:
    """The metric families of one server, on their own registry."""

    def __init__(self, tool_names: Iterable[str] = ()) -> None:
        #: Tools labelled by name; any other name the model makes up is labelled "other" (the
        #: model must not be able to grow the label set).
        self.tool_names = frozenset(tool_names)
        self.registry = CollectorRegistry(auto_describe=True)
        r = self.registry
        p = PREFIX
        self.active_calls = Gauge(p + "active_calls", "Media Streams in progress.", registry=r)
        self.calls = Counter(p + "calls", "Calls ended, by outcome.", ["outcome"], registry=r)
        self.turned_away = Counter(
            p + "calls_turned_away",
            "Calls refused at the webhook or the stream (busy: at capacity; draining).",
            ["reason"],
            registry=r,
        )
        self.greeting_latency = Histogram(
            p + "greeting_latency_seconds",
            "Stream start to the first agent audio sent to Twilio.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.response_latency = Histogram(
            p + "response_latency_seconds",
            "End of the caller's utterance (our VAD) to the first audio of the agent's answer "
            "sent to Twilio.",
            buckets=LATENCY_BUCKETS_S,
            registry=r,
        )
        self.model_connect = Histogram(
            p + "model_connect_seconds",
            "Time to have the call's first model session ready (pre-connect included).",
            buckets=CONNECT_BUCKETS_S,
            registry=r,
        )
        self.barge_ins = Counter(p + "barge_ins", "Caller barge-ins (agent cut off).", registry=r)
        self.clear_latency = Histogram(
            p + "clear_latency_seconds",
            "Barge-in: `interrupted` received to `clear` sent to Twilio.",
            buckets=CLEAR_BUCKETS_S,
            registry=r,
        )
        self.reconnects = Counter(
            p + "model_reconnects",
            "Moves to a new model connection during a call, by reason.",
            ["reason"],
            registry=r,
        )
        self.stalls = Counter(p + "model_stalls", "Model stalls detected.", registry=r)
        self.stalls_recovered = Counter(
            p + "model_stalls_recovered", "Stalls after which the model answered.", registry=r
        )
        self.no_answers = Counter(
            p + "model_no_answers",
            "Model turns that left the caller unanswered: near-silent audio or RESPONSE_REJECTED.",
            ["kind"],
            registry=r,
        )
        self.model_circuit_open = Gauge(
            p + "model_circuit_open",
            "1 while new model connections are paused because most of them failed.",
            registry=r,
        )
        self.model_connections_refused = Counter(
            p + "model_connections_refused",
            "New model connections not attempted because the circuit breaker was open.",
            registry=r,
        )
        self.errors = Counter(p + "errors", "Errors, by kind.", ["kind"], registry=r)
        self.tool_calls = Counter(
            p + "tool_calls",
            "Tool calls the model made, by tool and outcome (ok, timeout, http_error, "
            "connection_error, invalid_json, too_large, cancelled, error, …).",
            ["tool", "outcome"],
            registry=r,
        )
        self.tool_latency = Histogram(
            p + "tool_latency_seconds",
            "Tool call started to its answer ready (cancelled calls excluded), by tool.",
            ["tool"],
            buckets=TOOL_BUCKETS_S,
            registry=r,
        )
        self.filler = Counter(
            p + "tool_filler_seconds",
            "Seconds of the 'working on it' sound played while blocking tools ran.",
            registry=r,
        )
        self.frames_in = Counter(
            p + "audio_frames_in", "Caller audio frames received from Twilio.", registry=r
        )
        self.frames_out = Counter(
            p + "audio_frames_out", "Agent audio messages sent to Twilio.", registry=r
        )
        self.caller_audio_dropped = Counter(
            p + "caller_audio_dropped_ms",
            "Caller audio lost beyond the reconnect buffer, in milliseconds (should stay 0).",
            registry=r,
        )
        # Label values known up front, so dashboards see zeros instead of missing series.
        for outcome in Outcome:
            self.calls.labels(outcome=outcome.value)
        # Not a call's own ending: its server stopped without one (counted by the instance
        # that found the record, telephony.ops.store.CallStore.interrupt_stale).
        self.calls.labels(outcome=INTERRUPTED)
        self._records = _RecordsCollector()
        r.register(self._records)
        self._ops = _OpsCollector()
        r.register(self._ops)
        for reason in ("busy", "draining"):
            self.turned_away.labels(reason=reason)
        for reason in ("go_away", "error", "stall"):
            self.reconnects.labels(reason=reason)
        self.outbound = Counter(
            p + "outbound_calls",
            "Outbound calls requested through Twilio, by result (placed, failed).",
            ["result"],
            registry=r,
        )
        for result in ("placed", "failed"):
            self.outbound.labels(result=result)
        self.preconnects = Counter(
            p + "preconnects",
            "Model sessions pre-connected at the webhook, by result (claimed by their stream, "
            "expired unclaimed, refused: over the limit or a call SID seen before).",
            ["result"],
            registry=r,
        )
        for result in ("claimed", "expired", "refused"):
            self.preconnects.labels(result=result)
        self.streams_misrouted = Counter(
            p + "streams_misrouted",
            "Media Streams for another instance's URL (STREAM_ROUTING=instance) that reached "
            "this one: served, but their pre-connected session is wasted on the other.",
            registry=r,
        )
        self.streams_refused = Counter(
            p + "streams_refused",
            "Media Streams that had not started, refused or closed by reason (client_limit: "
            "refused, too many from its address; evicted: closed to make room for a newer one "
            "at MAX_PENDING_STREAMS).",
            ["reason"],
            registry=r,
        )
        for reason in ("client_limit", "evicted"):
            self.streams_refused.labels(reason=reason)
        self.connections_closed = Counter(
            p + "connections_closed",
            "HTTP connections the server closed on its own, by reason (header_timeout, "
            "body_timeout, body_too_large, evicted: an idle one closed for a new one at "
            "MAX_CONNECTIONS, refused: a new one at MAX_CONNECTIONS with none idle).",
            ["reason"],
            registry=r,
        )
        for reason in CONNECTION_CLOSE_REASONS:
            self.connections_closed.labels(reason=reason)
        for kind in (
            "bad_frame",
            "model_failed",
            "rest_failed",
            "recording_failed",
            "call_record_failed",
            "crashed",
        ):
            self.errors.labels(kind=kind)

    def watch_records(self, source: Callable[[], Any]) -> None:
        """Export the record writer's counters (``telephony.ops.writer.RecordWriter``), read
        at each scrape: nothing is counted on the writing path."""
        self._records.source = source

    def watch_ops(self, source: Callable[[], Any]) -> None:
        """Export the end-of-call webhook's and the live event streams' counters (read from
        ``telephony.server.Service`` at each scrape)."""
        self._ops.source = source

    def calls_interrupted(self, count: int) -> None:
        self.calls.labels(outcome=INTERRUPTED).inc(count)

    # -- live -----------------------------------------------------------------------------

    def call_started(self) -> None:
        self.active_calls.inc()

    def call_finished(self, summary: CallSummary) -> None:
        """A stream ended: no longer active, and everything its summary says is recorded."""
        self.active_calls.dec()
        try:
            self.record(summary)
        except Exception:  # metrics must never break a call's cleanup
            log.exception("metrics.record_failed")

    def stream_rejected(self, summary: CallSummary) -> None:
        """A stream ended without holding a call slot (it never started, or found none)."""
        try:
            self.record(summary)
        except Exception:  # metrics must never break a call's cleanup
            log.exception("metrics.record_failed")

    def call_turned_away(self, *, draining: bool) -> None:
        self.turned_away.labels(reason="draining" if draining else "busy").inc()

    # -- at the end of a call -------------------------------------------------------------

    def record(self, s: CallSummary) -> None:
        """Everything one finished call contributes (its summary is final)."""
        self.calls.labels(outcome=str(s.outcome)).inc()
        if s.first_audio_ms is not None:
            self.greeting_latency.observe(s.first_audio_ms / 1000)
        for turn in s.turns:
            if turn.response_ms is not None:
                self.response_latency.observe(turn.response_ms / 1000)
        if s.model_connect_ms is not None:
            self.model_connect.observe(s.model_connect_ms / 1000)
        for interruption in s.interruptions:
            self.barge_ins.inc()
            self.clear_latency.observe(interruption.clear_latency_ms / 1000)
        for conn in s.model_connections:
            reason = str(conn.get("reason", ""))
            if reason and reason != "initial":
                self.reconnects.labels(reason=reason).inc()
        for call in s.tool_calls:
            name = str(call.get("name", ""))
            label = name if name in self.tool_names else "other"
            outcome = str(call.get("outcome", "ok"))
            self.tool_calls.labels(tool=label, outcome=outcome).inc()
            latency = call.get("latency_ms")
            if outcome != "cancelled" and isinstance(latency, (int, float)):
                self.tool_latency.labels(tool=label).observe(latency / 1000)
        _add(self.filler, s.filler_ms / 1000)
        _add(self.stalls, s.stalls)
        _add(self.stalls_recovered, s.stalls_recovered)
        _add(self.no_answers.labels(kind="silent"), s.silent_answers)
        _add(self.no_answers.labels(kind="rejected"), s.rejected_answers)
        _add(self.errors.labels(kind="model_audio_damaged"), s.model_audio_damaged)
        if s.agent_audio_dropped_ms:
            self.errors.labels(kind="agent_audio_dropped").inc()
        _add(self.frames_in, s.frames_in)
        _add(self.frames_out, s.frames_out)
        _add(self.caller_audio_dropped, s.caller_audio_dropped_ms)
        _add(self.errors.labels(kind="bad_frame"), s.bad_frames)
        _add(self.errors.labels(kind="rest_failed"), s.rest_failures)
        if s.recording_failed:
            self.errors.labels(kind="recording_failed").inc()
        if s.outcome is Outcome.FAILED:
            kind = "model_failed" if s.reason.startswith("model") else "crashed"
            self.errors.labels(kind=kind).inc()

    def exposition(self) -> bytes:
        """The text exposition format (serve with ``CONTENT_TYPE_LATEST``)."""
        return generate_latest(self.registry)


class _RecordsCollector(Collector):
    """The record writer's backlog and counters, read when scraped (zeros without one)."""

    def __init__(self) -> None:
        self.source: Callable[[], Any] | None = None

    def collect(self) -> Iterator[Metric]:
        writer = self.source() if self.source is not None else None
        stats = writer.stats if writer is not None else None
        pending = GaugeMetricFamily(
            PREFIX + "records_pending",
            "Call records not in the database yet: queued, spooled, or waiting in memory.",
            value=writer.pending if writer is not None else 0,
        )
        yield pending
        yield GaugeMetricFamily(
            PREFIX + "records_spool_bytes",
            "Bytes of call records in the local spool, waiting for the database.",
            value=writer.spool_bytes if writer is not None else 0,
        )
        for name, text in (
            ("spooled", "Call records the database refused, written to the local spool."),
            ("replayed", "Spooled (or held) call records written once the database took them."),
            ("dropped", "Call records lost: spool full, or refused for what they hold (keep 0)."),
        ):
            value = getattr(stats, name) if stats is not None else 0
            yield CounterMetricFamily(PREFIX + "records_" + name, text, value=value)


class _OpsCollector(Collector):
    """CALL_WEBHOOK_URL deliveries and the operator page's event streams, read when scraped."""

    def __init__(self) -> None:
        self.source: Callable[[], Any] | None = None

    def collect(self) -> Iterator[Metric]:
        service = self.source() if self.source is not None else None
        webhook = getattr(service, "webhook", None)
        stats = webhook.stats if webhook is not None else None
        yield GaugeMetricFamily(
            PREFIX + "webhook_queue_depth",
            "End-of-call reports queued (on disk), not delivered yet.",
            value=webhook.depth if webhook is not None else 0,
        )
        for name, text in (
            ("delivered", "End-of-call reports the receiver accepted (2xx)."),
            ("failed_attempts", "Delivery attempts that failed and will be retried."),
            ("dropped", "End-of-call reports given up: refused (4xx), or the queue was full."),
        ):
            value = getattr(stats, name) if stats is not None else 0
            yield CounterMetricFamily(PREFIX + "webhook_" + name, text, value=value)
        events = getattr(service, "events", None)
        yield GaugeMetricFamily(
            PREFIX + "event_streams",
            "Live event streams open (GET /calls/events).",
            value=events.clients if events is not None else 0,
        )
        yield CounterMetricFamily(
            PREFIX + "event_streams_dropped",
            "Event streams dropped because their client read too slowly.",
            value=events.dropped if events is not None else 0,
        )


def _add(counter: Counter, amount: float) -> None:
    if amount > 0:
        counter.inc(amount)
