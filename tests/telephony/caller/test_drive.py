"""The asyncio driver: real calls over loopback against a tiny in-test server that plays the
server's part with OutboundBuilder; signing, connection failures and their classification."""

from __future__ import annotations

import base64
from http import HTTPStatus
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import InvalidURI
from websockets.http11 import Request, Response

from support.caller import Bot, flat, running, tone
from telephony.audio import ulaw_decode
from telephony.caller.drive import (
    CallFailed,
    connect_failure,
    place_call,
    signature_url_for,
    websocket_url,
)
from telephony.caller.result import write_wav
from telephony.caller.script import BargeIn
from telephony.twilio.media_stream import FRAME_BYTES, OutboundBuilder
from telephony.twilio.signature import is_valid, sign


def test_signature_url_for() -> None:
    assert signature_url_for("ws://h:8080/twilio/media") == "wss://h:8080/twilio/media"
    assert signature_url_for("wss://h/twilio/media") == "wss://h/twilio/media"
    assert signature_url_for("http://h/x") == "https://h/x"


async def test_messages_order_schema_and_timing() -> None:
    bot = Bot()
    caller = tone(0.3)
    async with running(bot) as url:
        result = await place_call(
            url,
            caller,
            custom_parameters={"caller": "+15550100"},
            call_sid="CA" + "1" * 32,
            stream_sid="MZ" + "2" * 32,
            dtmf=[(0.15, "5")],
            lead_silence_s=0.1,
            linger_s=0.2,
        )
    msgs = [m for _, m in bot.received]
    assert msgs[0] == {"event": "connected", "protocol": "Call", "version": "1.0.0"}
    start = msgs[1]
    assert start["event"] == "start" and start["sequenceNumber"] == "1"
    assert start["start"]["customParameters"] == {"caller": "+15550100"}
    assert start["start"]["callSid"] == "CA" + "1" * 32
    assert start["streamSid"] == start["start"]["streamSid"] == "MZ" + "2" * 32
    assert start["start"]["mediaFormat"] == {
        "encoding": "audio/x-mulaw",
        "sampleRate": 8000,
        "channels": 1,
    }
    assert msgs[-1]["event"] == "stop"
    assert msgs[-1]["stop"]["callSid"] == "CA" + "1" * 32
    # One sequence counter across all events, as strings.
    assert [m["sequenceNumber"] for m in msgs[1:]] == [str(i) for i in range(1, len(msgs))]
    assert {m["event"] for m in msgs[2:-1]} == {"media", "dtmf"}
    assert [m["dtmf"] for m in msgs if m["event"] == "dtmf"] == [
        {"track": "inbound_track", "digit": "5"}
    ]
    media = bot.events("media")
    assert len(media) == result.frames_sent
    payloads = [base64.b64decode(m["media"]["payload"]) for _, m in media]
    assert all(len(p) == FRAME_BYTES for p in payloads)
    assert [m["media"]["chunk"] for _, m in media] == [str(i + 1) for i in range(len(media))]
    assert [m["media"]["timestamp"] for _, m in media] == [str(20 * i) for i in range(len(media))]
    assert all(m["media"]["track"] == "inbound" for _, m in media)
    # The caller's words, after the lead silence, then silence: exactly what was sent.
    sent = b"".join(payloads)
    assert sent[:800] == b"\xff" * 800 and sent[800:3200] == caller
    assert set(sent[3200:]) == {0xFF}
    assert result.caller_audio == sent + b"\xff" * (len(result.caller_audio) - len(sent))
    # ~0.4 s of audio + 0.2 s of linger, paced at one frame per 20 ms from stream start.
    assert 28 <= len(media) <= 36
    t_start = bot.received[1][0]
    arrivals = np.array([t for t, _ in media]) - t_start
    expected = 0.02 * (np.arange(len(media)) + 1)
    assert np.all(arrivals > expected - 0.01)  # never ahead of schedule
    assert np.max(arrivals - expected) < 0.1  # no drift
    assert result.ended_by == "caller" and result.close_code == 1000
    assert flat(result.caller_segments) == pytest.approx([0.1, 0.4])
    assert result.time_to_first_audio_s is None


async def test_greeting_marks_and_heard_audio(tmp_path: Path) -> None:
    greeting = tone(0.4, hz=300)
    bot = Bot(
        greeting=greeting,
        greeting_mark="greeting-done",
        first_frames=[OutboundBuilder("MZ" + "3" * 32).mark("before-audio")],
    )
    async with running(bot) as url:
        result = await place_call(
            url, b"", stream_sid="MZ" + "3" * 32, lead_silence_s=0.1, linger_s=0.2
        )
    echoes = bot.events("mark")
    assert [m["mark"]["name"] for _, m in echoes] == ["before-audio", "greeting-done"]
    t_start = bot.received[1][0]
    t_greeting_sent = bot.sent[0][0]
    # A mark with nothing queued comes back at once; the greeting's only once it played.
    assert echoes[0][0] - t_start < 0.1
    played_for = echoes[1][0] - t_greeting_sent
    assert 0.4 - 0.005 < played_for < 0.4 + 0.1
    assert all(not e.cleared for e in result.marks_echoed)
    assert result.time_to_first_audio_s is not None and result.time_to_first_audio_s < 0.1
    # Heard audio: the greeting where it played, silence elsewhere, as long as the call.
    at = round(result.time_to_first_audio_s * 8000)
    assert result.heard_audio[at : at + len(greeting)] == greeting
    assert set(result.heard_audio[:at]) <= {0xFF}
    assert set(result.heard_audio[at + len(greeting) :]) == {0xFF}
    assert len(result.heard_audio) == len(result.caller_audio)
    assert len(result.heard_audio) == pytest.approx(result.duration_s * 8000, abs=1)
    # Linger: ends once the agent has been quiet for linger_s after its greeting.
    assert result.duration_s == pytest.approx(0.4 + 0.2 + result.time_to_first_audio_s, abs=0.05)

    mono, stereo = tmp_path / "heard.wav", tmp_path / "both.wav"
    write_wav(mono, result)
    result.write_wav(stereo, stereo=True)
    data, rate = sf.read(mono, dtype="int16")
    assert rate == 8000 and data.ndim == 1 and len(data) == len(result.heard_audio)
    assert data.tobytes() == ulaw_decode(result.heard_audio)
    info = sf.info(str(stereo))
    assert (info.channels, info.samplerate, info.subtype) == (2, 8000, "PCM_16")
    both, _ = sf.read(stereo, dtype="int16")
    assert both[:, 0].tobytes() == ulaw_decode(result.heard_audio)
    assert both[:, 1].tobytes() == ulaw_decode(result.caller_audio)


async def test_response_latency_per_turn() -> None:
    bot = Bot(reply=tone(0.2, hz=500), reply_after_quiet_frames=5)
    caller = tone(0.3) + b"\xff" * 4800 + tone(0.3)
    async with running(bot) as url:
        result = await place_call(url, caller, lead_silence_s=0.1, linger_s=0.2)
    assert flat(result.caller_segments) == pytest.approx([0.1, 0.4, 1.0, 1.3])
    assert len(result.turns) == 2
    for turn in result.turns:
        # The bot answers after 5 quiet frames; the last loud frame leaves 20 ms after the
        # caller stops, so ~120 ms plus loopback and tick granularity.
        assert turn.latency_s is not None
        assert 0.1 <= turn.latency_s < 0.35
    assert result.time_to_first_audio_s == result.turns[0].response_s
    assert [e.name for e in result.marks_echoed] == ["reply", "reply"]
    summary = "\n".join(result.summary())
    assert "turn 1: caller 0.10-0.40 s" in summary and "turn 2" in summary
    lines = result.timeline()
    times = [float(line.split("=")[1].split(" s:")[0]) for line in lines]
    assert times == sorted(times)
    assert any("caller stops speaking" in line for line in lines)


async def test_barge_in_clear_and_flushed_mark() -> None:
    bot = Bot(greeting=tone(2.0), greeting_mark="long", clear_after_loud_frames=3)
    async with running(bot) as url:
        result = await place_call(url, b"", barge_in=BargeIn(tone(0.3), after_s=0.3), linger_s=0.2)
    (clear,) = result.clears
    (it,) = result.interruptions
    # The caller starts 0.3 s after the agent became audible: never earlier, and on one of
    # the next 20 ms ticks (a loaded 2-core CI machine may run a few ticks late).
    assert result.time_to_first_audio_s is not None and it.speech_start_s is not None
    assert 0.3 - 1e-3 <= it.speech_start_s - result.time_to_first_audio_s < 0.6
    assert it.clear_s == clear.time_s
    # Three loud frames leave 60 ms after the caller starts, plus loopback and a tick.
    assert it.latency_ms is not None and 55 <= it.latency_ms < 250
    assert clear.marks == ("long",)
    assert [(e.name, e.cleared) for e in result.marks_echoed] == [("long", True)]
    (echo,) = bot.events("mark")
    assert echo[0] - bot.sent[-1][0] < 0.05  # flushed at once, not after 2 s
    # The agent stopped being heard at the clear; the rest was dropped.
    (spurt,) = result.agent_spurts
    assert spurt[1] == pytest.approx(clear.time_s, abs=0.001)
    assert clear.dropped_s == pytest.approx(2.0 - (spurt[1] - spurt[0]), abs=0.001)
    after = round(clear.time_s * 8000) + 1
    assert set(result.heard_audio[after:]) == {0xFF}
    assert "clear after" in "\n".join(result.summary())


async def test_signature_header() -> None:
    bot = Bot()
    async with running(bot) as url:
        await place_call(url, b"", auth_token="s3cret", linger_s=0.0)
        wss = url.replace("ws://", "wss://")
        signature = bot.headers["x-twilio-signature"]
        assert signature == sign("s3cret", wss, {})
        assert is_valid("s3cret", wss, {}, signature)
        await place_call(
            url,
            b"",
            auth_token="s3cret",
            signature_url="wss://public.example/twilio/media",
            linger_s=0.0,
        )
        assert is_valid(
            "s3cret", "wss://public.example/twilio/media", {}, bot.headers["x-twilio-signature"]
        )
        await place_call(url, b"", linger_s=0.0)
        assert "x-twilio-signature" not in bot.headers


async def test_server_hang_up_ends_the_call() -> None:
    bot = Bot(greeting=tone(0.2), hang_up_after_s=0.1)
    async with running(bot) as url:
        result = await place_call(url, tone(5.0), linger_s=5.0)
    assert result.ended_by == "server"
    assert (result.close_code, result.close_reason) == (1000, "agent hung up")
    assert result.duration_s < 0.5
    assert not bot.events("stop")
    # Only the audio that played before the hang-up was heard.
    assert sum(len(r.audio) for r in result.played) == pytest.approx(800, abs=100)
    assert any("server closed the socket" in line for line in result.timeline())


async def test_unknown_and_malformed_frames_do_not_end_the_call() -> None:
    sid = "MZ" + "4" * 32
    bot = Bot(
        first_frames=[
            '{"event":"dance","streamSid":"' + sid + '"}',
            "not json",
            b"\x00binary",
            '{"event":"media","streamSid":"' + sid + '","media":{"payload":"!!"}}',
        ],
        greeting=tone(0.1),
    )
    async with running(bot) as url:
        result = await place_call(url, b"", stream_sid=sid, linger_s=0.1)
    assert (result.unknown_frames, result.malformed_frames) == (1, 3)
    assert result.ended_by == "caller" and result.media_bytes_received == 800


async def test_max_duration() -> None:
    bot = Bot()
    async with running(bot) as url:
        result = await place_call(url, tone(5.0), max_duration_s=0.3)
    assert result.ended_by == "max_duration"
    assert result.duration_s == pytest.approx(0.3, abs=0.03)
    assert bot.events("stop")


async def test_connection_failure_raises() -> None:
    async with serve(Bot(), "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
    with pytest.raises(CallFailed):
        await place_call(f"ws://127.0.0.1:{port}/twilio/media", b"", connect_timeout_s=2.0)


def test_connect_failure_kinds() -> None:
    assert connect_failure("u", ConnectionRefusedError()).kind == "connect_refused"
    assert connect_failure("u", TimeoutError()).kind == "connect_timeout"
    assert connect_failure("u", OSError("x")).kind == "connect_error"
    assert connect_failure("u", InvalidURI("u", "bad")).kind == "handshake_error"
    assert websocket_url("https://h/x") == "wss://h/x"


async def test_handshake_rejection_is_classified() -> None:
    async def reject(connection: ServerConnection, request: Request) -> Response:
        return connection.respond(HTTPStatus.FORBIDDEN, "no")

    async with serve(Bot(), "127.0.0.1", 0, process_request=reject) as server:
        port = server.sockets[0].getsockname()[1]
        with pytest.raises(CallFailed) as info:
            await place_call(f"ws://127.0.0.1:{port}/twilio/media", b"")
    assert (info.value.kind, info.value.status) == ("handshake_rejected", 403)
