"""The simulator's server: TLS WebSocket endpoints of the Live API on a local port.

The real google-genai SDK only speaks ``wss://``, so the simulator serves TLS with a throwaway
certificate authority made by ``trustme``; clients trust it through :attr:`ca_pem_path`
(``SSL_CERT_FILE``) or :meth:`client_ssl_context` (``async_client_args={"ssl": …}``).

The same port answers the SDK's REST embedding requests (``models/…:batchEmbedContents``,
``agent.simulator.embeddings``), as the real API's host does: the SDK has one base URL for
both. websockets reads only GET requests without a body, so a connection whose first request
is anything else is answered here, one request, then closed (``_LiveOrRest``).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import logging
import os
import ssl
import tempfile
from collections import Counter
from http import HTTPStatus
from types import TracebackType
from typing import Any, Final, Self

import numpy as np
import trustme
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from agent.simulator import embeddings, wire
from agent.simulator.behaviour import SimBehaviour
from agent.simulator.handles import HandleRegistry
from agent.simulator.session import SimSession

__all__ = ["LiveSimulator"]

log = logging.getLogger(__name__)

#: The largest REST request we read (100 passages of a few kB each fit well within it).
MAX_REST_BYTES: Final = 4 * 1024 * 1024
_REASONS: Final = {
    200: "OK",
    400: "Bad Request",
    404: "Not Found",
    405: "Method Not Allowed",
    411: "Length Required",
    413: "Content Too Large",
    503: "Service Unavailable",
}


class _LiveOrRest(ServerConnection):
    """A connection of the simulator: the Live WebSocket (a GET upgrade, handed to
    websockets untouched), or one REST request answered by ``simulator.rest``."""

    simulator: LiveSimulator

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._mode: str | None = None  # "ws" or "rest", once the first bytes tell
        self._head = bytearray()

    def data_received(self, data: bytes) -> None:
        if self._mode == "ws":
            super().data_received(data)
            return
        self._head += data
        if self._mode is None:
            if len(self._head) < 4:
                return
            if self._head.startswith(b"GET "):
                self._mode = "ws"
                head, self._head = bytes(self._head), bytearray()
                super().data_received(head)
                return
            self._mode = "rest"
        self._rest()

    def _rest(self) -> None:
        end = self._head.find(b"\r\n\r\n")
        if end < 0:
            if len(self._head) > 64 * 1024:
                self._answer(413, b'{"error": {"code": 413, "message": "headers too large"}}')
            return
        lines = bytes(self._head[:end]).decode("latin-1").split("\r\n")
        method, _, rest = lines[0].partition(" ")
        path = rest.rpartition(" ")[0]
        headers = {}
        for line in lines[1:]:
            name, _, value = line.partition(":")
            headers[name.strip().lower()] = value.strip()
        try:
            length = int(headers.get("content-length", ""))
        except ValueError:
            self._answer(411, b'{"error": {"code": 411, "message": "Content-Length required"}}')
            return
        if length > MAX_REST_BYTES:
            self._answer(413, b'{"error": {"code": 413, "message": "request too large"}}')
            return
        body = bytes(self._head[end + 4 : end + 4 + length])
        if len(body) < length:
            return  # more to come
        status, payload = self.simulator.rest(method, path, headers, body)
        self._answer(status, payload)

    def _answer(self, status: int, payload: bytes) -> None:
        self._mode = "done"
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'Error')}\r\n"
            "Content-Type: application/json; charset=UTF-8\r\n"
            f"Content-Length: {len(payload)}\r\n"
            "Connection: close\r\n\r\n"
        ).encode()
        # Closing makes the WebSocket handshake waiting on this connection give up quietly.
        self.transport.write(head + payload)
        self.transport.close()


class LiveSimulator:
    """A local, scriptable stand-in for the Gemini Live API (not a real model).

    Use as an async context manager, or call :meth:`start` and :meth:`aclose`. Runs in the
    current event loop (e.g. inside an ASGI lifespan). ``port=0`` picks a free port.

    Example::

        async with LiveSimulator() as sim:
            client = genai.Client(api_key="x", http_options=types.HttpOptions(
                base_url=sim.base_url, async_client_args={"ssl": sim.client_ssl_context()}))
            async with client.aio.live.connect(model="gemini-3.8-live") as live:
                session = await sim.next_session()
    """

    def __init__(
        self, host: str = "127.0.0.1", port: int = 0, behaviour: SimBehaviour | None = None
    ) -> None:
        self.host = host
        #: Copied to each new session when it connects (change it between connections).
        self.behaviour = behaviour or SimBehaviour()
        self._requested_port = port
        self._ca = trustme.CA()
        self._cert = self._ca.issue_cert("127.0.0.1", "localhost", "::1")
        self._ca_file: str | None = None
        self._server: Server | None = None
        self._sessions: list[SimSession] = []
        self._taken = 0
        self._new_session = asyncio.Event()
        self._handles = HandleRegistry()
        #: REST embedding requests answered so far: (path, the texts embedded).
        self.embed_requests: list[tuple[str, list[str]]] = []
        #: Fault: answer this many embedding requests with 503 UNAVAILABLE (then normally).
        self.embedding_failures = 0
        seed = self.behaviour.seed
        self._seeds = np.random.SeedSequence(seed) if seed is not None else None

    # --- Lifecycle -------------------------------------------------------------------------

    async def start(self) -> Self:
        """Write the CA file and start listening."""
        if self._server is not None:
            return self
        fd, self._ca_file = tempfile.mkstemp(prefix="live-sim-ca-", suffix=".pem")
        with os.fdopen(fd, "wb") as f:
            f.write(self._ca.cert_pem.bytes())
        server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self._cert.configure_cert(server_ctx)
        connection = type("Connection", (_LiveOrRest,), {"simulator": self})
        try:
            self._server = await serve(
                self._handle,
                self.host,
                self._requested_port,
                ssl=server_ctx,
                process_request=self._check_request,
                compression="deflate" if self.behaviour.compression else None,
                # The client decides about keepalive; the simulator must not be the one that
                # kills connections when a loaded event loop answers pings late.
                ping_interval=None,
                max_size=16 * 1024 * 1024,
                close_timeout=2,
                create_connection=connection,
            )
        except BaseException:
            self._remove_ca_file()
            raise
        return self

    async def aclose(self) -> None:
        """Close every session (1001) and the server; remove the CA file. Idempotent."""
        server, self._server = self._server, None
        if server is not None:
            server.close(close_connections=True)
            await server.wait_closed()
        self._remove_ca_file()

    async def __aenter__(self) -> Self:
        return await self.start()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    # --- Addresses and trust ---------------------------------------------------------------

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the simulator is not running")
        port: int = self._server.sockets[0].getsockname()[1]
        return port

    @property
    def base_url(self) -> str:
        """``https://127.0.0.1:PORT``: the SDK's ``base_url`` (it switches to ``wss`` itself)."""
        host = self.host
        if host in ("", "0.0.0.0"):
            host = "127.0.0.1"
        elif host == "::":
            host = "::1"
        try:
            if ipaddress.ip_address(host).version == 6:
                host = f"[{host}]"
        except ValueError:
            pass  # a name such as "localhost"
        return f"https://{host}:{self.port}"

    @property
    def ca_pem_path(self) -> str:
        """PEM file of the CA that signed the server certificate (for ``SSL_CERT_FILE``)."""
        if self._ca_file is None:
            raise RuntimeError("the simulator is not running")
        return self._ca_file

    @property
    def ca_pem(self) -> bytes:
        return self._ca.cert_pem.bytes()

    def client_ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts the simulator (and nothing else)."""
        ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
        self._ca.configure_trust(ctx)
        return ctx

    # --- Sessions --------------------------------------------------------------------------

    @property
    def sessions(self) -> list[SimSession]:
        """Every session so far, in connection order."""
        return list(self._sessions)

    async def next_session(
        self,
        timeout: float = 10.0,  # noqa: ASYNC109 (a forgotten session must fail, not hang)
    ) -> SimSession:
        """The oldest session not yet returned by this method, waiting for one if needed."""
        async with asyncio.timeout(timeout):
            while self._taken >= len(self._sessions):
                self._new_session.clear()
                await self._new_session.wait()
        session = self._sessions[self._taken]
        self._taken += 1
        return session

    @property
    def fault_counts(self) -> dict[str, int]:
        """Faults injected so far (``SimBehaviour.faults``) over every session, by kind."""
        counts = Counter(kind for s in self._sessions for _, kind in s.faults_injected)
        return dict(sorted(counts.items()))

    def session_for_handle(self, handle: str) -> SimSession | None:
        """The session a resumption handle was issued to."""
        sid = self._handles.session_of(handle)
        return next((s for s in self._sessions if s.id == sid), None)

    # --- REST: embeddings ------------------------------------------------------------------

    @property
    def embedded_texts(self) -> int:
        """Texts embedded so far, over every request."""
        return sum(len(texts) for _, texts in self.embed_requests)

    def rest(
        self, method: str, path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, bytes]:
        """(status, JSON body) for one REST request (only the embedding methods exist)."""
        if embeddings.is_embed_path(path) and self.embedding_failures > 0:
            self.embedding_failures -= 1
            return (
                503,
                b'{"error": {"code": 503, "message": "The service is currently '
                b'unavailable.", "status": "UNAVAILABLE"}}',
            )
        status, payload, texts = embeddings.respond(method, path, headers, body)
        if status == 200:
            self.embed_requests.append((path, texts))
        log.debug("REST %s %s: %d", method, path, status)
        return status, payload

    # --- Connections -----------------------------------------------------------------------

    def _check_request(self, connection: ServerConnection, request: Request) -> Response | None:
        if not wire.is_live_path(request.path):
            return connection.respond(HTTPStatus.NOT_FOUND, "Not Found\n")
        if not wire.credential(request.headers, request.path):
            return connection.respond(HTTPStatus.UNAUTHORIZED, "API key not valid.\n")
        return None

    async def _handle(self, ws: ServerConnection) -> None:
        index = len(self._sessions) + 1
        rng = np.random.default_rng(self._seeds.spawn(1)[0] if self._seeds else None)
        session = SimSession(
            ws,
            session_id=f"s{index}",
            behaviour=self.behaviour,
            handles=self._handles,
            rng=rng,
        )
        self._sessions.append(session)
        self._new_session.set()
        log.debug("session %s connected on %s", session.id, session.path)
        await session.run()
        log.debug("session %s closed (%s)", session.id, session.close_code)

    def _remove_ca_file(self) -> None:
        if self._ca_file is not None:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self._ca_file)
            self._ca_file = None
