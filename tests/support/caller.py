"""Test doubles of the caller simulator's tests: tones and silence the VAD hears as speech or
not, a scripted server (:class:`Bot`, served on loopback by :func:`running`) and a recorded
call directory in the recorder's format (:func:`write_recorded_call`)."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import soundfile as sf
from websockets.asyncio.server import ServerConnection, serve

from telephony.audio import ulaw_decode, ulaw_encode
from telephony.twilio.media_stream import FRAME_BYTES, OutboundBuilder

__all__ = ["SILENCE", "Bot", "flat", "running", "tone", "write_recorded_call"]

SILENCE = b"\xff" * FRAME_BYTES


def tone(seconds: float, amplitude: int = 8000, hz: float = 440.0) -> bytes:
    """μ-law tone, loud enough for the VAD (about -15 dBFS)."""
    n = round(seconds * 8000)
    x = amplitude * np.sin(2 * np.pi * hz * np.arange(n) / 8000)
    return ulaw_encode(x.astype("<i2").tobytes())


def flat(pairs: list[tuple[float, float]]) -> list[float]:
    """``(start, end)`` pairs as one list, for comparing with ``pytest.approx``."""
    return [x for pair in pairs for x in pair]


@dataclass
class Bot:
    """Plays the server: greets on ``start``, clears when the caller talks, replies after
    the caller has been quiet for a few frames. Records everything it receives."""

    greeting: bytes = b""
    greeting_mark: str | None = None
    first_frames: list[str | bytes] = field(default_factory=list)
    clear_after_loud_frames: int | None = None
    reply: bytes = b""
    reply_after_quiet_frames: int = 5
    hang_up_after_s: float | None = None
    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    sent: list[tuple[float, str]] = field(default_factory=list)

    async def _send(self, ws: ServerConnection, frame: str) -> None:
        self.sent.append((asyncio.get_running_loop().time(), frame))
        await ws.send(frame)

    async def __call__(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        assert ws.request is not None
        self.headers = {k.lower(): v for k, v in ws.request.headers.raw_items()}
        out: OutboundBuilder | None = None
        loud = quiet = 0
        async for raw in ws:
            assert isinstance(raw, str)
            msg = json.loads(raw)
            self.received.append((loop.time(), msg))
            if msg["event"] == "start":
                out = OutboundBuilder(msg["streamSid"])
                for frame in self.first_frames:
                    await ws.send(frame)
                if self.greeting:
                    # Two messages: Twilio queues them back to back.
                    half = len(self.greeting) // 2
                    await self._send(ws, out.media(self.greeting[:half]))
                    await self._send(ws, out.media(self.greeting[half:]))
                if self.greeting_mark:
                    await self._send(ws, out.mark(self.greeting_mark))
                if self.hang_up_after_s is not None:
                    await asyncio.sleep(self.hang_up_after_s)
                    await ws.close(1000, "agent hung up")
                    return
            elif msg["event"] == "media" and out is not None:
                if base64.b64decode(msg["media"]["payload"]) != SILENCE:
                    loud, quiet = loud + 1, 0
                    if loud == self.clear_after_loud_frames:
                        await self._send(ws, out.clear())
                elif loud:
                    quiet += 1
                    if quiet == self.reply_after_quiet_frames and self.reply:
                        await self._send(ws, out.media(self.reply))
                        await self._send(ws, out.mark("reply"))
                        loud = 0

    def events(self, name: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, m) for t, m in self.received if m["event"] == name]


@asynccontextmanager
async def running(bot: Bot) -> AsyncIterator[str]:
    async with serve(bot, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/twilio/media"


def write_recorded_call(
    root: Path, audio_ulaw: bytes, events: list[dict[str, Any]], meta: dict[str, Any] | None = None
) -> Path:
    """A call directory in the format of telephony.call.recorder (via its own writer's layout)."""
    root.mkdir(parents=True, exist_ok=True)
    sf.write(
        root / "caller.wav", np.frombuffer(ulaw_decode(audio_ulaw), "<i2"), 8000, subtype="PCM_16"
    )
    head = {
        "type": "meta",
        "version": 1,
        "call_sid": "CA1",
        "stream_sid": "MZ1",
        "custom_parameters": {"from": "+15550100", "to": "+15550199"},
        "started_at": 1.0,
        **(meta or {}),
    }
    lines = [json.dumps(e) for e in [head, *events]]
    (root / "events.jsonl").write_text("\n".join(lines) + "\n")
    return root
