"""The state shared by the calls of one process: capacity, pre-connected sessions, outcomes
for ``<Connect action>``, call records, the drain, and the model client.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict, deque
from typing import Any

from agent.activity import CallerActivity
from agent.events import AgentError, ModelUnavailable
from agent.logs import call_id_var, fields
from agent.resilient import ResiliencePolicy, ResilientSession, open_conversation
from agent.session import AgentSession, LiveAgent
from telephony.call.bridge import Call, ToolHandler
from telephony.call.summary import CallSummary
from telephony.ops.records import record_from_summary
from telephony.ops.store import RecordWriter
from telephony.server.metrics import Metrics
from telephony.settings import Settings
from telephony.twilio.rest import TwilioRest

__all__ = ["Service", "start_knowledge", "start_model"]

log = logging.getLogger(__name__)

#: How long a session opened at the webhook waits for its Media Stream before it is closed.
PRECONNECT_TTL_S = 30.0
#: Outcomes remembered for ``<Connect action>`` requests (they arrive right after the stream).
OUTCOMES_KEPT = 10_000
#: Finished call summaries kept in memory for inspection (tests, benchmarks, debugging).
SUMMARIES_KEPT = 1_000
#: After a drain times out, calls still up are ended; this long is allowed for them to close.
STOP_CALLS_TIMEOUT_S = 10.0
#: On shutdown, call records still queued get this long to reach the database.
RECORDS_FLUSH_TIMEOUT_S = 20.0


class Service:
    """Everything shared by the calls of one process."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.agent: LiveAgent | None = None
        self.rest: TwilioRest | None = None
        self.simulator: Any = None  # agent.simulator.LiveSimulator when embedded
        self.knowledge: Any = None  # agent.knowledge.search.KnowledgeBase (AGENT_KNOWLEDGE)
        #: Tools answered by handlers in this process (search_knowledge), for every call.
        self.tool_handlers: dict[str, ToolHandler] = {}
        self.draining = False
        self.streams = 0  # open Media Stream sockets (accepted)
        self.calls: dict[str, Call] = {}  # started calls by call SID
        self._preconnects: dict[str, asyncio.Task[AgentSession]] = {}
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        self.outcomes: OrderedDict[str, str] = OrderedDict()
        self.recent: deque[CallSummary] = deque(maxlen=SUMMARIES_KEPT)
        self.started_at = time.time()
        self.metrics = Metrics()
        self.records: RecordWriter | None = None
        self._idle = asyncio.Event()
        self._idle.set()

    # -- capacity -------------------------------------------------------------------------

    @property
    def load(self) -> int:
        """Calls in progress plus calls answered at the webhook whose stream hasn't started."""
        return self.streams + len(self._preconnects)

    @property
    def ready(self) -> bool:
        return (
            self.agent is not None
            and not self.draining
            and not self.model_failing
            and self.load < self.settings.max_concurrent_calls
        )

    @property
    def model_failing(self) -> bool:
        """The model's circuit breaker is open: new calls get the apology at once."""
        return self.agent is not None and self.agent.breaker.is_open

    def stream_opened(self) -> None:
        self.streams += 1
        self._idle.clear()

    def stream_closed(self) -> None:
        self.streams -= 1
        if self.streams == 0 and not self._preconnects:
            self._idle.set()

    async def drain(self, timeout_s: float) -> bool:
        """Stop taking calls and wait for the calls in progress to end (True if they did)."""
        self.draining = True
        log.warning("server.draining", extra=fields(active_calls=self.streams, timeout_s=timeout_s))
        try:
            async with asyncio.timeout(timeout_s):
                await self._idle.wait()
        except TimeoutError:
            log.warning("server.drain_timeout", extra=fields(active_calls=self.streams))
            await self.stop_calls("server shutting down: drain timeout")
            return False
        log.info("server.drained")
        return True

    async def stop_calls(self, reason: str) -> None:
        """End every call in progress (outcome ``shutdown``) and wait, boundedly, for them."""
        for call in list(self.calls.values()):
            call.stop(reason)
        try:
            async with asyncio.timeout(STOP_CALLS_TIMEOUT_S):
                await self._idle.wait()
        except TimeoutError:
            log.error("server.calls_not_stopped", extra=fields(active_calls=self.streams))

    # -- call records -----------------------------------------------------------------------

    def write_record(self, call: Call, *, in_progress: bool = False) -> None:
        """Queue the call's record for the database (returns at once)."""
        if self.records is None or not call.summary.call_sid:
            return
        try:
            row = record_from_summary(
                call.summary,
                in_progress=in_progress,
                redact=self.settings.redact_phone_numbers,
            )
        except Exception:  # a record must never break a call
            log.exception("records.build_failed")
            return
        self.records.submit(row)

    def call_started(self, call: Call) -> None:
        self.calls[call.summary.call_sid] = call
        self.write_record(call, in_progress=True)

    def record_failed(self, call_sid: str) -> None:
        self.metrics.errors.labels(kind="call_record_failed").inc()

    # -- outcomes for <Connect action> ----------------------------------------------------

    def outcome_of(self, call_sid: str) -> str | None:
        call = self.calls.get(call_sid)
        if call is not None and call.outcome_decided.is_set():
            return str(call.summary.outcome)
        return self.outcomes.get(call_sid)

    def remember(self, summary: CallSummary) -> None:
        if summary.call_sid:
            self.outcomes[summary.call_sid] = str(summary.outcome)
            while len(self.outcomes) > OUTCOMES_KEPT:
                self.outcomes.popitem(last=False)
        self.recent.append(summary)

    # -- pre-connected sessions -----------------------------------------------------------

    def preconnect(self, call_sid: str) -> None:
        """Start opening the model session while Twilio is still setting up the stream."""
        if self.agent is None or call_sid in self._preconnects:
            return
        agent = self.agent
        token = call_id_var.set(call_sid)
        try:
            task = asyncio.get_running_loop().create_task(
                agent.open(call_sid), name=f"preconnect:{call_sid}"
            )
        finally:
            call_id_var.reset(token)
        self._preconnects[call_sid] = task
        self._idle.clear()
        self._expiry[call_sid] = asyncio.get_running_loop().call_later(
            PRECONNECT_TTL_S, self._expire, call_sid
        )

    def _take_preconnect(self, call_sid: str) -> asyncio.Task[AgentSession] | None:
        handle = self._expiry.pop(call_sid, None)
        if handle is not None:
            handle.cancel()
        task = self._preconnects.pop(call_sid, None)
        if self.streams == 0 and not self._preconnects:
            self._idle.set()
        return task

    def _expire(self, call_sid: str) -> None:
        task = self._take_preconnect(call_sid)
        if task is not None:
            log.warning("call.preconnect_unclaimed", extra=fields(call_sid=call_sid))
            _discard_session(task)

    async def open_conversation(
        self, call_sid: str, activity: CallerActivity, clock_origin: float
    ) -> ResilientSession:
        """A call's conversation with the model: its first session (the pre-connected one if
        the webhook opened it) with the settings' retry policy, kept up across connections."""
        if self.agent is None:
            raise ModelUnavailable("the model client is not ready", retryable=False)
        settings = self.settings
        policy = ResiliencePolicy(
            connect_attempts=settings.reconnect_attempts,
            stall_timeout_s=settings.stall_timeout_s,
            caller_silence_end_ms=settings.persona.vad.silence_duration_ms,
        )
        return await open_conversation(
            self.open_session,
            self.agent,
            call_sid,
            activity=activity,
            policy=policy,
            clock_origin=clock_origin,
        )

    async def open_session(self, call_sid: str) -> AgentSession:
        """The call's model session: the pre-connected one if any, else a new one."""
        if self.agent is None:
            raise AgentError("the model client is not ready", retryable=False)
        task = self._take_preconnect(call_sid)
        if task is not None:
            return await task  # bounded by the agent's setup timeout
        return await self.agent.open(call_sid)

    async def aclose(self) -> None:
        for call_sid in list(self._preconnects):
            task = self._take_preconnect(call_sid)
            if task is not None:
                _discard_session(task)
        if self.calls:
            # Still up at exit (a second signal, or the drain was skipped): end them, and
            # their records say so.
            await self.stop_calls("server stopped")
            for call in list(self.calls.values()):
                self.write_record(call)
        if self.records is not None:
            await self.records.aclose(RECORDS_FLUSH_TIMEOUT_S)
        if self.rest is not None:
            await self.rest.aclose()
        if self.knowledge is not None:
            self.knowledge.close()
        if self.simulator is not None:
            await self.simulator.aclose()


def _discard_session(task: asyncio.Task[AgentSession]) -> None:
    """Cancel a pre-connect, or close the session it already opened."""

    def closed(t: asyncio.Task[AgentSession]) -> None:
        if t.cancelled() or t.exception() is not None:
            return
        # Fire-and-forget is safe here: close() is bounded (5 s) and swallows its errors.
        t.get_loop().create_task(t.result().close())

    if task.done():
        closed(task)
    else:
        task.cancel()
        task.add_done_callback(closed)


async def start_model(service: Service) -> None:
    settings = service.settings
    if settings.model.backend == "simulator":
        from agent.simulator import LiveSimulator

        simulator = LiveSimulator(host="127.0.0.1", port=0)
        await simulator.__aenter__()
        service.simulator = simulator
        log.warning(
            "model.simulator",
            extra=fields(
                message=(
                    "NO MODEL CREDENTIALS: using the embedded local Live API simulator. "
                    "It is NOT A REAL MODEL: it echoes the caller's words back. Set "
                    "GEMINI_API_KEY (or Vertex AI settings) to talk to Gemini."
                ),
                url=simulator.base_url,
            ),
        )
        service.agent = LiveAgent(
            settings.model,
            settings.persona,
            base_url=simulator.base_url,
            ssl_context=simulator.client_ssl_context(),
            api_key="simulator",
        )
    else:
        service.agent = LiveAgent(settings.model, settings.persona)
        log.info(
            "model.configured",
            extra=fields(backend=settings.model.backend, model=settings.model.model),
        )
    breaker = service.agent.breaker
    service.metrics.model_circuit_open.set_function(lambda: 1.0 if breaker.is_open else 0.0)
    breaker.on_refused = service.metrics.model_connections_refused.inc


async def start_knowledge(service: Service) -> None:
    """AGENT_KNOWLEDGE: bring the index up to date and offer search_knowledge to every call
    (after ``start_model``: with the simulator, its embedding endpoint may be the embedder)."""
    settings = service.settings.knowledge
    if settings is None:
        return
    from agent.knowledge.search import describe
    from agent.knowledge.service import open_knowledge
    from agent.knowledge.tool import KnowledgeTool

    simulator = service.simulator
    base, report = await open_knowledge(
        settings,
        service.settings.model,
        base_url=simulator.base_url if simulator is not None else None,
        ssl_context=simulator.client_ssl_context() if simulator is not None else None,
        api_key="simulator" if simulator is not None else None,
    )
    service.knowledge = base
    tool = KnowledgeTool(base)
    service.tool_handlers[tool.name] = tool.answer
    log.info(
        "knowledge.ready",
        extra=fields(index=describe(settings, base.embedder), **report.summary()),
    )
