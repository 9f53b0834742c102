"""``METRICS_PORT``: ``GET /metrics`` on a listener of its own, in the same process.

Everything else stays on the call port; this port answers ``/metrics`` and nothing else
(404), so it can stay inside the cluster while the call port faces Twilio. It is a few lines
of HTTP/1.1 on asyncio streams, one request per connection, with the same header deadline
as the call port and ``METRICS_TOKEN`` when set.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable

from agent.logs import fields
from telephony.server.metrics import CONTENT_TYPE_LATEST

__all__ = ["MetricsListener", "bearer_ok"]

log = logging.getLogger(__name__)

#: A scrape's request line and headers, at most.
MAX_HEAD_BYTES = 16 * 1024


def bearer_ok(token: str | None, authorization: str | None) -> bool:
    """True when no token is required, or ``authorization`` is ``Bearer <token>``."""
    if token is None:
        return True
    import hmac

    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip(), token)


class MetricsListener:
    """Serves ``exposition()`` at ``GET /metrics`` on an already bound socket."""

    def __init__(
        self,
        sock: socket.socket,
        exposition: Callable[[], bytes],
        *,
        token: str | None,
        header_timeout_s: float,
    ) -> None:
        self._sock = sock
        self._exposition = exposition
        self._token = token
        self._timeout = header_timeout_s
        self._server: asyncio.Server | None = None

    @property
    def port(self) -> int:
        return int(self._sock.getsockname()[1])

    async def start(self) -> None:
        self._server = await asyncio.start_server(
            self._serve, sock=self._sock, limit=MAX_HEAD_BYTES
        )
        log.info("metrics.listening", extra=fields(port=self.port, token=self._token is not None))

    async def aclose(self) -> None:
        if self._server is not None:
            # Scrapes in flight are bounded by the header deadline; they are not waited for.
            self._server.close()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            async with asyncio.timeout(self._timeout):
                head = await reader.readuntil(b"\r\n\r\n")
            status, body, extra = self._answer(head)
            writer.write(
                b"HTTP/1.1 %s\r\ncontent-length: %d\r\n%sconnection: close\r\n\r\n"
                % (status, len(body), extra)
                + body
            )
            async with asyncio.timeout(self._timeout):
                await writer.drain()
        except (TimeoutError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, OSError):
            pass  # a slow, broken or oversized request: just close
        finally:
            writer.close()
            try:
                async with asyncio.timeout(self._timeout):
                    await writer.wait_closed()
            except (TimeoutError, OSError):
                writer.transport.abort()  # a peer that reads nothing: drop it

    def _answer(self, head: bytes) -> tuple[bytes, bytes, bytes]:
        """(status, body, extra header lines) for one request head."""
        lines = head.decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        target = rest.partition(" ")[0]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        text = b"content-type: text/plain\r\n"
        if target.partition("?")[0] != "/metrics":
            return b"404 Not Found", b"not found\n", text
        if method != "GET":
            return b"405 Method Not Allowed", b"", text + b"allow: GET\r\n"
        if not bearer_ok(self._token, headers.get("authorization")):
            return (
                b"401 Unauthorized",
                b"bearer token required\n",
                (text + b"www-authenticate: Bearer\r\n"),
            )
        return (
            b"200 OK",
            self._exposition(),
            b"content-type: %s\r\n" % (CONTENT_TYPE_LATEST.encode()),
        )
