"""Starlette's WebSocket as a ``telephony.call.TwilioSocket`` (Twilio's streams and the
console's)."""

from __future__ import annotations

import contextlib

from fastapi import WebSocket
from starlette.websockets import WebSocketDisconnect, WebSocketState

from telephony.call.bridge import SocketClosed

__all__ = ["StarletteSocket"]


class StarletteSocket:
    """Adapts Starlette's WebSocket to ``telephony.call.TwilioSocket``."""

    __slots__ = ("ws",)

    def __init__(self, ws: WebSocket) -> None:
        self.ws = ws

    async def receive(self) -> str | bytes | None:
        if self.ws.client_state == WebSocketState.DISCONNECTED:
            return None
        message = await self.ws.receive()
        if message["type"] == "websocket.disconnect":
            return None
        text = message.get("text")
        if text is not None:
            return str(text)
        return bytes(message.get("bytes") or b"")

    async def send(self, *texts: str) -> None:
        try:
            for text in texts:
                await self.ws.send_text(text)
        except (WebSocketDisconnect, RuntimeError, OSError) as exc:
            # Starlette raises RuntimeError after a close, uvicorn ClientDisconnected (an
            # OSError) once the peer has gone.
            raise SocketClosed(f"{type(exc).__name__}: {exc}") from exc

    async def close(self, code: int, reason: str) -> None:
        if (
            self.ws.application_state != WebSocketState.DISCONNECTED
            and self.ws.client_state != WebSocketState.DISCONNECTED
        ):
            # The peer may have gone first: the socket is closed either way (uvicorn raises
            # ClientDisconnected, an OSError, when it has).
            with contextlib.suppress(WebSocketDisconnect, RuntimeError, OSError):
                await self.ws.close(code, reason)
