"""One phone call: a Twilio Media Stream joined to one agent session.

This is where a reader finds what happens on barge-in (``_on_interrupted``), when a call ends
(``_finish`` and the ``Outcome``s), and what the caller actually heard (``Heard``, fed by
Twilio's mark echoes).

Shape of a call: ``Call.run()`` waits for Twilio's ``start`` (with a timeout), then runs two
tasks in one TaskGroup: the *caller side* reads Twilio frames and forwards audio, digits and
mark echoes; the *model side* opens the session (or adopts one pre-connected when the webhook
was answered), sends the greeting cue, and turns model events into Twilio messages. Whichever
side ends first decides the outcome; the other is cancelled; the session and the socket are
closed; ``run()`` returns a ``CallSummary``.
"""

from __future__ import annotations

import asyncio
import enum
import logging
import time
from collections import deque
from collections.abc import Callable
from typing import Any, Protocol

from agent.activity import CallerActivity
from agent.events import (
    AgentError,
    AudioOut,
    GenerationComplete,
    GoAway,
    InputTranscript,
    Interrupted,
    ModelUnavailable,
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
from agent.resilient import ResiliencePolicy, ResilientSession, SessionOpener, open_conversation
from agent.session import LiveAgent
from agent.tools import END_CALL, TRANSFER_CALL
from agent.vad import EnergyVad
from telephony.audio import CallerToModel, ModelToCaller
from telephony.call.recorder import CallRecorder
from telephony.call.summary import CallSummary, Interruption, Outcome, join_fragments
from telephony.twilio import media_stream as ms
from telephony.twilio import twiml
from telephony.twilio.rest import TwilioRest, TwilioRestError

log = logging.getLogger(__name__)

#: Caller audio kept while the model session is still being opened (bounded: 5 s).
PRE_SESSION_BUFFER_FRAMES = 250
#: Bad frames tolerated on one stream before we give up on it.
MAX_BAD_FRAMES = 50
#: The longest we wait for the agent's last words to play before ending/transferring.
END_DRAIN_TIMEOUT_S = 30.0
#: After end_call/transfer_call, the agent is done talking once a turn completes after the
#: tool call, or, failing that, after this long without audio.
MODEL_QUIET_S = 2.0
#: A mark follows at most this much agent audio (200 ms): fine enough to know what the caller
#: heard, coarse enough not to double the messages to Twilio (model chunks are often 40 ms).
MARK_INTERVAL_BYTES = 1600
#: The agent is told to wrap up this long before MAX_CALL_SECONDS.
WRAP_UP_S = 30.0
LIMITS_TICK_S = 0.5
#: An agent answer starting later than this after the caller stopped talking is not counted
#: as a response to it (the model let that utterance pass; something else prompted it).
RESPONSE_WINDOW_S = 10.0
#: Outbound calls: the callee's first words may run this long (a voicemail greeting) before
#: the agent speaks anyway.
ANSWER_MAX_SPEECH_S = 30.0


class State(enum.Enum):
    WAITING_FOR_START = "waiting_for_start"
    CONNECTING_MODEL = "connecting_model"
    ACTIVE = "active"
    ENDING = "ending"
    ENDED = "ended"


class TwilioSocket(Protocol):
    """What a call needs from the Twilio WebSocket (the server adapts Starlette's)."""

    async def receive(self) -> str | bytes | None:
        """The next frame, or None once the peer has gone."""

    async def send(self, text: str) -> None: ...

    async def close(self, code: int, reason: str) -> None: ...


class Heard:
    """What of the agent's speech the caller has actually heard, from Twilio's mark echoes.

    Agent audio is followed by marks (``mark()``: one per ``MARK_INTERVAL_BYTES``, and a final
    one with ``force``) named after their end offset in the turn. An echo proves the audio
    before it played, unless a ``clear`` came first: ``clear`` echoes every pending mark at
    once, so marks pending at a clear are remembered and their echoes ignored.
    """

    def __init__(self) -> None:
        self.turn = 0
        self.sent_bytes = 0  # μ-law bytes of this turn sent
        self.confirmed_bytes = 0  # of which confirmed played
        self.confirmed_at = 0.0  # monotonic time of that confirmation
        self.first_sent_at = 0.0
        self._seq = 0
        self._unmarked = 0  # bytes sent since the last mark
        self._pending: dict[str, tuple[int, int]] = {}  # mark → (turn, end offset)
        self._cleared: set[str] = set()
        self.last_mark: str | None = None

    def new_turn(self) -> None:
        self.turn += 1
        self.sent_bytes = 0
        self.confirmed_bytes = 0

    def sent(self, nbytes: int, now: float) -> None:
        """Record audio sent to Twilio."""
        if self.sent_bytes == 0:
            self.first_sent_at = now
            self.confirmed_at = now
        self.sent_bytes += nbytes
        self._unmarked += nbytes

    def mark(self, force: bool = False) -> str | None:
        """The name of a mark to send now, if one is due (``force``: any unmarked audio)."""
        if self._unmarked == 0 or (not force and self._unmarked < MARK_INTERVAL_BYTES):
            return None
        self._unmarked = 0
        self._seq += 1
        name = f"{self.turn}:{self.sent_bytes}:{self._seq}"
        self._pending[name] = (self.turn, self.sent_bytes)
        self.last_mark = name
        return name

    def echoed(self, name: str, now: float) -> bool:
        """A mark came back; True if it proves audio was heard (not a clear's echo)."""
        if name in self._cleared:
            self._cleared.discard(name)
            return False
        entry = self._pending.pop(name, None)
        if entry is None:
            return False
        turn, offset = entry
        if turn == self.turn and offset > self.confirmed_bytes:
            self.confirmed_bytes = offset
            self.confirmed_at = now
        if name == self.last_mark:
            self.last_mark = None
        return True

    @property
    def all_played(self) -> bool:
        """All audio sent is marked and every mark was echoed (so all of it has played)."""
        return not self._pending and self._unmarked == 0

    def cleared(self, now: float) -> tuple[float, float, float]:
        """Twilio was told to clear: (sent_ms, heard_ms, confirmed_ms) of this turn."""
        self._cleared.update(self._pending)
        self._pending.clear()
        self._unmarked = 0
        self.last_mark = None
        # Between the last echo and now, audio kept playing (if there was any left to play).
        since = max(0.0, now - max(self.confirmed_at, self.first_sent_at))
        estimate = min(self.sent_bytes, self.confirmed_bytes + round(since * ms.SAMPLE_RATE))
        to_ms = 1000.0 / ms.SAMPLE_RATE
        return self.sent_bytes * to_ms, estimate * to_ms, self.confirmed_bytes * to_ms


class _StreamEnded(Exception):
    """Internal: the caller side is done (stop, hang-up, or a fatal protocol error)."""

    def __init__(self, reason: str, outcome: Outcome = Outcome.COMPLETED) -> None:
        super().__init__(reason)
        self.outcome = outcome


class Call:
    """A single phone call. Create one per accepted Media Stream and ``await run()``."""

    def __init__(
        self,
        socket: TwilioSocket,
        open_session: SessionOpener,
        *,
        agent: LiveAgent | None = None,
        policy: ResiliencePolicy | None = None,
        greeting: str | None,
        max_call_s: float = 3600.0,
        caller_silence_s: float = 0.0,
        stream_start_timeout_s: float = 10.0,
        transfer_number: str | None = None,
        rest: TwilioRest | None = None,
        on_started: Callable[[Call], None] | None = None,
        recorder: CallRecorder | None = None,
        outbound_greeting: str | None = None,
        answer_timeout_s: float = 5.0,
    ) -> None:
        self.socket = socket
        self._open_session = open_session
        self._agent = agent
        self._policy = policy or ResiliencePolicy()
        self._max_call_s = max_call_s
        self._caller_silence_s = caller_silence_s
        self._greeting = greeting
        self._outbound_greeting = outbound_greeting
        self._answer_timeout_s = answer_timeout_s
        # Outbound calls: the callee's audio goes to this VAD, not to the model, until they
        # have answered (their first words, or answer_timeout_s of silence). None: answered.
        self._answer_vad: EnergyVad | None = None
        self._answer_speech_at: float | None = None
        self._start_timeout = stream_start_timeout_s
        self._transfer_number = transfer_number
        self._rest = rest
        self._on_started = on_started
        self._rec = recorder  # None unless RECORD_CALLS is set: then every hook is one test
        self.state = State.WAITING_FOR_START
        self.summary = CallSummary()
        self.outcome_decided = asyncio.Event()

        self._t0 = time.monotonic()
        self._out: ms.OutboundBuilder | None = None
        self._session: ResilientSession | None = None
        self._to_model = CallerToModel()
        self._activity = CallerActivity(self._t0, end_ms=self._policy.caller_silence_end_ms)
        self._to_caller = ModelToCaller()
        self._pre_session: deque[bytes] = deque()
        self._pre_session_digits: list[str] = []
        self._heard = Heard()
        self._discarding = False  # dropping the rest of an interrupted turn
        self._turn_closed = True  # the last agent turn is complete; the next audio starts one
        self._turn_in: list[str] = []
        self._turn_out: list[str] = []
        self._turn_caller_at: float | None = None  # when the caller began this turn's words
        self._turn_audio_started = False
        self._turn_response_ms: float | None = None
        self._last_audio_at = 0.0
        self._progress = asyncio.Event()  # something changed that an end-drain waits for
        self._ending = False
        self._pending_tool_id: str | None = None
        self._end_reason = ""
        self._turns_done = 0
        self._turns_at_tool = 0
        self._end_task: asyncio.Task[None] | None = None
        self._tg: asyncio.TaskGroup | None = None
        self._done = asyncio.Event()

    # -- lifecycle ------------------------------------------------------------------------

    async def run(self) -> CallSummary:
        """Serve the call to its end. Never raises for anything the peers do."""
        try:
            start = await self._wait_for_start()
        except _StreamEnded as exc:
            self._decide(Outcome.REJECTED, str(exc))
            self.state = State.ENDED
            log.info(
                "call.rejected", extra=fields(reason=str(exc), bad_frames=self.summary.bad_frames)
            )
            return self.summary
        call_id_var.set(start.call_sid)
        self._began(start)
        try:
            async with asyncio.TaskGroup() as tg:
                self._tg = tg
                tasks = [
                    tg.create_task(self._caller_side(), name=f"caller:{start.call_sid}"),
                    tg.create_task(self._model_side(), name=f"model:{start.call_sid}"),
                    tg.create_task(self._limits(), name=f"limits:{start.call_sid}"),
                ]
                await self._done.wait()
                for task in tasks:
                    task.cancel()
                if self._end_task is not None:
                    self._end_task.cancel()
        except asyncio.CancelledError:
            self._decide(Outcome.SHUTDOWN, "server stopped")
            raise
        finally:
            self.state = State.ENDED
            if self._session is not None:
                await self._session.close()
                self._collect_stats(self._session)
            self.summary.duration_s = round(time.monotonic() - self._t0, 3)
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
            if self._rec is not None:  # written off the event loop; bounded; never raises
                await self._rec.finish(
                    time.monotonic(),
                    outcome=str(self.summary.outcome),
                    reason=self.summary.reason,
                    duration_s=self.summary.duration_s,
                )
                self.summary.recording_failed = self._rec.failed
        return self.summary

    def _collect_stats(self, session: ResilientSession) -> None:
        stats = session.stats
        self.summary.reconnects = stats.reconnects
        self.summary.stalls = stats.stalls
        self.summary.stalls_recovered = stats.stalls_recovered
        self.summary.model_connections = list(stats.connections)
        self.summary.caller_audio_ms = round(stats.caller_audio_ms, 1)
        self.summary.caller_audio_dropped_ms = round(stats.caller_audio_dropped_ms, 1)
        self.summary.max_buffered_ms = round(stats.max_buffered_ms, 1)

    def _began(self, start: ms.Start) -> None:
        params = start.custom_parameters
        self.summary.call_sid = start.call_sid
        self.summary.stream_sid = start.stream_sid
        self.summary.caller = params.get("from", "")
        self.summary.callee = params.get("to", "")
        outbound = params.get("direction", "").startswith("outbound")
        self.summary.direction = "outbound" if outbound else "inbound"
        if outbound:
            self._answer_vad = EnergyVad(16_000)
        self._out = ms.OutboundBuilder(start.stream_sid)
        if self._rec is not None:
            self._rec.start(start, time.monotonic())
        self.state = State.CONNECTING_MODEL
        log.info(
            "call.started",
            extra=fields(
                stream_sid=start.stream_sid, caller=self.summary.caller, callee=self.summary.callee
            ),
        )
        if self._on_started is not None:
            self._on_started(self)

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
        return time.monotonic() - self._t0

    # -- caller side ----------------------------------------------------------------------

    async def _wait_for_start(self) -> ms.Start:
        try:
            async with asyncio.timeout(self._start_timeout):
                while True:
                    event = await self._next_event()
                    if isinstance(event, ms.Start):
                        return event
                    if isinstance(event, ms.Stop):
                        raise _StreamEnded("stop before start", Outcome.REJECTED)
                    if not isinstance(event, ms.Connected):
                        self._bad_frame(f"{type(event).__name__.lower()} before start")
        except TimeoutError:
            log.warning("stream.no_start", extra=fields(timeout_s=self._start_timeout))
            await self._close_socket(1008, "no start event")
            raise _StreamEnded("no start event within timeout", Outcome.REJECTED) from None

    async def _next_event(self) -> ms.InboundEvent:
        """The next valid Twilio event; bad frames are counted and skipped."""
        while True:
            frame = await self.socket.receive()
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
        try:
            while True:
                event = await self._next_event()
                if isinstance(event, ms.Media):
                    if self._rec is not None:
                        self._rec.caller_audio(event.payload, event.timestamp_ms)
                    await self._on_caller_audio(event.payload)
                elif isinstance(event, ms.Mark):
                    if self._rec is not None:
                        self._rec.event("mark", time.monotonic(), name=event.name)
                    if self._heard.echoed(event.name, time.monotonic()):
                        self._progress.set()
                elif isinstance(event, ms.Dtmf):
                    await self._on_dtmf(event.digit)
                elif isinstance(event, ms.Stop):
                    if self._rec is not None:
                        self._rec.event("stop", time.monotonic())
                    # After a transfer or hang-up the agent asked for, the outcome is already
                    # decided and this does not change it (first decision wins).
                    self._decide(Outcome.COMPLETED, "caller hung up")
                    return
                else:
                    self._bad_frame(f"unexpected {type(event).__name__.lower()}")
        except _StreamEnded as exc:
            self._decide(exc.outcome, str(exc))
        except AgentError as exc:
            await self._model_failed(exc)

    async def _on_caller_audio(self, ulaw: bytes) -> None:
        self.summary.frames_in += 1
        pcm = self._to_model.process(ulaw)
        if self._answer_vad is not None:
            await self._listen_for_answer(pcm)
            return
        self._activity.push(pcm, time.monotonic())
        if self._session is None:
            if len(self._pre_session) >= PRE_SESSION_BUFFER_FRAMES:
                self._pre_session.popleft()
                self.summary.dropped_pre_session_frames += 1
            self._pre_session.append(pcm)
            return
        await self._session.send_audio(pcm)

    async def _listen_for_answer(self, pcm: bytes) -> None:
        """Outbound: has the callee answered? (Their first words have ended.)"""
        assert self._answer_vad is not None
        for event in self._answer_vad.push(pcm):
            if event.is_start:
                self._answer_speech_at = time.monotonic()
            else:
                await self._answered("callee spoke")
                return

    async def _answered(self, how: str) -> None:
        """The callee is on the line: the agent may speak (and hear them) from now on."""
        if self._answer_vad is None:
            return
        self._answer_vad = None
        log.info("call.answered", extra=fields(how=how, at_s=round(self._elapsed(), 3)))
        if self._session is not None and self._outbound_greeting:
            await self._session.send_text(outbound_greeting_prompt(self._outbound_greeting))

    def _on_input_transcript(self, text: str) -> None:
        if self._turn_caller_at is None:
            # Transcripts arrive while or just after the caller speaks: the turn's words began
            # with the utterance the call's own VAD saw start last (or now, if it saw none).
            now = time.monotonic()
            started = self._activity.started_at
            self._turn_caller_at = started if started is not None and started <= now else now
        self._turn_in.append(text)

    async def _on_dtmf(self, digit: str) -> None:
        self.summary.dtmf.append(digit)
        log.info("call.dtmf", extra=fields(digit=digit))
        if self._rec is not None:
            self._rec.event("dtmf", time.monotonic(), digit=digit)
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
                    await self._send_mark(force=True)
                    self._on_turn_complete()
                elif isinstance(event, InputTranscript):
                    self._on_input_transcript(event.text)
                elif isinstance(event, OutputTranscript):
                    if not self._discarding:
                        self._open_turn()
                        self._turn_out.append(event.text)
                elif isinstance(event, ToolCall):
                    await self._on_tool_call(event)
                elif isinstance(event, ToolCallCancellation):
                    self._on_tool_cancel(event.ids)
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
                    await self._send_mark(force=True)  # so the turn's end is known when played
                elif isinstance(event, ResumptionUpdate):
                    pass
        except AgentError as exc:
            await self._model_failed(exc)

    async def _connect_model(self) -> ResilientSession:
        began = time.monotonic()
        if self._agent is None:
            raise ModelUnavailable("no model client to reconnect with", retryable=False)
        session = await open_conversation(
            self._open_session,
            self._agent,
            self.summary.call_sid,
            activity=self._activity,
            policy=self._policy,
            clock_origin=self._t0,
        )
        self._session = session
        self.summary.model_connect_ms = round((time.monotonic() - began) * 1000, 1)
        self.state = State.ACTIVE
        log.info("model.connected", extra=fields(connect_ms=self.summary.model_connect_ms))
        if self.summary.direction == "outbound":
            # The agent speaks first only once a person has answered (``_answered``).
            if self._answer_vad is None and self._outbound_greeting:
                await session.send_text(outbound_greeting_prompt(self._outbound_greeting))
        elif self._greeting:
            await session.send_text(greeting_prompt(self._greeting))
        # Whatever the caller said or pressed while we were connecting goes in now, in order.
        while self._pre_session:
            await session.send_audio(self._pre_session.popleft())
        for digit in self._pre_session_digits:
            await session.send_text(dtmf_prompt(digit))
        self._pre_session_digits.clear()
        return session

    async def _model_failed(self, exc: AgentError) -> None:
        log.error("model.failed", extra=fields(error=str(exc), code=exc.code))
        self._decide(Outcome.FAILED, f"model session: {exc}")
        # Closing the stream makes Twilio ask <Connect action>, which apologises (and
        # transfers when a number is configured).
        await self._close_socket(1011, "model unavailable")

    async def _send(self, text: str) -> None:
        try:
            await self.socket.send(text)
        except Exception as exc:  # the socket is gone: the caller side will see it too
            log.debug("twilio.send_failed", extra=fields(error=str(exc)))
            self._decide(Outcome.COMPLETED, "socket closed by Twilio")

    async def _on_model_audio(self, pcm: bytes) -> None:
        if self._discarding:
            return  # late audio of an interrupted turn: never play it
        ulaw = self._to_caller.process(pcm)
        if not ulaw or self._out is None:
            return
        self._open_turn()
        now = time.monotonic()
        self._last_audio_at = now
        if not self._turn_audio_started:
            self._turn_audio_started = True
            ended = self._activity.take_speech_end()
            if ended is not None and now - ended <= RESPONSE_WINDOW_S:
                self._turn_response_ms = round((now - ended) * 1000, 1)
        if self.summary.first_audio_ms is None:
            self.summary.first_audio_ms = round((now - self._t0) * 1000, 1)
            log.info("call.first_audio", extra=fields(ms=self.summary.first_audio_ms))
        await self._send(self._out.media(ulaw))
        if self._rec is not None:
            self._rec.agent_audio(ulaw, now)
        self._heard.sent(len(ulaw), now)
        await self._send_mark()
        self.summary.frames_out += 1
        self._progress.set()

    async def _send_mark(self, force: bool = False) -> None:
        name = self._heard.mark(force)
        if name is not None and self._out is not None:
            await self._send(self._out.mark(name))

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
        self._discarding = False
        if not self._turn_closed:
            await self._send_mark(force=True)
            self._on_turn_complete()

    def _open_turn(self) -> None:
        """The first output of an agent turn starts it (lazily, see ``_on_turn_complete``)."""
        if self._turn_closed:
            self._turn_closed = False
            self._heard.new_turn()
            self._turn_out.clear()
            self._turn_audio_started = False
            self._turn_response_ms = None

    async def _on_interrupted(self) -> None:
        """Barge-in: the caller talks over the agent. Stop the agent's voice *now*."""
        received = time.monotonic()
        if self._out is not None:
            await self._send(self._out.clear())
            if self._rec is not None:
                self._rec.clear(time.monotonic())
        clear_ms = (time.monotonic() - received) * 1000
        self._to_caller.reset()
        # Drop the rest of the generation that was cut off, until its turnComplete. If the turn
        # had already completed (its audio was still playing at Twilio), nothing more of it
        # will come, and discarding would swallow the next answer instead.
        self._discarding = not self._turn_closed
        sent_ms, heard_ms, confirmed_ms = self._heard.cleared(received)
        text = join_fragments(self._turn_out)
        cut = text[: round(len(text) * heard_ms / sent_ms)] if sent_ms else ""
        record = Interruption(
            at_s=round(self._elapsed(), 3),
            clear_latency_ms=round(clear_ms, 3),
            sent_ms=round(sent_ms),
            heard_ms=round(heard_ms),
            confirmed_ms=round(confirmed_ms),
            transcript_heard=cut,
        )
        self.summary.interruptions.append(record)
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
        if self._turn_closed and self.summary.turns:
            self.summary.turns[-1].update(interrupted=True, agent_heard=cut)
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
        interrupted = self._discarding
        self._discarding = False
        if self._turn_closed and not self._turn_in:
            self._turns_done += 1
            self._progress.set()
            return  # nothing new since the last turn (e.g. the turnComplete after a late clear)
        agent_at = self._heard.first_sent_at if self._heard.sent_bytes else None
        turn: dict[str, Any] = {
            "at_s": round(self._elapsed(), 3),
            "caller": join_fragments(self._turn_in),
            "agent": join_fragments(self._turn_out),
            "interrupted": interrupted,
            "agent_audio_ms": round(self._heard.sent_bytes * 1000 / ms.SAMPLE_RATE),
        }
        if self._turn_caller_at is not None and turn["caller"]:
            turn["caller_at_s"] = round(self._turn_caller_at - self._t0, 3)
        if agent_at is not None and turn["agent"]:
            turn["agent_at_s"] = round(agent_at - self._t0, 3)
        if self._turn_response_ms is not None:
            turn["response_ms"] = self._turn_response_ms
        if interrupted and self.summary.interruptions:
            turn["agent_heard"] = self.summary.interruptions[-1].transcript_heard
        self.summary.turns.append(turn)
        if self._rec is not None:
            self._rec.event("turn", time.monotonic(), **{k: turn[k] for k in turn if k != "at_s"})
        log.info("call.turn", extra=fields(**turn))
        # The agent's text and mark positions stay until its next turn starts: a barge-in can
        # still arrive for this turn while its audio plays at Twilio.
        self._turn_in.clear()
        self._turn_caller_at = None
        self._turn_closed = True
        self._turns_done += 1
        self._progress.set()

    # -- tools ----------------------------------------------------------------------------

    async def _on_tool_call(self, event: ToolCall) -> None:
        assert self._session is not None
        for fc in event.calls:
            record: dict[str, Any] = {"id": fc.id, "name": fc.name, "args": fc.args}
            self.summary.tool_calls.append(record)
            if fc.name == END_CALL and not self._ending:
                result: dict[str, Any] = {
                    "result": "ok",
                    "note": "The call ends after you finish speaking.",
                }
                self._begin_ending(Outcome.ENDED_BY_AGENT, fc.id)
            elif fc.name == TRANSFER_CALL and self._transfer_number and not self._ending:
                result = {
                    "result": "ok",
                    "note": "The caller is transferred after you finish speaking.",
                }
                self._begin_ending(Outcome.TRANSFER, fc.id)
            elif fc.name in {END_CALL, TRANSFER_CALL}:
                result = {"result": "ignored", "error": "the call is already ending"}
            else:
                result = {"result": "error", "error": f"unknown tool {fc.name!r}"}
            record["result"] = result
            if self._rec is not None:
                self._rec.event("tool_call", time.monotonic(), **record)
            log.info(
                "call.tool_call",
                extra=fields(tool=fc.name, args=fc.args, result=result.get("result")),
            )
            await self._session.send_tool_response(fc.id, fc.name, result)

    def _on_tool_cancel(self, ids: tuple[str, ...]) -> None:
        log.info("call.tool_cancelled", extra=fields(ids=list(ids)))
        if self._end_task is not None and self._pending_tool_id in ids:
            # The model took it back before we acted: the call goes on.
            self._end_task.cancel()
            self._end_task = None
            self._ending = False
            self.state = State.ACTIVE

    async def _limits(self) -> None:
        """The call's length limit and the caller-silence timeout."""
        wrap_up_at = self._max_call_s - min(WRAP_UP_S, self._max_call_s / 4)
        warned = False
        asked_at: float | None = None  # when we asked "are you still there?"
        while True:
            await asyncio.sleep(LIMITS_TICK_S)
            if self._answer_vad is not None:
                await self._check_answer_timeout()
            session = self._session
            if session is None or self._ending:
                continue
            elapsed = self._elapsed()
            if elapsed >= self._max_call_s:
                log.info("call.limit", extra=fields(limit="max_call_seconds", at_s=round(elapsed)))
                self._begin_ending(Outcome.ENDED_BY_AGENT, None, "maximum call duration reached")
                return
            if not warned and elapsed >= wrap_up_at:
                warned = True
                left = round(self._max_call_s - elapsed)
                await session.send_text(wrap_up_prompt(left))
            if self._caller_silence_s <= 0:
                continue
            now = time.monotonic()
            activity = self._activity
            if activity.speaking or session.model_busy or not self._heard.all_played:
                continue
            quiet_since = max(activity.last_speech_at, self._last_audio_at)
            if asked_at is not None and activity.last_speech_at > asked_at:
                asked_at = None  # the caller answered
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

    async def _check_answer_timeout(self) -> None:
        """Outbound: a callee who picks up and says nothing (or talks on and on) is greeted."""
        now = time.monotonic()
        if self._answer_speech_at is None:
            if self._elapsed() >= self._answer_timeout_s:
                await self._answered("silence")
        elif now - self._answer_speech_at >= ANSWER_MAX_SPEECH_S:
            await self._answered("long speech")

    def _begin_ending(self, outcome: Outcome, tool_id: str | None, reason: str = "") -> None:
        assert self._tg is not None
        self._ending = True
        self._end_reason = reason
        self._pending_tool_id = tool_id
        self._turns_at_tool = self._turns_done
        self.state = State.ENDING
        # Owned by the call's TaskGroup; cancelled by run() if the call ends first.
        self._end_task = self._tg.create_task(
            self._end_after_playback(outcome), name=f"end:{self.summary.call_sid}"
        )

    async def _end_after_playback(self, outcome: Outcome) -> None:
        """Let the agent's last words finish playing (marks prove it), then act."""
        deadline = time.monotonic() + END_DRAIN_TIMEOUT_S
        while True:
            await self._send_mark(force=True)
            now = time.monotonic()
            silent_for = now - self._last_audio_at
            spoken = self._turns_done > self._turns_at_tool or silent_for >= MODEL_QUIET_S
            if spoken and self._heard.all_played:
                break
            remaining = deadline - now
            if remaining <= 0:
                log.warning("call.end_drain_timeout", extra=fields(timeout_s=END_DRAIN_TIMEOUT_S))
                break
            self._progress.clear()
            wait = remaining if spoken else min(remaining, MODEL_QUIET_S - silent_for)
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
        except Exception as exc:  # already closed: nothing left to do
            log.debug("twilio.close_failed", extra=fields(error=str(exc)))
