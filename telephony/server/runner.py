"""Running the server: uvicorn with a drain on SIGTERM, and in-process for tests and benchmarks."""

from __future__ import annotations

import asyncio
import logging
import resource
import signal
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import FrameType

import httpx
import uvicorn

from agent.logs import fields
from telephony.server.app import create_app
from telephony.server.connections import ConnectionLimits, edge_protocol
from telephony.server.media_socket import MediaWebSocketProtocol
from telephony.server.service import Service
from telephony.settings import Settings
from telephony.twilio.media_stream import MAX_FRAME_BYTES

log = logging.getLogger(__name__)


class DrainingServer(uvicorn.Server):
    """uvicorn, with a drain before shutdown.

    On its own, uvicorn fails every open WebSocket with 1012 as soon as it starts shutting
    down, which would cut every call on each deploy. Here the first SIGTERM/SIGINT only makes
    the service stop taking calls (``/readyz`` turns 503, the webhook turns callers away); the
    server exits once the calls in progress have ended or the drain timeout has passed.
    A second signal exits at once.
    """

    def __init__(self, config: uvicorn.Config, drain_timeout_s: float) -> None:
        super().__init__(config)
        self.drain_timeout_s = drain_timeout_s
        self._drain_task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)  # type: ignore[arg-type]

    async def shutdown(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        # Live event streams never end on their own: end them first, or uvicorn would wait
        # for them (timeout_graceful_shutdown) before the lifespan's shutdown.
        service = _find_service(getattr(self.config, "loaded_app", None))
        events = getattr(service, "events", None)
        if events is not None:
            events.close()
        await super().shutdown(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        app = getattr(self.config, "loaded_app", None)
        service = _find_service(app)
        if (
            self._drain_task is not None
            or service is None
            or self._loop is None
            or not self.started
        ):
            super().handle_exit(sig, frame)
            return
        log.warning("server.signal", extra=fields(signal=signal.Signals(sig).name))
        # Signal handlers run between bytecodes of the loop's thread: hand over to the loop.
        self._loop.call_soon_threadsafe(self._begin_drain, service)

    def _begin_drain(self, service: object) -> None:
        async def drain_then_exit() -> None:
            await service.drain(self.drain_timeout_s)  # type: ignore[attr-defined]
            self.should_exit = True

        assert self._loop is not None
        self._drain_task = self._loop.create_task(drain_then_exit(), name="drain")


def _find_service(app: object) -> object | None:
    # uvicorn wraps the app in middleware; walk down to the FastAPI instance.
    for _ in range(10):
        if app is None:
            return None
        state = getattr(app, "state", None)
        if state is not None and hasattr(state, "service"):
            return state.service  # type: ignore[no-any-return]
        app = getattr(app, "app", None)
    return None


#: File descriptors kept for everything but client connections (listeners, the database,
#: recordings, the runtime's own).
FD_RESERVE = 64


def connection_cap(settings: Settings, open_files: int | None = None) -> tuple[int, list[str]]:
    """The cap on open connections: MAX_CONNECTIONS (or its default), lowered so that the
    connections, each call's model socket and each pre-connected session fit under the
    open-file limit (``open_files``: the soft RLIMIT_NOFILE); and what to warn about."""
    cap = settings.connections_limit
    warnings = []
    if open_files is None:
        soft, _hard = resource.getrlimit(resource.RLIMIT_NOFILE)
        open_files = None if soft == resource.RLIM_INFINITY else soft
    if open_files is not None:
        # The embedded simulator's end of each model connection is in this process too.
        per_session = 2 if settings.model.backend == "simulator" else 1
        sessions = settings.max_concurrent_calls + settings.preconnect_limit
        fits = max(8, open_files - sessions * per_session - FD_RESERVE)
        if cap > fits:
            warnings.append(
                f"open-file limit {open_files}: connections capped at {fits} instead of {cap} "
                "(raise `ulimit -n` for more)"
            )
            cap = fits
    needed = settings.max_concurrent_calls + settings.pending_streams_limit + 8
    if cap < needed:
        warnings.append(
            f"at most {cap} connections leaves too little room for MAX_CONCURRENT_CALLS="
            f"{settings.max_concurrent_calls} calls and their webhooks (want {needed}+)"
        )
    return cap, warnings


def build_server(
    settings: Settings,
    host: str,
    port: int,
    *,
    in_process: bool = False,
    metrics_socket: socket.socket | None = None,
) -> DrainingServer:
    """uvicorn configured for Media Streams: small frames, no compression, our logging, and
    ``telephony.server.connections`` for slow clients and the connection cap.

    ``metrics_socket``: the bound ``METRICS_PORT`` socket (bound here from the settings when
    not given)."""
    if metrics_socket is None and settings.metrics_port is not None:
        from telephony.server.serve import bind_socket

        metrics_socket = bind_socket(host, settings.metrics_port)
    app = create_app(settings, freeze_gc=not in_process, metrics_socket=metrics_socket)
    service = app.state.service
    cap, warnings = connection_cap(settings)
    for warning in warnings:
        log.warning("config.warning", extra=fields(message=warning))
    limits = ConnectionLimits(
        header_timeout_s=settings.http_header_timeout_s,
        body_timeout_s=settings.http_body_timeout_s,
        max_connections=cap,
    )
    closed = service.metrics.connections_closed

    def on_close(reason: str) -> None:
        closed.labels(reason=reason).inc()

    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        lifespan="on",
        log_config=None,  # our logging setup, not uvicorn's
        http=edge_protocol(limits, on_close),
        # uvicorn's websockets-sansio, handing a call's frames straight to it.
        ws=MediaWebSocketProtocol,
        ws_max_size=MAX_FRAME_BYTES,  # larger frames close that stream with 1009
        ws_per_message_deflate=False,  # Twilio doesn't compress; spare the CPU
        ws_ping_interval=20.0,
        ws_ping_timeout=30.0,
        proxy_headers=True,
        forwarded_allow_ips=settings.forwarded_allow_ips,
        timeout_graceful_shutdown=10,
    )
    return DrainingServer(config, settings.drain_timeout_s)


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port on ``host`` that was free a moment ago (for a server started as a process:
    tests and benchmarks)."""
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


async def wait_ready(base_url: str, timeout_s: float = 30.0) -> None:
    """Poll ``/readyz`` of a server (e.g. a ``voice-agent serve`` subprocess) until it says
    ready; ``TimeoutError`` after ``timeout_s``."""
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
        async with asyncio.timeout(timeout_s):
            while True:
                try:
                    if (await http.get("/readyz")).status_code == 200:
                        return
                except httpx.TransportError:
                    pass  # not listening yet
                await asyncio.sleep(0.1)


@dataclass
class LocalServer:
    """A server running in this event loop on a loopback port."""

    server: DrainingServer
    service: Service
    port: int

    @property
    def media_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/twilio/media"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@asynccontextmanager
async def local_server(settings: Settings, port: int = 0) -> AsyncIterator[LocalServer]:
    """Run the real uvicorn server in this event loop on 127.0.0.1 (tests, benchmarks)."""
    server = build_server(settings, "127.0.0.1", port, in_process=True)
    task = asyncio.create_task(server.serve(), name="uvicorn")
    async with asyncio.timeout(30):
        while not server.started:
            if task.done():
                task.result()  # startup failed: raise its error
                raise RuntimeError("the server stopped during startup")
            await asyncio.sleep(0.01)
    bound = server.servers[0].sockets[0].getsockname()[1]
    service = _find_service(server.config.loaded_app)
    assert isinstance(service, Service)
    try:
        yield LocalServer(server, service, bound)
    finally:
        server.should_exit = True
        async with asyncio.timeout(30):
            await task
