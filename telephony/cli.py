"""``voice-agent``: serve the agent, place a simulated call, run the Live API simulator."""

from __future__ import annotations

import argparse
import logging
import os
import sys

from agent.config import ConfigError, Settings
from telephony import logs
from telephony.runner import build_server

log = logging.getLogger("telephony.cli")


def load_settings() -> Settings:
    try:
        return Settings.from_env(os.environ)
    except ConfigError as exc:
        print(f"voice-agent: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


def _serve(args: argparse.Namespace) -> int:
    settings = load_settings()
    logs.configure(
        settings.log_level, settings.log_format, redact_numbers=settings.redact_phone_numbers
    )
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
    sub.add_parser(
        "calls",
        help="call records: calls list | calls show <sid> (see: voice-agent calls -h)",
        add_help=False,
    )
    sub.add_parser(
        "dial",
        help="place an outbound call through a running server (voice-agent dial -h)",
        add_help=False,
    )
    sub.add_parser(
        "loadtest",
        help="replay recorded calls, many at once (see: voice-agent loadtest -h)",
        add_help=False,
    )

    argv = list(sys.argv[1:] if argv is None else argv)
    if argv and argv[0] == "call":
        from telephony.caller import main as call_main

        return call_main(argv[1:])
    if argv and argv[0] == "loadtest":
        from telephony.loadtest.cli import main as loadtest_main

        return loadtest_main(argv[1:])
    if argv and argv[0] == "calls":
        from telephony.operator_cli import calls_main

        return calls_main(argv[1:])
    if argv and argv[0] == "dial":
        from telephony.operator_cli import dial_main

        return dial_main(argv[1:])
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
