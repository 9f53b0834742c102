"""Shared fixtures: the whole stack on loopback, with real parts.

``run_stack`` starts the local Live API simulator (TLS, certificate for 127.0.0.1), points the
real google-genai SDK at it through the SDK's own environment variables
(``GOOGLE_GEMINI_BASE_URL``, ``SSL_CERT_FILE``), and runs the real uvicorn server on an
ephemeral loopback port. Tests then call it as Twilio would, with the caller simulator.
"""

from __future__ import annotations

import asyncio
import os
import re
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from agent.simulator import LiveSimulator, SimBehaviour
from agent.simulator.voice import synthesize
from telephony.audio import pcm16_to_ulaw_8k
from telephony.call.summary import CallSummary
from telephony.caller import CallResult, place_call
from telephony.server.runner import LocalServer, local_server
from telephony.server.runner import free_port as free_port  # one helper, shared
from telephony.settings import VARIABLE_NAMES, Settings
from telephony.twilio.media_stream import FRAME_BYTES, ULAW_SILENCE

#: Variables of the developer's shell or CI that must not leak into a test's configuration.
HERMETIC_VARIABLES = VARIABLE_NAMES


def speech(text: str, voice: str = "Charon") -> bytes:
    """Caller speech as 8 kHz μ-law (from the simulator's small synthesizer)."""
    s = synthesize(text, voice)
    return pcm16_to_ulaw_8k(s.pcm, 24_000)


def silence(seconds: float) -> bytes:
    return ULAW_SILENCE * (round(seconds * 8000) // FRAME_BYTES * FRAME_BYTES)


@dataclass
class Stack(LocalServer):
    """The running server plus the scriptable Live API simulator it talks to."""

    sim: LiveSimulator

    async def call(self, audio: bytes, **kwargs: Any) -> CallResult:
        kwargs.setdefault("linger_s", 1.5)
        kwargs.setdefault("max_duration_s", 30.0)
        return await place_call(kwargs.pop("url", self.media_url), audio, **kwargs)

    async def summary(self, calls: int = 1) -> CallSummary:
        """The last call's summary, once the server has finished ``calls`` calls.

        The caller simulator returns when *it* hangs up; the server records the call a moment
        later, so wait (boundedly) for that.
        """
        async with asyncio.timeout(10):
            while len(self.service.recent) < calls:  # noqa: ASYNC110 - polling a test-only view
                await asyncio.sleep(0.01)
        return self.service.recent[-1]

    def client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.http_url, timeout=10.0)


@asynccontextmanager
async def run_stack(
    monkeypatch: pytest.MonkeyPatch,
    env: dict[str, str] | None = None,
    behaviour: SimBehaviour | None = None,
) -> AsyncIterator[Stack]:
    """The simulator + the real server, configured from ``env`` like the real process."""
    async with LiveSimulator(behaviour=behaviour) as sim:
        values = {"GEMINI_API_KEY": "test-key", **(env or {})}
        if values.get("GEMINI_API_KEY"):
            # The SDK's own variables: exactly what an operator would set to use a proxy/CA.
            monkeypatch.setenv("GOOGLE_GEMINI_BASE_URL", sim.base_url)
            monkeypatch.setenv("SSL_CERT_FILE", sim.ca_pem_path)
        for key, value in values.items():
            monkeypatch.setenv(key, value)
        async with local_server(Settings.from_env(os.environ)) as local:
            yield Stack(local.server, local.service, local.port, sim)


#: The repository (the project's root directory).
ROOT = Path(__file__).resolve().parents[2]


def dockerfile_instructions(path: Path | None = None) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) of infra/Dockerfile, continuation lines joined, comments
    dropped."""
    text = re.sub(r"\\\n", " ", (path or ROOT / "infra" / "Dockerfile").read_text())
    result = []
    for line in text.splitlines():
        if line.strip() and not line.lstrip().startswith("#"):
            instruction, _, arguments = line.strip().partition(" ")
            result.append((instruction.upper(), " ".join(arguments.split())))
    return result


def canonical(name: str) -> str:
    """A distribution name as PyPI compares them (PEP 503)."""
    return re.sub(r"[-_.]+", "-", name).lower()


def locked_versions(lock: Path | None = None) -> dict[str, str]:
    """The lock's pins (constraints.txt) that apply to this interpreter: name → version."""
    from packaging.requirements import Requirement

    pins: dict[str, str] = {}
    for line in (lock or ROOT / "constraints.txt").read_text().splitlines():
        if not line or line.startswith((" ", "#")):
            continue
        requirement = Requirement(line)
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        [spec] = requirement.specifier
        assert spec.operator == "==", line
        pins[canonical(requirement.name)] = spec.version
    return pins
