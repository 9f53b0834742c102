"""The simulator as a process of its own."""

from __future__ import annotations

import asyncio
import io
from pathlib import Path

from agent.simulator import run_standalone


class _Printed(io.StringIO):
    """A text stream that tells when something was written."""

    def __init__(self) -> None:
        super().__init__()
        self.written = asyncio.Event()

    def write(self, text: str) -> int:
        self.written.set()
        return super().write(text)


async def test_standalone_prints_instructions_and_writes_ca(tmp_path: Path) -> None:
    stop = asyncio.Event()
    out = _Printed()
    ca = tmp_path / "sim-ca.pem"
    task = asyncio.create_task(run_standalone("127.0.0.1", 0, ca_out=ca, stop=stop, out=out))
    async with asyncio.timeout(5):
        await out.written.wait()
    assert ca.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    assert "GOOGLE_GEMINI_BASE_URL=https://127.0.0.1:" in out.getvalue()
    assert f"SSL_CERT_FILE={ca}" in out.getvalue()
    stop.set()
    await task
