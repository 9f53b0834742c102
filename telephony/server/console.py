"""The browser console: a call from the operator's microphone, through the same ``Call``.

- ``GET /console``        the page (``telephony/ops/static/console.html``); it needs no auth of
                          its own (it holds no data), but is off without ``API_TOKEN``
- ``WS  /console/media``  the page's call: the Twilio Media Streams JSON protocol, spoken by
                          the page itself (8 kHz μ-law, 20 ms frames, marks, ``clear``), so a
                          console call takes the phone's path: the same admission, call slots,
                          conversion, barge-in, tools, record and metrics (direction
                          ``browser``)

The WebSocket is authenticated before it is accepted: the page offers two subprotocols,
``voice-agent.console`` and ``bearer.<API_TOKEN as unpadded base64url>`` (a header, so the
token stays out of URLs and access logs); the server compares the token in constant time and
answers with ``voice-agent.console`` only.

Beyond Twilio's protocol, the page may send ``{"event": "text", "text": …}`` (a typed caller
turn), and receives the call's events as they happen (``started``, ``transcript``, ``turn``,
``interrupted``, ``tool``, ``ended``; see ``bridge.CallObserver``), queued apart from the
audio and bounded, so a slow page cannot hold the call up.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hmac
import logging
import secrets
from collections import deque
from collections.abc import Awaitable, Callable, Iterable
from typing import Any, Final, Protocol

import orjson
from fastapi import FastAPI, WebSocket
from fastapi.responses import HTMLResponse, PlainTextResponse, Response

from agent.logs import fields
from telephony.call.bridge import Call, CallObserver, SocketClosed, TwilioSocket
from telephony.ops.api import page_headers, page_html
from telephony.server.websocket import StarletteSocket
from telephony.twilio import media_stream as ms
from telephony.twilio.rest import TwilioRest

__all__ = ["CONSOLE_MEDIA_PATH", "SUBPROTOCOL", "ConsoleSocket", "install", "offered_token"]

log = logging.getLogger(__name__)

CONSOLE_PATH: Final = "/console"
CONSOLE_MEDIA_PATH: Final = "/console/media"
#: The subprotocol the server answers with; the token comes in a second one, never echoed.
SUBPROTOCOL: Final = "voice-agent.console"
TOKEN_PREFIX: Final = "bearer."
#: Call events waiting for a slow page; beyond this the oldest are dropped.
MAX_QUEUED_EVENTS: Final = 512
#: What the console's calls are, in records and metrics.
DIRECTION: Final = "browser"
_MEDIA: Final = '{"event":"media"'


class StreamServer(Protocol):
    """``app.serve_stream``: runs one stream through admission and a ``Call``."""

    def __call__(
        self,
        ws: WebSocket,
        socket: TwilioSocket,
        *,
        direction: str | None = ...,
        observer: CallObserver | None = ...,
        rest: TwilioRest | None = ...,
        on_call: Callable[[Call], None] | None = ...,
        subprotocol: str | None = ...,
    ) -> Awaitable[None]: ...


def offered_token(subprotocols: Iterable[str]) -> str | None:
    """The token the page offered as ``bearer.<base64url>``, or None."""
    for protocol in subprotocols:
        if protocol.startswith(TOKEN_PREFIX):
            encoded = protocol[len(TOKEN_PREFIX) :]
            try:
                padded = encoded + "=" * (-len(encoded) % 4)
                raw = base64.b64decode(padded, altchars=b"-_", validate=True)
                return raw.decode("utf-8") or None
            except (binascii.Error, ValueError):
                return None
    return None


def token_ok(expected: str | None, given: str | None) -> bool:
    return (
        expected is not None
        and given is not None
        and hmac.compare_digest(given.encode(), expected.encode())
    )


class ConsoleSocket:
    """The console's WebSocket as the call's ``TwilioSocket``, plus the page's extras.

    Frames pass through as they came, except: the page's ``start`` is replaced by one the
    server writes (its own call and stream SIDs: a page cannot name, or overwrite, another
    call), and ``text`` messages go to ``on_text`` instead of the call's Twilio parser.
    Media frames are passed on without a look (the page starts them with ``_MEDIA``).
    """

    def __init__(self, ws: WebSocket) -> None:
        self._ws = StarletteSocket(ws)
        self._lock = asyncio.Lock()  # the call and the event pump share the socket
        self._events: deque[str] = deque(maxlen=MAX_QUEUED_EVENTS)
        self._wake = asyncio.Event()
        self.call_sid = "CO" + secrets.token_hex(16)
        self.stream_sid = "MZ" + secrets.token_hex(16)
        self.on_text: Callable[[str], Awaitable[None]] | None = None

    async def receive(self) -> str | bytes | None:
        while True:
            frame = await self._ws.receive()
            if not isinstance(frame, str) or frame.startswith(_MEDIA):
                return frame
            try:
                msg = orjson.loads(frame)
            except orjson.JSONDecodeError:
                return frame  # the call counts it as a bad frame
            event = msg.get("event") if isinstance(msg, dict) else None
            if event == "text":
                text = msg.get("text")
                if isinstance(text, str) and self.on_text is not None:
                    await self.on_text(text)
                continue
            if event == "start":
                self.observe({"event": "started", "call_sid": self.call_sid})
                return ms.InboundBuilder(self.stream_sid, self.call_sid).start(
                    {"from": "console", "direction": DIRECTION}
                )
            return frame

    async def send(self, *texts: str) -> None:
        async with self._lock:
            await self._ws.send(*texts)

    async def close(self, code: int, reason: str) -> None:
        await self._flush()
        await self._ws.close(code, reason)

    def observe(self, event: dict[str, Any]) -> None:
        """``CallObserver``: queue the event for the page (never blocks the call)."""
        self._events.append(orjson.dumps(event).decode())
        self._wake.set()

    async def pump(self) -> None:
        """Send the call's events to the page as they come (until cancelled)."""
        while True:
            await self._wake.wait()
            self._wake.clear()
            await self._flush()

    async def _flush(self) -> None:
        while self._events:
            try:
                await self.send(self._events.popleft())
            except SocketClosed:  # the page has gone: nothing left to tell it
                self._events.clear()
                return


def install(app: FastAPI, service: Any, serve_stream: StreamServer) -> None:
    """Add ``/console`` and ``/console/media`` to ``app``."""
    settings = service.settings
    html, script_hash = page_html("console.html")

    @app.get(CONSOLE_PATH, response_class=HTMLResponse, include_in_schema=False)
    async def console_page() -> Response:
        if settings.api_token is None:
            return PlainTextResponse(
                "the console is off: start the server with API_TOKEN set (at least 16 characters)",
                status_code=503,
            )
        return HTMLResponse(html, headers=page_headers(script_hash))

    @app.websocket(CONSOLE_MEDIA_PATH)
    async def console_media(ws: WebSocket) -> None:
        offered = [str(p) for p in ws.scope.get("subprotocols", [])]
        if SUBPROTOCOL not in offered or not token_ok(settings.api_token, offered_token(offered)):
            client = ws.client.host if ws.client is not None else ""
            log.warning("console.unauthorized", extra=fields(client=client))
            await ws.close(code=1008)  # before accept: the upgrade is refused (HTTP 403)
            return
        socket = ConsoleSocket(ws)

        def adopt(call: Call) -> None:
            socket.on_text = call.caller_text

        async with asyncio.TaskGroup() as tg:
            pump = tg.create_task(socket.pump(), name="console:events")
            try:
                await serve_stream(
                    ws,
                    socket,
                    direction=DIRECTION,
                    observer=socket.observe,
                    rest=None,  # no Twilio call to hang up or redirect
                    on_call=adopt,
                    subprotocol=SUBPROTOCOL,
                )
            finally:
                pump.cancel()
