"""One Live connection through the google-genai SDK, behind the interface of ``agent.events``.

``LiveAgent`` is built once per process from the settings: it owns the one google-genai
``Client`` that every call shares and the ``LiveConnectConfig`` derived from the persona.
``LiveAgent.open()`` returns an ``AgentSession``: 16 kHz PCM16 in, ``AgentEvent``s out
(24 kHz audio, interruptions, turn ends, transcripts, tool calls, resumption handles).
Nothing here knows about Twilio, so another transport could reuse it as is.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import re
import ssl
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Final

from google import genai
from google.genai import errors as genai_errors
from google.genai import types
from websockets.exceptions import ConnectionClosed

from agent.breaker import Breaker, BreakerState
from agent.config import ModelAccess, Persona
from agent.events import (
    AgentError,
    AgentEvent,
    FunctionCall,
    GenerationComplete,
    GoAway,
    InputTranscript,
    InteractionStatus,
    Interrupted,
    ModelUnavailable,
    OutputTranscript,
    ResumptionUpdate,
    SessionClosed,
    ToolCall,
    ToolCallCancellation,
    TurnComplete,
    Usage,
)
from agent.live_wire import (
    INPUT_MIME,
    audio_events,
    audio_message,
    events_from_wire,
    parse_duration,
)
from agent.logs import fields
from agent.prompts import primed_instructions
from agent.tools.builtin import live_tools
from agent.ws_direct import DirectText, direct_text

__all__ = [
    "AgentSession",
    "LiveAgent",
    "SdkContractError",
    "build_connect_config",
    "events_from_sdk",
    "fast_path_socket",
]

log = logging.getLogger(__name__)

#: A connection that lives less than this after setup counts as failed (breaker, reconnect
#: budget): the service accepted it and dropped it.
HEALTHY_AFTER_S: Final = 5.0
#: The largest Live API message we read: 1 MiB is ~20 s of 24 kHz audio in base64.
MAX_MESSAGE_BYTES: Final = 1 << 20

#: What a lost or broken connection raises: the socket's close, the SDK's error for it, an
#: OS-level failure, or a message that cannot be read (the SDK's pydantic validation and our
#: codec's WireError are ValueErrors). Anything else is a bug and must not pass for a lost
#: connection (that would turn it into a silent reconnect).
_CONNECTION_ERRORS = (ConnectionClosed, genai_errors.APIError, OSError, ValueError)


_NOT_RETRYABLE = re.compile(
    r"quota|resource[_ ]exhausted|permission|api key|unauthori[sz]ed|forbidden|not found|"
    r"invalid argument|billing",
    re.IGNORECASE,
)


def _retryable(code: int | None, message: str) -> bool:
    # Quota, permission and bad-request failures will fail again at once: retrying them is
    # how a storm starts. 1008 (policy) is what the Live API uses for most of them.
    return not (_NOT_RETRYABLE.search(message) or code in {400, 401, 403, 404})


def _classify(exc: BaseException) -> tuple[int | None, str, bool]:
    """(close code, message, retryable) for an SDK or transport error."""
    if isinstance(exc, genai_errors.APIError):
        code = exc.code if isinstance(exc.code, int) else None
        message = f"{exc.status or ''} {exc.message or ''}".strip() or str(exc)
        return code, message, _retryable(code, message)
    if isinstance(exc, ConnectionClosed):
        code = exc.rcvd.code if exc.rcvd is not None else 1006
        message = (exc.rcvd.reason if exc.rcvd is not None else "") or "connection closed"
        return code, f"{code} {message}", _retryable(code, message)
    return None, f"{type(exc).__name__}: {exc}", True


# ---------------------------------------------------------------------------------------------
# The process-wide agent and the per-call session
# ---------------------------------------------------------------------------------------------


class LiveAgent:
    """The model side of the service: one SDK client and one connect config for all calls."""

    def __init__(
        self,
        access: ModelAccess,
        persona: Persona,
        *,
        base_url: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        api_key: str | None = None,
    ) -> None:
        self.access = access
        self.persona = persona
        # The raw-JSON path for the hot messages; the SDK's own path for Vertex AI, whose
        # message format the SDK translates.
        self.fast_path = access.fast_path and access.backend != "vertex"
        # Only what we must set: base URL, TLS trust and credentials otherwise come from the
        # SDK's own environment variables (GOOGLE_GEMINI_BASE_URL, SSL_CERT_FILE, …).
        ws_args: dict[str, Any] = {
            "ping_interval": access.ping_interval_s,
            "ping_timeout": access.ping_timeout_s,
            # Audio messages are a few kB (40-200 ms of speech); a cap well below the SDK's
            # 16 MiB stops a broken peer from ballooning memory or stalling the loop in
            # parsing. A larger message closes that connection (1009) and the call
            # reconnects.
            "max_size": MAX_MESSAGE_BYTES,
            # websockets offers permessage-deflate by default: zlib on every 20 ms frame of
            # base64 audio, for ~25 % fewer bytes. CPU is the scarcer resource here.
            "compression": None,
        }
        if ssl_context is not None:
            ws_args["ssl"] = ssl_context
        http_options = types.HttpOptions(async_client_args=ws_args)
        if base_url is not None:
            http_options.base_url = base_url
        key = api_key or access.api_key
        if access.backend == "vertex":
            self.client = genai.Client(vertexai=True, http_options=http_options)
        else:
            self.client = genai.Client(api_key=key, http_options=http_options)
        self.connect_config = build_connect_config(
            persona, with_behavior=access.backend != "vertex"
        )
        #: Process-wide: stops opening connections while most of them fail.
        self.breaker = Breaker(time.monotonic, on_change=_breaker_changed)

    async def open(
        self,
        call_id: str,
        *,
        handle: str | None = None,
        history: str | None = None,
        reconnect: bool = False,
    ) -> AgentSession:
        """Open a Live session for one call, within the setup timeout.

        ``handle`` resumes an earlier session of the call; ``history`` (a transcript) primes a
        fresh one when resumption is not possible; ``reconnect``: for a call already in
        progress (the circuit breaker does not hold it back). Raises ``ModelUnavailable``
        (with ``retryable`` set) when it cannot be opened.
        """
        # The breaker holds back new calls' connections; a call in progress keeps its own
        # (bounded, backed-off) reconnect budget rather than being cut by others' failures.
        if not reconnect and not self.breaker.allow():
            raise ModelUnavailable(
                "the model is failing: new connections are paused (circuit breaker open)",
                retryable=False,
                call_id=call_id,
            )
        config = self.connect_config
        if handle is not None or history is not None:
            update: dict[str, Any] = {}
            if handle is not None:
                update["session_resumption"] = types.SessionResumptionConfig(handle=handle)
            if history is not None:
                update["system_instruction"] = types.Content(
                    parts=[types.Part(text=primed_instructions(self.persona.instructions, history))]
                )
            config = config.model_copy(update=update)
        cm = self.client.aio.live.connect(model=self.access.model, config=config)
        try:
            # The SDK waits forever for setupComplete: bound it.
            async with asyncio.timeout(self.access.setup_timeout_s):
                session = await cm.__aenter__()
        except TimeoutError:
            self.breaker.failure()
            raise ModelUnavailable(
                f"Live API setup did not complete within {self.access.setup_timeout_s:g} s",
                call_id=call_id,
            ) from None
        except Exception as exc:  # the SDK raises many kinds; all mean "no session"
            self.breaker.failure()
            code, message, retryable = _classify(exc)
            raise ModelUnavailable(
                message, code=code, retryable=retryable, call_id=call_id
            ) from exc
        raw = None
        if self.fast_path:
            try:
                raw = fast_path_socket(session)
            except SdkContractError as exc:  # the SDK changed under us
                # Calls must keep working on an SDK release we don't know: fall back to its
                # public API for good, loudly (tests/agent/test_sdk_contract.py fails on it).
                self.fast_path = False
                log.error(
                    "model.fast_path_unavailable",
                    extra=fields(error=str(exc), path=self.path),
                )
        return AgentSession(call_id, session, cm, raw, breaker=self.breaker)

    @property
    def path(self) -> str:
        """``fast`` (raw JSON on the SDK's socket for the hot messages) or ``sdk``."""
        return "fast" if self.fast_path else "sdk"


def _breaker_changed(state: BreakerState, why: str) -> None:
    level = logging.INFO if state is BreakerState.CLOSED else logging.WARNING
    log.log(level, "model.circuit", extra=fields(state=str(state), why=why))


class SdkContractError(AgentError):
    """The google-genai SDK no longer looks the way the fast path relies on."""


def fast_path_socket(session: Any) -> Any:
    """The SDK session's own WebSocket, checked against what the fast path does with it.

    The fast path relies on three things of google-genai 3.x: ``AsyncSession._ws`` is the
    connection's ``websockets`` client; ``send(str)`` writes one text frame; and
    ``recv(decode=False)`` returns one whole message as bytes. Raise ``SdkContractError``
    naming what changed.
    """
    ws = getattr(session, "_ws", None)
    if ws is None:
        raise SdkContractError("google-genai's AsyncSession has no _ws attribute any more")
    for name in ("send", "recv", "close"):
        if not callable(getattr(ws, name, None)):
            raise SdkContractError(f"the SDK's socket ({type(ws).__name__}) has no {name}()")
    try:
        takes_decode = "decode" in inspect.signature(ws.recv).parameters
    except (TypeError, ValueError):
        takes_decode = False
    if not takes_decode:
        raise SdkContractError(f"the SDK's socket ({type(ws).__name__}) has no recv(decode=)")
    return ws


def build_connect_config(
    persona: Persona, *, with_behavior: bool = True
) -> types.LiveConnectConfig:
    """The Live API setup for a persona (also what tests assert reaches the wire).

    ``with_behavior``: declare each operator tool's ``behavior`` (the Gemini API takes it;
    Vertex AI does not, and there every function call blocks)."""
    sens = persona.vad
    start = (
        types.StartSensitivity.START_SENSITIVITY_HIGH
        if sens.start_sensitivity == "high"
        else types.StartSensitivity.START_SENSITIVITY_LOW
    )
    end = (
        types.EndSensitivity.END_SENSITIVITY_HIGH
        if sens.end_sensitivity == "high"
        else types.EndSensitivity.END_SENSITIVITY_LOW
    )
    tools = live_tools(
        persona.tools,
        persona.toolbox.declarations(with_behavior=with_behavior),
        with_behavior=with_behavior,
    )
    return types.LiveConnectConfig(
        response_modalities=[types.Modality.AUDIO],
        system_instruction=types.Content(parts=[types.Part(text=persona.instructions)]),
        speech_config=types.SpeechConfig(
            voice_config=types.VoiceConfig(
                prebuilt_voice_config=types.PrebuiltVoiceConfig(voice_name=persona.voice)
            ),
            language_code=persona.language,
        ),
        tools=tools,
        input_audio_transcription=types.AudioTranscriptionConfig(),
        output_audio_transcription=types.AudioTranscriptionConfig(),
        realtime_input_config=types.RealtimeInputConfig(
            automatic_activity_detection=types.AutomaticActivityDetection(
                start_of_speech_sensitivity=start,
                end_of_speech_sensitivity=end,
                prefix_padding_ms=sens.prefix_padding_ms,
                silence_duration_ms=sens.silence_duration_ms,
            )
        ),
        session_resumption=types.SessionResumptionConfig(),
        context_window_compression=types.ContextWindowCompressionConfig(
            sliding_window=types.SlidingWindow()
        ),
    )


@dataclass
class AgentSession:
    """One open Live connection for one call."""

    call_id: str
    _session: Any  # google.genai.live.AsyncSession
    _cm: Any  # its async context manager, exited by close()
    #: The session's websocket, for the fast path (None: the SDK's public API for everything).
    #: The SDK's per-message work (pydantic validation, dict conversion, json) costs more CPU
    #: than the audio conversion and the socket together; for the two messages sent or
    #: received every few tens of milliseconds we write and read the same JSON ourselves.
    _raw: Any = None
    #: Told once whether this connection served (see ``agent.breaker``).
    breaker: Breaker | None = None
    resumption_handle: str | None = field(default=None, init=False)
    opened_at: float = field(default_factory=time.monotonic, init=False)
    _closed: bool = field(default=False, init=False)
    _direct: DirectText | None = field(default=None, init=False)

    def __post_init__(self) -> None:
        if self._raw is not None:
            self._direct = direct_text(self._raw)

    async def send_audio(self, pcm16k: bytes) -> None:
        """Send caller audio (16 kHz PCM16 LE mono)."""
        try:
            if self._raw is not None:
                data = audio_message(pcm16k)
                if self._direct is None or not self._direct.write(data):
                    # Paused by flow control, closing, or mid-way through another send:
                    # websockets' own send waits (or raises) as it should.
                    await self._raw.send(data, text=True)
            else:
                await self._session.send_realtime_input(
                    audio=types.Blob(data=pcm16k, mime_type=INPUT_MIME)
                )
        except _CONNECTION_ERRORS as exc:
            raise self._lost(exc) from exc

    def send_audio_nowait(self, pcm16k: bytes) -> bool:
        """``send_audio`` when it needs no waiting: True, sent (written on the socket);
        False, nothing sent (no fast path, or flow control: use ``send_audio``)."""
        direct = self._direct
        if direct is None or self._raw is None:
            return False
        try:
            return direct.write(audio_message(pcm16k))
        except _CONNECTION_ERRORS as exc:
            raise self._lost(exc) from exc

    async def send_text(self, text: str) -> None:
        """Tell the model something as text (the greeting cue, a keypad digit)."""
        try:
            await self._session.send_realtime_input(text=text)
        except _CONNECTION_ERRORS as exc:
            raise self._lost(exc) from exc

    async def send_tool_response(
        self,
        call_id: str,
        name: str,
        response: dict[str, Any],
        scheduling: types.FunctionResponseScheduling | None = None,
    ) -> None:
        try:
            await self._session.send_tool_response(
                function_responses=[
                    types.FunctionResponse(
                        id=call_id, name=name, response=response, scheduling=scheduling
                    )
                ]
            )
        except _CONNECTION_ERRORS as exc:
            raise self._lost(exc) from exc

    async def events(self) -> AsyncIterator[AgentEvent]:
        """Every event of the session, across turns, until it closes.

        Ends by raising ``SessionClosed`` when the connection closes (the SDK raises even for
        a normal 1000 close), unless ``close()`` was called first.
        """
        while True:
            try:
                if self._raw is not None:
                    events = events_from_wire(await self._raw.recv(decode=False))
                    for event in events:
                        self._note(event)
                        yield event
                    continue
                # receive() stops after each turn_complete: keep asking for the next turn.
                async for message in self._session.receive():
                    for event in events_from_sdk(message):
                        self._note(event)
                        yield event
            except _CONNECTION_ERRORS as exc:
                if self._closed:
                    return
                raise self._lost(exc) from exc

    def _note(self, event: AgentEvent) -> None:
        if isinstance(event, ResumptionUpdate) and event.resumable and event.handle:
            self.resumption_handle = event.handle

    @property
    def local_port(self) -> int | None:
        """Our TCP port of this connection (to match it with the server's logs)."""
        ws = getattr(self._session, "_ws", None)
        address = getattr(ws, "local_address", None)
        return int(address[1]) if address else None

    @property
    def age_s(self) -> float:
        """Seconds since the connection was set up."""
        return time.monotonic() - self.opened_at

    def _report(self, served: bool) -> None:
        breaker, self.breaker = self.breaker, None
        if breaker is not None:
            (breaker.success if served else breaker.failure)()

    def _lost(self, exc: BaseException) -> SessionClosed:
        # A connection that dies within its first seconds did not serve: that is what a
        # failing service looks like when it accepts connections and drops them.
        self._report(served=self.age_s >= HEALTHY_AFTER_S)
        code, message, retryable = _classify(exc)
        return SessionClosed(message, code=code, retryable=retryable, call_id=self.call_id)

    async def close(self) -> None:
        """Close the connection (idempotent, bounded in time)."""
        if self._closed:
            return
        self._closed = True
        self._report(served=True)  # we closed it: it served as long as we needed it
        try:
            async with asyncio.timeout(5):
                await self._cm.__aexit__(None, None, None)
        except (TimeoutError, Exception) as exc:  # closing a dead socket may fail; nothing to do
            log.debug("closing the model session: %s", exc)


def events_from_sdk(message: types.LiveServerMessage) -> list[AgentEvent]:
    """One SDK message → our events, in the order they should be acted on."""
    out: list[AgentEvent] = []
    content = message.server_content
    if content is not None:
        if content.input_transcription and content.input_transcription.text:
            out.append(InputTranscript(content.input_transcription.text))
        if content.interrupted:
            out.append(Interrupted())
        if content.model_turn and content.model_turn.parts:
            for part in content.model_turn.parts:
                blob = part.inline_data
                if blob is not None and blob.data:
                    out.extend(audio_events(blob.data))
        if content.output_transcription and content.output_transcription.text:
            out.append(OutputTranscript(content.output_transcription.text))
        if content.generation_complete:
            out.append(GenerationComplete())
        if content.turn_complete:
            reason = content.turn_complete_reason
            out.append(TurnComplete(reason.value if reason is not None else None))
        status = content.interaction_status
        if status is not None:
            out.append(InteractionStatus(status.value))
    if message.tool_call and message.tool_call.function_calls:
        out.append(
            ToolCall(
                tuple(
                    FunctionCall(fc.id or "", fc.name or "", dict(fc.args or {}))
                    for fc in message.tool_call.function_calls
                )
            )
        )
    if message.tool_call_cancellation and message.tool_call_cancellation.ids:
        out.append(ToolCallCancellation(tuple(message.tool_call_cancellation.ids)))
    if message.go_away is not None:
        out.append(GoAway(parse_duration(message.go_away.time_left)))
    if message.session_resumption_update is not None:
        upd = message.session_resumption_update
        out.append(ResumptionUpdate(upd.new_handle, bool(upd.resumable)))
    if message.usage_metadata is not None:
        um = message.usage_metadata
        out.append(
            Usage(
                um.prompt_token_count or 0,
                um.response_token_count or 0,
                um.total_token_count or 0,
            )
        )
    return out
