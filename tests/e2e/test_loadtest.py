"""Load test end to end: ``voice-agent loadtest`` against the real server (uvicorn on
loopback, the real SDK talking to the Live API simulator), through the webhook with
signatures on, replaying synthesized speech and then a call the server itself recorded;
and the ways a run fails (bad signature, nothing listening, a server that hangs)."""

from __future__ import annotations

import asyncio
import csv
import time
from pathlib import Path

import numpy as np
import orjson
import pytest
import soundfile as sf

from agent.simulator.voice import synthesize
from support import run_stack
from telephony.loadtest.cli import main

TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC = "https://agent.example.test"


def write_speech(path: Path, text: str) -> Path:
    pcm = np.frombuffer(synthesize(text, "Charon").pcm, "<i2")
    pause = np.zeros(12_000, dtype=np.int16)  # 0.5 s at 24 kHz
    sf.write(path, np.concatenate([pause, pcm, pause]), 24_000, subtype="PCM_16")
    return path


async def loadtest(*argv: str) -> int:
    # The CLI runs its own event loop: in a thread, next to the server's.
    return await asyncio.to_thread(main, [*argv, "--quiet"])


def _complete(root: Path) -> list[Path]:
    return sorted(p.parent for p in root.glob("*/events.jsonl"))


async def recorded_calls(root: Path, n: int) -> list[Path]:
    """The server writes a recording at the end of each call, off its event loop."""
    async with asyncio.timeout(10):
        while len(done := _complete(root)) < n:  # noqa: ASYNC110 - files, not an event
            await asyncio.sleep(0.05)
    return done


async def test_loadtest_through_the_signed_webhook(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    speech = tmp_path / "speech"
    speech.mkdir()
    write_speech(speech / "table.wav", "I would like a table for two")
    write_speech(speech / "hours.wav", "When are you open")
    env = {
        "TWILIO_AUTH_TOKEN": TOKEN,
        "PUBLIC_URL": PUBLIC,
        "AGENT_GREETING": "Hi there.",
        "RECORD_CALLS": str(tmp_path / "recorded"),
    }
    async with run_stack(monkeypatch, env) as stack:
        common = [
            "--webhook",
            f"{stack.http_url}/twilio/voice",
            "--public-url",
            PUBLIC,
            "--think-time",
            "0.3",
            "--linger",
            "0.3",
            "--max-call-s",
            "20",
        ]
        started = time.monotonic()
        code = await loadtest(
            *common,
            "--auth-token",
            TOKEN,
            "--recordings",
            str(speech),
            "--calls",
            "3",
            "--concurrency",
            "2",
            "--out",
            str(tmp_path / "run1"),
            "--max-p95-response-ms",
            "3000",
            "--max-p95-greeting-ms",
            "2000",
        )
        wall = time.monotonic() - started
        run1 = capsys.readouterr().out
        # Replay a call the server recorded during that run, with an SLO nobody meets.
        recorded = await recorded_calls(tmp_path / "recorded", 3)
        impossible = await loadtest(
            *common,
            "--auth-token",
            TOKEN,
            "--recordings",
            str(recorded[0]),
            "--calls",
            "1",
            "--out",
            str(tmp_path / "run2"),
            "--max-p95-response-ms",
            "1",
        )
        run2 = capsys.readouterr().out
        forged = await loadtest(
            *common,
            "--auth-token",
            "not-the-token",
            "--recordings",
            str(speech),
            "--calls",
            "2",
            "--out",
            str(tmp_path / "run3"),
        )
        run3 = capsys.readouterr().out
        served = len(stack.service.recent)

    assert code == 0, run1
    assert wall < 30
    summary = orjson.loads((tmp_path / "run1" / "summary.json").read_bytes())
    assert summary["calls"] == {
        "total": 3,
        "ok": 3,
        "failed": 0,
        "failure_rate": 0.0,
        "failures": {},
    }
    assert summary["passed"] is True
    assert summary["config"]["signed"] is True and "auth_token" not in summary["config"]
    assert summary["greeting_ms"]["count"] == 3 and summary["greeting_ms"]["max"] < 2000
    # The simulator answers 500 ms of silence + 300 ms of thinking after the caller stops.
    response = summary["response_ms"]
    assert response["count"] == 3 and summary["turns"]["unanswered"] == 0
    assert 300 < response["min"] <= response["max"] < 3000
    assert summary["gaps"]["count"] == 0
    with (tmp_path / "run1" / "calls.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [r["recording"] for r in rows] == ["hours.wav", "table.wav", "hours.wav"]
    assert all(r["ok"] == "True" and r["close_code"] == "1000" for r in rows)
    lines = (tmp_path / "run1" / "calls.jsonl").read_bytes().splitlines()
    assert sorted(orjson.loads(line)["index"] for line in lines) == [0, 1, 2]
    page = (tmp_path / "run1" / "report.html").read_text()
    assert "<svg" in page and "All SLOs passed" in page
    assert "SLO PASS p95 response latency" in run1

    # The recorded call replays: its one utterance is one turn, answered as before.
    assert impossible == 1, run2
    replay = orjson.loads((tmp_path / "run2" / "summary.json").read_bytes())
    assert replay["calls"]["ok"] == 1 and replay["turns"]["total"] == 1
    assert replay["response_ms"]["count"] == 1 and replay["passed"] is False
    assert "SLO FAIL p95 response latency" in run2

    # A wrong auth token: the webhook refuses both calls before any stream opens.
    assert forged == 1
    refused = orjson.loads((tmp_path / "run3" / "summary.json").read_bytes())
    assert refused["calls"]["failures"] == {"webhook_rejected": 2}
    assert "failed webhook_rejected: 2" in run3
    assert served == 4  # the server only ever saw the accepted calls


async def test_loadtest_fails_cleanly_when_nothing_listens(tmp_path: Path) -> None:
    wav = write_speech(tmp_path / "a.wav", "hello")
    server = await asyncio.start_server(lambda r, w: None, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    server.close()
    await server.wait_closed()
    argv = ["--url", f"ws://127.0.0.1:{port}/twilio/media", "--recordings", str(wav)]
    code = await loadtest(*argv, "--calls", "2", "--out", str(tmp_path / "out"))
    assert code == 1
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["calls"]["failures"] == {"connect_refused": 2}
    # Lax SLOs still judge the failure rate.
    assert summary["slos"][0]["text"] == "FAIL failure rate 1 > 0"


async def test_a_hanging_server_cannot_hold_the_run(tmp_path: Path) -> None:
    wav = write_speech(tmp_path / "a.wav", "hello")
    held: list[asyncio.StreamWriter] = []

    async def accept_and_say_nothing(_: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        held.append(writer)  # never answers the WebSocket handshake

    server = await asyncio.start_server(accept_and_say_nothing, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    argv = ["--url", f"ws://127.0.0.1:{port}/twilio/media", "--recordings", str(wav)]
    started = time.monotonic()
    async with server:
        code = await loadtest(
            *argv, "--calls", "2", "--deadline", "1", "--out", str(tmp_path / "out")
        )
        for writer in held:
            writer.close()
    assert code == 1
    assert time.monotonic() - started < 5
    summary = orjson.loads((tmp_path / "out" / "summary.json").read_bytes())
    assert summary["deadline_hit"] is True
    assert summary["calls"]["failures"] == {"run_deadline": 2}


def test_bad_input_exit_code(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--url", "ws://127.0.0.1:9/twilio/media", "--out", str(tmp_path / "o")]
    assert main([*argv, "--recordings", str(tmp_path / "missing.wav")]) == 2
    assert "no recordings found" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main([*argv, "--recordings", "x.wav", "--concurrency", "0"])
