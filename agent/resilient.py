"""One call's conversation with the model, across as many Live connections as it takes.

A Live API connection lasts ~10 minutes (``goAway`` ~1 minute before the end), and in practice
connections also fail (1011/1007/1008), stall silently, or never finish setup. A phone call
must survive all of that. ``ResilientSession`` has the same small interface as one
``AgentSession`` (audio and text in, ``AgentEvent``s out) and, behind it:

- keeps the latest resumption handle (resumption is always on);
- on ``goAway``, moves to a new connection resumed with that handle before the deadline — a
  timer drives it, not only incoming messages, because the server may go quiet after goAway —
  at a pause in the conversation when there is one;
- on an unexpected close, reconnects with the handle after a short backoff; if resumption is
  refused, opens a fresh session primed with the transcript so far; if the model can't be
  reached at all, ``events()`` raises a non-retryable ``SessionClosed`` (the call then takes its
  failure path);
- while there is no connection to send to, keeps what the caller says (and texts and tool
  responses) in a bounded buffer and delivers it, in order, to the next connection;
- answers a tool call repeated after a resumption from its first answer, never twice;
- watches for stalls: when the caller has finished speaking and the model says nothing for
  ``stall_timeout_s``, it nudges the model once; if it stays silent, it moves to a new
  connection. Every stall is counted.

It emits one event of its own, ``Reconnected``, after each switch.
"""

from __future__ import annotations

import asyncio
import logging
import random
import re
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from google.genai import types

from agent.activity import CallerActivity
from agent.events import (
    AgentError,
    AgentEvent,
    AudioOut,
    ConversationEvent,
    GoAway,
    InputTranscript,
    InteractionStatus,
    Interrupted,
    ModelUnavailable,
    OutputTranscript,
    Reconnected,
    ReconnectReason,
    ResumptionUpdate,
    SessionClosed,
    ToolCall,
    TurnComplete,
)
from agent.g711 import audioop
from agent.live_wire import INPUT_RATE
from agent.logs import fields
from agent.prompts import NUDGE
from agent.session import HEALTHY_AFTER_S, AgentSession, LiveAgent

__all__ = [
    "ResiliencePolicy",
    "ResilienceStats",
    "ResilientSession",
    "SessionOpener",
    "open_conversation",
]

log = logging.getLogger(__name__)

Reason = ReconnectReason
#: Opens (or adopts a pre-connected) first session of a call, by call id.
SessionOpener = Callable[[str], Awaitable[AgentSession]]

#: Caller audio kept while no connection can take it (20 ms frames: 15 s).
BUFFER_FRAMES = 750
#: Transcript kept for priming a fresh session.
HISTORY_CHARS = 6000
QUOTA_OR_AUTH = re.compile(
    r"quota|resource[_ ]exhausted|permission|api key|unauthori[sz]ed|billing", re.I
)
NUDGE_GRACE_S = 2.0
#: A model reporting ``interactionStatus: IN_PROGRESS`` (background reasoning) is given this
#: long without an answer before the watchdog calls it stalled.
IN_PROGRESS_PATIENCE_S = 15.0
#: Model audio quieter than this RMS (-50 dBFS) is no answer (near-silent turns are seen on
#: real lines; the caller hears dead air).
SILENT_RMS = 104


@dataclass(frozen=True)
class ResiliencePolicy:
    """Retries, reconnects and watchdogs of one call's conversation (from the settings)."""

    #: Attempts to open the call's first session (retryable errors only).
    open_attempts: int = 3
    open_backoff_s: float = 0.5
    #: Attempts to reach the model again after a connection is lost.
    connect_attempts: int = 4
    backoff_s: float = 0.25
    max_backoff_s: float = 4.0
    #: A goAway rotation happens at a pause, or at the latest this long before the deadline.
    go_away_margin_s: float = 5.0
    stall_timeout_s: float = 4.0  # 0 disables the watchdog
    caller_silence_end_ms: int = 500
    #: Connections in a row that die within their first seconds (``HEALTHY_AFTER_S``) before
    #: the call gives up: a service accepting connections and dropping them.
    max_short_lived: int = 4
    #: Reconnects after errors and stalls per call, at most (goAway rotations are expected
    #: and not counted).
    max_reconnects: int = 30

    def backoff(self, attempt: int, base_s: float) -> float:
        """Seconds to wait before retry number ``attempt`` (1 = the first retry):
        exponential from ``base_s``, capped, with full jitter, so that calls failing together
        do not retry in lockstep."""
        return random.uniform(0, min(self.max_backoff_s, base_s * 2 ** (attempt - 1)))


@dataclass
class ResilienceStats:
    reconnects: int = 0
    stalls: int = 0
    stalls_recovered: int = 0
    #: Model turns that answered the caller with near-silent audio / an empty rejected turn
    #: (recovered like a stall: nudge, then a new connection).
    silent_answers: int = 0
    rejected_answers: int = 0
    connections: list[dict[str, Any]] = field(default_factory=list)
    caller_audio_ms: float = 0.0
    caller_audio_dropped_ms: float = 0.0
    max_buffered_ms: float = 0.0


class ResilientSession:
    """The model side of one call, surviving connection loss. See the module docstring."""

    def __init__(
        self,
        agent: LiveAgent,
        call_id: str,
        first: AgentSession,
        policy: ResiliencePolicy | None = None,
        *,
        activity: CallerActivity | None = None,
        clock_origin: float | None = None,
    ) -> None:
        self._agent = agent
        self.call_id = call_id
        self.policy = policy or ResiliencePolicy()
        self.stats = ResilienceStats()
        self._t0 = clock_origin if clock_origin is not None else time.monotonic()
        self._conn: AgentSession | None = first
        self._handle: str | None = None
        self._closing = False
        # Everything sent while no connection can take it, in order: ("audio", bytes),
        # ("text", str) or ("tool", (id, name, response, scheduling)).
        self._pending: deque[tuple[str, Any]] = deque()
        self._pending_audio = 0
        self._answered: dict[
            str, tuple[str, dict[str, Any], types.FunctionResponseScheduling | None]
        ] = {}
        self._history: deque[str] = deque()
        self._history_chars = 0
        self._caller_text: list[str] = []
        self._agent_text: list[str] = []
        # The call's caller activity (it feeds it); one of our own when used on its own.
        self._own_activity = activity is None
        self.activity = activity or CallerActivity(
            time.monotonic(), end_ms=self.policy.caller_silence_end_ms
        )
        self._seen_end: float | None = None  # the caller's last utterance end looked at
        self._answered_at = -float("inf")  # the model's last output
        self._in_progress = False  # the model reported interactionStatus IN_PROGRESS
        self._waiting_since: float | None = None  # caller done, no model output yet
        self._nudged = False
        self._stalled = False
        self._model_busy_until = 0.0
        self._turn_audible = False  # the model's current turn has had audible audio
        self._turn_had_audio = False
        self._short_lived = 0  # connections in a row that died within their first seconds
        self._failed_reconnects = 0  # reconnects after errors and stalls
        self._switch_lock = asyncio.Lock()
        self._wake = asyncio.Event()  # a switch happened: the events loop reads the new one
        self._last_switch: Reconnected | None = None  # to be yielded by events()
        self._fatal: SessionClosed | None = None  # a background switch found no connection
        self._tasks: set[asyncio.Task[None]] = set()
        self._closers: set[asyncio.Task[None]] = set()
        self._record(first, "initial", resumed=False, primed=False)
        if self.policy.stall_timeout_s > 0:
            self._spawn(self._watchdog(), "watchdog")

    # -- sending --------------------------------------------------------------------------

    async def send_audio(self, pcm16k: bytes) -> None:
        """Caller audio (16 kHz PCM16). Never raises for a lost connection: it is buffered."""
        self._count_audio(pcm16k)
        await self._deliver(("audio", pcm16k))

    def send_audio_nowait(self, pcm16k: bytes) -> bool:
        """``send_audio`` when it needs no waiting (sent at once, or buffered for the next
        connection): True. False, with nothing done: use ``send_audio``."""
        conn = self._conn
        item = ("audio", pcm16k)
        if conn is None or self._pending or self._switch_lock.locked():
            self._count_audio(pcm16k)
            self._buffer(item)
            return True
        try:
            if not conn.send_audio_nowait(pcm16k):
                return False
        except SessionClosed:
            self._count_audio(pcm16k)
            self._buffer(item)  # as in _deliver: the receive side sees the loss too
            return True
        self._count_audio(pcm16k)
        return True

    def _count_audio(self, pcm16k: bytes) -> None:
        self.stats.caller_audio_ms += len(pcm16k) / (INPUT_RATE * 2) * 1000
        if self._own_activity:
            self.activity.push(pcm16k, time.monotonic())

    async def send_text(self, text: str) -> None:
        await self._deliver(("text", text))

    async def send_tool_response(
        self,
        call_id: str,
        name: str,
        response: dict[str, Any],
        scheduling: types.FunctionResponseScheduling | None = None,
    ) -> None:
        self._answered[call_id] = (name, response, scheduling)
        await self._deliver(("tool", (call_id, name, response, scheduling)))

    async def _deliver(self, item: tuple[str, Any]) -> None:
        conn = self._conn
        if conn is None or self._pending or self._switch_lock.locked():
            self._buffer(item)
            return
        try:
            await self._send(conn, item)
        except SessionClosed:
            # The receive side sees the same loss and reconnects; keep this for the next one.
            self._buffer(item)

    @staticmethod
    async def _send(conn: AgentSession, item: tuple[str, Any]) -> None:
        kind, value = item
        if kind == "audio":
            await conn.send_audio(value)
        elif kind == "text":
            await conn.send_text(value)
        else:
            await conn.send_tool_response(*value)

    def _buffer(self, item: tuple[str, Any]) -> None:
        self._pending.append(item)
        if item[0] != "audio":
            return
        self._pending_audio += 1
        buffered_ms = self._pending_audio * 20.0
        self.stats.max_buffered_ms = max(self.stats.max_buffered_ms, buffered_ms)
        while self._pending_audio > BUFFER_FRAMES:
            # Over the bound: the oldest audio goes (counted), never texts or tool answers.
            for i, (kind, value) in enumerate(self._pending):
                if kind == "audio":
                    del self._pending[i]
                    self._pending_audio -= 1
                    self.stats.caller_audio_dropped_ms += len(value) / (INPUT_RATE * 2) * 1000
                    break

    async def _flush(self, conn: AgentSession) -> None:
        while self._pending:
            item = self._pending[0]
            await self._send(conn, item)  # SessionClosed propagates: the switch failed
            self._pending.popleft()
            if item[0] == "audio":
                self._pending_audio -= 1

    # -- receiving ------------------------------------------------------------------------

    async def events(self) -> AsyncIterator[ConversationEvent]:
        """Every event of the conversation, across connections, until ``close()``.

        Raises a non-retryable ``SessionClosed`` once no connection can be had.
        """
        while not self._closing:
            if self._last_switch is not None:
                switched, self._last_switch = self._last_switch, None
                yield switched
            if self._fatal is not None:
                raise self._fatal
            conn = self._conn
            if conn is None:  # a switch is in progress in another task
                self._wake.clear()
                await self._wake.wait()
                continue
            try:
                async for event in conn.events():
                    if conn is not self._conn:
                        break  # switched away: the rest of this connection is not ours
                    if isinstance(event, ToolCall):
                        fresh = await self._dedupe_tool_call(event)
                        if fresh is None:
                            continue
                        event = fresh
                    self._observe(event)
                    yield event
            except SessionClosed as exc:
                if self._closing or conn is not self._conn:
                    continue
                log.warning(
                    "model.connection_lost",
                    extra=fields(error=str(exc), code=exc.code, age_s=round(conn.age_s, 3)),
                )
                self._count_loss(conn)
                await self._switch("error", broken=conn)
                continue
            if conn is self._conn and not self._closing:
                # events() ended without an error: the connection was closed under us.
                self._count_loss(conn)
                await self._switch("error", broken=conn)

    def _count_loss(self, conn: AgentSession) -> None:
        """A lost connection: one that died within its first seconds counts as failed."""
        if conn.age_s < HEALTHY_AFTER_S:
            self._short_lived += 1
        else:
            self._short_lived = 0

    async def _dedupe_tool_call(self, event: ToolCall) -> ToolCall | None:
        """After a resumption the model may ask again for a call it already got an answer to."""
        fresh = []
        for call in event.calls:
            answered = self._answered.get(call.id)
            if answered is None:
                fresh.append(call)
            else:
                log.info("model.tool_call_repeated", extra=fields(id=call.id))
                await self._deliver(("tool", (call.id, *answered)))
        return ToolCall(tuple(fresh)) if fresh else None

    def _observe(self, event: AgentEvent) -> None:
        now = time.monotonic()
        if isinstance(event, ResumptionUpdate):
            if event.resumable and event.handle:
                self._handle = event.handle
            return
        if isinstance(event, GoAway):
            self._spawn(self._rotate_before(now + event.time_left_s), "go_away")
            return
        if isinstance(event, InteractionStatus):
            # A model reasoning in the background says so: it is alive, not stalled.
            self._in_progress = event.in_progress
            if event.in_progress and self._waiting_since is not None:
                self._waiting_since = now
            return
        if isinstance(event, AudioOut):
            self._model_busy_until = now + 0.5
            self._turn_had_audio = True
            # Near-silent audio is not an answer (the caller hears dead air): once a turn is
            # known to be audible, the rest of it is not measured.
            if not self._turn_audible and audioop.rms(event.pcm, 2) >= SILENT_RMS:
                self._turn_audible = True
                self._model_answered()
        elif isinstance(event, OutputTranscript | ToolCall):
            self._model_busy_until = now + 0.5
            if isinstance(event, ToolCall):
                self._model_answered()
        if isinstance(event, InputTranscript):
            self._caller_text.append(event.text)
        elif isinstance(event, OutputTranscript):
            self._agent_text.append(event.text)
        elif isinstance(event, TurnComplete):
            had_audio = self._turn_had_audio
            silent = had_audio and not self._turn_audible
            rejected = event.reason == "RESPONSE_REJECTED" and not self._turn_audible
            self._turn_audible = self._turn_had_audio = False
            if (silent or rejected) and self._caller_waiting():
                self._no_answer("silent" if silent else "rejected")
            elif self._in_progress and not had_audio and self._caller_waiting():
                pass  # an empty turn end while the model still works is not an answer
            else:
                self._model_answered()
            self._remember_turn()
        elif isinstance(event, Interrupted):
            self._turn_audible = self._turn_had_audio = False
            self._model_answered()
            self._remember_turn()

    def _no_answer(self, kind: str) -> None:
        """The model ended its turn without answering the waiting caller: recover as from a
        stall, at once (nudge; if it already was nudged, a new connection)."""
        if kind == "silent":
            self.stats.silent_answers += 1
        else:
            self.stats.rejected_answers += 1
        log.warning("model.no_answer", extra=fields(kind=kind, nudged=self._nudged))
        self._spawn(self._stalled_now(), "no_answer")

    def _model_answered(self) -> None:
        self._answered_at = time.monotonic()
        self._waiting_since = None
        self._nudged = False
        if self._stalled:
            self._stalled = False
            self.stats.stalls_recovered += 1

    def _remember_turn(self) -> None:
        for who, parts in (("Caller", self._caller_text), ("You", self._agent_text)):
            text = "".join(parts).strip()
            parts.clear()
            if text:
                line = f"{who}: {text}"
                self._history.append(line)
                self._history_chars += len(line) + 1
        while self._history_chars > HISTORY_CHARS and self._history:
            self._history_chars -= len(self._history.popleft()) + 1

    def transcript(self) -> str:
        """The conversation so far, as remembered for priming (bounded)."""
        pending = []
        for who, parts in (("Caller", self._caller_text), ("You", self._agent_text)):
            text = "".join(parts).strip()
            if text:
                pending.append(f"{who}: {text}")
        return "\n".join([*self._history, *pending])

    # -- the caller (read from the call's activity) ---------------------------------------

    def _caller_waiting(self) -> bool:
        """Has the caller finished an utterance the model has not answered yet?"""
        decided = self.activity.end_decided_at
        if decided is not None and decided != self._seen_end:
            self._seen_end = decided
            if decided > self._answered_at:
                # A new utterance end: the watch starts from it (and a nudge is due again).
                self._waiting_since = decided
                self._nudged = False
        return self._waiting_since is not None

    @property
    def model_busy(self) -> bool:
        return time.monotonic() < self._model_busy_until

    # -- switching connections ------------------------------------------------------------

    def _quiet(self) -> bool:
        """A pause in the conversation: nobody speaks and nobody waits for an answer."""
        return not self.activity.speaking and not self.model_busy and not self._caller_waiting()

    async def _rotate_before(self, deadline: float) -> None:
        """goAway: make before break. At a pause, set up the replacement (resumed with the
        latest handle) while the old connection keeps serving; if the conversation has not
        moved on meanwhile (no new handle, still a pause), switch to it at once, with no gap
        at all. If it has moved on, the replacement is stale: discard it and try again at the
        next pause. At the latest ``go_away_margin_s`` before the deadline, switch anyway
        (break before make: caller audio waits in the buffer during the setup)."""
        latest = deadline - self.policy.go_away_margin_s
        old = self._conn
        while time.monotonic() < latest and not self._closing:
            if self._conn is not old:
                return  # already replaced (e.g. it broke first)
            if (
                self._quiet()
                and self._handle is not None
                and await self._switch_to_standby(old, latest)
            ):
                return
            await asyncio.sleep(0.1)
        if self._conn is old and not self._closing:
            try:
                await self._switch("go_away", broken=old)
            except SessionClosed as exc:
                self._fatal = exc
                self._wake.set()

    async def _switch_to_standby(self, old: AgentSession | None, latest: float) -> bool:
        """One make-before-break attempt (see ``_rotate_before``); True if it switched."""
        handle = self._handle
        began = time.monotonic()
        try:
            async with asyncio.timeout(max(0.1, latest - began)):
                standby = await self._agent.open(self.call_id, handle=handle, reconnect=True)
        except (ModelUnavailable, TimeoutError) as exc:
            log.info("model.standby_failed", extra=fields(error=str(exc)))
            return False
        async with self._switch_lock:
            moved_on = (
                self._conn is not old
                or self._handle != handle
                or not self._quiet()
                or self.activity.last_speech_at > began
                or self._pending
            )
            if moved_on:
                self._close_later(standby)
                log.info("model.standby_stale", extra=fields(setup_ms=_ms_since(began)))
                return False
            self._conn = standby
            if old is not None:
                self._close_later(old)
            self._switched(standby, "go_away", resumed=True, primed=False, pause_ms=0.0)
            return True

    async def _switch(self, reason: Reason, broken: AgentSession | None) -> None:
        """Move to a new connection (``events()`` then yields ``Reconnected``).

        Raises a non-retryable ``SessionClosed`` when no connection can be had.
        """
        async with self._switch_lock:
            old = self._conn
            if broken is not None and old is not broken:
                return  # someone else already switched away from it
            began = time.monotonic()
            self._conn = None
            if old is not None:
                self._close_later(old)
            if reason in ("error", "stall"):
                await self._spend_budget(reason)
            if self._caller_waiting():
                # The caller finished a turn the old connection never answered; the new one
                # may not know it is expected to speak. Queued after what the caller said.
                self._pending.append(("text", NUDGE))
            while True:
                new, resumed, primed = await self._open_next(reason)
                try:
                    await self._flush(new)
                    break
                except SessionClosed:
                    # The new connection broke while we caught it up: it died young; try
                    # again within the budget (backing off), from scratch.
                    self._close_later(new)
                    self._short_lived += 1
                    await self._spend_budget("error")
            self._conn = new
            self._switched(new, reason, resumed=resumed, primed=primed, pause_ms=_ms_since(began))

    def _switched(
        self, new: AgentSession, reason: Reason, *, resumed: bool, primed: bool, pause_ms: float
    ) -> None:
        """The conversation is on ``new`` now: count it, tell ``events()``, log it."""
        self.stats.reconnects += 1
        self._record(new, reason, resumed=resumed, primed=primed)
        self._last_switch = Reconnected(reason, resumed, primed, pause_ms)
        self._wake.set()
        log.warning(
            "model.reconnected",
            extra=fields(
                reason=reason,
                resumed=resumed,
                primed=primed,
                pause_ms=pause_ms,
                max_buffered_ms=round(self.stats.max_buffered_ms),
            ),
        )

    async def _spend_budget(self, reason: Reason) -> None:
        """Bounded reconnects: back off after connections that died young, and give up (a
        non-retryable ``SessionClosed``: the call apologises) when the budget is spent."""
        policy = self.policy
        self._failed_reconnects += 1
        if self._short_lived > policy.max_short_lived:
            raise SessionClosed(
                f"the model dropped {self._short_lived} connections in a row right after setup",
                retryable=False,
                call_id=self.call_id,
            )
        if self._failed_reconnects > policy.max_reconnects:
            raise SessionClosed(
                f"{policy.max_reconnects} reconnects in one call: giving up",
                retryable=False,
                call_id=self.call_id,
            )
        if self._short_lived:
            # Each new connection "succeeded" and then died at once: without this, no
            # backoff would ever apply and one call could open hundreds a second.
            await asyncio.sleep(policy.backoff(self._short_lived, policy.backoff_s))

    async def _open_next(self, reason: Reason) -> tuple[AgentSession, bool, bool]:
        """Resume with the handle; if that is refused, a fresh primed session; bounded retries."""
        policy = self.policy
        handle = self._handle
        last: ModelUnavailable | None = None
        for attempt in range(policy.connect_attempts):
            if attempt:
                await asyncio.sleep(policy.backoff(attempt, policy.backoff_s))
            try:
                if handle is not None:
                    opened = await self._agent.open(self.call_id, handle=handle, reconnect=True)
                    return opened, True, False
                history = self.transcript()
                opened = await self._agent.open(
                    self.call_id, history=history or None, reconnect=True
                )
                return opened, False, True
            except ModelUnavailable as exc:
                last = exc
                log.warning(
                    "model.reconnect_failed",
                    extra=fields(
                        reason=reason,
                        attempt=attempt + 1,
                        with_handle=handle is not None,
                        error=str(exc),
                        code=exc.code,
                    ),
                )
                if handle is not None:
                    # A refused or expired handle fails the same way every time: go on without.
                    handle = None
                    self._handle = None
                    continue
                # The session was set up fine before, so only quota and permission errors are
                # final here (1007 "invalid argument" is reported around rotations).
                if not exc.retryable and QUOTA_OR_AUTH.search(str(exc)):
                    break
        raise SessionClosed(
            f"the model could not be reached again: {last}",
            code=last.code if last else None,
            retryable=False,
        )

    def _record(self, conn: AgentSession, reason: Reason, *, resumed: bool, primed: bool) -> None:
        self.stats.connections.append(
            {
                "local_port": conn.local_port,
                "reason": reason,
                "resumed": resumed,
                "primed": primed,
                "at_s": round(time.monotonic() - self._t0, 3),
            }
        )

    # -- the stall watchdog ---------------------------------------------------------------

    async def _watchdog(self) -> None:
        timeout = self.policy.stall_timeout_s
        while not self._closing:
            await asyncio.sleep(0.25)
            if not self._caller_waiting() or self.activity.speaking or self._conn is None:
                continue
            since = self._waiting_since
            if since is None:
                continue
            # After a nudge, 2 s without an answer is enough to call the connection dead. A
            # model that says it is still working gets longer (it reported in since).
            limit = min(timeout, NUDGE_GRACE_S) if self._nudged else timeout
            if self._in_progress:
                limit = max(limit, IN_PROGRESS_PATIENCE_S)
            if time.monotonic() - since < limit:
                continue
            if not await self._stalled_now():
                return

    async def _stalled_now(self) -> bool:
        """The caller waits and the model does not answer: nudge it; if it was nudged
        already, move to a new connection. False once no connection can be had."""
        if not self._nudged:
            self._nudged = True
            self._stalled = True
            self.stats.stalls += 1
            log.warning("model.stall", extra=fields(action="nudge"))
            self._waiting_since = time.monotonic()
            await self._deliver(("text", NUDGE))
            return True
        log.warning("model.stall", extra=fields(action="reconnect"))
        conn = self._conn
        try:
            # The switch nudges the new connection, since the caller is still waiting.
            await self._switch("stall", broken=conn)
        except SessionClosed as exc:
            log.error("model.stall_unrecoverable", extra=fields(error=str(exc)))
            self._fatal = exc
            self._wake.set()
            return False
        # One reconnect per stall: if the model still doesn't answer this utterance, it
        # may have chosen not to; the next utterance starts the watch again.
        self._waiting_since = None
        return True

    # -- lifecycle ------------------------------------------------------------------------

    def _close_later(self, conn: AgentSession) -> None:
        """Close a replaced connection without holding up the switch (bounded; awaited by
        ``close()``)."""
        task = asyncio.get_running_loop().create_task(conn.close(), name=f"close:{self.call_id}")
        self._closers.add(task)
        task.add_done_callback(self._closers.discard)

    def _spawn(self, coro: Any, name: str) -> None:
        task = asyncio.get_running_loop().create_task(coro, name=f"{name}:{self.call_id}")
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("model.task_failed", exc_info=task.exception())

    async def close(self) -> None:
        """Stop the watchdogs and close the connection (idempotent, bounded)."""
        self._closing = True
        self._wake.set()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        # Whatever still waits for a connection will never reach the model now.
        for kind, value in self._pending:
            if kind == "audio":
                self.stats.caller_audio_dropped_ms += len(value) / (INPUT_RATE * 2) * 1000
        self._pending.clear()
        self._pending_audio = 0
        if self._conn is not None:
            await self._conn.close()
        if self._closers:
            await asyncio.wait(self._closers, timeout=6)


async def open_conversation(
    open_first: SessionOpener,
    agent: LiveAgent,
    call_id: str,
    *,
    activity: CallerActivity,
    policy: ResiliencePolicy | None = None,
    clock_origin: float | None = None,
) -> ResilientSession:
    """A call's conversation, ready to talk: its first session opened (or adopted, when the
    webhook pre-connected one) with ``policy``'s retries, then kept up across connections.

    Only retryable errors are retried (quota and permission errors fail at once: retrying
    them is how a storm starts); the last error is raised as it came.
    """
    policy = policy or ResiliencePolicy()
    attempt = 1
    while True:
        try:
            first = await open_first(call_id)
            break
        except AgentError as exc:
            log.warning(
                "model.connect_failed",
                extra=fields(
                    attempt=attempt, error=str(exc), code=exc.code, retryable=exc.retryable
                ),
            )
            if not exc.retryable or attempt >= policy.open_attempts:
                exc.call_id = exc.call_id or call_id
                raise
            await asyncio.sleep(policy.backoff(attempt, policy.open_backoff_s))
            attempt += 1
    return ResilientSession(
        agent, call_id, first, policy, activity=activity, clock_origin=clock_origin
    )


def _ms_since(began: float) -> float:
    return round((time.monotonic() - began) * 1000, 1)
