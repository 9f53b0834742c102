"""Run the simulator as a process of its own (``python -m agent.simulator``)."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import math
import signal
import sys
from dataclasses import replace
from pathlib import Path
from typing import TextIO

from agent.simulator.behaviour import SimBehaviour
from agent.simulator.server import LiveSimulator

__all__ = ["main", "run_standalone"]


async def run_standalone(
    host: str = "127.0.0.1",
    port: int = 9443,
    *,
    ca_out: str | Path | None = None,
    behaviour: SimBehaviour | None = None,
    stop: asyncio.Event | None = None,
    out: TextIO | None = None,
) -> None:
    """Serve until ``stop`` is set (default: until SIGINT or SIGTERM).

    Writes the CA certificate to ``ca_out`` (if given) and prints how to point the service at
    the simulator to ``out`` (default stdout).
    """
    out = out or sys.stdout
    async with LiveSimulator(host, port, behaviour) as sim:
        ca_path = sim.ca_pem_path
        if ca_out is not None:
            # A small file once at startup: not worth a thread.
            Path(ca_out).write_bytes(sim.ca_pem)  # noqa: ASYNC240
            ca_path = str(ca_out)
        print(
            f"Gemini Live API simulator (not a real model) on {sim.base_url}\n"
            f"CA certificate: {ca_path}\n"
            "Point the service at it with:\n"
            f"  GEMINI_API_KEY=sim GOOGLE_GEMINI_BASE_URL={sim.base_url} SSL_CERT_FILE={ca_path}\n"
            "Stop with Ctrl-C.",
            file=out,
            flush=True,
        )
        if stop is None:
            stop = asyncio.Event()
            loop = asyncio.get_running_loop()
            for sig in (signal.SIGINT, signal.SIGTERM):
                # Not available on Windows; Ctrl-C then arrives as KeyboardInterrupt.
                with contextlib.suppress(NotImplementedError, RuntimeError):
                    loop.add_signal_handler(sig, stop.set)
        await stop.wait()


def _parser() -> argparse.ArgumentParser:
    d = SimBehaviour()
    p = argparse.ArgumentParser(
        prog="voice-agent simulate-live",
        description="A local Gemini Live API simulator (TLS WebSocket; not a real model).",
    )
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=9443)
    p.add_argument("--ca-out", type=Path, help="write the CA certificate (PEM) here")
    p.add_argument(
        "--pace",
        type=float,
        default=d.pace,
        help="reply audio speed, multiple of real time (0 = max)",
    )
    p.add_argument("--think-ms", type=float, default=d.think_ms)
    p.add_argument("--silence-ms", type=float, default=d.silence_ms)
    p.add_argument("--vad-threshold-dbfs", type=float, default=d.vad_threshold_dbfs)
    p.add_argument(
        "--dialogue",
        choices=("converse", "echo"),
        default="converse",
        help="converse: recognise the caller and answer by fixed rules (pocketsphinx, "
        "espeak-ng); echo: play the caller's audio back",
    )
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--log-level", default="INFO")
    return p


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point; returns the exit status."""
    args = _parser().parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), format="%(levelname)s %(name)s %(message)s")
    behaviour = replace(
        SimBehaviour(),
        pace=0.0 if math.isinf(args.pace) else args.pace,
        think_ms=args.think_ms,
        silence_ms=args.silence_ms,
        vad_threshold_dbfs=args.vad_threshold_dbfs,
        dialogue=args.dialogue,
        seed=args.seed,
    )
    try:
        asyncio.run(run_standalone(args.host, args.port, ca_out=args.ca_out, behaviour=behaviour))
    except KeyboardInterrupt:
        pass
    except OSError as exc:  # typically: the port is taken
        print(f"cannot serve on {args.host}:{args.port}: {exc}", file=sys.stderr)
        return 1
    return 0
