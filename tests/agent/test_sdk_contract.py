"""What the model fast path assumes about the installed google-genai SDK, checked for real.

``MODEL_FAST_PATH`` writes the per-frame audio message and reads server messages as raw JSON
on the SDK's own WebSocket (``AsyncSession._ws``), a private attribute. If a release changes
it, the server falls back to the SDK's public API (calls keep working, an error is logged),
and these tests fail: a fallback must never go unnoticed. pyproject.toml bounds the SDK
below its next major version for the same reason.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
from collections.abc import Iterator
from importlib import metadata
from typing import Any

import pytest
from google.genai import types
from packaging.requirements import Requirement
from packaging.version import Version

from agent.config import ModelAccess, Persona
from agent.live_wire import AUDIO_PREFIX, AUDIO_SUFFIX
from agent.session import LiveAgent, SdkContractError, fast_path_socket
from agent.simulator import LiveSimulator
from agent.ws_direct import DirectText
from support import ROOT

PCM = bytes(range(256)) * 2


def _agent(sim: LiveSimulator) -> LiveAgent:
    return LiveAgent(
        ModelAccess(backend="gemini", model="gemini-3.8-live", api_key="k"),
        Persona(greeting=None),
        base_url=sim.base_url,
        ssl_context=sim.client_ssl_context(),
    )


def test_the_installed_sdk_is_within_the_declared_bounds() -> None:
    import tomllib

    project = tomllib.loads((ROOT / "pyproject.toml").read_text())
    [spec] = [r for r in project["project"]["dependencies"] if r.startswith("google-genai")]
    requirement = Requirement(spec)
    installed = Version(metadata.version("google-genai"))
    assert installed in requirement.specifier
    assert any(s.operator == "<" for s in requirement.specifier), "bound the SDK's major"


async def test_a_real_session_takes_the_fast_path() -> None:
    async with LiveSimulator() as sim:
        agent = _agent(sim)
        session = await agent.open("CA-contract")
        try:
            assert agent.path == "fast"
            assert session._raw is not None
            assert session._raw is session._session._ws
        finally:
            await session.close()


@contextlib.contextmanager
def sends_through(ws: Any) -> Iterator[list[Any]]:
    """The messages given to ``ws.send`` while inside (they are still sent)."""
    sent: list[Any] = []
    original = ws.send

    async def capture(message: Any, *args: Any, **kwargs: Any) -> None:
        sent.append(message)
        await original(message, *args, **kwargs)

    ws.send = capture
    try:
        yield sent
    finally:
        ws.send = original


async def test_audio_is_written_directly_on_the_sdk_socket() -> None:
    """The installed websockets has what ``DirectText`` uses: audio skips ``send()`` and
    arrives, one message per chunk."""
    async with LiveSimulator() as sim:
        agent = _agent(sim)
        session = await agent.open("CA-contract")
        try:
            assert isinstance(session._direct, DirectText)
            [sim_session] = sim.sessions
            before = sim_session.messages_in
            with sends_through(session._raw) as sends:
                for _ in range(5):
                    await session.send_audio(PCM)
            async with asyncio.timeout(5):
                while sim_session.messages_in < before + 5:  # noqa: ASYNC110 - the server side counts
                    await asyncio.sleep(0.01)
            assert sends == []
        finally:
            await session.close()


async def test_the_sdk_writes_audio_as_the_fast_path_does() -> None:
    """Capture what the SDK itself sends for one audio chunk: same message, same fields."""
    async with LiveSimulator() as sim:
        agent = _agent(sim)
        session = await agent.open("CA-contract")
        ws = fast_path_socket(session._session)
        try:
            with sends_through(ws) as sent:
                await session._session.send_realtime_input(
                    audio=types.Blob(data=PCM, mime_type="audio/pcm;rate=16000")
                )
        finally:
            await session.close()
    [frame] = sent
    sdk = json.loads(frame)
    ours = json.loads(AUDIO_PREFIX + base64.b64encode(PCM).decode() + AUDIO_SUFFIX)
    assert sdk.keys() == ours.keys() == {"realtime_input"}
    assert sdk["realtime_input"].keys() == ours["realtime_input"].keys() == {"audio"}
    assert sdk["realtime_input"]["audio"].keys() == ours["realtime_input"]["audio"].keys()
    assert sdk["realtime_input"]["audio"]["mime_type"] == "audio/pcm;rate=16000"
    assert base64.urlsafe_b64decode(sdk["realtime_input"]["audio"]["data"]) == PCM


async def test_recv_returns_whole_messages_as_bytes() -> None:
    async with LiveSimulator() as sim:
        agent = _agent(sim)
        session = await agent.open("CA-contract")
        try:
            await session.send_text("Say hello.")
            frame = await session._raw.recv(decode=False)
        finally:
            await session.close()
    assert isinstance(frame, bytes)
    assert isinstance(json.loads(frame), dict)


class _NoWs:
    pass


class _OldSocket:
    async def send(self, message: str) -> None: ...

    async def recv(self) -> str:
        return ""

    async def close(self) -> None: ...


@pytest.mark.parametrize(
    ("session", "problem"),
    [(_NoWs(), "no _ws attribute"), (type("S", (), {"_ws": _OldSocket()})(), r"recv\(decode=\)")],
)
def test_a_changed_sdk_is_reported_not_silently_used(session: object, problem: str) -> None:
    with pytest.raises(SdkContractError, match=problem):
        fast_path_socket(session)


async def test_the_server_falls_back_loudly_when_the_contract_breaks(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    import agent.session as session_module

    def broken(_session: object) -> object:
        raise SdkContractError("google-genai's AsyncSession has no _ws attribute any more")

    monkeypatch.setattr(session_module, "fast_path_socket", broken)
    async with LiveSimulator() as sim:
        agent = _agent(sim)
        session = await agent.open("CA-contract")
        await session.close()
    assert agent.path == "sdk"
    assert session._raw is None
    [record] = [r for r in caplog.records if r.getMessage() == "model.fast_path_unavailable"]
    assert record.levelname == "ERROR"
