"""The simulator's server: TLS WebSocket endpoints of the Live API on a local port.

The real google-genai SDK only speaks ``wss://``, so the simulator serves TLS with a throwaway
certificate authority made by ``trustme``; clients trust it through :attr:`ca_pem_path`
(``SSL_CERT_FILE``) or :meth:`client_ssl_context` (``async_client_args={"ssl": …}``).
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
from typing import Self

import numpy as np
import trustme
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.http11 import Request, Response

from agent.simulator import wire
from agent.simulator.behaviour import SimBehaviour
from agent.simulator.handles import HandleRegistry
from agent.simulator.session import SimSession

__all__ = ["LiveSimulator"]

log = logging.getLogger(__name__)


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
