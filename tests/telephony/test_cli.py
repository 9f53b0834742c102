"""The voice-agent command's manners: one clear line for every way it cannot start."""

from __future__ import annotations

import os
import socket
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest

from support import HERMETIC_VARIABLES, ROOT
from telephony.cli import COMMANDS, version


def run_cli(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if k not in HERMETIC_VARIABLES}
    return subprocess.run(
        [sys.executable, "-m", "telephony.cli", *args],
        env={**clean, **env},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_invalid_configuration_fails_at_startup_naming_the_variable(tmp_path: Path) -> None:
    proc = run_cli("serve", "--port", "0", cwd=tmp_path, AGENT_LANGUAGE="english please")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "voice-agent: configuration error: AGENT_LANGUAGE: "
        "expected a BCP-47 code like en-US, got 'english please'"
    ]


def test_help_lists_every_command_and_where_configuration_lives() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    for command in COMMANDS:
        assert command in proc.stdout
    assert ".env" in proc.stdout
    serve = run_cli("serve", "--help")
    assert serve.returncode == 0
    assert ".env.example" in serve.stdout and "environment variables" in serve.stdout


def test_version() -> None:
    proc = run_cli("--version")
    assert (proc.returncode, proc.stdout.strip()) == (0, f"voice-agent {version()}")
    assert version()[0].isdigit()


def test_no_command_prints_usage() -> None:
    proc = run_cli()
    assert proc.returncode == 2 and "usage: voice-agent" in proc.stderr


def test_a_port_in_use_is_one_line_before_anything_starts(tmp_path: Path) -> None:
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        proc = run_cli("serve", "--host", "127.0.0.1", "--port", str(port), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        f"voice-agent: cannot listen on 127.0.0.1:{port}: the port is already in use (another "
        "voice-agent?); stop it or choose another with --port or PORT"
    ]
    assert "server.ready" not in proc.stdout + proc.stderr


def test_an_unusable_database_is_one_line(tmp_path: Path) -> None:
    path = tmp_path / "records.db"
    sqlite3.connect(path).close()
    url = f"sqlite:///file:{path}?mode=ro&uri=true"
    proc = run_cli("serve", "--host", "127.0.0.1", "--port", "0", cwd=tmp_path, DATABASE_URL=url)
    assert proc.returncode == 2
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith("voice-agent: DATABASE_URL: cannot open the call database")
    assert line.endswith("attempt to write a readonly database")


def test_a_database_that_cannot_be_written_is_found_at_startup(tmp_path: Path) -> None:
    from telephony.ops.store import CallStore, StoreError

    path = tmp_path / "records.db"
    CallStore(f"sqlite:///{path}").close()  # the table exists: opening needs no write
    store = CallStore(f"sqlite:///file:{path}?mode=ro&uri=true", create=False)
    with pytest.raises(StoreError, match=r"cannot write call records to .*readonly"):
        store.check_writable()


def test_a_closed_pipe_is_not_a_traceback(tmp_path: Path) -> None:
    from telephony.call.summary import CallSummary, Outcome
    from telephony.ops.records import record_from_summary
    from telephony.ops.store import CallStore

    store = CallStore(f"sqlite:///{tmp_path / 'calls.db'}")
    for i in range(300):
        summary = CallSummary(call_sid=f"CA{i:032d}", outcome=Outcome.COMPLETED)
        store.upsert(record_from_summary(summary))
    store.close()
    clean = {k: v for k, v in os.environ.items() if k not in HERMETIC_VARIABLES}
    producer = subprocess.Popen(
        [sys.executable, "-m", "telephony.cli", "calls", "list", "--limit", "300", "--json"],
        cwd=tmp_path,
        env={**clean, "DATABASE_URL": f"sqlite:///{tmp_path / 'calls.db'}"},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    assert producer.stdout is not None and producer.stderr is not None
    producer.stdout.read(100)
    producer.stdout.close()  # like `| head -c 100`
    stderr = producer.stderr.read().decode()
    producer.stderr.close()
    producer.wait(timeout=30)
    assert "Traceback" not in stderr and "BrokenPipeError" not in stderr, stderr


def test_env_file_values_are_used_and_named_in_errors(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("MAX_CONCURRENT_CALLS=lots\nGEMINI_APIKEY=typo\n")
    proc = run_cli("config", "check", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "voice-agent: warning: .env sets GEMINI_APIKEY, which voice-agent does not read (a typo?)",
        "voice-agent: configuration error: MAX_CONCURRENT_CALLS (set in .env): expected a "
        "whole number, got 'lots'",
    ]


def test_the_environment_wins_over_env_file(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("AGENT_VOICE=Kore\nMAX_CONCURRENT_CALLS=7\n")
    proc = run_cli("config", "check", cwd=tmp_path, MAX_CONCURRENT_CALLS="9")
    assert proc.returncode == 0, proc.stderr
    assert "AGENT_VOICE='Kore'  [.env]" in proc.stdout
    assert "MAX_CONCURRENT_CALLS='9'  [environment]" in proc.stdout


def test_an_env_file_that_cannot_be_parsed_is_one_line(tmp_path: Path) -> None:
    (tmp_path / ".env").write_text("AGENT_VOICE=Kore\nnot an assignment\n")
    proc = run_cli("calls", "list", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "voice-agent: .env, line 2: cannot parse 'not an assignment' (expected NAME=value)"
    ]


def test_secrets_are_never_printed_by_config_check(tmp_path: Path) -> None:
    proc = run_cli("config", "check", cwd=tmp_path, API_TOKEN="s3cret-token-1234567890")
    assert proc.returncode == 0, proc.stderr
    assert "API_TOKEN=(hidden)" in proc.stdout and "s3cret" not in proc.stdout


def test_env_example_command_prints_the_committed_file() -> None:
    proc = run_cli("config", "env-example")
    assert proc.returncode == 0
    root = ROOT
    assert proc.stdout == (root / ".env.example").read_text()
