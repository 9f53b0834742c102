"""``voice-agent config check | env-example``: what a server started here would use."""

from __future__ import annotations

import argparse
import os
import sys

from telephony.settings import VARIABLES, env_example_text

__all__ = ["main"]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="voice-agent config",
        description="Check the configuration (environment and .env), or print .env.example.",
    )
    sub = p.add_subparsers(dest="action", required=True)
    sub.add_parser(
        "check",
        help="validate the configuration and list every variable that is set, and from where",
    )
    sub.add_parser("env-example", help="print .env.example: every variable with its default")
    return p


def check() -> int:
    from telephony.cli import load_settings
    from telephony.envfile import env_sources

    settings = load_settings()  # exits with the one-line error if something is wrong
    sources = env_sources()
    print(f"model backend: {settings.model.backend} ({settings.model.model})")
    print(f"signatures: {'checked' if settings.signatures_enforced else 'NOT checked'}")
    print(f"call records: {settings.database_url or 'off'}")
    knowledge = settings.knowledge
    if knowledge is not None:
        where = ", ".join(str(p) for p in knowledge.paths)
        print(f"knowledge: {where} -> {knowledge.index} ({knowledge.embeddings} embeddings)")
    print("set:")
    shown = 0
    for var in VARIABLES:
        value = os.environ.get(var.name)
        if value is None:
            continue
        shown += 1
        where = sources.get(var.name, "environment")
        text = "(hidden)" if var.secret and value else repr(value)
        print(f"  {var.name}={text}  [{where}]")
    if not shown:
        print("  nothing: every variable is at its default")
    for warning in settings.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print("configuration OK")
    return 0


def main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    if args.action == "env-example":
        sys.stdout.write(env_example_text())
        return 0
    return check()
