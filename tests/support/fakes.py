"""In-process fakes of a call's two peers, for unit tests of ``telephony.call.bridge.Call``.

- ``FakeTwilio`` plays Twilio's side of the Media Stream: the test makes it send frames
  (``start``, ``media``, ``dtmf``, ``stop``), and it plays what the call sends through the
  real playback emulation (``telephony.twilio.playback``), echoing marks when their audio has
  played on the loop's clock, and all at once on ``clear``, exactly as Twilio does.
- ``FakeConversation`` plays the model's side: the test pushes ``AgentEvent``s into it and
  reads what the call sent (audio, texts, tool responses).

Both run on whatever loop they are used in; with ``support.virtual_time`` a whole call runs
in milliseconds, deterministically.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

from agent.activity import CallerActivity
from agent.events import AgentError, ConversationEvent
from agent.resilient import ResilienceStats
from telephony.call.bridge import SocketClosed
from telephony.twilio import media_stream as ms
from telephony.twilio.playback import Playback

__all__ = ["FakeConversation", "FakeTwilio", "Opened"]

FRAME = ms.FRAME_BYTES
SILENCE = ms.ULAW_SILENCE * FRAME


class FakeTwilio:
    """Twilio's side of one Media Stream (see the module docstring)."""

    def __init__(self, *, call_sid: str = "CA" + "1" * 32, echo_marks: bool = True) -> None:
        self.builder = ms.InboundBuilder("MZ" + "2" * 32, call_sid)
        self._inbound: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self._loop = asyncio.get_running_loop()
        self._playback = Playback()
        self._echo_marks = echo_marks
        self._timer: asyncio.TimerHandle | None = None
        self._media_ms = 0
        #: Everything the call sent, parsed, with the loop time it was sent at.
        self.sent: list[tuple[float, ms.OutboundEvent]] = []
        #: How many messages each ``send`` carried (one write to the network each).
        self.writes: list[int] = []
        self.closed: tuple[int, str] | None = None
        #: Marks echoed back to the call: (time, name, by a clear).
        self.echoed: list[tuple[float, str, bool]] = []

    # -- what Twilio sends --------------------------------------------------------------

    def frame(self, text: str | bytes | None) -> None:
        """Deliver one raw frame (None: the socket closes)."""
        self._inbound.put_nowait(text)

    def start(self, **custom_parameters: str) -> None:
        self.frame(self.builder.connected())
        self.frame(self.builder.start(custom_parameters))

    def media(self, ulaw: bytes = SILENCE) -> None:
        """Caller audio, in 20 ms frames (any length; cut into frames)."""
        for i in range(0, len(ulaw), FRAME):
            chunk = ulaw[i : i + FRAME].ljust(FRAME, ms.ULAW_SILENCE)
            self.frame(self.builder.media(chunk, self._media_ms))
            self._media_ms += ms.FRAME_MS

    def dtmf(self, digit: str) -> None:
        self.frame(self.builder.dtmf(digit))

    def stop(self) -> None:
        self.frame(self.builder.stop())

    async def speak(self, ulaw: bytes, *, then_silence_s: float = 0.0) -> None:
        """Send caller audio frame by frame in real (loop) time, then silence."""
        audio = ulaw + SILENCE * round(then_silence_s * 50)
        for i in range(0, len(audio), FRAME):
            self.media(audio[i : i + FRAME])
            await asyncio.sleep(ms.FRAME_MS / 1000)

    # -- the TwilioSocket protocol -----------------------------------------------------

    async def receive(self) -> str | bytes | None:
        if self.closed is not None and self._inbound.empty():
            return None
        return await self._inbound.get()

    async def send(self, *texts: str) -> None:
        if self.closed is not None:
            raise SocketClosed("the fake Twilio socket is closed")
        now = self._loop.time()
        self.writes.append(len(texts))
        for text in texts:
            event = ms.parse_outbound(text)
            self.sent.append((now, event))
            if isinstance(event, ms.OutboundMedia):
                self._playback.push_media(now, event.payload)
            elif isinstance(event, ms.OutboundMark):
                self._playback.push_mark(now, event.name)
            else:
                _, echoes = self._playback.clear(now)
                self._deliver(echoes)
        self._schedule()

    async def close(self, code: int, reason: str) -> None:
        if self.closed is None:
            self.closed = (code, reason)
            self._inbound.put_nowait(None)

    # -- playback ------------------------------------------------------------------------

    def _deliver(self, echoes: list[Any]) -> None:
        if not self._echo_marks:
            return
        for echo in echoes:
            self.echoed.append((echo.time, echo.name, echo.cleared))
            self.frame(self.builder.mark(echo.name))

    def _schedule(self) -> None:
        # Play in 20 ms steps, as Twilio does: marks come back as their audio has played.
        if self._timer is None:
            delay = ms.FRAME_MS / 1000 if self._playback.queued_bytes else 0.0
            self._timer = self._loop.call_later(delay, self._play)

    def _play(self) -> None:
        self._timer = None
        _, echoes = self._playback.advance(self._loop.time())
        self._deliver(echoes)
        if not self._playback.idle:
            self._schedule()

    # -- reading what the call sent ------------------------------------------------------

    def of(self, kind: type[Any]) -> list[tuple[float, Any]]:
        return [(t, e) for t, e in self.sent if isinstance(e, kind)]

    @property
    def audio_bytes(self) -> int:
        return sum(len(e.payload) for _, e in self.of(ms.OutboundMedia))


@dataclass
class Opened:
    """How the call opened its conversation (what the opener was given)."""

    call_sid: str
    activity: CallerActivity
    clock_origin: float


@dataclass
class FakeConversation:
    """The model's side of a call (see the module docstring)."""

    stats: ResilienceStats = field(default_factory=ResilienceStats)
    busy: bool = False
    opened: Opened | None = None
    audio: list[bytes] = field(default_factory=list)
    #: Whether ``send_audio_nowait`` sends (a real session: unless flow control holds it).
    sends_nowait: bool = True
    texts: list[str] = field(default_factory=list)
    tool_responses: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    #: The scheduling of each non-blocking tool's answer, by function-call id.
    tool_scheduling: dict[str, Any] = field(default_factory=dict)
    closed: bool = False
    #: Raised by the opener instead of opening (a model that cannot be reached).
    refuse: AgentError | None = None

    def __post_init__(self) -> None:
        self._events: asyncio.Queue[ConversationEvent | AgentError] = asyncio.Queue()
        self.changed = asyncio.Event()

    async def open(
        self, call_sid: str, activity: CallerActivity, clock_origin: float
    ) -> FakeConversation:
        """The call's ``ConversationOpener``."""
        if self.refuse is not None:
            raise self.refuse
        self.opened = Opened(call_sid, activity, clock_origin)
        return self

    def push(self, *events: ConversationEvent | AgentError) -> None:
        """Events the model sends (an ``AgentError``: the model is lost, raised from events())."""
        for event in events:
            self._events.put_nowait(event)

    @property
    def model_busy(self) -> bool:
        return self.busy

    async def send_audio(self, pcm16k: bytes) -> None:
        self.audio.append(pcm16k)

    def send_audio_nowait(self, pcm16k: bytes) -> bool:
        if not self.sends_nowait:
            return False  # as a socket under flow control: the call awaits send_audio
        self.audio.append(pcm16k)
        return True

    async def send_text(self, text: str) -> None:
        self.texts.append(text)
        self.changed.set()

    async def send_tool_response(
        self, call_id: str, name: str, response: dict[str, Any], scheduling: Any = None
    ) -> None:
        self.tool_responses.append((call_id, name, response))
        if scheduling is not None:
            self.tool_scheduling[call_id] = scheduling
        self.changed.set()

    async def events(self) -> AsyncIterator[ConversationEvent]:
        while not self.closed:
            event = await self._events.get()
            if isinstance(event, AgentError):
                raise event
            yield event

    async def close(self) -> None:
        self.closed = True
