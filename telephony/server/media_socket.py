"""Twilio's frames straight from the socket: a call's WebSocket without the ASGI queue.

Under uvicorn each received frame becomes an ASGI message: a dict put on a queue, the
reading of the socket paused until the app takes it and resumed after (two changes of the
event loop's interest in that socket, per frame), and on the app side Starlette's checks
around the queue. Twilio sends 50 frames per second per call, so this is paid 50 times per
call-second, and it is most of what receiving a frame costs (``bench/media_path.py``).

``MediaWebSocketProtocol`` is uvicorn's own sans-I/O WebSocket protocol with one addition:
after the handshake, the app may ``attach`` a ``DirectSocket`` to the connection. From then
on, received messages go to that socket's inbox, a deque, instead of the ASGI queue; the
call's ``receive()`` returns at once while the inbox holds frames and waits on a future
otherwise. Reading is paused only when the inbox holds ``INBOX_HIGH_FRAMES`` frames or
``INBOX_HIGH_BYTES`` (a call that falls behind, or a peer flooding it) and resumed when the
call has taken half of them, so a call's backlog stays bounded as before.

Everything else is uvicorn's: the handshake and its rejection (a refused signature is still
HTTP 403), the frame size limit (1009), keepalive pings, the closing handshake, shutdown
(1012), and sending. ``DirectSocket.send`` writes through the same sans-I/O connection as
uvicorn does, without the ASGI message, when the transport is writable; otherwise it goes
through the ASGI ``send`` (which waits for the transport to drain). Routes that do not
attach (the console) work as on plain uvicorn.

This subclasses a uvicorn module (``websockets_sansio_impl``, uvicorn 0.35 and later). A
connection is offered to the app only when the protocol still has the state this relies on
(``_RELIED_ON``); otherwise ``direct_socket`` returns None and the route uses Starlette's
WebSocket as before, slower but right. The end-to-end tests run every call through it.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable
from typing import Any, Final

from starlette.websockets import WebSocket
from uvicorn.protocols.websockets.websockets_sansio_impl import WebSocketsSansIOProtocol
from websockets.exceptions import InvalidState

from telephony.call.bridge import SocketClosed
from telephony.server.websocket import StarletteSocket

__all__ = [
    "INBOX_HIGH_BYTES",
    "INBOX_HIGH_FRAMES",
    "SCOPE_KEY",
    "DirectSocket",
    "MediaWebSocketProtocol",
    "direct_socket",
]

#: The scope extension under which the protocol offers itself to the app.
SCOPE_KEY: Final = "voice_agent.direct_receive"
#: Reading pauses at this many frames waiting for the call (1.3 s of Twilio's audio)...
INBOX_HIGH_FRAMES: Final = 64
#: ...or at this many bytes of them (a peer sending large frames).
INBOX_HIGH_BYTES: Final = 512 * 1024
#: What this uses of uvicorn's protocol instances (besides the methods it overrides).
_RELIED_ON: Final = (
    "frames",
    "curr_msg_data_type",
    "close_sent",
    "disconnected",
    "handshake_complete",
    "read_paused",
    "queue",
    "writable",
    "conn",
    "transport",
)


class MediaWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, able to hand frames to a ``DirectSocket``."""

    _direct: DirectSocket | None = None

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is None:  # the upgrade was refused
            return
        if all(hasattr(self, name) for name in _RELIED_ON):
            scope["extensions"][SCOPE_KEY] = self

    def send_receive_event_to_app(self) -> None:
        direct = self._direct
        if direct is None:
            super().send_receive_event_to_app()
            return
        frames = self.frames
        if isinstance(frames, list):
            data = frames[0] if len(frames) == 1 else b"".join(frames)
            self.frames = []
        else:  # a bytearray in some uvicorn versions
            data = bytes(frames)
            self.frames = type(frames)()
        if self.close_sent:
            return  # past our close: as uvicorn, discard until the peer's reply
        if self.curr_msg_data_type == "text":
            try:
                direct._deliver(data.decode())
            except UnicodeDecodeError:
                # As uvicorn: 1007, and the call sees the socket end.
                self.conn.send_close(1007)
                self.handle_parser_exception()
                return
        else:
            direct._deliver(bytes(data))
        if direct._full() and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

    def _ended(self) -> None:
        """The connection is over (closed by either side, lost, or shut down)."""
        direct = self._direct
        if direct is not None:
            direct._end()

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._ended()

    def handle_close(self, event: Any) -> None:
        super().handle_close(event)
        self._ended()

    def handle_parser_exception(self) -> None:
        super().handle_parser_exception()
        self._ended()

    def shutdown(self) -> None:
        super().shutdown()
        self._ended()

    def keepalive_timeout(self) -> None:
        super().keepalive_timeout()
        self._ended()


class DirectSocket:
    """A call's ``TwilioSocket`` fed by ``MediaWebSocketProtocol`` (see the module)."""

    __slots__ = (
        "_asgi",
        "_attached",
        "_bytes",
        "_inbox",
        "_protocol",
        "_queued_sends",
        "_waiter",
        "ended",
        "on_frame",
    )

    def __init__(self, ws: WebSocket, protocol: MediaWebSocketProtocol) -> None:
        self._asgi = StarletteSocket(ws)  # uvicorn's send when it must wait; closing
        self._protocol = protocol
        self._inbox: deque[str | bytes] = deque()
        self._bytes = 0
        self._waiter: asyncio.Future[None] | None = None
        self._queued_sends = 0  # sends waiting in uvicorn's send for the buffer to drain
        self._attached = False
        self.ended = False
        #: ``Call.take_frame``: handles a frame in the read callback when it needs no
        #: waiting (True), called only while the call waits in ``receive()`` with nothing
        #: queued, so the order of frames is kept.
        self.on_frame: Callable[[str], bool] | None = None

    def _attach(self) -> None:
        """Take the connection's frames from now on (after the app accepted it: Starlette's
        ``accept`` reads the ASGI connect message from uvicorn's queue first)."""
        self._attached = True
        protocol = self._protocol
        # Anything uvicorn queued meanwhile (frames that came right after the handshake, or
        # the disconnect) comes first, in order.
        queue = protocol.queue
        while not queue.empty():
            message = queue.get_nowait()
            if message["type"] == "websocket.receive":
                text = message.get("text")
                self._deliver(text if text is not None else bytes(message.get("bytes") or b""))
            elif message["type"] == "websocket.disconnect":
                self.ended = True
        if protocol.disconnected or protocol.close_sent:
            self.ended = True
        protocol._direct = self
        if protocol.read_paused and not self._full():
            protocol.read_paused = False  # uvicorn paused at the frame it queued
            protocol.transport.resume_reading()

    # -- fed by the protocol ------------------------------------------------------------

    def _deliver(self, frame: str | bytes) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            # The call waits for this very frame: it may take it here, without waking up.
            take = self.on_frame
            if take is not None and not self._inbox and type(frame) is str and take(frame):
                return
            waiter.set_result(None)
        self._inbox.append(frame)
        self._bytes += len(frame)

    def _full(self) -> bool:
        return len(self._inbox) >= INBOX_HIGH_FRAMES or self._bytes >= INBOX_HIGH_BYTES

    def _end(self) -> None:
        self.ended = True
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # -- TwilioSocket -------------------------------------------------------------------

    async def receive(self) -> str | bytes | None:
        if not self._attached:
            self._attach()
        inbox = self._inbox
        while not inbox:
            if self.ended:
                return None
            waiter = self._waiter = asyncio.get_running_loop().create_future()
            try:
                await waiter
            finally:
                self._waiter = None
        frame = inbox.popleft()
        self._bytes -= len(frame)
        protocol = self._protocol
        if (
            protocol.read_paused
            and len(inbox) <= INBOX_HIGH_FRAMES // 2
            and self._bytes < INBOX_HIGH_BYTES // 2
        ):
            protocol.read_paused = False
            protocol.transport.resume_reading()
        return frame

    async def send(self, text: str) -> None:
        protocol = self._protocol
        if protocol.disconnected or protocol.close_sent:
            raise SocketClosed("the WebSocket is closed")
        if self._queued_sends or not protocol.writable.is_set() or not protocol.handshake_complete:
            # The transport's buffer is full: uvicorn's send waits for it to drain (and a
            # frame sent meanwhile queues behind the waiting ones, in order). Before the
            # handshake, uvicorn's send is what completes it.
            self._queued_sends += 1
            try:
                await self._asgi.send(text)
            finally:
                self._queued_sends -= 1
            return
        conn = protocol.conn
        try:
            conn.send_text(text.encode())
        except InvalidState as exc:  # the peer's close arrived: the closing handshake runs
            raise SocketClosed(f"InvalidState: {exc}") from exc
        protocol.transport.write(b"".join(conn.data_to_send()))

    async def close(self, code: int, reason: str) -> None:
        await self._asgi.close(code, reason)


def direct_socket(ws: WebSocket) -> DirectSocket | None:
    """A ``DirectSocket`` on this WebSocket (it attaches at its first ``receive``, which
    must come after the app accepted), or None when the server's protocol is
    not ``MediaWebSocketProtocol`` (then use ``StarletteSocket``)."""
    protocol = ws.scope.get("extensions", {}).get(SCOPE_KEY)
    if not isinstance(protocol, MediaWebSocketProtocol):
        return None
    return DirectSocket(ws, protocol)
