"""The asyncio load generator: starts calls on a schedule, bounds everything, collects records.

One event loop drives every call (the caller core is sans-I/O; each call is two small tasks
moving frames, see :func:`telephony.caller.drive_call`). How calls start (:class:`LoadPlan`):

- closed loop (no ``rate``): keep ``concurrency`` calls going; the first ``concurrency``
  start evenly over ``ramp_up_s``, then a new call starts whenever one ends;
- open loop (``rate``): calls arrive at ``rate`` per second (ramping up linearly from 0 over
  ``ramp_up_s``), never more than ``concurrency`` at once (an arrival waits for a free slot).

New calls stop after ``calls`` calls or ``duration_s`` seconds, whichever comes first. Every
call is bounded (webhook and connect timeouts, ``max_call_s``, the close handshake), and so is
the run: at its deadline (:meth:`LoadPlan.deadline_s_for`) the calls still going are cut off
and recorded as ``run_deadline`` failures, so the load test ends even if the server hangs.
"""

from __future__ import annotations

import asyncio
import logging
import math
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import httpx

from agent.logs import fields
from telephony.caller import CallFailed, SimulatedCall, drive_call, open_stream
from telephony.caller.answers import RecordUnavailable, agent_words, fetch_record, missed
from telephony.loadtest.metrics import (
    CallRecord,
    Summary,
    failed_record,
    percentile,
    record_call,
    summarize,
)
from telephony.loadtest.scenario import Scenario
from telephony.loadtest.target import DialFailed, Target, dial

__all__ = ["AnswerCheck", "LoadPlan", "Progress", "RunResult", "run_load"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadPlan:
    """When calls start and when the run stops (see the module docstring)."""

    concurrency: int = 10
    calls: int | None = 10
    duration_s: float | None = None
    rate: float | None = None
    ramp_up_s: float = 0.0
    #: Overall bound of the run; None: computed by :meth:`deadline_s_for`.
    deadline_s: float | None = None
    #: Added to the computed deadline (event-loop jitter, result bookkeeping).
    slack_s: float = 10.0

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ValueError("concurrency must be >= 1")
        if self.calls is None and self.duration_s is None:
            raise ValueError("give calls or duration_s (or both)")
        if self.calls is not None and self.calls < 1:
            raise ValueError("calls must be >= 1")
        if self.duration_s is not None and self.duration_s <= 0:
            raise ValueError("duration_s must be > 0")
        if self.rate is not None and self.rate <= 0:
            raise ValueError("rate must be > 0")
        if self.ramp_up_s < 0 or self.slack_s < 0:
            raise ValueError("ramp_up_s and slack_s must be >= 0")

    def start_s(self, k: int) -> float:
        """Earliest start of call ``k`` (0-based) after the run starts (a closed loop also
        waits for a free slot)."""
        if self.rate is None:
            if k >= self.concurrency or self.ramp_up_s == 0:
                return self.ramp_up_s if k >= self.concurrency else 0.0
            return k * self.ramp_up_s / self.concurrency
        r, ramp = self.rate, self.ramp_up_s
        # Arrivals so far N(t) = r t² / (2 ramp) while ramping, then r ramp / 2 + r (t - ramp):
        # call k arrives when N(t) = k.
        if ramp > 0 and k <= r * ramp / 2:
            return math.sqrt(2 * k * ramp / r)
        return k / r + ramp / 2

    def deadline_s_for(self, call_bound_s: float) -> float:
        """The run's bound: the last start + every wave of calls at most ``call_bound_s``
        long + slack. ``call_bound_s`` is the longest one call can take."""
        if self.deadline_s is not None:
            return self.deadline_s
        bounds: list[float] = []
        if self.duration_s is not None:
            bounds.append(self.duration_s + call_bound_s)
        if self.calls is not None:
            waves = math.ceil(self.calls / self.concurrency)
            bounds.append(self.start_s(self.calls - 1) + waves * call_bound_s)
        return min(bounds) + self.slack_s


@dataclass(frozen=True, slots=True)
class Progress:
    """A snapshot while the run goes."""

    elapsed_s: float
    active: int
    done: int
    failed: int
    response_p50_ms: float | None
    response_p95_ms: float | None

    def line(self) -> str:
        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.0f}"

        return (
            f"[{self.elapsed_s:6.1f} s] active {self.active:3d}  done {self.done:4d}  "
            f"failed {self.failed:3d}  response p50 {ms(self.response_p50_ms)} ms "
            f"p95 {ms(self.response_p95_ms)} ms"
        )


@dataclass(frozen=True, slots=True)
class AnswerCheck:
    """Where to read what the agent said on each call: the server's operator API."""

    api_url: str
    token: str = field(repr=False)
    #: How long after a call ends its record may take to be final.
    timeout_s: float = 10.0


@dataclass
class RunResult:
    records: list[CallRecord]
    summary: Summary
    wall_s: float
    deadline_hit: bool


@dataclass
class _Run:
    target: Target
    scenario: Scenario
    plan: LoadPlan
    client: httpx.AsyncClient
    connect_timeout_s: float
    close_timeout_s: float
    on_record: Callable[[CallRecord], None] | None
    answers: AnswerCheck | None = None
    t0: float = 0.0
    active: int = 0
    records: list[CallRecord] = field(default_factory=list)
    response_ms: list[float] = field(default_factory=list)

    def progress(self, now: float) -> Progress:
        return Progress(
            elapsed_s=now - self.t0,
            active=self.active,
            done=len(self.records),
            failed=sum(not r.ok for r in self.records),
            response_p50_ms=percentile(self.response_ms, 50),
            response_p95_ms=percentile(self.response_ms, 95),
        )

    def _add(self, record: CallRecord) -> None:
        self.records.append(record)
        self.response_ms += [ms for _, ms in record.response_ms]
        if self.on_record is not None:
            self.on_record(record)

    async def call(self, k: int, slots: asyncio.Semaphore) -> None:
        """One call, from the webhook to its record. Never raises but CancelledError."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        script = self.scenario.script(k)
        call_sid = "CA" + uuid.uuid4().hex
        call: SimulatedCall | None = None
        connect_ms: float | None = None
        record: CallRecord | None = None
        cancelled = False

        def failed(kind: str, detail: str) -> CallRecord:
            return failed_record(
                k, script.name, call_sid, started - self.t0, loop.time() - started, kind, detail
            )

        self.active += 1
        try:
            plan = await dial(
                self.client,
                self.target,
                call_sid,
                self.scenario.account_sid,
                script.recording.custom_parameters,
            )
            call = self.scenario.new_call(
                k, call_sid=call_sid, custom_parameters=plan.custom_parameters
            )
            ws = await open_stream(
                plan.connect_url,
                headers=plan.headers,
                connect_timeout_s=self.connect_timeout_s,
                close_timeout_s=self.close_timeout_s,
            )
            connect_ms = (loop.time() - started) * 1000
            await drive_call(ws, call, close_timeout_s=self.close_timeout_s)
        except (DialFailed, CallFailed) as exc:
            record = failed(exc.kind, str(exc))
        except asyncio.CancelledError:
            cancelled = True
            if call is not None and call.started:
                call.abort(loop.time(), "run deadline")
            raise
        except Exception as exc:
            # The per-call boundary: a bug in one call must not end the run for the others.
            log.exception("loadtest.call_crashed")
            if call is not None and call.started:
                call.abort(loop.time(), f"error: {exc!r}")  # recorded from its result below
            else:
                record = failed("error", repr(exc))
        finally:
            self.active -= 1
            slots.release()
            if record is None and call is not None and call.started:
                opened = call.opened_at if call.opened_at is not None else started
                record = record_call(
                    k,
                    script.name,
                    call.result(),
                    started_s=started - self.t0,
                    stream_started_s=opened - self.t0,
                    duration_s=loop.time() - started,
                    connect_ms=connect_ms,
                    expect_greeting=self.scenario.expect_greeting,
                )
            if record is None:
                record = failed("run_deadline", "the run's deadline passed before it connected")
            if script.expect:
                record = replace(record, expected=script.expect, missed=script.expect)
            if cancelled or not (record.connected and script.expect and self.answers):
                self._add(record)
                record = None
        if record is not None:  # the call ended normally and its answers are to be checked
            try:
                record = await self.check_answers(record)
            finally:
                self._add(record)

    async def check_answers(self, record: CallRecord) -> CallRecord:
        """``record`` with what the agent said (from the server's record) and what it missed."""
        answers = self.answers
        assert answers is not None
        try:
            server = await fetch_record(
                self.client,
                answers.api_url,
                record.call_sid,
                answers.token,
                timeout_s=answers.timeout_s,
            )
        except RecordUnavailable as exc:
            return replace(record, answer_error=str(exc))
        spoken = agent_words(server)
        return replace(record, answer=spoken, missed=tuple(missed(record.expected, spoken)))

    async def schedule(self, tg: asyncio.TaskGroup) -> None:
        loop = asyncio.get_running_loop()
        plan = self.plan
        stop_at = self.t0 + plan.duration_s if plan.duration_s is not None else math.inf
        slots = asyncio.Semaphore(plan.concurrency)
        k = 0
        while plan.calls is None or k < plan.calls:
            at = self.t0 + plan.start_s(k)
            if at >= stop_at:
                break
            await asyncio.sleep(max(0.0, at - loop.time()))
            await slots.acquire()
            if loop.time() >= stop_at:
                slots.release()
                break
            tg.create_task(self.call(k, slots), name=f"call-{k}")
            k += 1


async def run_load(
    target: Target,
    scenario: Scenario,
    plan: LoadPlan,
    *,
    on_progress: Callable[[Progress], None] | None = None,
    on_record: Callable[[CallRecord], None] | None = None,
    progress_interval_s: float = 1.0,
    connect_timeout_s: float = 10.0,
    close_timeout_s: float = 5.0,
    answers: AnswerCheck | None = None,
) -> RunResult:
    """Run the load test; return every call's record and the summary.

    ``on_progress`` gets a :class:`Progress` every ``progress_interval_s`` and once at the end;
    ``on_record`` gets each call's record as it finishes (e.g. to write it at once).
    With ``answers``, each call whose recording expects phrases is checked against what the
    agent said, read from the server's record once the call has ended.
    """
    loop = asyncio.get_running_loop()
    # The longest one call can take: webhook + handshake + the call + its close handshake
    # (drive_call's own bound is max_duration + close + 5 s).
    call_bound = target.timeout_s + connect_timeout_s + scenario.max_call_s + close_timeout_s + 5
    if answers is not None:
        call_bound += answers.timeout_s
    deadline = plan.deadline_s_for(call_bound)
    limits = httpx.Limits(
        max_connections=plan.concurrency, max_keepalive_connections=plan.concurrency
    )
    deadline_hit = False
    async with httpx.AsyncClient(limits=limits) as client:
        run = _Run(
            target, scenario, plan, client, connect_timeout_s, close_timeout_s, on_record, answers
        )
        run.t0 = loop.time()

        async def report() -> None:
            while True:
                await asyncio.sleep(progress_interval_s)
                if on_progress is not None:
                    on_progress(run.progress(loop.time()))

        reporter = asyncio.create_task(report(), name="progress")
        try:
            async with asyncio.timeout_at(run.t0 + deadline):
                async with asyncio.TaskGroup() as tg:
                    tg.create_task(run.schedule(tg), name="schedule")
        except TimeoutError:
            deadline_hit = True
            log.warning("loadtest.deadline", extra=fields(deadline_s=deadline))
        finally:
            reporter.cancel()
            await asyncio.wait([reporter])
        wall = loop.time() - run.t0
        if on_progress is not None:
            on_progress(run.progress(loop.time()))
    records = sorted(run.records, key=lambda r: r.index)
    return RunResult(records, summarize(records, wall), wall, deadline_hit)
