"""One simulated Live API connection: the protocol, the reply player and the script API.

Concurrency: each session runs one ``asyncio.TaskGroup``. The receive loop is the body; the
reply player (one turn at a time) and timers are tasks of that group, all cancelled when the
connection ends, so an abrupt disconnect leaves nothing running. Sending never raises: a
closed or stalled connection just makes it return ``False``.

"What happens on barge-in" lives in :meth:`SimSession._on_speech_started`.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import logging
import math
import secrets
from collections import deque
from collections.abc import Callable, Coroutine, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from agent.pcm import StreamResampler
from agent.simulator import wire
from agent.simulator.behaviour import SimBehaviour
from agent.simulator.dialogue import describe_caller_speech, describe_echo, reply_for_text
from agent.simulator.faults import Fault, FaultSchedule
from agent.simulator.utterances import SpeechEnded, SpeechStarted, UtteranceDetector
from agent.simulator.voice import OUTPUT_RATE, synthesize
from agent.simulator.wire import JsonDict, nested
from agent.simulator.wire import field as wfield

__all__ = ["AUDIO_TOKENS_PER_S", "HandleRegistry", "SimSession", "Utterance"]

log = logging.getLogger(__name__)

#: Documented token rate of audio in the Gemini API.
AUDIO_TOKENS_PER_S = 25
_DEFAULT_INPUT_RATE = 16_000
_DEFAULT_WAIT_S = 10.0
#: What the real service says when it ends a connection at its time limit (after goAway).
_DEADLINE = (1011, "Deadline expired before operation could complete.")


@dataclass(frozen=True, slots=True)
class Utterance:
    """A caller utterance found by the simulator's VAD (ms of caller audio since connect)."""

    start_ms: float
    end_ms: float

    @property
    def duration_ms(self) -> float:
        return self.end_ms - self.start_ms


class HandleRegistry:
    """Session resumption handles issued by one simulator; valid across its sessions."""

    def __init__(self) -> None:
        self._owner: dict[str, str] = {}
        self._revoked: set[str] = set()

    def issue(self, session_id: str, handle: str | None = None) -> str:
        handle = handle or secrets.token_urlsafe(32)
        self._owner[handle] = session_id
        return handle

    def revoke(self, session_id: str) -> None:
        """Invalidate every handle of a session (its state is lost: it cannot be resumed)."""
        self._revoked.add(session_id)

    def __contains__(self, handle: object) -> bool:
        """The handle was issued here and is still valid."""
        owner = self._owner.get(handle) if isinstance(handle, str) else None
        return owner is not None and owner not in self._revoked

    def session_of(self, handle: str) -> str | None:
        """Id of the session that was given ``handle``."""
        return self._owner.get(handle)


class _Phase(enum.Enum):
    QUEUED = enum.auto()
    THINKING = enum.auto()
    SPEAKING = enum.auto()  # sending audio
    HOLDING = enum.auto()  # all audio sent; turnComplete waits for real-time playback
    DONE = enum.auto()
    INTERRUPTED = enum.auto()
    DROPPED = enum.auto()  # superseded, stalled or closed before it finished


@dataclass(eq=False, slots=True)
class _Turn:
    """One model turn: an echo of a caller utterance or synthesized speech."""

    done: asyncio.Future[bool]  # True once all its audio was sent
    think_s: float
    speech_text: str | None = None  # synthesized speech
    echo_pcm: bytes = b""  # or caller audio to play back ...
    echo_rate: int = _DEFAULT_INPUT_RATE  # ... at this rate
    echo_label: str = ""
    phase: _Phase = _Phase.QUEUED
    task: asyncio.Task[None] | None = None
    first_chunk_at: float | None = None  # loop time
    audio_sent_s: float = 0.0

    @property
    def is_echo(self) -> bool:
        return self.speech_text is None

    def playing_until(self) -> float:
        """Loop time at which the audio sent so far has finished playing for the caller."""
        if self.first_chunk_at is None:
            return -math.inf
        return self.first_chunk_at + self.audio_sent_s

    def finish(self, complete: bool) -> None:
        if not self.done.done():
            self.done.set_result(complete)


class SimSession:
    """One client connection to the simulator: what it sent, and methods to script replies.

    Recorded state is plain attributes (read them any time). Script methods that send return
    ``False`` instead of raising when the connection is closed or stalled; ``wait_*`` methods
    raise ``TimeoutError`` after ``timeout`` seconds.
    """

    def __init__(
        self,
        ws: ServerConnection,
        *,
        session_id: str,
        behaviour: SimBehaviour,
        handles: HandleRegistry,
        rng: np.random.Generator,
    ) -> None:
        self._ws = ws
        self._handles = handles
        self._rng = rng
        # Faults draw from a stream of their own, so that a seeded run injects the same faults
        # however many audio chunks were drawn before them.
        self._fault_rng = rng.spawn(1)[0]
        request = ws.request
        #: Simulator-local id ("s1", "s2", …).
        self.id = session_id
        #: The client's TCP port (the ``local_port`` of its socket): ties this session to the
        #: connection a client reports, e.g. a call's ``model_connections``.
        self.peer_port = _port(ws.remote_address)
        #: Loop time at which the connection was accepted.
        self.connected_at = asyncio.get_running_loop().time()
        #: Read live: may be replaced mid-session (``dataclasses.replace``).
        self.behaviour = behaviour
        #: Request path of the WebSocket handshake.
        self.path = request.path if request else ""
        #: The API key (or token) the client presented.
        self.api_key = (wire.credential(request.headers, self.path) if request else None) or ""
        #: The ``setup`` message exactly as received (``None`` until it arrives).
        self.setup: JsonDict | None = None
        #: ``setupComplete`` was sent.
        self.setup_completed = False
        #: Every text input (``realtimeInput.text`` and ``clientContent`` text parts), in order.
        self.texts: list[str] = []
        #: Tool calls sent to the client, by id: ``{"id", "name", "args"}``.
        self.tool_calls: dict[str, JsonDict] = {}
        #: Function responses received, by id (unknown ids included), as received.
        self.tool_responses: dict[str, JsonDict] = {}
        #: Client messages of other kinds (e.g. ``contextUpdate``), as received.
        self.other_messages: list[JsonDict] = []
        #: Caller audio received, ms.
        self.audio_in_ms = 0.0
        #: Model audio sent, ms.
        self.audio_out_ms = 0.0
        #: (loop time the chunk was handed to the socket, 24 kHz samples sent before it) for
        #: every audio chunk: lets a benchmark time each chunk's trip to the caller.
        self.chunk_log: list[tuple[float, int]] = []
        self._samples_out = 0
        #: Caller utterances detected, in order.
        self.utterances: list[Utterance] = []
        #: Model turns cut short by caller speech (barge-in).
        self.interruptions = 0
        #: Model turns that ran to ``turnComplete`` without being interrupted.
        self.turns_completed = 0
        #: The resumption handle this session was resumed from.
        self.resumed_from: str | None = None
        #: Setup asked to resume and was refused (unknown, revoked or refused handle).
        self.resumption_refused = False
        #: Faults injected by ``SimBehaviour.faults``: (seconds since connect, kind), in order.
        #: Kinds are described in :class:`~agent.simulator.behaviour.FaultPlan`.
        self.faults_injected: list[tuple[float, str]] = []
        #: Resumption handles sent to this session, in order.
        self.handles_issued: list[str] = []
        #: The connection has ended.
        self.closed = False
        #: Close code and reason of the first close frame (either side; 1006 if none).
        self.close_code: int | None = None
        self.close_reason: str | None = None

        self._tg: asyncio.TaskGroup | None = None
        self._running = False
        self._tasks: set[asyncio.Task[None]] = set()
        self._changed = asyncio.Event()
        self._closed_event = asyncio.Event()
        self._stalled = False
        self._queue: deque[_Turn] = deque()
        self._queue_ready = asyncio.Event()
        self._current: _Turn | None = None  # the turn the player is working on
        self._audible: _Turn | None = None  # the last turn that sent audio
        self._detector: UtteranceDetector | None = None
        self._pending_client_text: list[str] = []
        self._ctx_text_tokens = 0
        self._ctx_audio_tokens = 0

    # --- Setup-derived properties ----------------------------------------------------------

    @property
    def model(self) -> str | None:
        value = wfield(self.setup, "model")
        return value if isinstance(value, str) else None

    @property
    def voice(self) -> str | None:
        """``generationConfig.speechConfig.voiceConfig.prebuiltVoiceConfig.voiceName``."""
        value = nested(
            self.setup,
            "generation_config",
            "speech_config",
            "voice_config",
            "prebuilt_voice_config",
            "voice_name",
        )
        return value if isinstance(value, str) else None

    @property
    def language(self) -> str | None:
        value = nested(self.setup, "generation_config", "speech_config", "language_code")
        return value if isinstance(value, str) else None

    @property
    def system_instruction(self) -> str | None:
        """The text of the system instruction's parts, joined."""
        si = wfield(self.setup, "system_instruction")
        if isinstance(si, str):
            return si
        parts = wfield(si, "parts")
        if not isinstance(parts, list):
            return None
        return "".join(t for p in parts if isinstance(t := wfield(p, "text"), str))

    @property
    def tools(self) -> list[JsonDict]:
        value = wfield(self.setup, "tools")
        return value if isinstance(value, list) else []

    @property
    def function_names(self) -> list[str]:
        """Names of all declared functions."""
        names: list[str] = []
        for tool in self.tools:
            for decl in wfield(tool, "function_declarations") or []:
                if isinstance(name := wfield(decl, "name"), str):
                    names.append(name)
        return names

    @property
    def input_transcription(self) -> bool:
        return wfield(self.setup, "input_audio_transcription") is not None

    @property
    def output_transcription(self) -> bool:
        return wfield(self.setup, "output_audio_transcription") is not None

    @property
    def session_resumption(self) -> JsonDict | None:
        value = wfield(self.setup, "session_resumption")
        return value if isinstance(value, dict) else None

    @property
    def context_window_compression(self) -> JsonDict | None:
        value = wfield(self.setup, "context_window_compression")
        return value if isinstance(value, dict) else None

    # --- Live state --------------------------------------------------------------------------

    @property
    def model_speaking(self) -> bool:
        """A model turn is being heard: audio was sent and has not finished playing in real
        time (the moment a barge-in would interrupt)."""
        audible = self._audible
        return (
            audible is not None
            and audible.phase in (_Phase.SPEAKING, _Phase.HOLDING, _Phase.DONE)
            and asyncio.get_running_loop().time() < audible.playing_until()
        )

    @property
    def caller_speaking(self) -> bool:
        """The VAD is inside a caller utterance."""
        return self._detector is not None and self._detector.in_speech

    @property
    def stalled(self) -> bool:
        """Sending is suspended (:meth:`stall`, or an injected stall)."""
        return self._stalled

    # --- Script API: sending ---------------------------------------------------------------

    async def say(
        self,
        text: str,
        *,
        timeout: float = 30.0,  # noqa: ASYNC109
    ) -> bool:
        """Speak ``text`` as a model turn (after any turn already queued).

        Returns when all its audio was sent: ``True``, or ``False`` if it was interrupted,
        stalled or the connection closed first. ``turnComplete`` may follow later (see
        ``SimBehaviour.hold_turn_complete``).
        """
        turn = self._enqueue(_Turn(self._future(), think_s=0.0, speech_text=text))
        return await asyncio.wait_for(asyncio.shield(turn.done), timeout)

    async def send_tool_call(
        self, name: str, args: Mapping[str, Any] | None = None, id: str | None = None
    ) -> str:
        """Ask the client to call a function; returns the call id."""
        call_id = id or f"function-call-{int(self._rng.integers(10**17, 10**18))}"
        call = {"id": call_id, "name": name, "args": dict(args or {})}
        self.tool_calls[call_id] = call
        await self._send(wire.tool_call([call]))
        return call_id

    async def cancel_tool_calls(self, ids: Iterable[str]) -> bool:
        return await self._send(wire.tool_call_cancellation(list(ids)))

    async def go_away(self, time_left_s: float = 50.0, *, close_after: bool = True) -> bool:
        """Announce the end of the connection; with ``close_after``, close it (1011, "Deadline
        expired…", like the real service) when ``time_left_s`` has passed."""
        sent = await self._send(wire.go_away(time_left_s))
        if close_after and self._running:
            self._spawn(self._close_later(time_left_s, *_DEADLINE))
        return sent

    async def send_resumption_update(
        self, handle: str | None = None, *, resumable: bool = True
    ) -> str | None:
        """Send ``sessionResumptionUpdate``. A resumable handle (a fresh one if ``handle`` is
        ``None``) is registered so a later setup can resume with it. Returns the handle."""
        if resumable:
            handle = self._handles.issue(self.id, handle)
            self.handles_issued.append(handle)
        await self._send(wire.resumption_update(handle, resumable))
        return handle

    async def send_raw(self, message: Mapping[str, Any]) -> bool:
        """Send any JSON message as is."""
        return await self._send(message)

    def stall(self, on: bool = True) -> None:
        """Go silent: discard everything the server would send (replies included) while the
        socket stays open and input is still recorded. A turn being sent is abandoned."""
        self._stalled = on

    async def close(
        self,
        code: int = 1011,
        reason: str = "Internal error encountered.",
        *,
        timeout: float = 5.0,  # noqa: ASYNC109
    ) -> None:
        """Close the connection with ``code`` (the SDK raises ``APIError`` with it)."""
        await self._ws.close(code, reason)
        await self.wait_closed(timeout)

    # --- Script API: waiting ---------------------------------------------------------------
    # Every wait takes a timeout on purpose (ruff's ASYNC109 prefers asyncio.timeout() at the
    # call site): a scripted test that forgets one should fail, not hang.

    async def wait_setup(
        self,
        timeout: float = _DEFAULT_WAIT_S,  # noqa: ASYNC109
    ) -> JsonDict:
        """The ``setup`` message, once received."""
        await self._wait_until(lambda: self.setup is not None, timeout, "setup")
        assert self.setup is not None
        return self.setup

    async def wait_text(
        self,
        substring: str,
        timeout: float = _DEFAULT_WAIT_S,  # noqa: ASYNC109
    ) -> str:
        """The first text input containing ``substring``."""

        def found() -> str | None:
            return next((t for t in self.texts if substring in t), None)

        await self._wait_until(lambda: found() is not None, timeout, f"text {substring!r}")
        result = found()
        assert result is not None
        return result

    async def wait_tool_response(
        self,
        id: str,
        timeout: float = _DEFAULT_WAIT_S,  # noqa: ASYNC109
    ) -> JsonDict:
        """The function response with this id, as received."""
        await self._wait_until(lambda: id in self.tool_responses, timeout, f"tool response {id}")
        return self.tool_responses[id]

    async def wait_utterances(
        self,
        n: int,
        timeout: float = _DEFAULT_WAIT_S,  # noqa: ASYNC109
    ) -> list[Utterance]:
        """All utterances, once at least ``n`` were detected."""
        await self._wait_until(lambda: len(self.utterances) >= n, timeout, f"{n} utterances")
        return list(self.utterances)

    async def wait_turns_completed(
        self,
        n: int,
        timeout: float = _DEFAULT_WAIT_S,  # noqa: ASYNC109
    ) -> int:
        """``turns_completed``, once it reached ``n``."""
        await self._wait_until(lambda: self.turns_completed >= n, timeout, f"{n} turns")
        return self.turns_completed

    async def wait_faults(
        self,
        n: int,
        timeout: float = _DEFAULT_WAIT_S,  # noqa: ASYNC109
    ) -> list[tuple[float, str]]:
        """``faults_injected``, once at least ``n`` faults were injected."""
        await self._wait_until(lambda: len(self.faults_injected) >= n, timeout, f"{n} faults")
        return list(self.faults_injected)

    async def wait_closed(
        self,
        timeout: float = _DEFAULT_WAIT_S,  # noqa: ASYNC109
    ) -> int | None:
        """The close code, once the connection has ended."""
        await self._wait_until(lambda: self.closed, timeout, "close")
        return self.close_code

    # --- Connection lifecycle --------------------------------------------------------------

    async def run(self) -> None:
        """Serve the connection until it ends. Only cancellation escapes."""
        try:
            try:
                async with asyncio.TaskGroup() as tg:
                    self._tg = tg
                    self._running = True
                    self._spawn(self._player())
                    try:
                        await self._receive_loop()
                    finally:
                        self._running = False
                        for task in list(self._tasks):
                            task.cancel()
            except* Exception as group:
                # A bug in the simulator: show it, end this connection, keep the server up.
                log.error("simulated Live session %s failed", self.id, exc_info=group)
                await self._ws.close(1011, "Internal error encountered.")
        finally:
            self._finalize()

    async def _receive_loop(self) -> None:
        ws = self._ws
        try:
            first = self._parse(await ws.recv(decode=False))
            setup = wfield(first, "setup")
            if not isinstance(setup, dict):
                await ws.close(1007, "Invalid request: the first message must be setup.")
                return
            if not await self._on_setup(setup):
                return
            while True:
                message = self._parse(await ws.recv(decode=False))
                if message is None:
                    await ws.close(1007, "Invalid JSON payload received.")
                    return
                await self._dispatch(message)
        except ConnectionClosed:
            return

    def _finalize(self) -> None:
        proto = self._ws.protocol
        first = proto.close_rcvd if proto.close_rcvd_then_sent else proto.close_sent
        first = first or proto.close_rcvd
        self.close_code = first.code if first else 1006
        self.close_reason = first.reason if first else ""
        self.closed = True
        self._running = False
        for turn in [*self._queue, *([self._current] if self._current else [])]:
            turn.finish(False)
        self._queue.clear()
        self._closed_event.set()
        self._notify()

    @staticmethod
    def _parse(raw: bytes) -> JsonDict | None:
        try:
            message = orjson.loads(raw)
        except orjson.JSONDecodeError:
            return None
        return message if isinstance(message, dict) else None

    # --- Client messages -------------------------------------------------------------------

    async def _on_setup(self, setup: JsonDict) -> bool:
        """Handle ``setup``; ``False`` if the connection was refused."""
        self.setup = setup
        self._notify()
        b = self.behaviour
        if b.reject_setup is not None:
            await self._ws.close(*b.reject_setup)
            return False
        schedule = FaultSchedule(b.faults, self._fault_rng) if b.faults is not None else None
        setup_fault = schedule.setup_fault() if schedule is not None else None
        if setup_fault is not None and setup_fault.close is not None:
            self._record_fault(setup_fault.kind)
            await self._ws.close(*setup_fault.close)
            return False
        resumption = wfield(setup, "session_resumption")
        handle = wfield(resumption, "handle")
        if handle:
            if b.refuse_resumption or handle not in self._handles:
                self.resumption_refused = True
                await self._ws.close(*b.resumption_refusal)
                return False
            self.resumed_from = handle
        self._ctx_text_tokens += _text_tokens(self.system_instruction or "")
        self._ctx_text_tokens += _text_tokens(orjson.dumps(self.tools).decode())
        if b.setup_delay_s > 0:
            await asyncio.sleep(b.setup_delay_s)
        if setup_fault is not None:  # setup_hang
            self._record_fault(setup_fault.kind)
        if not b.complete_setup or setup_fault is not None:
            return True  # keep reading (and recording) but never say setupComplete
        self.setup_completed = await self._send(wire.setup_complete())
        self._notify()
        if isinstance(resumption, dict):
            await self.send_resumption_update()
        if b.go_away_after_s is not None:
            self._spawn(self._go_away_later(b.go_away_after_s, b.go_away_time_left_s))
        if schedule is not None and not schedule.exhausted:
            self._spawn(self._inject_faults(schedule))
        return True

    async def _dispatch(self, message: JsonDict) -> None:
        if (realtime := wfield(message, "realtime_input")) is not None:
            await self._on_realtime_input(realtime)
        elif (content := wfield(message, "client_content")) is not None:
            self._on_client_content(content)
        elif (response := wfield(message, "tool_response")) is not None:
            self._on_tool_response(response)
        elif "setup" in message:
            log.warning("session %s: second setup message ignored", self.id)
        else:
            self.other_messages.append(message)
            self._notify()

    async def _on_realtime_input(self, realtime: JsonDict) -> None:
        audio = wfield(realtime, "audio")
        if audio is not None:
            await self._on_audio(wfield(audio, "data"), wfield(audio, "mime_type"))
        chunks = wfield(realtime, "media_chunks")
        if isinstance(chunks, list):  # the legacy form
            for chunk in chunks:
                mime = wfield(chunk, "mime_type")
                if not isinstance(mime, str) or mime.startswith("audio/"):
                    await self._on_audio(wfield(chunk, "data"), mime)
        if wfield(realtime, "audio_stream_end"):
            await self._on_events(self._input(None).end_of_stream())
        if wfield(realtime, "activity_start") is not None:
            await self._on_events(self._input(None).activity_start())
        if wfield(realtime, "activity_end") is not None:
            await self._on_events(self._input(None).activity_end())
        text = wfield(realtime, "text")
        if isinstance(text, str) and text:
            self._record_text(text)
            self._reply_to_text(text)

    async def _on_audio(self, data: object, mime_type: object) -> None:
        if not isinstance(data, str | bytes):
            return
        try:
            pcm = wire.decode_b64(data)
        except ValueError:  # binascii.Error
            await self._ws.close(1007, "Invalid base64 in audio data.")
            return
        detector = self._input(wire.parse_rate(mime_type, _DEFAULT_INPUT_RATE))
        self.audio_in_ms += len(pcm) / 2 / detector.sample_rate * 1000
        await self._on_events(detector.feed(pcm))

    def _on_client_content(self, content: JsonDict) -> None:
        turns = wfield(content, "turns")
        if isinstance(turns, dict):
            turns = [turns]
        for turn in turns if isinstance(turns, list) else []:
            for part in wfield(turn, "parts") or []:
                text = wfield(part, "text")
                if isinstance(text, str) and text:
                    self._record_text(text)
                    self._pending_client_text.append(text)
        if wfield(content, "turn_complete") and self._pending_client_text:
            text = "\n".join(self._pending_client_text)
            self._pending_client_text.clear()
            self._reply_to_text(text)

    def _on_tool_response(self, response: JsonDict) -> None:
        items = wfield(response, "function_responses")
        if isinstance(items, dict):
            items = [items]
        for item in items if isinstance(items, list) else []:
            call_id = wfield(item, "id")
            if not isinstance(call_id, str) or not call_id:
                call_id = f"<no id {len(self.tool_responses) + 1}>"
            if call_id not in self.tool_calls:
                log.info("session %s: response for unknown tool call %r", self.id, call_id)
            self.tool_responses[call_id] = item
        self._notify()

    def _record_text(self, text: str) -> None:
        self.texts.append(text)
        self._ctx_text_tokens += _text_tokens(text)
        self._notify()

    # --- Caller speech ---------------------------------------------------------------------

    def _input(self, rate: int | None) -> UtteranceDetector:
        """The utterance detector, (re)built for ``rate`` and the setup's VAD settings."""
        det = self._detector
        if det is not None and (rate is None or rate == det.sample_rate):
            return det
        if det is not None:
            log.warning("session %s: input rate changed to %s Hz; VAD restarted", self.id, rate)
        b = self.behaviour
        aad = nested(self.setup, "realtime_input_config", "automatic_activity_detection")
        threshold = b.vad_threshold_dbfs
        sensitivity = wfield(aad, "start_of_speech_sensitivity")
        if sensitivity == "START_SENSITIVITY_HIGH":
            threshold -= 6.0
        elif sensitivity == "START_SENSITIVITY_LOW":
            threshold += 6.0
        self._detector = UtteranceDetector(
            rate or _DEFAULT_INPUT_RATE,
            threshold_dbfs=threshold,
            start_ms=_number(wfield(aad, "prefix_padding_ms"), b.vad_start_ms),
            silence_ms=_number(wfield(aad, "silence_duration_ms"), b.silence_ms),
            manual=bool(wfield(aad, "disabled")),
        )
        return self._detector

    async def _on_events(self, events: list[SpeechStarted | SpeechEnded]) -> None:
        for event in events:
            if isinstance(event, SpeechStarted):
                await self._on_speech_started()
            else:
                await self._on_speech_ended(event)

    async def _on_speech_started(self) -> None:
        """Caller speech began: supersede unspoken echoes, and barge in on audible speech."""
        self._notify()  # the caller is speaking (see caller_speaking)
        for turn in self._queue:
            if turn.is_echo:
                turn.phase = _Phase.DROPPED
                turn.finish(False)
        current = self._current
        if current is not None and current.is_echo and current.phase is _Phase.THINKING:
            # The caller went on talking: the reply to their last pause is moot.
            current.phase = _Phase.DROPPED
            await self._stop(current)
        audible = self._audible
        handling = nested(self.setup, "realtime_input_config", "activity_handling")
        if (
            audible is not None
            and handling != "NO_INTERRUPTION"
            and audible.phase in (_Phase.SPEAKING, _Phase.HOLDING, _Phase.DONE)
            and asyncio.get_running_loop().time() < audible.playing_until()
        ):
            await self._interrupt(audible)

    async def _interrupt(self, turn: _Turn) -> None:
        """Barge-in: stop the turn; ``interrupted`` and ``turnComplete`` follow, as with the
        real service (no ``generationComplete`` if it was still generating)."""
        if turn.phase is _Phase.DONE:  # hold_turn_complete=False: turnComplete already sent
            turn.phase = _Phase.INTERRUPTED
            await self._announce_interruption(turn, usage=False)
        else:
            turn.phase = _Phase.INTERRUPTED
            await self._stop(turn)  # the turn's own task announces it (see _play)

    async def _announce_interruption(self, turn: _Turn, *, usage: bool) -> None:
        self.interruptions += 1
        await self._send(wire.interrupted())
        await self._send(wire.turn_complete(self._account(turn) if usage else None))
        if self.session_resumption is not None:
            await self.send_resumption_update()
        self._notify()

    async def _on_speech_ended(self, event: SpeechEnded) -> None:
        self.utterances.append(Utterance(event.start_ms, event.end_ms))
        self._ctx_audio_tokens += round(event.duration_s * AUDIO_TOKENS_PER_S)
        self._notify()
        if self.input_transcription:
            await self._send(wire.input_transcription(describe_caller_speech(event.duration_s)))
        assert self._detector is not None
        self._enqueue(
            _Turn(
                self._future(),
                think_s=self.behaviour.think_ms / 1000,
                echo_pcm=event.audio,
                echo_rate=self._detector.sample_rate,
                echo_label=describe_echo(event.duration_s),
            )
        )

    def _reply_to_text(self, text: str) -> None:
        reply = reply_for_text(text)
        self._enqueue(
            _Turn(self._future(), think_s=self.behaviour.think_ms / 1000, speech_text=reply)
        )

    # --- The reply player ------------------------------------------------------------------

    def _enqueue(self, turn: _Turn) -> _Turn:
        if not self._running:
            turn.finish(False)
            return turn
        self._queue.append(turn)
        self._queue_ready.set()
        return turn

    async def _player(self) -> None:
        # Nothing is spoken before setupComplete (a scripted say() waits for it).
        await self._wait_until(lambda: self.setup_completed, None, "setupComplete")
        while True:
            while not self._queue:
                self._queue_ready.clear()
                await self._queue_ready.wait()
            turn = self._queue.popleft()
            if turn.phase is not _Phase.QUEUED:
                continue
            self._current = turn
            turn.task = self._spawn(self._play(turn))
            # wait() rather than await: a cancelled turn (barge-in) must not stop the player.
            await asyncio.wait({turn.task})
            self._current = None

    async def _play(self, turn: _Turn) -> None:
        try:
            await self._speak(turn)
        except asyncio.CancelledError:
            if turn.phase is _Phase.INTERRUPTED:
                # Announced from the cancelled turn itself: the player starts the next turn
                # only when this task ends, so nothing of it can get ahead of these messages.
                await self._announce_interruption(turn, usage=True)
            raise

    async def _speak(self, turn: _Turn) -> None:
        loop = asyncio.get_running_loop()
        if turn.think_s > 0:
            turn.phase = _Phase.THINKING
            await asyncio.sleep(turn.think_s)
        turn.phase = _Phase.SPEAKING
        pcm, words = self._render(turn)
        transcribe = self.output_transcription
        pos = 0
        next_word = 0
        for n in self._chunk_sizes(len(pcm) // 2):
            emitted_at = loop.time()
            if not await self._send(wire.audio_chunk(pcm[pos * 2 : (pos + n) * 2])):
                self._drop(turn)
                return
            self.chunk_log.append((emitted_at, self._samples_out))
            self._samples_out += n
            if turn.first_chunk_at is None:
                turn.first_chunk_at = loop.time()
                self._audible = turn
                self._notify()  # the model is speaking (see model_speaking)
            pos += n
            turn.audio_sent_s = pos / OUTPUT_RATE
            self.audio_out_ms += n * 1000 / OUTPUT_RATE
            # Transcript pieces go out as the audio of their word starts.
            while next_word < len(words) and words[next_word][1] < pos:
                if transcribe:
                    await self._send(wire.output_transcription(words[next_word][0]))
                next_word += 1
            await self._pace(turn, loop.time())
        for piece, _ in words[next_word:]:
            if transcribe:
                await self._send(wire.output_transcription(piece))
        if not await self._send(wire.generation_complete()):
            self._drop(turn)
            return
        turn.finish(True)
        if self.behaviour.hold_turn_complete:
            # The real service waits for the audio to have played before turnComplete; the
            # turn stays interruptible until then.
            turn.phase = _Phase.HOLDING
            await asyncio.sleep(max(0.0, turn.playing_until() - loop.time()))
        turn.phase = _Phase.DONE
        await self._send(wire.turn_complete(self._account(turn)))
        self.turns_completed += 1
        if self.session_resumption is not None:
            await self.send_resumption_update()
        self._notify()

    def _render(self, turn: _Turn) -> tuple[bytes, list[tuple[str, int]]]:
        """(24 kHz PCM, transcript pieces with their sample offsets) of a turn."""
        if turn.speech_text is not None:
            speech = synthesize(turn.speech_text, self.voice or "")
            return speech.pcm, list(speech.words)
        resampler = StreamResampler(turn.echo_rate, OUTPUT_RATE)
        pcm = resampler.process(turn.echo_pcm) + resampler.flush()
        return pcm, [(turn.echo_label, 0)]

    def _chunk_sizes(self, total: int) -> list[int]:
        lo_ms, hi_ms = self.behaviour.chunk_ms
        lo = max(1, round(lo_ms * OUTPUT_RATE / 1000))
        hi = max(lo, round(hi_ms * OUTPUT_RATE / 1000))
        sizes = self._rng.integers(lo, hi + 1, size=total // lo + 1)
        ends = np.cumsum(sizes)
        count = int(np.searchsorted(ends, total)) + 1
        sizes = sizes[:count]
        sizes[-1] -= int(ends[count - 1]) - total  # the last chunk takes what is left
        return [int(n) for n in sizes if n > 0]

    async def _pace(self, turn: _Turn, now: float) -> None:
        pace = self.behaviour.pace
        if pace > 0 and math.isfinite(pace) and turn.first_chunk_at is not None:
            due = turn.first_chunk_at + turn.audio_sent_s / pace
            await asyncio.sleep(max(0.0, due - now))
        else:
            await asyncio.sleep(0)  # let other sessions run between chunks

    def _drop(self, turn: _Turn) -> None:
        turn.phase = _Phase.DROPPED
        turn.finish(False)

    async def _stop(self, turn: _Turn) -> None:
        turn.finish(False)
        task = turn.task
        if task is not None and not task.done() and task is not asyncio.current_task():
            task.cancel()
            await asyncio.wait({task})

    def _account(self, turn: _Turn) -> JsonDict:
        """``usageMetadata`` for a finished turn; its audio joins the context."""
        response = round(turn.audio_sent_s * AUDIO_TOKENS_PER_S)
        usage = wire.usage(
            prompt_text=self._ctx_text_tokens,
            prompt_audio=self._ctx_audio_tokens,
            response_audio=response,
        )
        self._ctx_audio_tokens += response
        return usage

    # --- Plumbing --------------------------------------------------------------------------

    async def _send(self, message: Mapping[str, Any]) -> bool:
        if self._stalled or self.closed:
            return False
        try:
            await self._ws.send(wire.encode(message), text=True)
        except ConnectionClosed:
            return False
        return True

    def _spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        if self._tg is None or not self._running:
            coro.close()
            raise RuntimeError(f"session {self.id} is not running")
        task = self._tg.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _go_away_later(self, after_s: float, time_left_s: float) -> None:
        await asyncio.sleep(after_s)
        await self.go_away(time_left_s)

    async def _close_later(self, delay_s: float, code: int, reason: str) -> None:
        await asyncio.sleep(delay_s)
        await self._ws.close(code, reason)

    # --- Random faults (SimBehaviour.faults) -------------------------------------------------

    async def _inject_faults(self, schedule: FaultSchedule) -> None:
        """Act out the schedule's faults until one ends the connection (or none are left)."""
        while not schedule.exhausted:
            await asyncio.sleep(schedule.next_delay_s())
            fault = schedule.next_fault()
            if fault.kind == "stall":
                await self._stall_for(fault.duration_s)
            elif fault.kind == "go_away":
                self._record_fault(fault.kind)
                await self.go_away(fault.time_left_s)
            else:
                await self._close_for(fault, schedule.plan.align_s)
            if fault.ends_connection:
                return

    async def _stall_for(self, duration_s: float) -> None:
        self._record_fault("stall")
        self.stall()
        try:
            await asyncio.sleep(duration_s)
        finally:
            self.stall(False)

    async def _close_for(self, fault: Fault, align_s: float) -> None:
        """Close mid-answer or mid-caller-speech when it happens within ``align_s``."""
        with contextlib.suppress(TimeoutError):
            await self._wait_until(
                lambda: self.model_speaking or self.caller_speaking, align_s, "speech"
            )
        if fault.revokes_handles:
            self._handles.revoke(self.id)
        self._record_fault(fault.kind)
        assert fault.close is not None
        await self._ws.close(*fault.close)

    def _record_fault(self, kind: str) -> None:
        at = asyncio.get_running_loop().time() - self.connected_at
        self.faults_injected.append((round(at, 3), kind))
        log.debug("session %s: fault %s at %.3f s", self.id, kind, at)
        self._notify()

    def _future(self) -> asyncio.Future[bool]:
        return asyncio.get_running_loop().create_future()

    def _notify(self) -> None:
        # Wake every waiter; each re-checks its own condition and waits on the new event.
        self._changed.set()
        self._changed = asyncio.Event()

    async def _wait_until(
        self,
        condition: Callable[[], bool],
        timeout: float | None,  # noqa: ASYNC109
        what: str,
    ) -> None:
        try:
            async with asyncio.timeout(timeout):
                while not condition():
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(f"session {self.id}: no {what} within {timeout} s") from None

    def __repr__(self) -> str:
        state = "closed" if self.closed else "open"
        return f"<SimSession {self.id} {state} {self.path!r}>"


def _port(address: object) -> int | None:
    """The port of a socket address (``(host, port)`` for IPv4, 4-tuple for IPv6)."""
    if isinstance(address, tuple) and len(address) >= 2 and isinstance(address[1], int):
        return address[1]
    return None


def _text_tokens(text: str) -> int:
    return (len(text) + 3) // 4  # ~4 characters per token


def _number(value: object, default: float) -> float:
    return (
        float(value) if isinstance(value, int | float) and not isinstance(value, bool) else default
    )
