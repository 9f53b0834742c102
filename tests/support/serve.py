"""``voice-agent serve`` as a real subprocess (embedded simulator), for tests about the
running server: signals, crashes, several instances sharing one database."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import NamedTuple

from telephony.server.runner import free_port, wait_ready

__all__ = ["Served", "serve_env", "serve_refused", "serve_subprocess"]


class Served(NamedTuple):
    proc: asyncio.subprocess.Process
    port: int
    log_path: Path

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def media_url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/twilio/media"


def serve_env(
    drain_timeout_s: float = 30.0, env: Mapping[str, str] | None = None
) -> dict[str, str]:
    """The test's environment (its DATABASE_URL and spool) for a server with the simulator."""
    return {
        **{k: v for k, v in os.environ.items() if not k.startswith(("GEMINI", "GOOGLE"))},
        "LIVE_SIMULATOR": "on",
        # The tests of the server check the call path, not the simulator's words: echo.
        "LIVE_SIMULATOR_DIALOGUE": "echo",
        "DRAIN_TIMEOUT_S": str(drain_timeout_s),
        "LOG_FORMAT": "json",
        **(env or {}),
    }


def _command(port: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "telephony.cli",
        "serve",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
    ]


@asynccontextmanager
async def serve_subprocess(
    tmp_path: Path,
    drain_timeout_s: float = 30.0,
    *,
    env: Mapping[str, str] | None = None,
    name: str = "serve",
) -> AsyncIterator[Served]:
    """``voice-agent serve`` as its own process, ready; killed if left running. Its stderr
    (the JSON log) goes to ``tmp_path/<name>.log``."""
    port = free_port()
    log_path = tmp_path / f"{name}.log"
    with log_path.open("wb") as log_file:
        proc = await asyncio.create_subprocess_exec(
            *_command(port),
            env=serve_env(drain_timeout_s, env),
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
        try:
            await wait_ready(f"http://127.0.0.1:{port}")
            yield Served(proc, port, log_path)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


async def serve_refused(env: Mapping[str, str], timeout_s: float = 30.0) -> tuple[int, str]:
    """Start ``voice-agent serve`` expecting it to refuse: its exit status and stderr."""
    proc = await asyncio.create_subprocess_exec(
        *_command(free_port()),
        env=serve_env(env=env),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        async with asyncio.timeout(timeout_s):
            _, stderr = await proc.communicate()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    return int(proc.returncode or 0), stderr.decode()
