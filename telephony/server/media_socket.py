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

Once attached, the protocol also reads the frames Twilio sends all the time itself: a
complete, final, masked text frame (what every Twilio message is) is unmasked and delivered
without ``websockets``' generator-based parser, which costs ~10 µs per frame (about 5 % of the
server's CPU under load). Every other frame (control frames such as pongs and closes,
binary or fragmented messages, anything malformed, a frame over the size limit) is handed
to ``websockets`` whole, so its parser is always at a frame boundary and checks and answers
it as before; so is everything once the connection is no longer open.

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
from websockets.protocol import State

try:
    from websockets.speedups import apply_mask
except ImportError:  # pragma: no cover - websockets built without its C extension
    from websockets.utils import apply_mask

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
#: What this uses of the ``websockets`` connection to read frames itself.
_CONN_RELIED_ON: Final = (
    "state",
    "current_size",
    "max_message_size",
    "parser_exc",
    "parser",
    "reader",
    "extensions",
)
#: First header byte of a final text frame without extensions (FIN, RSV 0, opcode 1).
_FINAL_TEXT: Final = 0x81
_MASKED: Final = 0x80


class MediaWebSocketProtocol(WebSocketsSansIOProtocol):
    """uvicorn's sans-I/O WebSocket protocol, able to hand frames to a ``DirectSocket``."""

    _direct: DirectSocket | None = None
    #: Received bytes of a frame not complete yet (read by ``_read_frames``).
    _partial: bytes = b""
    #: Frames are read here (not only by ``websockets``) while this is True...
    _reading: bool = False
    #: ...and never again once this is (a frame too large, the connection closing, or a
    #: ``websockets`` that does not look as this relies on).
    _handed_off: bool = False

    def handle_connect(self, event: Any) -> None:
        super().handle_connect(event)
        scope = getattr(self, "scope", None)
        if scope is None:  # the upgrade was refused
            return
        if all(hasattr(self, name) for name in _RELIED_ON):
            scope["extensions"][SCOPE_KEY] = self

    def _start_reading(self) -> None:
        """Read Twilio's frames here from now on (the call has attached), if ``websockets``'
        parser is between two frames; else try again after the next read."""
        conn = self.conn
        if not all(hasattr(conn, name) for name in _CONN_RELIED_ON) or conn.extensions:
            self._handed_off = True  # e.g. permessage-deflate: websockets must inflate
            return
        # Between frames, with nothing buffered, websockets' parser (a chain of generators)
        # waits in the reader's ``at_eof``; in the middle of a frame, in ``read_exact``.
        waiting = conn.parser
        for _ in range(8):
            inner = getattr(waiting, "gi_yieldfrom", None)
            if inner is None:
                break
            waiting = inner
        reader_buffer = getattr(conn.reader, "buffer", b"?")
        self._reading = getattr(waiting, "__name__", None) == "at_eof" and not reader_buffer

    def data_received(self, data: bytes) -> None:
        if not self._reading:
            super().data_received(data)
            if self._direct is not None and not self._handed_off:
                self._start_reading()
            return
        if self._partial:
            data = self._partial + data
            self._partial = b""
        self._read_frames(data)

    def _read_frames(self, data: bytes) -> None:
        """Deliver the complete final text frames in ``data`` here, hand every other
        complete frame to ``websockets`` whole, keep an incomplete one for the next read."""
        conn = self.conn
        size = len(data)
        pos = 0
        while pos < size:
            if conn.state is not State.OPEN or self.close_sent or conn.parser_exc is not None:
                break  # closing: websockets reads (and discards) the rest
            if size - pos < 2:
                self._partial = data[pos:]  # a header cut by the read: wait for the rest
                return
            first, second = data[pos], data[pos + 1]
            length = second & 0x7F
            head = pos + 2
            if length >= 126:
                head += 2 if length == 126 else 8
                if size < head:
                    self._partial = data[pos:]
                    return
                length = int.from_bytes(data[pos + 2 : head], "big")
            limit = conn.max_message_size
            if limit is not None and length > limit:
                break  # websockets refuses it from its header alone: 1009
            masked = second & _MASKED
            end = head + (4 if masked else 0) + length
            if end > size:
                self._partial = data[pos:]  # the rest of it comes with the next read
                return
            if first == _FINAL_TEXT and masked and conn.current_size is None:
                payload = apply_mask(data[head + 4 : end], data[head : head + 4])
                pos = end
                if not self._deliver_text(payload):
                    break  # invalid UTF-8: the connection is closing
            else:  # a control frame, binary, fragmented or malformed: websockets' own
                super().data_received(data[pos:end])
                pos = end
        if pos < size:
            # Handed to websockets from here on, for good: a frame too large, or the end.
            self._reading = False
            self._handed_off = True
            super().data_received(data[pos:])

    def _deliver_text(self, data: bytes) -> bool:
        """Give one text message to the call; False if it is not UTF-8 (then, as uvicorn
        does, the connection closes with 1007 and the call sees its socket end)."""
        direct = self._direct
        assert direct is not None
        try:
            text = data.decode()
        except UnicodeDecodeError:
            self.conn.send_close(1007)
            self.handle_parser_exception()
            return False
        self._give(direct, text)
        return True

    def _give(self, direct: DirectSocket, message: str | bytes) -> None:
        """One message to the call's inbox; reading pauses while the inbox is full."""
        direct._deliver(message)
        if direct._full() and not self.read_paused:
            self.read_paused = True
            self.transport.pause_reading()

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
            self._deliver_text(bytes(data))
        else:
            self._give(direct, bytes(data))

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
        protocol._start_reading()
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

    async def send(self, *texts: str) -> None:
        protocol = self._protocol
        if protocol.disconnected or protocol.close_sent:
            raise SocketClosed("the WebSocket is closed")
        if self._queued_sends or not protocol.writable.is_set() or not protocol.handshake_complete:
            # The transport's buffer is full: uvicorn's send waits for it to drain (and a
            # frame sent meanwhile queues behind the waiting ones, in order). Before the
            # handshake, uvicorn's send is what completes it.
            self._queued_sends += 1
            try:
                await self._asgi.send(*texts)
            finally:
                self._queued_sends -= 1
            return
        conn = protocol.conn
        try:
            for text in texts:
                conn.send_text(text.encode())
        except InvalidState as exc:  # the peer's close arrived: the closing handshake runs
            raise SocketClosed(f"InvalidState: {exc}") from exc
        # All the frames in one write: one system call (and one TCP segment) for a media
        # message and its mark.
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
