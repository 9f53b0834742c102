"""The voice-agent command: bad configuration stops it with one clear line."""

from __future__ import annotations

import os
import subprocess
import sys


def run_cli(*args: str, **env: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AGENT_", "GEMINI"))}
    return subprocess.run(
        [sys.executable, "-m", "telephony.cli", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_invalid_configuration_fails_at_startup_naming_the_variable() -> None:
    proc = run_cli("serve", "--port", "0", AGENT_LANGUAGE="english please")
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert lines == [
        "voice-agent: configuration error: AGENT_LANGUAGE: "
        "expected a BCP-47 code like en-US, got 'english please'"
    ]


def test_help_lists_the_commands() -> None:
    proc = run_cli("--help")
    assert proc.returncode == 0
    for command in ("serve", "call", "simulate-live"):
        assert command in proc.stdout
