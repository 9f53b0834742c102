"""The state shared by the calls of one process: capacity, pre-connected sessions, outcomes
for ``<Connect action>``, call records, the drain, and the model client.

Capacity: a call slot (``MAX_CONCURRENT_CALLS``) is held only by a Media Stream that has
sent ``start``. Streams not started yet and sessions pre-connected at the webhook are bounded
separately (``MAX_PENDING_STREAMS``, per client ``MAX_PENDING_STREAMS_PER_CLIENT``;
``MAX_PRECONNECTS``) and are not load: a flood of either cannot make the server look full to
real callers.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import os
import socket
import time
from collections import OrderedDict, deque
from typing import Any

from agent.activity import CallerActivity
from agent.events import AgentError, ModelUnavailable
from agent.logs import call_id_var, fields
from agent.resilient import ResiliencePolicy, ResilientSession, open_conversation
from agent.session import AgentSession, LiveAgent
from agent.tools.spec import ToolSpec
from agent.tools.toolbox import HandlerTool
from telephony.call.bridge import Call
from telephony.call.summary import CallSummary
from telephony.ops.events import CallEvents
from telephony.ops.records import record_from_summary
from telephony.ops.spool import Spool, other_spools
from telephony.ops.store import CallStore, Instance
from telephony.ops.webhook import WebhookSender, report_of
from telephony.ops.writer import RecordWriter
from telephony.server.metrics import Metrics
from telephony.settings import Settings
from telephony.twilio.rest import TwilioRest

__all__ = ["Service", "client_key", "start_knowledge", "start_model"]

log = logging.getLogger(__name__)

#: Call SIDs remembered (pre-connected, in progress or ended): a webhook for one of them opens
#: no model session (Twilio sends one webhook per call; a repeat is a replay or a retry).
CALL_SIDS_KEPT = 10_000
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
        #: The tools every call runs: the operator's, and search_knowledge once it is up.
        self.toolbox = settings.persona.toolbox
        self.draining = False
        self.streams = 0  # started Media Streams: each holds a call slot
        # Accepted Media Streams that have not sent ``start`` yet (oldest first): their
        # client_key(), and how many each key has.
        self._pending: OrderedDict[Call, str] = OrderedDict()
        self._pending_by_client: dict[str, int] = {}
        self.calls: dict[str, Call] = {}  # started calls by call SID
        self._preconnects: dict[str, asyncio.Task[AgentSession]] = {}
        self._expiry: dict[str, asyncio.TimerHandle] = {}
        self.call_sids: OrderedDict[str, str] = OrderedDict()  # recent call SIDs -> what we did
        self.outcomes: OrderedDict[str, str] = OrderedDict()
        self.recent: deque[CallSummary] = deque(maxlen=SUMMARIES_KEPT)
        self.started_at = time.time()
        persona = settings.persona
        self.metrics = Metrics(tool_names=(*persona.tools, *persona.toolbox.names))
        self.metrics_port: int | None = None  # METRICS_PORT's listener, once it listens
        self.records: RecordWriter | None = None
        self.metrics.watch_records(lambda: self.records)
        self._snapshots: asyncio.Task[None] | None = None
        #: Live call events for the operator page (``GET /calls/events``).
        self.events = CallEvents(max_clients=settings.event_streams_max)
        #: End-of-call reports (``CALL_WEBHOOK_URL``), once opened.
        self.webhook: WebhookSender | None = None
        self.metrics.watch_ops(lambda: self)
        self._idle = asyncio.Event()
        self._idle.set()

    # -- capacity -------------------------------------------------------------------------

    @property
    def load(self) -> int:
        """Calls in progress (started streams). Pre-connected sessions and streams that have
        not started hold no call slot: neither can be used to make the server look full."""
        return self.streams

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

    @property
    def pending(self) -> int:
        """Accepted Media Streams that have not sent ``start`` yet."""
        return len(self._pending)

    def stream_pending(self, call: Call, client: str) -> str | None:
        """Admit a Media Stream that has not started yet (None), or say why not.

        ``client`` is ``client_key()`` of its address. At ``pending_streams_limit`` the
        stream that has waited longest is given up on to make room: Twilio sends ``start``
        within milliseconds of connecting, so the oldest is the likeliest never to, and a
        flood from many addresses cannot shut real callers out.
        """
        if self._pending_by_client.get(client, 0) >= self.settings.max_pending_streams_per_client:
            return "client_limit"
        if len(self._pending) >= self.settings.pending_streams_limit:
            oldest = next(iter(self._pending))
            self.stream_unpending(oldest)
            oldest.give_up_start("made room for a newer stream (MAX_PENDING_STREAMS)")
            self.metrics.streams_refused.labels(reason="evicted").inc()
        self._pending[call] = client
        self._pending_by_client[client] = self._pending_by_client.get(client, 0) + 1
        self._idle.clear()
        return None

    def stream_unpending(self, call: Call) -> None:
        """The stream has started, or ended before it did (no effect the second time)."""
        client = self._pending.pop(call, None)
        if client is None:
            return
        left = self._pending_by_client.get(client, 1) - 1
        if left > 0:
            self._pending_by_client[client] = left
        else:
            self._pending_by_client.pop(client, None)
        self._check_idle()

    def take_slot(self) -> bool:
        """A started stream takes a call slot (False: every slot is taken)."""
        if self.streams >= self.settings.max_concurrent_calls:
            return False
        self.streams += 1
        self._idle.clear()
        return True

    def stream_closed(self) -> None:
        """A started stream ended: its slot is free."""
        self.streams -= 1
        self._check_idle()

    def _check_idle(self) -> None:
        if self.streams == 0 and not self._pending and not self._preconnects:
            self._idle.set()

    def saw_call_sid(self, call_sid: str, what: str) -> str | None:
        """Remember ``call_sid`` (``what`` happened to it); what was remembered before."""
        before = self.call_sids.get(call_sid)
        self.call_sids[call_sid] = what
        self.call_sids.move_to_end(call_sid)
        while len(self.call_sids) > CALL_SIDS_KEPT:
            self.call_sids.popitem(last=False)
        return before

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
        """End every call in progress (outcome ``shutdown``) and streams not started yet, and
        wait, boundedly, for them."""
        for call in list(self.calls.values()):
            call.stop(reason)
        for call in list(self._pending):
            call.give_up_start(reason)
        try:
            async with asyncio.timeout(STOP_CALLS_TIMEOUT_S):
                await self._idle.wait()
        except TimeoutError:
            log.error("server.calls_not_stopped", extra=fields(active_calls=self.streams))

    # -- call records -----------------------------------------------------------------------

    async def open_records(self) -> None:
        """Open the call-record database, claim this instance's id, take over its spool, and
        start the writer (its heartbeat, the sweep of interrupted calls, the replay). Fatal
        if it fails: a service that silently keeps no records is worse than one that won't
        start."""
        settings = self.settings
        if settings.database_url is None:
            return
        store = await asyncio.to_thread(CallStore, settings.database_url)
        try:
            spool = await asyncio.to_thread(
                Spool,
                settings.records_spool_dir,
                settings.instance_id,
                max_bytes=settings.records_spool_max_bytes,
            )
        except BaseException:
            store.close()
            raise
        me = Instance(
            id=settings.instance_id,
            host=socket.gethostname(),
            pid=os.getpid(),
            started_at=time.time(),
            heartbeat_s=settings.instance_heartbeat_s,
            token=spool.token,
        )
        try:
            self.records = await asyncio.to_thread(
                RecordWriter,
                store,
                spool=spool,
                instance=me,
                on_dropped=self.record_failed,
                on_interrupted=self.metrics.calls_interrupted,
            )
        except BaseException:
            spool.close()
            store.close()
            raise
        others = await asyncio.to_thread(
            other_spools, settings.records_spool_dir, settings.instance_id
        )
        if others:
            log.warning(
                "records.other_spools",
                extra=fields(
                    spools=others,
                    message="spooled records of other INSTANCE_IDs: start with that id to "
                    "replay them",
                ),
            )
        log.info("records.ready", extra=fields(database=store.url, instance_id=me.id))
        if settings.records_snapshot_s > 0:
            self._snapshots = asyncio.get_running_loop().create_task(
                self._refresh_snapshots(settings.records_snapshot_s), name="record-snapshots"
            )

    async def _refresh_snapshots(self, every_s: float) -> None:
        """Every ``every_s``, each call in progress gets its record refreshed (a snapshot:
        what a crash leaves). One summary-to-row per call (~0.1 ms for a 120-turn call,
        measured), one call at a time; the writing is the writer thread's."""
        while True:
            await asyncio.sleep(every_s)
            for call in list(self.calls.values()):
                if not call.outcome_decided.is_set():  # an ending call writes its own
                    self.write_record(call, in_progress=True, refresh=True)
                    await asyncio.sleep(0)  # one call at a time: no burst on the loop

    def write_record(
        self,
        call: Call,
        *,
        in_progress: bool = False,
        refresh: bool = False,
        recording: str | None = None,
    ) -> dict[str, Any] | None:
        """Queue the call's record for the database (returns at once) and return it.
        ``refresh``: a periodic snapshot of a call in progress; ``recording``: the name of
        its ``RECORD_CALLS`` directory."""
        if not call.summary.call_sid:
            return None
        try:
            row = record_from_summary(
                call.summary,
                in_progress=in_progress,
                redact=self.settings.redact_phone_numbers,
            )
        except Exception:  # a record must never break a call
            log.exception("records.build_failed")
            return None
        if recording is not None:
            row["detail"]["recording"] = recording
        if self.records is not None:
            self.records.submit(row, refresh=refresh)
        return row

    def call_started(self, call: Call) -> None:
        self.calls[call.summary.call_sid] = call
        row = self.write_record(call, in_progress=True)
        if row is not None:
            self.events.publish("call.started", _started_event(row))

    def call_ended(self, call: Call, *, recording: str | None = None) -> dict[str, Any] | None:
        """A call's final record: written, and announced on the live event streams."""
        row = self.write_record(call, recording=recording)
        if row is not None:
            self.events.publish("call.ended", _ended_event(row))
        return row

    async def report_call(self, row: dict[str, Any] | None) -> None:
        """Queue the end-of-call report (``CALL_WEBHOOK_URL``): a file write off the loop;
        delivery is the sender's own task."""
        if self.webhook is None or row is None or row.get("outcome") == "rejected":
            return
        page = self.settings.public_url + "/ui" if self.settings.public_url else None
        recorded = bool((row.get("detail") or {}).get("recording"))
        await self.webhook.enqueue(report_of(row, page_url=page, recorded=recorded))

    async def open_webhook(self) -> None:
        """Start delivering end-of-call reports (and what a previous life left queued)."""
        settings = self.settings
        if settings.call_webhook_url is None:
            return
        sender = await asyncio.to_thread(
            WebhookSender,
            settings.call_webhook_url,
            settings.call_webhook_queue_dir / settings.instance_id,
            secret=settings.call_webhook_secret,
            max_reports=settings.call_webhook_queue_max,
        )
        sender.start()
        self.webhook = sender

    def record_failed(self, count: int) -> None:
        """Records lost (called from the writer thread; the counter is thread-safe)."""
        self.metrics.errors.labels(kind="call_record_failed").inc(count)

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

    def preconnect(self, call_sid: str) -> bool:
        """Start opening the model session while Twilio is still setting up the stream.

        Refused (False) for a call SID seen before (pre-connected, in progress or ended: a
        replayed or repeated webhook) and beyond ``preconnect_limit`` sessions: then the
        stream opens its session itself when it starts.
        """
        if self.agent is None:
            return False
        seen = self.saw_call_sid(call_sid, "webhook")
        limit = self.settings.preconnect_limit
        if seen is not None or len(self._preconnects) >= limit:
            self.metrics.preconnects.labels(result="refused").inc()
            log.info(
                "call.preconnect_refused",
                extra=fields(repeated=seen is not None, preconnected=len(self._preconnects)),
            )
            return False
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
            self.settings.preconnect_ttl_s, self._expire, call_sid
        )
        return True

    def _take_preconnect(self, call_sid: str) -> asyncio.Task[AgentSession] | None:
        handle = self._expiry.pop(call_sid, None)
        if handle is not None:
            handle.cancel()
        task = self._preconnects.pop(call_sid, None)
        self._check_idle()
        return task

    def _expire(self, call_sid: str) -> None:
        task = self._take_preconnect(call_sid)
        if task is not None:
            self.metrics.preconnects.labels(result="expired").inc()
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
            self.metrics.preconnects.labels(result="claimed").inc()
            return await task  # bounded by the agent's setup timeout
        return await self.agent.open(call_sid)

    async def aclose(self) -> None:
        if self._snapshots is not None:
            self._snapshots.cancel()
            await asyncio.wait([self._snapshots])  # its end, without re-raising it
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
        self.events.close()
        if self.webhook is not None:
            await self.webhook.aclose()
        if self.records is not None:
            await self.records.aclose(RECORDS_FLUSH_TIMEOUT_S)
        if self.rest is not None:
            await self.rest.aclose()
        await self.toolbox.aclose()
        if self.knowledge is not None:
            self.knowledge.close()
        if self.simulator is not None:
            await self.simulator.aclose()


def _started_event(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "call_sid": row["call_sid"],
        "from": row.get("caller"),
        "to": row.get("callee"),
        "direction": row.get("direction"),
        "started_at": row.get("started_at"),
        "outcome": row.get("outcome"),
    }


def _ended_event(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **_started_event(row),
        "reason": row.get("reason"),
        "ended_at": row.get("ended_at"),
        "duration_s": row.get("duration_s"),
        "turns": row.get("turns"),
    }


def client_key(host: str) -> str:
    """Whom a per-client limit counts ``host`` (an address) against: an IPv6 address by its
    /64 (one subscriber's whole network, as every ISP hands them out), others as they are."""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        return host  # not an address (a test client, a Unix socket): itself
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


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
        from agent.simulator import LiveSimulator, SimBehaviour

        dialogue = settings.model.simulator_dialogue
        simulator = LiveSimulator(
            host="127.0.0.1", port=0, behaviour=SimBehaviour(dialogue=dialogue)
        )
        await simulator.__aenter__()
        service.simulator = simulator
        log.warning(
            "model.simulator",
            extra=fields(
                message=(
                    "NO MODEL CREDENTIALS: using the embedded local Live API simulator. "
                    "It is NOT A REAL MODEL: "
                    + (
                        "it answers by a few fixed rules (what it heard, a document search, "
                        "goodbye). "
                        if dialogue == "converse"
                        else "it echoes the caller's words back. "
                    )
                    + "Set GEMINI_API_KEY (or Vertex AI settings) to talk to Gemini."
                ),
                url=simulator.base_url,
                dialogue=dialogue,
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
    spec = ToolSpec(
        tool.name,
        "Search the knowledge base.",
        {"type": "object", "properties": {"query": {"type": "string"}}},
        # The search keeps its own deadline; this only backs it up.
        timeout_s=settings.search_timeout_s + 1.0,
        source="AGENT_KNOWLEDGE",
        declared=False,  # declared with the built-in tools
    )
    service.toolbox = service.toolbox.with_tools([HandlerTool(spec, tool.answer)])
    log.info(
        "knowledge.ready",
        extra=fields(index=describe(settings, base.embedder), **report.summary()),
    )
