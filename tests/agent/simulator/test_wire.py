"""Wire details: base64 alphabets, camelCase and legacy client messages, Live paths."""

from __future__ import annotations

import base64

import orjson
import pytest

from agent.simulator import LiveSimulator
from agent.simulator.wire import decode_b64, is_live_path
from support.sim import raw_connect, raw_recv, silence, voiced

# --- Wire details --------------------------------------------------------------------------


def test_base64_both_alphabets_with_or_without_padding() -> None:
    data = bytes(range(256)) * 3 + b"\xfb\xff"
    for encoded in (base64.b64encode(data), base64.urlsafe_b64encode(data)):
        assert decode_b64(encoded.decode()) == data
        assert decode_b64(encoded.decode().rstrip("=")) == data


async def test_raw_client_standard_base64_camel_case_and_legacy_chunks(sim: LiveSimulator) -> None:
    pcm = silence(0.1) + voiced(0.6) + silence(0.6)
    async with raw_connect(sim) as ws:
        await ws.send(orjson.dumps({"setup": {"model": "models/x"}}))  # binary frame
        assert await raw_recv(ws) == {"setupComplete": {}}
        for i in range(0, len(pcm), 640):
            b64 = base64.b64encode(pcm[i : i + 640]).decode()
            if i % 1280:
                message = {
                    "realtimeInput": {"audio": {"data": b64, "mimeType": "audio/pcm;rate=16000"}}
                }
            else:
                chunk = {"data": b64.rstrip("="), "mime_type": "audio/pcm"}
                message = {"realtime_input": {"mediaChunks": [chunk]}}
            await ws.send(orjson.dumps(message).decode())
        kinds = []
        while "turnComplete" not in kinds:
            message = await raw_recv(ws)
            assert next(iter(message)) in {"serverContent", "usageMetadata"}
            content = message["serverContent"]
            assert isinstance(content, dict)
            kinds.extend(content)
        s = await sim.next_session()
    assert s.audio_in_ms == pytest.approx(1300)
    assert [(u.start_ms, u.end_ms) for u in s.utterances] == [(100.0, 700.0)]
    assert "modelTurn" in kinds  # the raw client did not ask for transcriptions
    assert "inputTranscription" not in kinds and "outputTranscription" not in kinds


def test_live_paths() -> None:
    for version in ("v1", "v1beta", "v1alpha"):
        assert is_live_path(
            f"/ws/google.ai.generativelanguage.{version}.GenerativeService.BidiGenerateContent"
        )
    assert is_live_path("/ws/google.cloud.aiplatform.v1.LlmBidiService/BidiGenerateContent")
    assert not is_live_path(
        "/ws/google.ai.generativelanguage.v2.GenerativeService.BidiGenerateContent"
    )
