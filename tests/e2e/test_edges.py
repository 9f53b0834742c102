"""End to end at the edges: hostile streams, signatures, capacity, pre-connect, drain."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from support import run_stack, silence, speech
from support.serve import serve_subprocess
from telephony.caller import CallFailed, place_call
from telephony.ops.store import CallStore
from telephony.twilio.media_stream import InboundBuilder
from telephony.twilio.signature import sign

TOKEN = "0123456789abcdef0123456789abcdef"
PUBLIC = "https://agent.example.com"


async def closed_with(ws) -> int | None:  # type: ignore[no-untyped-def]
    """Wait (up to 5 s) for the server to close ``ws``; its close code."""
    try:
        async with asyncio.timeout(5):
            async for _ in ws:
                pass
    except ConnectionClosed:
        pass
    return ws.close_code  # type: ignore[no-any-return]


async def test_hostile_streams_leave_a_healthy_call_intact(monkeypatch: pytest.MonkeyPatch) -> None:
    utterance = speech("I would like to know your opening hours")
    async with run_stack(monkeypatch, {"STREAM_START_TIMEOUT_S": "1"}) as stack:
        healthy = asyncio.create_task(stack.call(utterance, lead_silence_s=4.5, linger_s=2.0))
        url = stack.media_url

        async def garbage_json() -> int | None:
            async with connect(url) as ws:
                for _ in range(60):
                    await ws.send("{not json")
                return await closed_with(ws)

        async def binary() -> int | None:
            async with connect(url) as ws:
                await ws.send(b"\x00\x01binary")
                return await closed_with(ws)

        async def never_starts() -> int | None:
            async with connect(url) as ws:
                await ws.send(InboundBuilder("MZ1", "CA1").connected())
                return await closed_with(ws)

        async def oversized() -> int | None:
            async with connect(url, max_size=None) as ws:
                await ws.send("x" * 200_000)
                return await closed_with(ws)

        async def odd_but_survivable() -> int | None:
            sid = "CA" + "e" * 32
            b = InboundBuilder("MZ" + "e" * 32, sid)
            async with connect(url) as ws:
                await ws.send(b.connected())
                await ws.send(b.media(b"\xff" * 160, 0))  # media before start: ignored
                await ws.send(b.start())
                await ws.send(b.media(b"\xff" * 160, 20).replace('"payload":"', '"payload":"*%$'))
                await ws.send('{"event":"surprise","sequenceNumber":"9"}')  # unknown: ignored
                await ws.send("[1, 2, 3]")  # not an object: ignored
                await ws.send(b.media(b"\xff" * 160, 40))  # still served
                await asyncio.sleep(0.5)
                await ws.send(b.stop())
                return await closed_with(ws)

        codes = await asyncio.gather(
            garbage_json(), binary(), never_starts(), oversized(), odd_but_survivable()
        )
        result = await healthy
        summaries = list(stack.service.recent)
        async with stack.client() as http:
            health = await http.get("/healthz")
    assert codes[0] == 1008  # too many malformed messages
    assert codes[1] == 1003  # binary frames are not Twilio's
    assert codes[2] == 1008  # no start within STREAM_START_TIMEOUT_S
    assert codes[3] == 1009  # frame too big
    assert codes[4] == 1000  # a normal end after stop
    survivor = next(s for s in summaries if s.call_sid == "CA" + "e" * 32)
    assert survivor.bad_frames == 4
    assert survivor.frames_in == 1
    assert survivor.outcome == "completed"
    # The healthy call heard its greeting and got its answer.
    assert result.time_to_first_audio_s is not None
    answered = [t for t in result.turns if t.utterance_start_s >= 4.0]
    assert answered and answered[0].latency_s is not None
    assert result.malformed_frames == 0
    assert health.status_code == 200


async def test_signatures_are_enforced(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"TWILIO_AUTH_TOKEN": TOKEN, "PUBLIC_URL": PUBLIC}
    form = {"CallSid": "CA" + "5" * 32, "From": "+14155550100", "To": "+14155550111"}
    voice_url = PUBLIC + "/twilio/voice"
    async with run_stack(monkeypatch, env) as stack:
        async with stack.client() as http:
            unsigned = await http.post("/twilio/voice", data=form)
            forged = await http.post(
                "/twilio/voice", data=form, headers={"X-Twilio-Signature": "Zm9yZ2Vk"}
            )
            wrong_url = await http.post(
                "/twilio/voice",
                data=form,
                headers={
                    "X-Twilio-Signature": sign(TOKEN, "https://evil.example.com/twilio/voice", form)
                },
            )
            signed = await http.post(
                "/twilio/voice",
                data=form,
                headers={"X-Twilio-Signature": sign(TOKEN, voice_url, form)},
            )
            after_unsigned = await http.post("/twilio/after", data=form)
        with pytest.raises(CallFailed):
            await place_call(stack.media_url, silence(0.5), linger_s=0.2)
        with pytest.raises(CallFailed):
            await place_call(
                stack.media_url,
                silence(0.5),
                auth_token=TOKEN,
                signature_url="wss://evil.example.com/twilio/media",
                linger_s=0.2,
            )
        ok = await place_call(
            stack.media_url,
            silence(3.0),
            auth_token=TOKEN,
            signature_url="wss://agent.example.com/twilio/media",
            call_sid=form["CallSid"],
            linger_s=0.5,
        )
    assert unsigned.status_code == 403
    assert forged.status_code == 403
    assert wrong_url.status_code == 403
    assert after_unsigned.status_code == 403
    assert signed.status_code == 200
    stream = ET.fromstring(signed.text).find("./Connect/Stream")
    assert stream is not None and stream.get("url") == "wss://agent.example.com/twilio/media"
    assert ok.time_to_first_audio_s is not None


async def test_capacity_turns_callers_away_politely(monkeypatch: pytest.MonkeyPatch) -> None:
    async with run_stack(monkeypatch, {"MAX_CONCURRENT_CALLS": "1"}) as stack:
        async with stack.client() as http:
            assert (await http.get("/readyz")).status_code == 200
            first = asyncio.create_task(stack.call(silence(3.0), linger_s=0.3))
            async with asyncio.timeout(5):
                while stack.service.streams == 0:  # noqa: ASYNC110 - test polling
                    await asyncio.sleep(0.01)
            ready = await http.get("/readyz")
            busy = await http.post("/twilio/voice", data={"CallSid": "CA" + "7" * 32})
            with pytest.raises(CallFailed):
                await place_call(stack.media_url, silence(0.5), linger_s=0.2)
            await first
            await stack.summary()
            ready_after = await http.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["ready"] is False
    doc = ET.fromstring(busy.text)
    assert [el.tag for el in doc] == ["Say", "Hangup"]
    assert ready_after.status_code == 200


async def test_webhook_preconnects_the_model_session(monkeypatch: pytest.MonkeyPatch) -> None:
    call_sid = "CA" + "9" * 32
    async with run_stack(monkeypatch) as stack:
        async with stack.client() as http:
            answer = await http.post(
                "/twilio/voice", data={"CallSid": call_sid, "From": "+14155550100", "To": "+1"}
            )
        # Twilio takes a moment to open the stream; the model session opens meanwhile.
        sim_session = await stack.sim.next_session()
        await sim_session.wait_setup()
        stream = ET.fromstring(answer.text).find("./Connect/Stream")
        assert stream is not None
        params = {p.get("name"): p.get("value") for p in stream}
        result = await stack.call(
            silence(2.0), call_sid=call_sid, custom_parameters=params, linger_s=0.5
        )
        summary = await stack.summary()
        sessions = len(stack.sim.sessions)
    assert sessions == 1  # the call adopted the pre-connected session
    assert summary.caller == "+14155550100"
    assert summary.model_connect_ms is not None and summary.model_connect_ms < 50
    assert result.time_to_first_audio_s is not None


async def test_sigterm_drains_calls_before_exiting(tmp_path: Path) -> None:
    async with serve_subprocess(tmp_path, drain_timeout_s=30) as (proc, port, log_path):
        base = f"http://127.0.0.1:{port}"
        async with httpx.AsyncClient(base_url=base, timeout=5) as http:
            call = asyncio.create_task(
                place_call(f"ws://127.0.0.1:{port}/twilio/media", silence(4.0), linger_s=0.5)
            )
            await asyncio.sleep(1.5)
            proc.send_signal(signal.SIGTERM)
            await asyncio.sleep(0.5)
            draining = await http.get("/readyz")
            busy = await http.post("/twilio/voice", data={"CallSid": "CA" + "8" * 32})
            result = await call
        began = time.monotonic()
        async with asyncio.timeout(15):
            code = await proc.wait()
        exited_after = time.monotonic() - began
    stderr = log_path.read_text()
    assert draining.status_code == 503 and draining.json()["draining"] is True
    assert [el.tag for el in ET.fromstring(busy.text)] == ["Say", "Hangup"]
    # The call in progress was not cut: it ran to its own end, closed normally by the caller.
    assert result.ended_by == "caller"
    assert result.duration_s > 4.0
    assert code == 0
    assert exited_after < 10
    assert "server.draining" in stderr and "server.drained" in stderr
    # Its record reached the database before the process exited.
    record = CallStore(os.environ["DATABASE_URL"], create=False).get(result.call_sid)
    assert record is not None and record["outcome"] == "completed"


async def test_a_drain_that_times_out_ends_calls_and_keeps_their_records(tmp_path: Path) -> None:
    async with serve_subprocess(tmp_path, drain_timeout_s=1) as (proc, port, _):
        call = asyncio.create_task(
            place_call(f"ws://127.0.0.1:{port}/twilio/media", silence(20.0), linger_s=0.5)
        )
        await asyncio.sleep(1.5)
        proc.send_signal(signal.SIGTERM)
        result = await call
        async with asyncio.timeout(20):
            code = await proc.wait()
    assert code == 0
    # The call was ended by the server (not cut by a dying process) well before its 20 s.
    assert result.ended_by == "server" and result.duration_s < 10
    record = CallStore(os.environ["DATABASE_URL"], create=False).get(result.call_sid)
    assert record is not None
    assert record["outcome"] == "shutdown"
    assert record["reason"] == "server shutting down: drain timeout"
    assert record["ended_at"] is not None and record["duration_s"] > 1
