"""Slow and idle clients, at the socket: deadlines for a request's headers and body, a cap on
its body, and a cap on open connections.

uvicorn on its own has only a keep-alive timeout, which stops as soon as a byte arrives: a
client that sends one byte every few seconds keeps its connection, and a file descriptor,
for as long as it likes (measured: 1,007 of 1,100 such connections still open after 25 s,
and with the open-file limit at 1024 neither ``/healthz`` nor a call got through).
``EdgeHttpProtocol`` is uvicorn's own httptools protocol with:

- a **header deadline**: from the connection's first byte (or the first byte of the next
  request on a kept-alive connection) to the end of the headers;
- a **body deadline**: from the end of the headers to the end of the body, and a body cap;
- a **connection cap** counted over uvicorn's own set of open connections, WebSockets
  included. A connection made at the cap first closes the oldest *idle* HTTP connection (one
  waiting for a request's headers, or kept alive between requests); only when none is idle
  is the new one refused. An upgraded WebSocket (a call) is never closed for the cap, and a
  short real request always finds room while slow clients hold the rest.

Each is enforced by closing the transport, so the file descriptor is freed at once.
WebSockets leave this protocol at the upgrade, and none of these deadlines applies to them.
(httptools comes with ``uvicorn[standard]``, a dependency; it is uvicorn's default parser.)
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from typing import ClassVar

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from agent.logs import fields

__all__ = ["ConnectionLimits", "EdgeHttpProtocol", "edge_protocol"]

log = logging.getLogger(__name__)

#: The largest request body accepted (Twilio's webhooks are a few kB; the ingress example
#: allows 1 MiB too).
MAX_BODY_BYTES = 1 << 20
#: At most one warning per this many seconds about connections closed (a flood is counted
#: in ``voice_agent_connections_closed_total``, not logged line by line).
WARN_EVERY_S = 10.0

_RESPONSES = {
    "header_timeout": b"408 Request Timeout",
    "body_timeout": b"408 Request Timeout",
    "body_too_large": b"413 Content Too Large",
    "refused": b"503 Service Unavailable",
}


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    header_timeout_s: float
    body_timeout_s: float
    max_connections: int
    max_body_bytes: int = MAX_BODY_BYTES


class EdgeHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol with deadlines and a connection cap (see the module).

    Use ``edge_protocol()``: it makes a subclass bound to one server's limits.
    """

    limits: ClassVar[ConnectionLimits]
    #: This server's HTTP connections that have not been upgraded, oldest first.
    open_http: ClassVar[OrderedDict[EdgeHttpProtocol, None]]
    #: Called with the reason each time this class closes a connection (a metric).
    closed: ClassVar[list[Callable[[str], None]]]
    _warned_at: ClassVar[list[float]]

    _header_timer: asyncio.TimerHandle | None = None
    _body_timer: asyncio.TimerHandle | None = None
    _body_bytes: int = 0

    # -- connection -------------------------------------------------------------------------

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.open_http[self] = None
        self._arm_header_deadline()
        if len(self.connections) > self.limits.max_connections:
            victim = next(
                (c for c in self.open_http if c is not self and c.idle and not c.closing),
                None,
            )
            if victim is not None:
                victim.close_for("evicted")
            else:
                self.close_for("refused")

    def connection_lost(self, exc: Exception | None) -> None:
        self._cancel_timers()
        self.open_http.pop(self, None)
        super().connection_lost(exc)

    def handle_websocket_upgrade(self) -> None:
        # From here on the transport belongs to the WebSocket protocol (a call): no deadline
        # of this class applies, and it is never closed for the connection cap.
        self._cancel_timers()
        self.open_http.pop(self, None)
        super().handle_websocket_upgrade()

    @property
    def idle(self) -> bool:
        """No request is being served: waiting for one's headers, or kept alive."""
        return self.cycle is None or self.cycle.response_complete

    @property
    def closing(self) -> bool:
        return bool(self.transport.is_closing())

    def close_for(self, reason: str) -> None:
        """Close the connection now (the file descriptor goes with it)."""
        self._cancel_timers()
        if self.closing:
            return
        status = _RESPONSES.get(reason)
        if status is not None and (self.cycle is None or not self.cycle.response_started):
            self.transport.write(
                b"HTTP/1.1 " + status + b"\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
            )
        self.transport.close()
        if self.cycle is not None and not self.cycle.response_complete:
            # The app sees the request end as a disconnect, never as a (truncated) body.
            self.cycle.disconnected = True
            self.cycle.message_event.set()
        self.open_http.pop(self, None)
        for callback in self.closed:
            callback(reason)
        now = time.monotonic()
        if now - self._warned_at[0] >= WARN_EVERY_S:
            self._warned_at[0] = now
            log.warning(
                "http.connection_closed",
                extra=fields(
                    reason=reason,
                    client=self.client[0] if self.client else None,
                    open=len(self.connections),
                    max_connections=self.limits.max_connections,
                ),
            )
        else:
            log.debug("http.connection_closed", extra=fields(reason=reason))

    # -- deadlines --------------------------------------------------------------------------

    def _arm_header_deadline(self) -> None:
        if self._header_timer is None:
            self._header_timer = self.loop.call_later(
                self.limits.header_timeout_s, self.close_for, "header_timeout"
            )

    def _cancel_timers(self) -> None:
        for timer in (self._header_timer, self._body_timer):
            if timer is not None:
                timer.cancel()
        self._header_timer = self._body_timer = None

    def on_message_begin(self) -> None:
        # The first byte of a request (the next one, on a kept-alive connection).
        super().on_message_begin()
        self._body_bytes = 0
        self._arm_header_deadline()

    def on_headers_complete(self) -> None:
        if self._header_timer is not None:
            self._header_timer.cancel()
            self._header_timer = None
        super().on_headers_complete()
        if not (self.parser.should_upgrade() and self._should_upgrade()):
            self._body_timer = self.loop.call_later(
                self.limits.body_timeout_s, self.close_for, "body_timeout"
            )

    def on_body(self, body: bytes) -> None:
        if self.closing:
            return  # closed for a deadline or the cap: the rest is not read
        self._body_bytes += len(body)
        if self._body_bytes > self.limits.max_body_bytes:
            self.close_for("body_too_large")
            return
        super().on_body(body)

    def on_message_complete(self) -> None:
        if self._body_timer is not None:
            self._body_timer.cancel()
            self._body_timer = None
        if not self.closing:
            super().on_message_complete()


def edge_protocol(
    limits: ConnectionLimits, on_close: Callable[[str], None] = lambda reason: None
) -> type[EdgeHttpProtocol]:
    """An ``EdgeHttpProtocol`` class for one server (``uvicorn.Config(http=…)``)."""

    class Bound(EdgeHttpProtocol):
        pass

    Bound.limits = limits
    Bound.open_http = OrderedDict()
    Bound.closed = [on_close]
    Bound._warned_at = [-WARN_EVERY_S]
    return Bound
