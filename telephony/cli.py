"""``voice-agent``: one command, sub-commands imported only when they run.

``voice-agent calls list`` must not pay for uvicorn, FastAPI and the google-genai SDK (a second
of imports), so this module imports nothing heavy: each sub-command names the module and
function that implement it, and the dispatcher imports that one module.

Configuration comes from the environment, and from ``.env`` in the working directory for
whatever the environment leaves unset (``telephony.envfile``).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from collections.abc import Callable
from importlib import metadata
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from telephony.settings import Settings

__all__ = ["main"]

DISTRIBUTION: Final = "gemini-phone-agent"

#: name → (module, function, one-line help). Each function takes the remaining arguments.
COMMANDS: Final[dict[str, tuple[str, str, str]]] = {
    "serve": ("telephony.server.serve", "main", "run the server (FastAPI under uvicorn)"),
    "call": (
        "telephony.caller.cli",
        "main",
        "place a simulated phone call against a running server (bundled sample by default)",
    ),
    "calls": ("telephony.ops.cli", "calls_main", "call records: list | show | prune"),
    "dial": (
        "telephony.ops.cli",
        "dial_main",
        "place an outbound call through a running server",
    ),
    "loadtest": ("telephony.loadtest.cli", "main", "replay recorded calls, many at once"),
    "simulate-live": ("agent.simulator", "main", "run the local Live API simulator on its own"),
    "knowledge": (
        "telephony.server.knowledge_cli",
        "main",
        "the knowledge base (AGENT_KNOWLEDGE): index | search | list",
    ),
    "config": (
        "telephony.server.config_cli",
        "main",
        "check the configuration, or print .env.example",
    ),
}

#: Which extra brings a module that an optional feature imports.
EXTRAS: Final = {
    "psycopg": "postgres",
    "psycopg2": "postgres",
    "locust": "loadtest",
    "gevent": "loadtest",
    "apsw": "knowledge",
    "sqlite_vec": "knowledge",
    "wordllama": "knowledge",
    "pypdf": "knowledge",
}


def version() -> str:
    try:
        return metadata.version(DISTRIBUTION)
    except metadata.PackageNotFoundError:  # running from a source tree without installing
        return "0+unknown"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="voice-agent",
        description="A Gemini Live voice agent on a Twilio phone number.",
        epilog=(
            "Configuration: environment variables, and .env in the working directory for "
            "what the environment leaves unset (see .env.example, `voice-agent config check`). "
            "Each command has its own --help."
        ),
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_module, _function, help_) in COMMANDS.items():
        sub.add_parser(name, help=help_, add_help=False)
    return parser


def _load_env_file() -> None:
    """Apply ``.env`` to the process environment (never over what is set)."""
    from telephony.envfile import EnvFileError, load_env_file
    from telephony.settings import VARIABLE_NAMES

    try:
        loaded = load_env_file(".env", known=VARIABLE_NAMES)
    except EnvFileError as exc:
        print(f"voice-agent: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    for warning in loaded.warnings:
        print(f"voice-agent: warning: {warning}", file=sys.stderr)


def _missing_module(exc: ModuleNotFoundError) -> str:
    top = (exc.name or "").split(".")[0]
    extra = EXTRAS.get(top)
    if extra is None:
        return f"voice-agent: {exc} (the installation is incomplete: reinstall {DISTRIBUTION})"
    return (
        f"voice-agent: this needs the '{extra}' extra: pip install '{DISTRIBUTION}[{extra}]' "
        f"({exc})"
    )


def main(argv: list[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if not args or args[0].startswith("-"):
        parser = _parser()
        parser.parse_args(args)  # --help / --version exit here
        parser.print_help(sys.stderr)
        return 2
    command = COMMANDS.get(args[0])
    if command is None:
        _parser().parse_args(args)  # prints "invalid choice" and exits 2
        return 2
    module_name, function_name, _help = command
    try:
        if args[0] != "simulate-live":
            _load_env_file()
        module = importlib.import_module(module_name)
        run: Callable[[list[str]], int] = getattr(module, function_name)
        return run(args[1:])
    except ModuleNotFoundError as exc:
        print(_missing_module(exc), file=sys.stderr)
        return 2
    except BrokenPipeError:
        # `voice-agent calls list | head`: the reader left; say nothing more (Python's docs'
        # recipe: point stdout at devnull so the interpreter's final flush cannot fail too).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    except KeyboardInterrupt:
        return 130


def load_settings() -> Settings:
    """The service's settings, or exit with the one-line configuration error."""
    from telephony.envfile import env_sources
    from telephony.settings import ConfigError, Settings

    try:
        return Settings.from_env(os.environ, sources=env_sources())
    except ConfigError as exc:
        print(f"voice-agent: {exc}", file=sys.stderr)
        raise SystemExit(2) from None


if __name__ == "__main__":
    raise SystemExit(main())
