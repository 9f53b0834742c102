"""``voice-agent``: serve the agent, place a simulated call, run the Live API simulator."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from types import FrameType

import uvicorn

from agent.config import ConfigError, Settings
from telephony import logs
from telephony.media_stream import MAX_FRAME_BYTES

log = logging.getLogger("telephony.cli")


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
        log.warning("server.signal", extra=logs.fields(signal=signal.Signals(sig).name))
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


def load_settings() -> Settings:
    try:
        return Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"voice-agent: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def build_server(settings: Settings, host: str, port: int) -> DrainingServer:
    from telephony.server import create_app

    config = uvicorn.Config(
        create_app(settings),
        host=host,
        port=port,
        lifespan="on",
        log_config=None,  # our logging setup, not uvicorn's
        ws="websockets-sansio",
        ws_max_size=MAX_FRAME_BYTES,  # larger frames close that stream with 1009
        ws_per_message_deflate=False,  # Twilio doesn't compress; spare the CPU
        ws_ping_interval=20.0,
        ws_ping_timeout=30.0,
        proxy_headers=True,
        timeout_graceful_shutdown=10,
    )
    return DrainingServer(config, settings.drain_timeout_s)


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings()
    logs.configure(settings.log_level, settings.log_format)
    server = build_server(settings, args.host, args.port)
    server.run()
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="voice-agent", description="A Gemini Live voice agent on a Twilio phone number."
    )
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="run the server (FastAPI under uvicorn)")
    serve.add_argument("--host", default=os.environ.get("HOST", "0.0.0.0"))
    serve.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8080")))
    sub.add_parser(
        "call", help="place a simulated phone call (see: voice-agent call -h)", add_help=False
    )
    sub.add_parser("simulate-live", help="run the local Live API simulator", add_help=False)

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "call":
        from telephony.caller import main as call_main

        return call_main(argv[1:])
    if argv and argv[0] == "simulate-live":
        from agent.simulator import main as simulator_main

        return simulator_main(argv[1:])
    args = parser.parse_args(argv)
    if args.command == "serve":
        return _serve(args)
    parser.error(f"unknown command {args.command}")
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
