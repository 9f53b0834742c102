"""``voice-agent serve``: check what can be checked, then run the server.

Before anything is imported or started, the listening socket (and ``METRICS_PORT``'s) is
bound and the call-record database is opened and written to once: a port in use or an
unusable database is one line and exit status 2, never a traceback, and never after
``server.ready`` has been logged. So is a real model without ``TWILIO_AUTH_TOKEN``: anyone
could place calls into it, unless ``ALLOW_UNSIGNED=true`` says that is meant.
"""

from __future__ import annotations

import argparse
import errno
import os
import socket
import sys

from telephony.errors import TelephonyError
from telephony.settings import Settings

__all__ = ["StartupError", "bind_socket", "main", "preflight"]


class StartupError(TelephonyError):
    """The server cannot start; the message is one line for the operator."""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="voice-agent serve",
        description=(
            "Serve the agent: Twilio's voice webhook (POST /twilio/voice), the Media Stream "
            "(WS /twilio/media), the operator API and page (/calls, /ui), /healthz, /readyz, "
            "/metrics. With no model credentials it runs the embedded Live API simulator "
            "(not a real model)."
        ),
        epilog=(
            "Configuration: environment variables, and .env in the working directory for what "
            "the environment leaves unset. Every variable, with its default, is in "
            ".env.example (voice-agent config env-example); `voice-agent config check` shows "
            "what a server started here would use."
        ),
    )
    p.add_argument(
        "--host",
        default=os.environ.get("HOST", "0.0.0.0"),
        help="listening address (default: HOST, else 0.0.0.0)",
    )
    p.add_argument(
        "--port",
        type=int,
        default=None,
        help="listening port (default: PORT, else 8080; 0 picks a free one)",
    )
    return p


def bind_socket(host: str, port: int) -> socket.socket:
    """A listening TCP socket on host:port, or ``StartupError`` saying why not."""
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror}") from None
    family, kind, proto, _name, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        sock.bind(address)
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        if exc.errno == errno.EADDRINUSE:
            raise StartupError(
                f"cannot listen on {host}:{port}: the port is already in use (another "
                "voice-agent?); stop it or choose another with --port or PORT"
            ) from None
        raise StartupError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock.set_inheritable(True)
    return sock


def check_signatures(settings: Settings) -> None:
    """``StartupError`` for a real model with unsigned requests, unless ALLOW_UNSIGNED."""
    if settings.signatures_enforced or settings.allow_unsigned:
        return
    if settings.model.backend == "simulator":
        return  # local use: the loud warnings at startup say so
    raise StartupError(
        "TWILIO_AUTH_TOKEN is not set, so anyone who finds this server could call the "
        f"{settings.model.backend} model: set it (with PUBLIC_URL), or ALLOW_UNSIGNED=true "
        "to serve unsigned requests anyway"
    )


def preflight(settings: Settings) -> None:
    """Refuse unsigned requests to a real model; check that the knowledge base can be opened
    as configured; open the call-record database and write to it once, and check that this
    instance's id and spool are free (``StartupError`` if any fails)."""
    check_signatures(settings)
    if settings.knowledge is not None:
        from agent.knowledge import KnowledgeError
        from agent.knowledge.service import check

        try:
            check(settings.knowledge)
        except KnowledgeError as exc:
            raise StartupError(f"AGENT_KNOWLEDGE: {exc}") from None
    if settings.database_url is None:
        return
    from telephony.ops.spool import Spool, SpoolError, SpoolInUse
    from telephony.ops.store import CallStore, Instance, StoreError

    try:
        store = CallStore(settings.database_url)
        try:
            store.check_writable()
            spool = Spool(settings.records_spool_dir, settings.instance_id, max_bytes=1)
            token = spool.token
            spool.close()
            me = Instance(settings.instance_id, socket.gethostname(), os.getpid(), 0.0, 1.0, token)
            problem = store.instance_conflict(me)
        finally:
            store.close()
    except SpoolInUse as exc:
        raise StartupError(str(exc)) from None
    except SpoolError as exc:
        raise StartupError(f"RECORDS_SPOOL_DIR: {exc}") from None
    except StoreError as exc:
        raise StartupError(f"DATABASE_URL: {exc}") from None
    if problem is not None:
        raise StartupError(problem)


def _port(args: argparse.Namespace) -> int:
    if args.port is not None:
        return int(args.port)
    raw = os.environ.get("PORT", "").strip() or "8080"
    try:
        port = int(raw)
    except ValueError:
        raise StartupError(
            f"configuration error: PORT: expected a port number, got {raw!r}"
        ) from None
    if not 0 <= port <= 65535:
        raise StartupError(f"configuration error: PORT: must be between 0 and 65535, got {port}")
    return port


def main(argv: list[str]) -> int:
    from telephony.cli import load_settings

    args = _parser().parse_args(argv)
    settings = load_settings()
    try:
        sock = bind_socket(args.host, _port(args))
        metrics_sock = (
            bind_socket(args.host, settings.metrics_port)
            if settings.metrics_port is not None
            else None
        )
        preflight(settings)
    except StartupError as exc:
        print(f"voice-agent: {exc}", file=sys.stderr)
        return 2
    from telephony.server import logs
    from telephony.server.runner import build_server

    logs.configure(
        settings.log_level, settings.log_format, redact_numbers=settings.redact_phone_numbers
    )
    host, port = sock.getsockname()[:2]
    server = build_server(settings, str(host), int(port), metrics_socket=metrics_sock)
    server.run(sockets=[sock])
    return 0
