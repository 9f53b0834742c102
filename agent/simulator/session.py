"""One simulated Live API connection: the protocol and the script API.

Concurrency: each session runs one ``asyncio.TaskGroup``. The receive loop is the body; the
reply player (:mod:`agent.simulator.player`, one turn at a time), injected faults
(:mod:`agent.simulator.fault_injection`) and timers are tasks of that group, all cancelled when
the connection ends, so an abrupt disconnect leaves nothing running. Sending never raises: a
closed or stalled connection just makes it return ``False``.

"What happens on barge-in" lives in :meth:`SimSession._on_speech_started`.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Coroutine, Iterable, Mapping
from typing import Any, TypeVar

import numpy as np
import orjson
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from agent.prompts import NUDGE, SILENT_GOODBYE_PROMPT, STILL_THERE_PROMPT, WRAP_UP_LEAD
from agent.simulator import converse, recognizer, wire
from agent.simulator.behaviour import SimBehaviour
from agent.simulator.dialogue import describe_caller_speech, describe_echo, reply_for_text
from agent.simulator.fault_injection import FaultActions, FaultInjector
from agent.simulator.faults import FaultSchedule
from agent.simulator.handles import HandleRegistry
from agent.simulator.player import ModelTurn, Phase, ReplyPlayer
from agent.simulator.recognizer import Transcription
from agent.simulator.setup import SessionSetup
from agent.simulator.utterances import SpeechEnded, SpeechStarted, Utterance, UtteranceDetector
from agent.simulator.wire import DEFAULT_INPUT_RATE, JsonDict
from agent.simulator.wire import field as wfield

__all__ = ["SimSession"]

log = logging.getLogger(__name__)
_T = TypeVar("_T")

_DEFAULT_WAIT_S = 10.0
#: How long a converse answer waits for the recognizer, and for a tool's response.
_RECOGNITION_WAIT_S = 15.0
_TOOL_WAIT_S = 15.0
#: The bridge's own cues (not the caller's words): answered as before, never "You said: …".
_CUES = (NUDGE, STILL_THERE_PROMPT, SILENT_GOODBYE_PROMPT, WRAP_UP_LEAD)
#: What the real service says when it ends a connection at its time limit (after goAway).
_DEADLINE = (1011, "Deadline expired before operation could complete.")


class SimSession:
    """One client connection to the simulator: what it sent, and methods to script replies.

    Recorded state is plain attributes and read-only properties (read them any time). Script
    methods that send return ``False`` instead of raising when the connection is closed or
    stalled; ``wait_*`` methods raise ``TimeoutError`` after ``timeout`` seconds.
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
        #: The settings of the ``setup`` message, parsed (all empty until it arrives).
        self.config = SessionSetup()
        #: ``setupComplete`` was sent.
        self.setup_completed = False
        #: Every text input (``realtimeInput.text`` and ``clientContent`` text parts), in order.
        self.texts: list[str] = []
        #: Tool calls sent to the client, by id: ``{"id", "name", "args"}``.
        self.tool_calls: dict[str, JsonDict] = {}
        #: Function responses received, by id (unknown ids included), as received.
        self.tool_responses: dict[str, JsonDict] = {}
        #: When each tool response arrived (``time.monotonic()``), by call id.
        self.tool_response_at: dict[str, float] = {}
        #: Calls this session cancelled itself (a blocking call overtaken by caller speech).
        self.cancelled_calls: set[str] = set()
        #: Client messages of other kinds (e.g. ``contextUpdate``), as received.
        self.other_messages: list[JsonDict] = []
        #: Caller audio received, ms.
        self.audio_in_ms = 0.0
        #: Client messages received (setup included) and server messages sent.
        self.messages_in = 0
        self.messages_out = 0
        #: Caller utterances detected, in order.
        self.utterances: list[Utterance] = []
        #: What the recognizer heard in each utterance (``dialogue="converse"``), in order.
        self.heard: list[str] = []
        #: The resumption handle this session was resumed from.
        self.resumed_from: str | None = None
        #: Setup asked to resume and was refused (unknown, revoked or refused handle).
        self.resumption_refused = False
        #: Resumption handles sent to this session, in order.
        self.handles_issued: list[str] = []
        #: The connection has ended.
        self.closed = False
        #: Close code and reason of the first close frame (either side; 1006 if none).
        self.close_code: int | None = None
        self.close_reason: str | None = None

        self._tg: asyncio.TaskGroup | None = None
        self._running = False
        self._tasks: set[asyncio.Task[Any]] = set()
        self._changed = asyncio.Event()
        self._stalled = False
        self._detector: UtteranceDetector | None = None
        self._pending_client_text: list[str] = []
        self._asr: Transcription | None = None  # the utterance being transcribed
        self._asr_pos: int | None = None  # the sample up to which it was fed
        self._asr_text: asyncio.Task[str] | None = None  # its text, streamed as it comes
        self._speech_gen = 0  # +1 when the caller starts speaking: older answers are moot
        self._player = ReplyPlayer(
            self._send,
            spawn=self._spawn,
            behaviour=lambda: self.behaviour,
            rng=rng,
            on_change=self._notify,
            on_turn_end=self._after_turn,
        )
        actions = FaultActions(
            stall=self.stall,
            go_away=self.go_away,
            close=ws.close,
            revoke_handles=lambda: handles.revoke(session_id),
            wait_for_speech=self._wait_for_speech,
            send=self._send,
            degrade_next_answer=self._player.degrade,
        )
        self._faults = FaultInjector(
            actions, session_id=session_id, connected_at=self.connected_at, on_change=self._notify
        )

    # --- Setup-derived properties (see SessionSetup) -----------------------------------------

    @property
    def model(self) -> str | None:
        return self.config.model

    @property
    def voice(self) -> str | None:
        """``generationConfig.speechConfig.voiceConfig.prebuiltVoiceConfig.voiceName``."""
        return self.config.voice

    @property
    def language(self) -> str | None:
        return self.config.language

    @property
    def system_instruction(self) -> str | None:
        """The text of the system instruction's parts, joined."""
        return self.config.system_instruction

    @property
    def tools(self) -> list[JsonDict]:
        return list(self.config.tools)

    @property
    def function_names(self) -> list[str]:
        """Names of all declared functions."""
        return self.config.function_names

    @property
    def input_transcription(self) -> bool:
        return self.config.input_transcription

    @property
    def output_transcription(self) -> bool:
        return self.config.output_transcription

    @property
    def session_resumption(self) -> JsonDict | None:
        return self.config.session_resumption

    @property
    def context_window_compression(self) -> JsonDict | None:
        return self.config.context_window_compression

    # --- Recorded by the player and the fault injector ---------------------------------------

    @property
    def audio_out_ms(self) -> float:
        """Model audio sent, ms."""
        return self._player.audio_out_ms

    @property
    def chunk_log(self) -> list[tuple[float, int]]:
        """(loop time the chunk was handed to the socket, 24 kHz samples sent before it) for
        every audio chunk: lets a benchmark time each chunk's trip to the caller."""
        return self._player.chunk_log

    @property
    def interruptions(self) -> int:
        """Model turns cut short by caller speech (barge-in)."""
        return self._player.interruptions

    @property
    def turns_completed(self) -> int:
        """Model turns that ran to ``turnComplete`` without being interrupted."""
        return self._player.turns_completed

    @property
    def faults_injected(self) -> list[tuple[float, str]]:
        """Faults injected by ``SimBehaviour.faults``: (seconds since connect, kind), in order.
        Kinds are described in :class:`~agent.simulator.behaviour.FaultPlan`."""
        return self._faults.injected

    # --- Live state --------------------------------------------------------------------------

    @property
    def model_speaking(self) -> bool:
        """A model turn is being heard: audio was sent and has not finished playing in real
        time (the moment a barge-in would interrupt)."""
        return self._player.model_speaking

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
        turn = self._reply(ModelTurn.speech(text))
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
            self._spawn(self._faults.close_later(time_left_s, *_DEADLINE))
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
            self.messages_in += 1
            setup = wfield(first, "setup")
            if not isinstance(setup, dict):
                await ws.close(1007, "Invalid request: the first message must be setup.")
                return
            if not await self._on_setup(setup):
                return
            while True:
                message = self._parse(await ws.recv(decode=False))
                self.messages_in += 1
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
        self._player.close()
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
        self.config = SessionSetup.parse(setup)
        self._notify()
        b = self.behaviour
        if b.reject_setup is not None:
            await self._ws.close(*b.reject_setup)
            return False
        schedule = FaultSchedule(b.faults, self._fault_rng) if b.faults is not None else None
        setup_fault = schedule.setup_fault() if schedule is not None else None
        dropped = setup_fault if setup_fault and setup_fault.kind == "drop_after_setup" else None
        if dropped is not None:
            setup_fault = None  # setup completes; the connection is dropped right after
        if setup_fault is not None and setup_fault.close is not None:
            self._faults.record(setup_fault.kind)
            await self._ws.close(*setup_fault.close)
            return False
        handle = self.config.resumption_handle
        if handle:
            if b.refuse_resumption or not isinstance(handle, str) or handle not in self._handles:
                self.resumption_refused = True
                await self._ws.close(*b.resumption_refusal)
                return False
            self.resumed_from = handle
        self._player.context.add_text(self.system_instruction or "")
        self._player.context.add_text(orjson.dumps(self.tools).decode())
        if b.setup_delay_s > 0:
            await asyncio.sleep(b.setup_delay_s)
        if setup_fault is not None:  # setup_hang
            self._faults.record(setup_fault.kind)
        if not b.complete_setup or setup_fault is not None:
            return True  # keep reading (and recording) but never say setupComplete
        self.setup_completed = await self._send(wire.setup_complete())
        self._notify()
        if self.setup_completed and (dropped is not None or b.close_after_setup is not None):
            if dropped is not None:
                self._faults.record(dropped.kind)
            close = dropped.close if dropped is not None else b.close_after_setup
            assert close is not None
            await self._ws.close(*close)
            return False
        if self.setup_completed:
            # Nothing is spoken before setupComplete (a scripted say() waits for it).
            self._spawn(self._player.run(self.config))
        if self.session_resumption is not None:
            await self.send_resumption_update()
        if b.go_away_after_s is not None:
            self._spawn(self._faults.go_away_later(b.go_away_after_s, b.go_away_time_left_s))
        if schedule is not None and not schedule.exhausted:
            self._spawn(self._faults.run(schedule))
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
        detector = self._input(wire.parse_rate(mime_type, DEFAULT_INPUT_RATE))
        self.audio_in_ms += len(pcm) / 2 / detector.sample_rate * 1000
        await self._on_events(detector.feed(pcm))
        if self._asr is not None and detector.in_speech:
            audio, self._asr_pos = detector.utterance_audio(self._asr_pos)
            self._asr.feed(audio)

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
            self.tool_response_at.setdefault(call_id, time.monotonic())
        self._notify()

    def _record_text(self, text: str) -> None:
        self.texts.append(text)
        self._player.context.add_text(text)
        self._notify()

    # --- Caller speech ---------------------------------------------------------------------

    def _input(self, rate: int | None) -> UtteranceDetector:
        """The utterance detector, (re)built for ``rate`` and the setup's VAD settings."""
        det = self._detector
        if det is not None and (rate is None or rate == det.sample_rate):
            return det
        if det is not None:
            log.warning("session %s: input rate changed to %s Hz; VAD restarted", self.id, rate)
        self._detector = self.config.utterance_detector(rate or DEFAULT_INPUT_RATE, self.behaviour)
        return self._detector

    async def _on_events(self, events: list[SpeechStarted | SpeechEnded]) -> None:
        for event in events:
            if isinstance(event, SpeechStarted):
                await self._on_speech_started()
            else:
                await self._on_speech_ended(event)

    async def _on_speech_started(self) -> None:
        """Caller speech began: supersede unspoken answers, and barge in on audible speech."""
        self._notify()  # the caller is speaking (see caller_speaking)
        self._speech_gen += 1
        if self.behaviour.dialogue == "converse":
            self._open_transcription()
        player = self._player
        if player.traits.cancel_blocking_on_speech:
            await self._cancel_blocking_calls()
        player.drop_queued(lambda turn: turn.is_answer)
        current = player.current
        if current is not None and current.is_answer and current.phase is Phase.THINKING:
            # The caller went on talking: the reply to their last pause is moot.
            await player.cancel(current)
        audible = player.audible
        if (
            audible is not None
            and self.config.activity_handling != "NO_INTERRUPTION"
            and audible.is_heard(asyncio.get_running_loop().time())
        ):
            await player.interrupt(audible)

    async def _cancel_blocking_calls(self) -> None:
        """``gemini-3.8-live``: new input cancels a blocking call still waiting for its answer."""
        blocking = self.config.blocking_functions()
        ids = [
            call_id
            for call_id, call in self.tool_calls.items()
            if call["name"] in blocking
            and call_id not in self.tool_responses
            and call_id not in self.cancelled_calls
        ]
        if ids:
            self.cancelled_calls.update(ids)
            await self._send(wire.tool_call_cancellation(ids))

    async def _on_speech_ended(self, event: SpeechEnded) -> None:
        self.utterances.append(Utterance(event.start_ms, event.end_ms))
        self._player.context.add_audio(event.duration_s)
        self._notify()
        if self.behaviour.dialogue == "converse" and (text := self._close_transcription(event)):
            self._spawn(self._answer_speech(text, self._speech_gen))
            return
        if self.input_transcription:
            await self._send(wire.input_transcription(describe_caller_speech(event.duration_s)))
        assert self._detector is not None
        label = describe_echo(event.duration_s)
        think_s = self.behaviour.think_ms / 1000
        self._reply(ModelTurn.echo(event.audio, self._detector.sample_rate, label, think_s=think_s))

    def _reply_to_text(self, text: str) -> None:
        reply = reply_for_text(text)
        if (
            self.behaviour.dialogue == "converse"
            and reply == "Okay."
            and not text.startswith(_CUES)
            and self._running
        ):
            # Typed words (the console's typed turns): answered like recognised speech.
            self._speech_gen += 1
            self._spawn(self._answer(text, self._speech_gen))
            return
        self._reply(ModelTurn.speech(reply, think_s=self.behaviour.think_ms / 1000))

    # --- Converse: recognition and the small policy (NOT A REAL MODEL) -----------------------

    def _open_transcription(self) -> None:
        pool = recognizer.shared_pool(self.behaviour.recognizer_threads)
        if self._asr is not None:
            self._asr.close()
        detector = self._detector
        assert detector is not None
        self._asr_pos = None
        self._asr = pool.open(detector.sample_rate) if pool is not None else None
        if self._asr is not None:
            self._asr_text = self._spawn(self._stream_transcription(self._asr))

    async def _stream_transcription(self, job: Transcription) -> str:
        """Send the caller's words as ``inputTranscription`` phrase by phrase, while they speak
        (as the Live API does); return the whole text once the utterance is decoded."""
        texts: list[str] = []
        async for text in job.texts():
            if self.input_transcription:
                await self._send(wire.input_transcription(f" {text}" if texts else text))
            texts.append(text)
        return " ".join(texts)

    def _close_transcription(self, event: SpeechEnded) -> asyncio.Task[str] | None:
        """The utterance ended: feed what is left of it and close its transcription (opened
        now if the utterance began and ended in one piece of audio); return the task that
        streams its text. ``None``: no recognizer."""
        job, self._asr = self._asr, None
        if job is None:
            self._open_transcription()
            job, self._asr = self._asr, None
            if job is None:
                return None
            self._asr_pos = None
        skip = 0 if self._asr_pos is None else max(0, self._asr_pos - event.audio_at)
        job.feed(event.audio[skip * 2 :])
        job.close()
        self._asr_pos = None
        return self._asr_text

    async def _answer_speech(self, streamed: asyncio.Task[str], gen: int) -> None:
        try:
            text = await asyncio.wait_for(asyncio.shield(streamed), _RECOGNITION_WAIT_S)
        except TimeoutError:
            text = ""
        self.heard.append(text)
        self._player.context.add_text(text)
        self._notify()
        if self.input_transcription and not text:
            await self._send(wire.input_transcription("[inaudible]"))
        log.info("session %s: heard %r", self.id, text)
        await self._answer(text, gen)

    async def _answer(self, text: str, gen: int) -> None:
        """Carry out the policy's plan for what the caller said (see agent.simulator.converse)."""
        if gen != self._speech_gen:
            return  # the caller spoke again before we answered
        think_s = self.behaviour.think_ms / 1000
        plan = converse.decide(text, self.tools)
        turn = None
        if plan.say:
            turn = self._reply(ModelTurn.speech(plan.say, think_s=think_s, answers_caller=True))
        if plan.tool is None:
            return
        if turn is not None and not await turn.done:
            return  # interrupted or dropped: the caller did not hear it, no call follows
        call_id = await self.send_tool_call(plan.tool, plan.args)
        if plan.tool == converse.END_CALL:
            return
        non_blocking = converse.behavior(plan.tool, self.tools) == "NON_BLOCKING"
        holding = None
        if non_blocking:  # the conversation goes on while the tool runs
            holding = self._reply(
                ModelTurn.speech(converse.CHECKING, think_s=think_s, answers_caller=True)
            )
        try:
            response = await self.wait_tool_response(call_id, _TOOL_WAIT_S)
        except TimeoutError:
            response = {}
        if gen != self._speech_gen or call_id in self.cancelled_calls:
            return
        words = converse.speakable(response) or plan.then_say
        if non_blocking:
            how = converse.scheduling(response)
            if how == "SILENT":
                return
            if how == "INTERRUPT" and holding is not None and holding.phase is not Phase.DONE:
                if self._player.current is holding:
                    await self._player.cancel(holding)
                else:
                    self._player.drop_queued(lambda turn: turn is holding)
        self._reply(ModelTurn.speech(words, think_s=think_s, answers_caller=True))

    # --- Model turns -------------------------------------------------------------------------

    def _reply(self, turn: ModelTurn) -> ModelTurn:
        """Queue ``turn`` for the player (it finishes unsent if the connection is ending)."""
        if not self._running:
            turn.finish(False)
            return turn
        return self._player.enqueue(turn)

    async def _after_turn(self, turn: ModelTurn) -> None:
        """A model turn ended with ``turnComplete`` (spoken or interrupted)."""
        if self.session_resumption is not None:
            await self.send_resumption_update()
        self._notify()

    # --- Plumbing --------------------------------------------------------------------------

    async def _send(self, message: Mapping[str, Any]) -> bool:
        if self._stalled or self.closed:
            return False
        try:
            await self._ws.send(wire.encode(message), text=True)
        except ConnectionClosed:
            return False
        self.messages_out += 1
        return True

    def _spawn(self, coro: Coroutine[Any, Any, _T]) -> asyncio.Task[_T]:
        if self._tg is None or not self._running:
            coro.close()
            raise RuntimeError(f"session {self.id} is not running")
        task = self._tg.create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _wait_for_speech(self, timeout: float) -> None:  # noqa: ASYNC109
        await self._wait_until(
            lambda: self.model_speaking or self.caller_speaking, timeout, "speech"
        )

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
