"""Locust integration, headless on loopback: ``voice-agent serve`` (embedded Live API
simulator) in one process, a Locust master and one worker in two more, running the load
test's calls for a few seconds. Everything Locust runs in its own processes: importing Locust
monkey-patches the importing process for gevent, which must never happen to pytest's."""

from __future__ import annotations

import csv
import importlib.util
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import numpy as np
import pytest
import soundfile as sf

from agent.simulator.voice import synthesize
from support import free_port

pytestmark = pytest.mark.skipif(
    importlib.util.find_spec("locust") is None, reason="locust is not installed (.[loadtest])"
)
BIN = Path(sys.executable).parent


@contextmanager
def process(
    argv: list[str], log: Path, env: dict[str, str] | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT, env=env)
        try:
            yield proc
        finally:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait()


def wait_ready(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        assert proc.poll() is None, log.read_text()
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError(f"server not ready: {log.read_text()}")


def test_locust_master_and_worker_report_call_measures(tmp_path: Path) -> None:
    pcm = np.frombuffer(synthesize("A table for two please", "Charon").pcm, "<i2")
    pause = np.zeros(12_000, dtype=np.int16)
    sf.write(tmp_path / "caller.wav", np.concatenate([pause, pcm, pause]), 24_000)
    spec = importlib.util.find_spec("telephony.loadtest.locust_user")
    assert spec is not None and spec.origin is not None
    port, master_port = free_port(), free_port()
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("GEMINI_", "GOOGLE_", "TWILIO_", "PUBLIC_URL"))
    }
    server_env = env | {
        "LIVE_SIMULATOR": "on",
        "LIVE_SIMULATOR_DIALOGUE": "echo",
        "AGENT_GREETING": "Hi.",
        "LOG_LEVEL": "WARNING",
    }
    serve = [str(BIN / "voice-agent"), "serve", "--host", "127.0.0.1", "--port", str(port)]
    locust = [str(BIN / "locust"), "-f", spec.origin]
    options = [
        "--va-webhook",
        f"http://127.0.0.1:{port}/twilio/voice",
        "--va-recordings",
        str(tmp_path / "caller.wav"),
        "--va-think-time",
        "0.3",
        "--va-linger",
        "0.3",
    ]
    with process(serve, tmp_path / "server.log", server_env) as server:
        wait_ready(f"http://127.0.0.1:{port}/readyz", server, tmp_path / "server.log")
        worker_argv = [*locust, "--worker", "--master-port", str(master_port)]
        with process(worker_argv, tmp_path / "worker.log", env):
            master = subprocess.run(
                [
                    *locust,
                    "--headless",
                    "--master",
                    "--master-bind-port",
                    str(master_port),
                    "--expect-workers",
                    "1",
                    "--users",
                    "3",
                    "--spawn-rate",
                    "3",
                    "--run-time",
                    "9s",
                    "--csv",
                    str(tmp_path / "stats"),
                    *options,
                ],
                capture_output=True,
                text=True,
                env=env,
                timeout=45,
            )
    assert master.returncode == 0, master.stdout + master.stderr
    with (tmp_path / "stats_stats.csv").open() as f:
        stats = {row["Name"]: row for row in csv.DictReader(f) if row["Type"] == "call"}
    # Each of the 3 users completes at least one ~4 s call in 9 s; calls still going when the
    # run ends are cut off and not reported.
    calls = int(stats["call"]["Request Count"])
    assert calls >= 3
    for name in ("call", "connect", "greeting", "response_latency", "caller_send_lag"):
        assert int(stats[name]["Failure Count"]) == 0, stats[name]
    assert int(stats["greeting"]["Request Count"]) == calls
    assert int(stats["response_latency"]["Request Count"]) == calls  # one turn per call
    # The simulator answers 500 ms of silence + 300 ms of thinking after the caller stops.
    assert 300 < float(stats["response_latency"]["Median Response Time"]) < 3000
    assert float(stats["greeting"]["Max Response Time"]) < 2000
    # The worker kept near real time (typically < 40 ms late at worst; a full garbage
    # collection can stall a worker ~100 ms).
    assert float(stats["caller_send_lag"]["Max Response Time"]) < 250
    with (tmp_path / "stats_failures.csv").open() as f:
        assert list(csv.DictReader(f)) == []
