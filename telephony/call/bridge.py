"""One phone call: a Twilio Media Stream joined to one conversation with the model.

This is where a reader finds what happens on barge-in (``_on_interrupted``), when a call ends
(``_begin_ending``, ``_finish`` and the ``Outcome``s), and how the model's events become
Twilio messages (``_model_side``). What the caller heard (``heard``), the turn log
(``turns``), outbound answer detection (``answer``), the caller's activity
(``agent.activity``) and the lifecycle (``state``) are pure helpers it drives. Tools it does
not act on itself (the operator's, ``search_knowledge``) come from the ``toolbox`` it is given
and run in tasks of their own (``tooling.ToolRunner``).

Shape of a call: ``Call.run()`` waits for Twilio's ``start`` (with a timeout), then runs three
tasks in one TaskGroup: the *caller side* reads Twilio frames and forwards audio, digits and
mark echoes; the *model side* opens the conversation (adopting a session pre-connected when
the webhook was answered), sends the greeting cue, and turns model events into Twilio
messages; the *limits* enforce the call's length and the caller-silence policy. Whichever
side ends first decides the outcome; the others are cancelled; the conversation and the
socket are closed; ``run()`` returns a ``CallSummary``.

The peers are small protocols (``TwilioSocket``, ``Conversation``) and time comes from an
injected clock, so unit tests drive a whole call with in-process fakes on virtual time.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final, Protocol

from agent.activity import CallerActivity
from agent.events import (
    AgentError,
    AudioDamaged,
    AudioOut,
    ConversationEvent,
    GenerationComplete,
    GoAway,
    InputTranscript,
    InteractionStatus,
    Interrupted,
    OutputTranscript,
    Reconnected,
    ResumptionUpdate,
    ToolCall,
    ToolCallCancellation,
    TurnComplete,
    Usage,
)
from agent.logs import call_id_var, fields
from agent.prompts import (
    SILENT_GOODBYE_PROMPT,
    STILL_THERE_PROMPT,
    dtmf_prompt,
    greeting_prompt,
    outbound_greeting_prompt,
    wrap_up_prompt,
)
from agent.resilient import ResilienceStats
from agent.tools import END_CALL, TRANSFER_CALL, CallIdentity, Toolbox
from telephony.audio import CallerToModel, ModelToCaller
from telephony.call.answer import AnswerDetector
from telephony.call.filler import FILLER_CHUNK_BYTES, FillerLoop
from telephony.call.heard import Heard
from telephony.call.pacing import DEFAULT_LEAD_S, MARK, Pacer
from telephony.call.recorder import CallRecorder
from telephony.call.state import CallState, State
from telephony.call.summary import (
    CallSummary,
    Interruption,
    Outcome,
    call_parameters,
    clean_text,
)
from telephony.call.tooling import ToolRunner
from telephony.call.turns import TurnLog
from telephony.call.uplink import UplinkBlocks
from telephony.errors import TelephonyError
from telephony.twilio import media_stream as ms
from telephony.twilio import twiml
from telephony.twilio.rest import TwilioRest, TwilioRestError

if TYPE_CHECKING:
    from google.genai import types

__all__ = [
    "Call",
    "CallObserver",
    "Conversation",
    "ConversationOpener",
    "SocketClosed",
    "TwilioSocket",
]

log = logging.getLogger(__name__)

#: Caller audio kept while the model session is still being opened (bounded: 5 s).
PRE_SESSION_BUFFER_FRAMES: Final = 250
PRE_SESSION_BUFFER_BYTES: Final = PRE_SESSION_BUFFER_FRAMES * 640  # as 16 kHz PCM16
#: Bad frames tolerated on one stream before we give up on it.
MAX_BAD_FRAMES: Final = 50
#: The longest we wait for the agent's last words to play before ending/transferring.
END_DRAIN_TIMEOUT_S: Final = 30.0
#: A blocking tool running longer than this gets the "working on it" sound (call.filler).
DEFAULT_FILLER_AFTER_S: Final = 0.7
#: After end_call/transfer_call, the agent is done talking once a turn completes after the
#: tool call, or, failing that, after this long without audio.
MODEL_QUIET_S: Final = 2.0
#: The agent is told to wrap up this long before MAX_CALL_SECONDS.
WRAP_UP_S: Final = 30.0
LIMITS_TICK_S: Final = 0.5
#: Model audio is converted in slices of at most this much (1 s at 24 kHz), yielding to the
#: event loop in between: one huge message must not stall every other call.
CONVERT_SLICE_BYTES: Final = 48_000


class SocketClosed(TelephonyError):
    """The Twilio socket is gone: a send or close found the peer disconnected."""


class TwilioSocket(Protocol):
    """What a call needs from the Twilio WebSocket (the server adapts Starlette's)."""

    async def receive(self) -> str | bytes | None:
        """The next frame, or None once the peer has gone."""

    async def send(self, *texts: str) -> None:
        """Send text frames, in order (in one write to the network where the socket can);
        ``SocketClosed`` if the peer has gone."""

    async def close(self, code: int, reason: str) -> None:
        """Close the socket (a no-op once it is closed)."""


class Conversation(Protocol):
    """What a call needs from the model side (``agent.resilient.ResilientSession``)."""

    stats: ResilienceStats

    @property
    def model_busy(self) -> bool:
        """The model produced output in the last moment (it is talking or about to)."""

    async def send_audio(self, pcm16k: bytes) -> None: ...

    def send_audio_nowait(self, pcm16k: bytes) -> bool:
        """``send_audio`` if it needs no waiting (True); False: nothing done."""

    async def send_text(self, text: str) -> None: ...

    async def send_tool_response(
        self,
        call_id: str,
        name: str,
        response: dict[str, Any],
        scheduling: types.FunctionResponseScheduling | None = None,
    ) -> None: ...

    def events(self) -> AsyncIterator[ConversationEvent]:
        """Every event, across connections; raises ``AgentError`` once the model is lost."""

    async def close(self) -> None: ...


#: Told what a watcher of the call may want to show, as it happens (the browser console):
#: ``{"event": "transcript" | "turn" | "interrupted" | "tool" | "ended", …}``. Called on the
#: call's events only, never per media frame; it must not block (the console queues them).
CallObserver = Callable[[dict[str, Any]], None]

#: The longest typed caller text forwarded to the model (``Call.caller_text``).
MAX_CALLER_TEXT_CHARS: Final = 2000

#: Opens a call's conversation: (call SID, the call's caller activity, the call's clock origin).
ConversationOpener = Callable[[str, CallerActivity, float], Awaitable[Conversation]]


@dataclass(frozen=True, slots=True)
class _Unsent:
    """A block of caller audio ``take_frame`` could not send at once: the caller loop
    sends it, in the place of the frame that completed it."""

    pcm: bytes


class _StreamEnded(TelephonyError):
    """Internal: the caller side is done (stop, hang-up, or a fatal protocol error)."""

    def __init__(self, reason: str, outcome: Outcome = Outcome.COMPLETED) -> None:
        super().__init__(reason)
        self.outcome = outcome


class Call:
    """A single phone call. Create one per accepted Media Stream and ``await run()``."""

    def __init__(
        self,
        socket: TwilioSocket,
        open_conversation: ConversationOpener,
        *,
        greeting: str | None,
        max_call_s: float = 3600.0,
        caller_silence_s: float = 0.0,
        caller_silence_end_ms: int = 500,
        stream_start_timeout_s: float = 10.0,
        transfer_number: str | None = None,
        rest: TwilioRest | None = None,
        on_started: Callable[[Call], bool | None] | None = None,
        recorder: CallRecorder | None = None,
        outbound_greeting: str | None = None,
        answer_timeout_s: float = 5.0,
        audio_lead_s: float = DEFAULT_LEAD_S,
        toolbox: Toolbox | None = None,
        tool_filler_after_s: float | None = DEFAULT_FILLER_AFTER_S,
        direction: str | None = None,
        observer: CallObserver | None = None,
        model_audio_chunk_ms: int = 20,
        model_audio_quiet_chunk_ms: int | None = None,
        model_audio_speech_chunk_ms: int | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.socket = socket
        self._open_conversation = open_conversation
        self._max_call_s = max_call_s
        self._caller_silence_s = caller_silence_s
        self._greeting = greeting
        self._outbound_greeting = outbound_greeting
        self._answer_timeout_s = answer_timeout_s
        self._start_timeout = stream_start_timeout_s
        self._start_wait: asyncio.Timeout | None = None  # while waiting for ``start``
        self._start_given_up = ""  # why ``give_up_start()`` was called
        self._transfer_number = transfer_number
        self._rest = rest
        self._on_started = on_started
        self._rec = recorder  # None unless RECORD_CALLS is set: then every hook is one test
        # The call's direction when it is not the stream's to say ("browser": the console).
        self._direction = direction
        self._observer = observer  # None for phone calls: then every hook is one test
        self._tools_seen: dict[str, str] = {}  # tool call id -> outcome last observed
        self._typed_at: float | None = None  # when the caller last typed a turn (console)
        self._now = clock
        self.state = CallState()
        self.summary = CallSummary()
        self.outcome_decided = asyncio.Event()

        self._t0 = clock()
        self._out: ms.OutboundBuilder | None = None
        self._session: Conversation | None = None
        self._to_model = CallerToModel()
        # Caller audio is converted (and seen by the VAD) a whole model message at a time:
        # each conversion and VAD step costs mostly its call overhead, not its samples. How
        # large a message is depends on whether the caller may be talking (call.uplink).
        self._uplink = UplinkBlocks(
            model_audio_chunk_ms,
            model_audio_chunk_ms
            if model_audio_quiet_chunk_ms is None
            else max(model_audio_chunk_ms, model_audio_quiet_chunk_ms),
            speech_chunk_ms=None
            if model_audio_speech_chunk_ms is None
            else max(model_audio_chunk_ms, model_audio_speech_chunk_ms),
            turn_end_ms=caller_silence_end_ms,
        )
        self._pre_session_bytes = 0  # 16 kHz PCM16 in _pre_session
        self._to_caller = ModelToCaller()
        self._activity = CallerActivity(self._t0, end_ms=caller_silence_end_ms)
        # Outbound calls: the callee's audio goes to this detector, not to the model, until
        # they have answered. None: answered (or an inbound call).
        self._answer: AnswerDetector | None = None
        self._pre_session: deque[bytes] = deque()
        self._pre_session_digits: list[str] = []
        self._pre_session_texts: list[str] = []
        self._heard = Heard()
        self._pacer = Pacer(lead_s=audio_lead_s)
        self._pace_wake = asyncio.Event()
        self._turns = TurnLog(self._t0, self.summary.turns)
        self._last_audio_at = 0.0
        self._progress = asyncio.Event()  # something changed that an end-drain waits for
        self._pending_tool_id: str | None = None
        self._end_reason = ""
        self._turns_at_tool = 0
        self._ending_since = 0.0
        self._end_task: asyncio.Task[None] | None = None
        # The model said it still works in the background (interactionStatus IN_PROGRESS):
        # a turnComplete now is not the end of its answer.
        self._model_working = False
        self._toolbox = toolbox
        self._tools: ToolRunner | None = None
        self._filler_after_s = tool_filler_after_s
        self._tools_wake = asyncio.Event()
        self._tg: asyncio.TaskGroup | None = None
        self._done = asyncio.Event()
        # The caller side's fast path (``take_frame``): on while the caller loop runs; the
        # frame it parsed and left to that loop; an error it met (raised in that loop, so
        # the call's own error boundary handles it).
        self._fast = False
        self._parsed: tuple[str, ms.InboundEvent | _Unsent] | None = None
        self._fast_error: Exception | None = None

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self) -> CallSummary:
        """Serve the call to its end. Never raises for anything the peers do."""
        try:
            start = await self._wait_for_start()
        except _StreamEnded as exc:
            self._decide(Outcome.REJECTED, str(exc))
            self.state.to(State.ENDED)
            log.info(
                "call.rejected", extra=fields(reason=str(exc), bad_frames=self.summary.bad_frames)
            )
            return self.summary
        call_id_var.set(start.call_sid)
        if not self._began(start):
            # ``on_started`` said no (the server has no call slot free): the caller is told
            # through <Connect action>; no model session is opened.
            self._decide(Outcome.REJECTED, "turned away: no call slot free")
            self.state.to(State.ENDED)
            log.warning("call.rejected", extra=fields(reason=self.summary.reason))
            await self._close_socket(1013, "try again later")
            return self.summary
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tasks = [
                    tg.create_task(self._caller_side(), name=f"caller:{start.call_sid}"),
                    tg.create_task(self._model_side(), name=f"model:{start.call_sid}"),
                    tg.create_task(self._limits(), name=f"limits:{start.call_sid}"),
                    tg.create_task(self._pacing(), name=f"pacing:{start.call_sid}"),
                ]
                if self._tools is not None and self._filler_after_s is not None:
                    tasks.append(tg.create_task(self._filler(), name=f"filler:{start.call_sid}"))
                await self._done.wait()
                for task in tasks:
                    task.cancel()
                if self._tools is not None:
                    self._tools.cancel_all()
                if self._end_task is not None:
                    self._end_task.cancel()
        except asyncio.CancelledError:
            self._decide(Outcome.SHUTDOWN, "server stopped")
            raise
        finally:
            self.state.to(State.ENDED)
            if self._session is not None:
                await self._session.close()
                self._collect_stats(self._session.stats)
            self.summary.duration_s = round(self._now() - self._t0, 3)
            self.summary.agent_audio_dropped_ms = round(
                self._pacer.dropped_bytes * 1000 / ms.SAMPLE_RATE, 1
            )
            log.info(
                "call.ended",
                extra=fields(
                    outcome=str(self.summary.outcome),
                    reason=self.summary.reason,
                    duration_s=self.summary.duration_s,
                    turns=len(self.summary.turns),
                    interruptions=len(self.summary.interruptions),
                    frames_in=self.summary.frames_in,
                    frames_out=self.summary.frames_out,
                    bad_frames=self.summary.bad_frames,
                    tokens=self.summary.tokens,
                    reconnects=self.summary.reconnects,
                    stalls=self.summary.stalls,
                    caller_audio_dropped_ms=self.summary.caller_audio_dropped_ms,
                ),
            )
            if self._observer is not None:
                self._observer(
                    {
                        "event": "ended",
                        "outcome": str(self.summary.outcome),
                        "reason": self.summary.reason,
                        "duration_s": self.summary.duration_s,
                    }
                )
            if self._rec is not None:  # written off the event loop; bounded; never raises
                await self._rec.finish(
                    self._now(),
                    outcome=str(self.summary.outcome),
                    reason=self.summary.reason,
                    duration_s=self.summary.duration_s,
                )
                self.summary.recording_failed = self._rec.failed
        return self.summary

    def _collect_stats(self, stats: ResilienceStats) -> None:
        self.summary.reconnects = stats.reconnects
        self.summary.stalls = stats.stalls
        self.summary.stalls_recovered = stats.stalls_recovered
        self.summary.silent_answers = stats.silent_answers
        self.summary.rejected_answers = stats.rejected_answers
        self.summary.model_connections = list(stats.connections)
        self.summary.caller_audio_ms = round(stats.caller_audio_ms, 1)
        self.summary.caller_audio_dropped_ms = round(stats.caller_audio_dropped_ms, 1)
        self.summary.max_buffered_ms = round(stats.max_buffered_ms, 1)

    def _began(self, start: ms.Start) -> bool:
        caller, callee, direction = call_parameters(start.custom_parameters)
        self.summary.call_sid = start.call_sid
        self.summary.stream_sid = start.stream_sid
        self.summary.caller = caller
        self.summary.callee = callee
        outbound = self._direction is None and direction.startswith("outbound")
        self.summary.direction = self._direction or ("outbound" if outbound else "inbound")
        if outbound:
            self._answer = AnswerDetector(self._t0, self._answer_timeout_s)
        self._out = ms.OutboundBuilder(start.stream_sid)
        if self._toolbox:
            identity = CallIdentity(
                call_sid=start.call_sid,
                caller=self.summary.caller,
                callee=self.summary.callee,
                direction=self.summary.direction,
                # Untrusted: bounded before it goes to the operator's backends.
                custom_parameters={
                    str(k)[:64]: str(v)[:512] for k, v in list(start.custom_parameters.items())[:32]
                },
            )
            self._tools = ToolRunner(
                self._toolbox,
                identity,
                send=self._send_tool_response,
                spawn=self._spawn,
                records=self.summary.tool_calls,
                clock=self._now,
                t0=self._t0,
                turn=lambda: len(self.summary.turns),
                on_change=self._tools_changed,
            )
        if self._rec is not None:
            self._rec.start(start, self._now())
        self.state.to(State.CONNECTING)
        log.info(
            "call.started",
            extra=fields(
                stream_sid=start.stream_sid, caller=self.summary.caller, callee=self.summary.callee
            ),
        )
        # ``on_started`` may refuse the call by returning False (no call slot free).
        return self._on_started is None or self._on_started(self) is not False

    def fail(self, reason: str) -> None:
        """Mark the call failed from outside (the server's last-resort error boundary)."""
        self._decide(Outcome.FAILED, reason)

    def stop(self, reason: str) -> None:
        """End the call now from outside (the server is shutting down): ``run()`` returns."""
        log.warning("call.stopped", extra=fields(reason=reason))
        self._decide(Outcome.SHUTDOWN, reason)

    def _decide(self, outcome: Outcome, reason: str = "") -> None:
        """Record how the call ends (first decision wins) and wake ``run()``."""
        if not self.outcome_decided.is_set():
            self.summary.outcome = outcome
            self.summary.reason = reason
            self.outcome_decided.set()
        self._done.set()

    def _elapsed(self) -> float:
        return self._now() - self._t0

    # -- caller side ----------------------------------------------------------------------

    def give_up_start(self, reason: str) -> None:
        """Stop waiting for ``start`` (the server needs the room, or is stopping): the stream
        is closed (1013) as one that never started. No effect once ``start`` has arrived."""
        if not self.state.is_(State.WAITING_FOR_START):
            return
        self._start_given_up = reason
        if self._start_wait is not None:
            self._start_wait.reschedule(asyncio.get_running_loop().time())

    async def _wait_for_start(self) -> ms.Start:
        try:
            timeout = 0.0 if self._start_given_up else self._start_timeout
            async with asyncio.timeout(timeout) as self._start_wait:
                while True:
                    event = await self._next_event()
                    if isinstance(event, ms.Start):
                        return event
                    if isinstance(event, ms.Stop):
                        raise _StreamEnded("stop before start", Outcome.REJECTED)
                    if not isinstance(event, ms.Connected):
                        self._bad_frame(f"{type(event).__name__.lower()} before start")
        except TimeoutError:
            if self._start_given_up:
                log.info("stream.given_up", extra=fields(reason=self._start_given_up))
                await self._close_socket(1013, "try again later")
                raise _StreamEnded(self._start_given_up, Outcome.REJECTED) from None
            log.warning("stream.no_start", extra=fields(timeout_s=self._start_timeout))
            await self._close_socket(1008, "no start event")
            raise _StreamEnded("no start event within timeout", Outcome.REJECTED) from None
        finally:
            self._start_wait = None

    def take_frame(self, frame: str) -> bool:
        """Handle a Twilio frame now, in the socket's read callback, if that needs no
        waiting: a media frame that ``call.uplink`` holds for a larger block, or one that
        completes a block the model's socket takes at once (nearly all of them). True:
        done. False: the frame reaches the caller loop through ``receive()`` as any other
        (parsed already; if it completed a block that could not be sent at once, the loop
        sends that block).

        Called by a socket that can (``telephony.server.media_socket``) only while the
        caller loop waits in ``receive()`` with nothing queued, so frames keep their order.
        It saves that loop's wake-up, for most of Twilio's 50 frames per second."""
        if not self._fast or self._answer is not None:
            return False
        try:
            event = ms.parse_inbound(frame)
        except ms.ProtocolError:
            return False  # the caller loop counts and reports it
        try:
            if not isinstance(event, ms.Media):
                self._parsed = (frame, event)  # not parsed twice
                return False
            ulaw = event.payload
            if self._rec is not None:
                self._rec.caller_audio(ulaw, event.timestamp_ms)
            self.summary.frames_in += 1
            block = self._uplink.push(ulaw)
            if block is None:
                return True  # held for a larger block
            pcm = self._take_block(block)
            if pcm is None or self._session is None or self._session.send_audio_nowait(pcm):
                return True
            self._parsed = (frame, _Unsent(pcm))  # flow control: the loop awaits the send
            return False
        except Exception as exc:  # a bug, or the model lost: raised in the call's loop
            self._fast = False
            self._fast_error = exc
            return False

    async def _next_event(self) -> ms.InboundEvent | _Unsent:
        """The next valid Twilio event; bad frames are counted and skipped."""
        while True:
            frame = await self.socket.receive()
            if self._fast_error is not None:
                raise self._fast_error
            parsed = self._parsed
            if parsed is not None:
                self._parsed = None
                if parsed[0] is frame:
                    return parsed[1]
            if frame is None:
                raise _StreamEnded("socket closed by Twilio")
            if isinstance(frame, bytes):
                # Twilio never sends binary frames: this is not Twilio.
                await self._close_socket(1003, "binary frames are not accepted")
                raise _StreamEnded("binary frame", Outcome.REJECTED)
            try:
                return ms.parse_inbound(frame)
            except ms.UnknownEvent as exc:
                self._bad_frame(str(exc), level=logging.DEBUG)
            except ms.ProtocolError as exc:
                self._bad_frame(str(exc))
            if self.summary.bad_frames > MAX_BAD_FRAMES:
                await self._close_socket(1008, "too many malformed messages")
                raise _StreamEnded("too many malformed messages", Outcome.REJECTED)

    def _bad_frame(self, why: str, level: int = logging.WARNING) -> None:
        self.summary.bad_frames += 1
        # Log the first few of a kind, not a flood.
        if self.summary.bad_frames <= 5:
            log.log(
                level, "stream.bad_frame", extra=fields(error=why, count=self.summary.bad_frames)
            )

    async def _caller_side(self) -> None:
        self._fast = True
        try:
            while True:
                event = await self._next_event()
                if isinstance(event, _Unsent):  # its frame was taken by take_frame
                    if self._session is not None:
                        await self._send_caller_audio(self._session, event.pcm)
                elif isinstance(event, ms.Media):
                    if self._rec is not None:
                        self._rec.caller_audio(event.payload, event.timestamp_ms)
                    await self._on_caller_audio(event.payload)
                elif isinstance(event, ms.Mark):
                    if self._rec is not None:
                        self._rec.event("mark", self._now(), name=event.name)
                    if self._heard.echoed(event.name, self._now()):
                        self._progress.set()
                elif isinstance(event, ms.Dtmf):
                    await self._on_dtmf(event.digit)
                elif isinstance(event, ms.Stop):
                    if self._rec is not None:
                        self._rec.event("stop", self._now())
                    # After a transfer or hang-up the agent asked for, the outcome is already
                    # decided and this does not change it (first decision wins).
                    self._decide(Outcome.COMPLETED, "caller hung up")
                    await self._flush_uplink()
                    return
                else:
                    self._bad_frame(f"unexpected {type(event).__name__.lower()}")
        except _StreamEnded as exc:
            self._decide(exc.outcome, str(exc))
        except AgentError as exc:
            await self._model_failed(exc)
        finally:
            self._fast = False

    async def _on_caller_audio(self, ulaw: bytes) -> None:
        self.summary.frames_in += 1
        block = self._uplink.push(ulaw)
        if block is None:
            return  # the rest of this model message comes with the next frame(s)
        await self._on_caller_block(block)

    async def _flush_uplink(self) -> None:
        """The caller hung up: the frames held for a quiet block that did not fill go on too
        (up to 180 ms), so that everything Twilio sent reached the model or was counted."""
        block = self._uplink.flush()
        if not block:
            return
        try:
            await self._on_caller_block(block)
        except AgentError as exc:  # the call is over either way; its outcome stands
            log.debug("model.final_audio_failed", extra=fields(error=str(exc)))

    async def _on_caller_block(self, block: bytes) -> None:
        if self._answer is not None:
            how = self._answer.push(self._to_model.process(block), self._now())
            if how is not None:
                await self._answered(how)
            return
        pcm = self._take_block(block)
        if pcm is not None and self._session is not None:
            await self._send_caller_audio(self._session, pcm)

    def _take_block(self, block: bytes) -> bytes | None:
        """Convert a block of caller audio and let the call's VAD see it; the PCM to send
        to the model now (None: kept until the model session is open)."""
        pcm = self._to_model.process(block)
        self._activity.push(pcm, self._now())
        if self._session is not None:
            return pcm
        # Bounded in time (5 s of audio), whatever the size of the pieces.
        self._pre_session.append(pcm)
        self._pre_session_bytes += len(pcm)
        while self._pre_session_bytes > PRE_SESSION_BUFFER_BYTES:
            dropped = self._pre_session.popleft()
            self._pre_session_bytes -= len(dropped)
            # 16 kHz PCM16: 4 bytes per 8 kHz μ-law sample.
            self.summary.dropped_pre_session_frames += len(dropped) // (4 * ms.FRAME_BYTES)
        return None

    async def _send_caller_audio(self, session: Conversation, pcm: bytes) -> None:
        """Send one block of caller audio as one message (``call.uplink`` sized it)."""
        await session.send_audio(pcm)

    async def _answered(self, how: str) -> None:
        """The callee is on the line: the agent may speak (and hear them) from now on."""
        if self._answer is None:
            return
        self._answer = None
        log.info("call.answered", extra=fields(how=how, at_s=round(self._elapsed(), 3)))
        if self._session is not None and self._outbound_greeting:
            await self._session.send_text(outbound_greeting_prompt(self._outbound_greeting))

    async def caller_text(self, text: str) -> None:
        """The caller typed ``text`` as their turn (the console): it goes to the model as
        the caller's words, and into the turn's transcript. Ignored before ``start``."""
        text = clean_text(text, MAX_CALLER_TEXT_CHARS)
        if not text or self.state.is_(State.WAITING_FOR_START) or self.state.is_(State.ENDED):
            return
        now = self._now()
        self._turns.caller_words(text, now)
        self._typed_at = now
        log.info("call.caller_text", extra=fields(chars=len(text)))
        if self._rec is not None:
            self._rec.event("text", now, text=text)
        if self._session is None:
            self._pre_session_texts.append(text)
        else:
            await self._session.send_text(text)

    async def _on_dtmf(self, digit: str) -> None:
        self.summary.dtmf.append(digit)
        log.info("call.dtmf", extra=fields(digit=digit))
        if self._rec is not None:
            self._rec.event("dtmf", self._now(), digit=digit)
        if self._session is None:
            self._pre_session_digits.append(digit)  # told to the model once it is connected
        else:
            await self._session.send_text(dtmf_prompt(digit))

    # -- model side -----------------------------------------------------------------------

    async def _model_side(self) -> None:
        try:
            session = await self._connect_model()
            async for event in session.events():
                if isinstance(event, AudioOut):
                    await self._on_model_audio(event.pcm)
                elif isinstance(event, Interrupted):
                    await self._on_interrupted()
                elif isinstance(event, TurnComplete):
                    await self._mark_end_of_audio()
                    self._on_turn_complete()
                elif isinstance(event, InputTranscript):
                    self._on_input_transcript(event.text)
                    if self._observer is not None:
                        self._observer({"event": "transcript", "who": "caller", "text": event.text})
                elif isinstance(event, OutputTranscript):
                    if self._turns.agent_words(event.text):
                        self._heard.new_turn()
                    if self._observer is not None:
                        self._observer({"event": "transcript", "who": "agent", "text": event.text})
                elif isinstance(event, ToolCall):
                    await self._on_tool_call(event)
                elif isinstance(event, ToolCallCancellation):
                    self._on_tool_cancel(event.ids)
                elif isinstance(event, InteractionStatus):
                    self._model_working = event.in_progress
                    self._progress.set()
                elif isinstance(event, Usage):
                    tokens = self.summary.tokens
                    tokens["prompt"] += event.prompt_tokens
                    tokens["response"] += event.response_tokens
                    tokens["total"] += event.total_tokens
                elif isinstance(event, GoAway):
                    log.warning("model.go_away", extra=fields(time_left_s=event.time_left_s))
                elif isinstance(event, Reconnected):
                    await self._on_reconnected(event)
                elif isinstance(event, GenerationComplete):
                    await self._mark_end_of_audio()  # so the turn's end is known when played
                elif isinstance(event, AudioDamaged):
                    self._on_damaged_audio(event)
                elif isinstance(event, ResumptionUpdate):
                    pass
        except AgentError as exc:
            await self._model_failed(exc)

    async def _connect_model(self) -> Conversation:
        began = self._now()
        session = await self._open_conversation(self.summary.call_sid, self._activity, self._t0)
        self._session = session
        self.summary.model_connect_ms = round((self._now() - began) * 1000, 1)
        if self.state.is_(State.CONNECTING):
            self.state.to(State.ACTIVE)
        log.info("model.connected", extra=fields(connect_ms=self.summary.model_connect_ms))
        if self.summary.direction == "outbound":
            # The agent speaks first only once a person has answered (``_answered``).
            if self._answer is None and self._outbound_greeting:
                await session.send_text(outbound_greeting_prompt(self._outbound_greeting))
        elif self._greeting:
            await session.send_text(greeting_prompt(self._greeting))
        # Whatever the caller said or pressed while we were connecting goes in now, in order.
        while self._pre_session:
            await self._send_caller_audio(session, self._pre_session.popleft())
        self._pre_session_bytes = 0
        for digit in self._pre_session_digits:
            await session.send_text(dtmf_prompt(digit))
        self._pre_session_digits.clear()
        for text in self._pre_session_texts:
            await session.send_text(text)
        self._pre_session_texts.clear()
        return session

    async def _model_failed(self, exc: AgentError) -> None:
        log.error("model.failed", extra=fields(error=str(exc), code=exc.code))
        self._decide(Outcome.FAILED, f"model session: {exc}")
        # Closing the stream makes Twilio ask <Connect action>, which apologises (and
        # transfers when a number is configured).
        await self._close_socket(1011, "model unavailable")

    async def _send(self, *texts: str) -> None:
        try:
            await self.socket.send(*texts)
        except SocketClosed as exc:  # the caller side will see it too
            log.debug("twilio.send_failed", extra=fields(error=str(exc)))
            self._decide(Outcome.COMPLETED, "socket closed by Twilio")

    def _on_input_transcript(self, text: str) -> None:
        # Transcripts arrive while or just after the caller speaks: the turn's words began
        # with the utterance the call's own VAD saw start last (or now, if it saw none).
        now = self._now()
        started = self._activity.started_at
        self._turns.caller_words(text, started if started is not None and started <= now else now)

    async def _on_model_audio(self, pcm: bytes) -> None:
        if self._turns.discarding:
            return  # late audio of an interrupted turn: never play it
        for start in range(0, len(pcm), CONVERT_SLICE_BYTES):
            if start:
                await asyncio.sleep(0)  # a huge chunk: let the other calls run
                if self._turns.discarding:
                    return  # interrupted meanwhile
            await self._queue_audio(pcm[start : start + CONVERT_SLICE_BYTES])

    async def _queue_audio(self, pcm: bytes) -> None:
        ulaw = self._to_caller.process(pcm)
        if not ulaw or self._out is None:
            return
        if self._turns.open():
            self._heard.new_turn()
        now = self._now()
        self._last_audio_at = now
        if not self._turns.audio_started:
            speech_end = self._activity.take_speech_end()
            if self._typed_at is not None:  # a typed turn (console) ends when it is sent
                speech_end = max(speech_end or 0.0, self._typed_at)
                self._typed_at = None
            self._turns.first_audio(now, speech_end)
        if self.summary.first_audio_ms is None:
            self.summary.first_audio_ms = round((now - self._t0) * 1000, 1)
            log.info("call.first_audio", extra=fields(ms=self.summary.first_audio_ms))
        self._pacer.add(ulaw)
        await self._pump()

    async def _pump(self) -> None:
        """Send what the pacer releases: audio (each followed by a mark when one is due) and
        the marks queued between it."""
        if self._out is None:
            return
        now = self._now()
        released = self._pacer.release(now)
        if released:
            # One write for all of it: a media message is nearly always followed by its mark,
            # and a release may carry several messages (a long model chunk arriving while
            # nothing is queued at Twilio).
            out: list[str] = []
            for item in released:
                if item is MARK:
                    mark = self._mark_message(force=True)
                else:
                    assert isinstance(item, bytes)
                    out.append(self._out.media(item))
                    if self._rec is not None:
                        self._rec.agent_audio(item, now)
                    self._heard.sent(len(item), now)
                    mark = self._mark_message()
                    self.summary.frames_out += 1
                if mark is not None:
                    out.append(mark)
            if out:
                await self._send(*out)
            self._progress.set()
        self._pace_wake.set()

    async def _pacing(self) -> None:
        """Releases held agent audio as Twilio plays what it has (see ``call.pacing``)."""
        while True:
            self._pace_wake.clear()
            wait = self._pacer.next_release(self._now())
            if wait is None:
                await self._pace_wake.wait()
            elif wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        await self._pace_wake.wait()
                except TimeoutError:
                    pass
            await self._pump()

    async def _mark_end_of_audio(self) -> None:
        """A mark after the last audio so far, so that its end is known when it has played:
        now if nothing is held, else right after the held audio leaves."""
        if self._pacer.idle:
            await self._send_mark()
        else:
            self._pacer.add_mark()

    @property
    def _all_played(self) -> bool:
        """Everything the agent said has left for Twilio and has been played there."""
        return self._pacer.idle and self._heard.all_played

    def _on_damaged_audio(self, event: AudioDamaged) -> None:
        self.summary.model_audio_damaged += 1
        if self.summary.model_audio_damaged <= 5:
            log.warning(
                "model.audio_damaged",
                extra=fields(
                    reason=event.reason,
                    nbytes=event.nbytes,
                    count=self.summary.model_audio_damaged,
                ),
            )

    def _mark_message(self, force: bool = False) -> str | None:
        """The ``mark`` message to send now, if one is due (``force``: for any unmarked audio)."""
        name = self._heard.mark(force)
        if name is None or self._out is None:
            return None
        return self._out.mark(name)

    async def _send_mark(self) -> None:
        """A mark after all audio sent so far, now (none if it is all marked already)."""
        mark = self._mark_message(force=True)
        if mark is not None:
            await self._send(mark)

    async def _on_reconnected(self, event: Reconnected) -> None:
        """The model side moved to a new connection: whatever turn was in flight is over."""
        log.info(
            "call.model_reconnected",
            extra=fields(
                reason=event.reason,
                resumed=event.resumed,
                primed=event.primed,
                pause_ms=event.pause_ms,
            ),
        )
        self._turns.discarding = False
        if not self._turns.closed:
            await self._mark_end_of_audio()
            self._on_turn_complete()

    async def _on_interrupted(self) -> None:
        """Barge-in: the caller talks over the agent. Stop the agent's voice *now*."""
        received = self._now()
        if self._out is not None:
            await self._send(self._out.clear())
            if self._rec is not None:
                self._rec.clear(self._now())
        clear_ms = (self._now() - received) * 1000
        # What was held here goes with what Twilio had queued.
        self._pacer.clear()
        self._pacer.reset_playback(received)
        self._to_caller.reset()
        sent_ms, heard_ms, confirmed_ms = self._heard.cleared(received)
        # Drop the rest of the generation that was cut off, until its turnComplete.
        cut = self._turns.interrupted(heard_ms, sent_ms)
        record = Interruption(
            at_s=round(self._elapsed(), 3),
            clear_latency_ms=round(clear_ms, 3),
            sent_ms=round(sent_ms),
            heard_ms=round(heard_ms),
            confirmed_ms=round(confirmed_ms),
            transcript_heard=cut,
        )
        self.summary.interruptions.append(record)
        if self._observer is not None:
            self._observer(
                {
                    "event": "interrupted",
                    "at_s": record.at_s,
                    "heard_ms": record.heard_ms,
                    "sent_ms": record.sent_ms,
                    "heard_text": record.transcript_heard,
                    "clear_latency_ms": record.clear_latency_ms,
                }
            )
        if self._rec is not None:
            self._rec.event(
                "interrupted",
                received,
                heard_ms=record.heard_ms,
                sent_ms=record.sent_ms,
                confirmed_ms=record.confirmed_ms,
                clear_latency_ms=record.clear_latency_ms,
                heard_text=record.transcript_heard,
            )
        log.info(
            "call.interrupted",
            extra=fields(
                clear_latency_ms=record.clear_latency_ms,
                heard_ms=record.heard_ms,
                sent_ms=record.sent_ms,
                confirmed_ms=record.confirmed_ms,
                heard_text=cut,
            ),
        )
        self._progress.set()

    def _on_turn_complete(self) -> None:
        heard = (
            self.summary.interruptions[-1].transcript_heard if self.summary.interruptions else None
        )
        sent = self._heard.sent_bytes
        turn = self._turns.complete(
            self._now(),
            # Held audio of the turn leaves as Twilio plays what it has: it is the turn's too.
            agent_audio_ms=round((sent + self._pacer.held_bytes) * 1000 / ms.SAMPLE_RATE),
            agent_at=self._heard.first_sent_at if sent else None,
            heard=heard,
        )
        self._progress.set()
        if turn is None:
            return  # nothing new since the last turn (e.g. the turnComplete after a late clear)
        logged = turn.fields()
        if self._observer is not None:
            self._observer({"event": "turn", **logged})
        if self._rec is not None:
            self._rec.event("turn", self._now(), **{k: v for k, v in logged.items() if k != "at_s"})
        log.info("call.turn", extra=fields(**logged))

    # -- tools ----------------------------------------------------------------------------

    def _spawn(self, coro: Any, name: str) -> asyncio.Task[None]:
        assert self._tg is not None
        return self._tg.create_task(coro, name=name)

    async def _send_tool_response(
        self, call_id: str, name: str, response: dict[str, Any], scheduling: Any
    ) -> None:
        if self._session is not None:
            await self._session.send_tool_response(call_id, name, response, scheduling)

    async def _on_tool_call(self, event: ToolCall) -> None:
        assert self._session is not None and self._tg is not None
        for fc in event.calls:
            if self._tools is not None and self._tools.handles(fc.name):
                await self._tools.start(fc)
                continue
            record: dict[str, Any] = {
                "id": fc.id,
                "name": fc.name,
                "args": fc.args,
                "at_s": round(self._elapsed(), 3),
                "turn": len(self.summary.turns),
            }
            self.summary.tool_calls.append(record)
            ending = self.state.is_(State.ENDING)
            if fc.name == END_CALL and not ending:
                result: dict[str, Any] = {
                    "result": "ok",
                    "note": "The call ends after you finish speaking.",
                }
                self._begin_ending(Outcome.ENDED_BY_AGENT, fc.id)
            elif fc.name == TRANSFER_CALL and self._transfer_number and not ending:
                result = {
                    "result": "ok",
                    "note": "The caller is transferred after you finish speaking.",
                }
                self._begin_ending(Outcome.TRANSFER, fc.id)
            elif fc.name in {END_CALL, TRANSFER_CALL}:
                result = {"result": "ignored", "error": "the call is already ending"}
            else:
                result = {
                    "result": "error",
                    "error": f"there is no tool named {fc.name!r}",
                    "retryable": False,
                }
            record["result"] = result
            record["outcome"] = "ok" if result["result"] == "ok" else str(result["result"])
            self._tools_changed()
            if self._rec is not None:
                self._rec.event("tool_call", self._now(), **record)
            log.info(
                "call.tool_call",
                extra=fields(tool=fc.name, args=fc.args, result=result.get("result")),
            )
            await self._session.send_tool_response(fc.id, fc.name, result)

    def _tools_changed(self) -> None:
        """A tool call started or finished: wake the filler; tell the observer what is new."""
        self._tools_wake.set()
        if self._observer is None:
            return
        for record in self.summary.tool_calls:
            outcome = str(record.get("outcome", ""))
            if self._tools_seen.get(record["id"]) != outcome:
                self._tools_seen[record["id"]] = outcome
                self._observer({"event": "tool", **record})

    def _on_tool_cancel(self, ids: tuple[str, ...]) -> None:
        log.info("call.tool_cancelled", extra=fields(ids=list(ids)))
        if self._tools is not None:
            self._tools.cancel(ids)
        if self._end_task is not None and self._pending_tool_id in ids:
            # The model took it back before we acted: the call goes on.
            self._end_task.cancel()
            self._end_task = None
            self.state.to(State.ACTIVE)

    async def _filler(self) -> None:
        """While the model waits for a blocking tool for longer than ``tool_filler_after_s``,
        play the soft "working on it" loop, until the model speaks, the caller does, or no
        blocking tool runs any more (see ``call.filler``)."""
        assert self._tools is not None and self._filler_after_s is not None
        loop = FillerLoop()
        chunk_s = FILLER_CHUNK_BYTES / ms.SAMPLE_RATE
        while True:
            self._tools_wake.clear()
            since = self._tools.blocking_since
            if since is None:
                await self._tools_wake.wait()
                continue
            wait = since + self._filler_after_s - self._now()
            if wait <= 0 and not self._all_played:
                wait = chunk_s  # the agent's last words still play: the sound comes after
            if wait > 0:
                try:
                    async with asyncio.timeout(wait):
                        await self._tools_wake.wait()
                except TimeoutError:
                    pass
                continue
            loop.restart()
            playing_until = self._now()
            while (
                self._tools.blocking_since is not None
                and self._last_audio_at < since
                and not self._activity.speaking
                and self._out is not None
            ):
                # Keep ~one chunk queued at Twilio: the answer waits at most that long.
                now = self._now()
                if playing_until - now < chunk_s:
                    await self._send(self._out.media(loop.next_chunk()))
                    playing_until = max(playing_until, now) + chunk_s
                    self.summary.filler_ms += round(chunk_s * 1000)
                await asyncio.sleep(chunk_s / 2)
            if self._activity.speaking and self._out is not None and playing_until > self._now():
                await self._send(self._out.clear())  # the caller talks: stop it at once
            # Once per wait: after the model or the caller spoke, no more sound for this one.
            while self._tools.blocking_since == since:
                self._tools_wake.clear()
                try:
                    async with asyncio.timeout(chunk_s):
                        await self._tools_wake.wait()
                except TimeoutError:
                    pass

    # -- limits ---------------------------------------------------------------------------

    async def _limits(self) -> None:
        """The call's length limit and the caller-silence timeout."""
        wrap_up_at = self._max_call_s - min(WRAP_UP_S, self._max_call_s / 4)
        warned = False
        asked_at: float | None = None  # when we asked "are you still there?"
        while True:
            await asyncio.sleep(LIMITS_TICK_S)
            if self._answer is not None:
                how = self._answer.check(self._now())
                if how is not None:
                    await self._answered(how)
            session = self._session
            if session is None or not self.state.is_(State.ACTIVE):
                continue
            elapsed = self._elapsed()
            if elapsed >= self._max_call_s:
                log.info("call.limit", extra=fields(limit="max_call_seconds", at_s=round(elapsed)))
                # Wrapped up 30 s ago: what plays now is all there is to wait for.
                self._begin_ending(
                    Outcome.ENDED_BY_AGENT,
                    None,
                    "maximum call duration reached",
                    expect_words=False,
                )
                return
            if not warned and elapsed >= wrap_up_at:
                warned = True
                left = round(self._max_call_s - elapsed)
                await session.send_text(wrap_up_prompt(left))
            if self._caller_silence_s <= 0:
                continue
            now = self._now()
            activity = self._activity
            if activity.speaking or session.model_busy or not self._all_played:
                continue
            if asked_at is not None and activity.last_speech_at > asked_at:
                asked_at = None  # the caller answered
            # Quiet since the caller or the agent last spoke, or since we asked: "as long
            # again" counts from the question even if the model never says it.
            quiet_since = max(activity.last_speech_at, self._last_audio_at, asked_at or 0.0)
            if now - quiet_since < self._caller_silence_s:
                continue
            if asked_at is None:
                asked_at = now
                log.info("call.caller_silent", extra=fields(action="ask"))
                await session.send_text(STILL_THERE_PROMPT)
            else:
                log.info("call.caller_silent", extra=fields(action="end"))
                await session.send_text(SILENT_GOODBYE_PROMPT)
                self._begin_ending(Outcome.ENDED_BY_AGENT, None, "caller silent")
                return

    # -- ending ---------------------------------------------------------------------------

    def _begin_ending(
        self,
        outcome: Outcome,
        tool_id: str | None,
        reason: str = "",
        *,
        expect_words: bool = True,
    ) -> None:
        """End the call once the agent's last words have played. ``expect_words``: the model
        was just asked to speak (it called end_call, or was told to say goodbye), so it gets
        ``MODEL_QUIET_S`` to start before the line is closed."""
        assert self._tg is not None
        self.state.to(State.ENDING)
        self._end_reason = reason
        self._pending_tool_id = tool_id
        self._turns_at_tool = self._turns.completed
        self._ending_since = self._now() if expect_words else 0.0
        # Owned by the call's TaskGroup; cancelled by run() if the call ends first.
        self._end_task = self._tg.create_task(
            self._end_after_playback(outcome), name=f"end:{self.summary.call_sid}"
        )

    async def _end_after_playback(self, outcome: Outcome) -> None:
        """Let the agent's last words finish playing (marks prove it), then act."""
        deadline = self._now() + END_DRAIN_TIMEOUT_S
        while True:
            await self._mark_end_of_audio()
            now = self._now()
            # Quiet since the agent last spoke, or since it asked to end (a model may ask
            # first and say goodbye after: it gets MODEL_QUIET_S to start).
            silent_for = now - max(self._last_audio_at, self._ending_since)
            spoken = (
                self._turns.completed > self._turns_at_tool or silent_for >= MODEL_QUIET_S
            ) and not self._model_working
            if spoken and self._all_played:
                break
            remaining = deadline - now
            if remaining <= 0:
                log.warning("call.end_drain_timeout", extra=fields(timeout_s=END_DRAIN_TIMEOUT_S))
                break
            self._progress.clear()
            if spoken or self._model_working:
                wait = remaining  # woken by playback marks, or by the model going idle
            else:
                wait = min(remaining, MODEL_QUIET_S - silent_for)
            try:
                async with asyncio.timeout(wait):
                    await self._progress.wait()
            except TimeoutError:
                pass
        self._end_task = None
        await self._finish(outcome)

    async def _finish(self, outcome: Outcome) -> None:
        """End the call the way the agent asked: REST when we can, else via <Connect action>."""
        reason = self._end_reason or (
            "agent ended the call" if outcome is Outcome.ENDED_BY_AGENT else "agent transferred"
        )
        self._decide(outcome, reason)
        if self._rest is not None:
            try:
                if outcome is Outcome.TRANSFER and self._transfer_number:
                    await self._rest.redirect(
                        self.summary.call_sid, twiml.dial(self._transfer_number)
                    )
                else:
                    await self._rest.hang_up(self.summary.call_sid)
                log.info("call.rest_action_done", extra=fields(outcome=str(outcome)))
            except TwilioRestError:
                # Fall through: closing the stream still ends or transfers the call.
                self.summary.rest_failures += 1
        await self._close_socket(1000, reason)

    async def _close_socket(self, code: int, reason: str) -> None:
        try:
            await self.socket.close(code, reason)
        except SocketClosed as exc:  # already closed: nothing left to do
            log.debug("twilio.close_failed", extra=fields(error=str(exc)))
