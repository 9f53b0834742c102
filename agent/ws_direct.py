"""Writing a message on a ``websockets`` asyncio connection without its ``send()`` coroutine.

Shared by the model side (caller audio to the Live API, 30 to 50 messages per call-second)
and the caller simulator (Twilio's 50 frames per call-second), where the coroutine's
overhead is a measurable part of what a message costs.
"""

from __future__ import annotations

from typing import Any, Final

from websockets.exceptions import ConnectionClosedError
from websockets.protocol import State

__all__ = ["DirectText", "direct_text"]


class DirectText:
    """Writes a text message on a ``websockets`` asyncio connection at once, without its
    ``send()`` coroutine, whenever that ``send()`` would not have waited.

    ``send()`` enters an async context manager, checks the state, frames the message, writes
    it and awaits ``drain()``: about half of what sending 30 to 50 audio messages per second
    costs a call, when the write needs no waiting at all. ``write`` does the same framing and
    writing (``protocol.send_text`` then ``send_data``, as ``send()`` does) and leaves every
    other case to ``send()``: flow control paused (the peer reads slowly), a fragmented send
    in progress, or a connection no longer open.
    """

    __slots__ = ("_protocol", "_ws")

    def __init__(self, ws: Any) -> None:
        self._ws = ws
        self._protocol = ws.protocol

    def write(self, data: bytes) -> bool:
        """Frame and write ``data`` (UTF-8 text) now; ``False``: nothing written, use ``send``.

        Raises ``ConnectionClosedError`` if the write fails, as ``send()`` does."""
        ws = self._ws
        if (
            ws.paused
            or ws.send_in_progress is not None
            or self._protocol.state is not State.OPEN
            or ws.transport.is_closing()
        ):
            return False
        self._protocol.send_text(data)
        try:
            ws.send_data()
        except Exception as exc:
            # What send() does on a failed write: the connection is done (aborting it makes
            # the receive side see the loss too), and the sender gets ConnectionClosed.
            ws.transport.abort()
            raise ConnectionClosedError(None, None) from exc
        return True


#: What ``DirectText`` uses of a ``websockets.asyncio`` connection (all of websockets 14-17).
_DIRECT_ATTRIBUTES: Final = ("paused", "send_in_progress", "send_data", "transport", "protocol")


def direct_text(ws: Any) -> DirectText | None:
    """A ``DirectText`` for the SDK's socket, or ``None`` if ``websockets`` no longer looks as
    it relies on (then ``send()`` is used, which is slower but always right)."""
    if not all(hasattr(ws, name) for name in _DIRECT_ATTRIBUTES):
        return None
    protocol = ws.protocol
    if not callable(getattr(protocol, "send_text", None)) or not hasattr(protocol, "state"):
        return None
    return DirectText(ws)
