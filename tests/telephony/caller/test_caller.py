"""Caller simulator: pure bookkeeping, the sans-I/O call on a fake clock, and real calls
against a tiny in-test server that plays the server's part with OutboundBuilder."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from http import HTTPStatus
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import InvalidURI
from websockets.http11 import Request, Response

from telephony.audio import ulaw_decode, ulaw_encode
from telephony.call.recorder import CallRecorder
from telephony.caller import (
    BargeIn,
    CallerTurn,
    CallFailed,
    CallResult,
    ClearRecord,
    Interruption,
    RecordedCall,
    RecordingError,
    ResponseTurn,
    SimulatedCall,
    TurnTaking,
    assemble_heard,
    connect_failure,
    find_gaps,
    load_caller_audio,
    load_recorded_call,
    load_recording,
    main,
    match_interruptions,
    merge_runs,
    place_call,
    response_turns,
    signature_url_for,
    simulated_call,
    split_turns,
    talk_spurts,
    websocket_url,
    write_wav,
)
from telephony.twilio.media_stream import (
    FRAME_BYTES,
    InboundBuilder,
    MediaFormat,
    OutboundBuilder,
    Start,
    parse_inbound,
)
from telephony.twilio.playback import Played
from telephony.twilio.signature import is_valid, sign

SILENCE = b"\xff" * FRAME_BYTES


def tone(seconds: float, amplitude: int = 8000, hz: float = 440.0) -> bytes:
    """μ-law tone, loud enough for the VAD (about -15 dBFS)."""
    n = round(seconds * 8000)
    x = amplitude * np.sin(2 * np.pi * hz * np.arange(n) / 8000)
    return ulaw_encode(x.astype("<i2").tobytes())


# ---------------------------------------------------------------------------------------------
# Pure bookkeeping
# ---------------------------------------------------------------------------------------------


def test_assemble_heard_places_runs_on_silence() -> None:
    heard = assemble_heard([Played(0.5, b"\x01" * 800), Played(2.0, b"\x02" * 8000)], 20000)
    assert len(heard) == 20000
    assert heard[:4000] == b"\xff" * 4000
    assert heard[4000:4800] == b"\x01" * 800
    assert heard[4800:16000] == b"\xff" * 11200
    assert heard[16000:] == b"\x02" * 4000  # cut at the end of the call


def test_merge_runs_joins_only_contiguous_runs() -> None:
    runs = [Played(0.0, b"a" * 80), Played(0.01, b"b" * 80), Played(0.5, b"c" * 8)]
    assert merge_runs(runs) == [Played(0.0, b"a" * 80 + b"b" * 80), Played(0.5, b"c" * 8)]
    assert merge_runs([]) == []


def test_talk_spurts_merge_small_gaps() -> None:
    runs = [Played(0.0, bytes(800)), Played(0.15, bytes(800)), Played(1.0, bytes(400))]
    assert talk_spurts(runs) == [(0.0, 0.25), (1.0, 1.05)]
    assert talk_spurts(runs, max_gap_s=0.01) == [(0.0, 0.1), (0.15, 0.25), (1.0, 1.05)]


def test_response_turns() -> None:
    caller = [(1.0, 2.0), (3.0, 4.0), (6.0, 7.0)]
    agent = [(0.0, 0.8), (2.5, 2.9), (4.5, 5.5)]
    turns = response_turns(caller, agent)
    assert turns == [
        ResponseTurn(1.0, 2.0, 2.5),
        ResponseTurn(3.0, 4.0, 4.5),
        ResponseTurn(6.0, 7.0, None),
    ]
    assert turns[0].latency_s == pytest.approx(0.5)
    assert turns[2].latency_s is None
    # A reply that only starts after the caller spoke again answers the later utterance.
    assert response_turns([(1.0, 2.0), (2.5, 3.0)], [(3.2, 4.0)])[0].response_s is None


def test_match_interruptions() -> None:
    agent = [(0.0, 1.2), (3.0, 5.0), (8.0, 9.0)]
    caller = [(1.0, 1.5), (2.0, 2.5), (4.0, 4.4), (8.5, 8.7)]
    clears = [
        ClearRecord(6.0, 0.0, ()),  # late: the agent had finished, still the reply to 4.0
        ClearRecord(0.5, 0.3, ()),  # nobody talked over the agent before it
        ClearRecord(1.2, 0.8, ("m",)),
    ]
    got = match_interruptions(caller, agent, clears)
    assert got == [
        Interruption(None, 0.5, 0.3),
        Interruption(1.0, 1.2, 0.8),
        Interruption(4.0, 6.0, 0.0),
        Interruption(8.5, None),  # talked over the agent, no clear came
    ]
    assert got[0].latency_ms is None
    assert got[1].latency_ms == pytest.approx(200)
    assert got[3].latency_ms is None


def test_signature_url_for() -> None:
    assert signature_url_for("ws://h:8080/twilio/media") == "wss://h:8080/twilio/media"
    assert signature_url_for("wss://h/twilio/media") == "wss://h/twilio/media"
    assert signature_url_for("http://h/x") == "https://h/x"


# ---------------------------------------------------------------------------------------------
# SimulatedCall on a fake clock (deterministic timing)
# ---------------------------------------------------------------------------------------------


def _flat(pairs: list[tuple[float, float]]) -> list[float]:
    return [x for pair in pairs for x in pair]


def _decode_all(frames: list[str]) -> list[Any]:
    return [parse_inbound(f) for f in frames]


def test_schedule_is_absolute_and_catches_up_when_late() -> None:
    call = SimulatedCall(tone(0.1), stream_sid="MZ1", call_sid="CA1", lead_silence_s=0.04)
    t0 = 100.0
    opened = call.open(t0)
    assert [json.loads(f)["event"] for f in opened] == ["connected", "start"]
    assert call.due(t0 + 0.019) == []
    assert call.next_wakeup() == pytest.approx(t0 + 0.02)
    one = _decode_all(call.due(t0 + 0.0201))
    assert [(m.chunk, m.timestamp_ms) for m in one] == [(1, 0)]
    # A tick 75 ms late sends every frame that fell due, with their own timestamps.
    late = _decode_all(call.due(t0 + 0.0951))
    assert [(m.chunk, m.timestamp_ms, m.sequence_number) for m in late] == [
        (2, 20, 3),
        (3, 40, 4),
        (4, 60, 5),
    ]
    assert call.next_wakeup() == pytest.approx(t0 + 0.1)
    assert late[0].payload == SILENCE and late[1].payload == tone(0.1)[:FRAME_BYTES]


def test_dtmf_interleaves_with_media_on_one_counter() -> None:
    call = SimulatedCall(b"", stream_sid="MZ1", call_sid="CA1", dtmf=[(0.05, "7")])
    call.open(0.0)
    events = _decode_all(call.due(0.1))
    kinds = [type(e).__name__ for e in events]
    assert kinds == ["Media", "Media", "Dtmf", "Media", "Media", "Media"]
    assert [e.sequence_number for e in events] == [2, 3, 4, 5, 6, 7]
    with pytest.raises(ValueError):
        SimulatedCall(b"", dtmf=[(1.0, "x")])


def test_marks_echo_after_audio_played_and_clear_flushes() -> None:
    call = SimulatedCall(b"", stream_sid="MZ1", call_sid="CA1", linger_s=0.5)
    out = OutboundBuilder("MZ1")
    call.open(0.0)
    assert call.receive(0.0, out.mark("first")) != []  # nothing queued: echoed at once
    call.receive(0.01, out.media(tone(0.2)))
    assert call.receive(0.01, out.mark("a")) == []
    assert not [f for f in call.due(0.2) if '"mark"' in f]
    echoes = [f for f in call.due(0.22) if '"mark"' in f]
    assert [json.loads(f)["mark"]["name"] for f in echoes] == ["a"]
    call.receive(0.4, out.media(tone(1.0)))
    call.receive(0.4, out.mark("b"))
    flushed = call.receive(0.6, out.clear())
    assert [json.loads(f)["mark"]["name"] for f in flushed] == ["b"]
    assert call.should_end(1.0) is None
    assert call.should_end(1.11) == "caller"  # quiet for linger_s since the clear
    assert [json.loads(f)["event"] for f in call.finish(1.11)] == ["stop"]
    result = call.result()
    assert [(e.name, e.cleared) for e in result.marks_echoed] == [
        ("first", False),
        ("a", False),
        ("b", True),
    ]
    assert result.marks_echoed[1].due_s == pytest.approx(0.21)
    assert result.clears[0].dropped_s == pytest.approx(0.8)
    assert result.clears[0].marks == ("b",)
    assert _flat(result.agent_spurts) == pytest.approx([0.01, 0.21, 0.4, 0.6])
    (it,) = result.interruptions
    assert (it.speech_start_s, it.clear_s) == (None, 0.6)
    assert it.dropped_s == pytest.approx(0.8)
    assert result.duration_s == pytest.approx(1.11, abs=1e-3)


def test_bad_server_frames_are_counted_not_fatal() -> None:
    call = SimulatedCall(b"", stream_sid="MZ1", call_sid="CA1")
    call.open(0.0)
    call.receive(0.0, '{"event":"dance","streamSid":"MZ1"}')
    call.receive(0.0, "not json")
    call.receive(0.0, b"\x00\x01")
    call.receive(0.0, OutboundBuilder("MZ-other").media(b"\x00" * 10))
    call.receive(0.0, OutboundBuilder("MZ1").media(b"\x00" * 10))
    call.server_closed(0.1, 1011, "oops")
    r = call.result()
    assert (r.unknown_frames, r.malformed_frames, r.media_bytes_received) == (1, 3, 10)
    assert (r.ended_by, r.close_code, r.close_reason) == ("server", 1011, "oops")


def test_barge_in_starts_once_agent_audible_long_enough() -> None:
    barge = BargeIn(tone(0.2), after_s=0.1)
    call = SimulatedCall(b"", stream_sid="MZ1", call_sid="CA1", barge_in=barge, linger_s=0.1)
    call.open(0.0)
    call.receive(0.0, OutboundBuilder("MZ1").media(tone(1.0)))
    t = 0.0
    while t < 0.5:
        t += 0.02
        call.due(t)
    call.receive(0.5, OutboundBuilder("MZ1").clear())
    while call.should_end(t) is None:
        t += 0.02
        call.due(t)
    call.finish(t)
    r = call.result()
    ((start, _end),) = r.caller_segments
    assert start == pytest.approx(0.1, abs=0.021)
    assert r.interruptions[0].speech_start_s == pytest.approx(start)
    assert r.interruptions[0].latency_ms == pytest.approx((0.5 - start) * 1000)


# ---------------------------------------------------------------------------------------------
# Real calls over loopback against a scripted server
# ---------------------------------------------------------------------------------------------


@dataclass
class Bot:
    """Plays the server: greets on ``start``, clears when the caller talks, replies after
    the caller has been quiet for a few frames. Records everything it receives."""

    greeting: bytes = b""
    greeting_mark: str | None = None
    first_frames: list[str | bytes] = field(default_factory=list)
    clear_after_loud_frames: int | None = None
    reply: bytes = b""
    reply_after_quiet_frames: int = 5
    hang_up_after_s: float | None = None
    received: list[tuple[float, dict[str, Any]]] = field(default_factory=list)
    headers: dict[str, str] = field(default_factory=dict)
    sent: list[tuple[float, str]] = field(default_factory=list)

    async def _send(self, ws: ServerConnection, frame: str) -> None:
        self.sent.append((asyncio.get_running_loop().time(), frame))
        await ws.send(frame)

    async def __call__(self, ws: ServerConnection) -> None:
        loop = asyncio.get_running_loop()
        assert ws.request is not None
        self.headers = {k.lower(): v for k, v in ws.request.headers.raw_items()}
        out: OutboundBuilder | None = None
        loud = quiet = 0
        async for raw in ws:
            assert isinstance(raw, str)
            msg = json.loads(raw)
            self.received.append((loop.time(), msg))
            if msg["event"] == "start":
                out = OutboundBuilder(msg["streamSid"])
                for frame in self.first_frames:
                    await ws.send(frame)
                if self.greeting:
                    # Two messages: Twilio queues them back to back.
                    half = len(self.greeting) // 2
                    await self._send(ws, out.media(self.greeting[:half]))
                    await self._send(ws, out.media(self.greeting[half:]))
                if self.greeting_mark:
                    await self._send(ws, out.mark(self.greeting_mark))
                if self.hang_up_after_s is not None:
                    await asyncio.sleep(self.hang_up_after_s)
                    await ws.close(1000, "agent hung up")
                    return
            elif msg["event"] == "media" and out is not None:
                if base64.b64decode(msg["media"]["payload"]) != SILENCE:
                    loud, quiet = loud + 1, 0
                    if loud == self.clear_after_loud_frames:
                        await self._send(ws, out.clear())
                elif loud:
                    quiet += 1
                    if quiet == self.reply_after_quiet_frames and self.reply:
                        await self._send(ws, out.media(self.reply))
                        await self._send(ws, out.mark("reply"))
                        loud = 0

    def events(self, name: str) -> list[tuple[float, dict[str, Any]]]:
        return [(t, m) for t, m in self.received if m["event"] == name]


@asynccontextmanager
async def running(bot: Bot) -> AsyncIterator[str]:
    async with serve(bot, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        yield f"ws://127.0.0.1:{port}/twilio/media"


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
    assert _flat(result.caller_segments) == pytest.approx([0.1, 0.4])
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
    assert _flat(result.caller_segments) == pytest.approx([0.1, 0.4, 1.0, 1.3])
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


# ---------------------------------------------------------------------------------------------
# Audio files and the CLI
# ---------------------------------------------------------------------------------------------


def _rms(x: np.ndarray) -> float:
    # Skip the edges, where the resampler's filter ramps.
    return float(np.sqrt(np.mean(x[400:-400].astype(np.float64) ** 2)))


def test_load_caller_audio_any_rate_and_channels(tmp_path: Path) -> None:
    rate = 16000
    t = np.arange(rate) / rate
    left = (8000 * np.sin(2 * np.pi * 440 * t)).astype(np.int16)
    right = np.zeros_like(left)
    path = tmp_path / "in.wav"
    sf.write(path, np.stack([left, right], axis=1), rate, subtype="PCM_16")
    mixed = load_caller_audio(path)
    assert len(mixed) == 8000
    only_right = load_caller_audio(path, channel=1)
    assert set(only_right) <= {0xFF, 0x7F}  # μ-law zero has two codes
    only_left = np.frombuffer(ulaw_decode(load_caller_audio(path, channel=0)), "<i2")
    mixed_pcm = np.frombuffer(ulaw_decode(mixed), "<i2")
    assert _rms(mixed_pcm) == pytest.approx(_rms(only_left) / 2, rel=0.05)
    assert _rms(only_left) == pytest.approx(8000 / np.sqrt(2), rel=0.05)
    with pytest.raises(ValueError):
        load_caller_audio(path, channel=2)
    flac = tmp_path / "in.flac"
    sf.write(flac, left, 8000)
    assert load_caller_audio(flac) == ulaw_encode(left.astype("<i2").tobytes())


async def test_cli_places_a_call_and_writes_wav(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    wav = tmp_path / "say.wav"
    sf.write(wav, np.frombuffer(ulaw_decode(tone(0.2)), "<i2"), 8000, subtype="PCM_16")
    out = tmp_path / "heard.wav"
    bot = Bot(greeting=tone(0.2), reply=tone(0.1), reply_after_quiet_frames=3)
    async with running(bot) as url:
        argv = [str(wav), "--url", url, "--out", str(out), "--stereo", "--linger", "0.2"]
        argv += ["--param", "lang=en", "--dtmf", "0.05:9", "--lead-silence", "0.3"]
        code = await asyncio.to_thread(main, argv)
    assert code == 0
    text = capsys.readouterr().out
    assert "time to first agent audio" in text and "turn 1" in text and "dtmf 9 sent" in text
    assert sf.info(str(out)).channels == 2
    # Like a call through the webhook: Twilio-like numbers unless the caller gives its own.
    assert bot.received[1][1]["start"]["customParameters"] == {
        "lang": "en",
        "from": "+15005550006",
        "to": "+15005550001",
        "direction": "inbound",
    }


def test_cli_connection_failure_exit_code(tmp_path: Path) -> None:
    wav = tmp_path / "say.wav"
    sf.write(wav, np.zeros(800, dtype=np.int16), 8000)
    assert (
        main([str(wav), "--url", "ws://127.0.0.1:9/nothing", "--out", str(tmp_path / "x.wav")]) == 2
    )
    assert main([str(tmp_path / "missing.wav")]) == 2


def test_inbound_builder_is_what_is_sent() -> None:
    # The simulator sends nothing the shared builder would not produce.
    call = SimulatedCall(b"", stream_sid="MZ9", call_sid="CA9", account_sid="AC9")
    twin = InboundBuilder("MZ9", "CA9", "AC9")
    assert call.open(0.0) == [twin.connected(), twin.start({})]
    assert call.due(0.02) == [twin.media(SILENCE, 0)]


# ---------------------------------------------------------------------------------------------
# Turn-aware replay on a fake clock (a scripted agent plays the server)
# ---------------------------------------------------------------------------------------------


class FakeAgent:
    """Greets at ``greet_at_s``; answers every caller utterance ``answer_after_s`` after its
    last loud frame (sending the whole answer at once, faster than real time, as the real
    server does); with ``clear_after_frames`` it clears when the caller talks over it."""

    def __init__(
        self,
        *,
        greeting_s: float = 1.0,
        greet_at_s: float = 0.3,
        answer_s: float = 1.0,
        answer_after_s: float = 0.5,
        answers: bool = True,
        clear_after_frames: int | None = None,
    ) -> None:
        self.out = OutboundBuilder("MZ1")
        self.greeting_s, self.greet_at_s = greeting_s, greet_at_s
        self.answer_s, self.answer_after_s, self.answers = answer_s, answer_after_s, answers
        self.clear_after_frames = clear_after_frames
        self.loud_run = 0
        self.quiet_since: float | None = None
        self.spoke = False
        self.busy_until = 0.0  # end of the audio it has queued, as played

    def step(self, t: float, frames: list[str]) -> list[str]:
        out: list[str] = []
        if self.greeting_s and t >= self.greet_at_s:
            out.append(self.out.media(tone(self.greeting_s, hz=300)))
            self.busy_until = t + self.greeting_s
            self.greeting_s = 0.0
        for raw in frames:
            msg = json.loads(raw)
            if msg["event"] != "media":
                continue
            loud = base64.b64decode(msg["media"]["payload"]) != SILENCE
            if loud:
                self.loud_run += 1
                self.spoke, self.quiet_since = True, None
                if self.loud_run == self.clear_after_frames and t < self.busy_until:
                    out.append(self.out.clear())
                    self.busy_until = t
            else:
                self.loud_run = 0
                if self.spoke and self.quiet_since is None:
                    self.quiet_since = t
        if self.quiet_since is not None and t - self.quiet_since >= self.answer_after_s - 1e-9:
            self.spoke, self.quiet_since = False, None
            if self.answers:
                out.append(self.out.media(tone(self.answer_s, hz=500)))
                self.busy_until = max(t, self.busy_until) + self.answer_s
        return out


def run_fake(call: SimulatedCall, agent: FakeAgent, until_s: float = 60.0) -> CallResult:
    """Drive ``call`` against ``agent`` on exact 20 ms ticks of a made-up clock."""
    call.open(0.0)
    for k in range(1, round(until_s * 50)):
        t = k / 50
        for frame in agent.step(t, call.due(t)):
            call.receive(t, frame)
        reason = call.should_end(t)
        if reason is not None:
            call.finish(t, reason)
            break
    return call.result()


def _starts(result: CallResult) -> list[float]:
    return [round(s, 3) for s, _ in result.caller_segments]


THREE_TURNS = [CallerTurn(tone(1.0)), CallerTurn(tone(0.5)), CallerTurn(tone(0.7))]


def test_turns_wait_for_the_greeting_and_each_answer_plus_think_time() -> None:
    call = SimulatedCall(
        b"", stream_sid="MZ1", turns=THREE_TURNS, turn_taking=TurnTaking(think_s=0.6), linger_s=0.5
    )
    r = run_fake(call, FakeAgent())
    # Greeting 0.3-1.3 s; turn 1 at 1.3 + 0.6. The agent sees the first quiet frame 20 ms
    # after the turn ends and answers 0.5 s later; the next turn starts 0.6 s after the
    # answer has played.
    assert _flat(r.caller_segments) == pytest.approx([1.9, 2.9, 5.02, 5.52, 7.64, 8.34])
    assert _flat(r.agent_spurts) == pytest.approx([0.3, 1.3, 3.42, 4.42, 6.04, 7.04, 8.86, 9.86])
    assert [t.latency_s for t in r.turns] == pytest.approx([0.52, 0.52, 0.52])
    # After the last turn the caller waits for its answer, then lingers.
    assert r.ended_by == "caller" and r.caller_done
    assert r.duration_s == pytest.approx(9.86 + 0.5)
    assert r.time_to_first_audio_s == pytest.approx(0.3)
    assert r.interruptions == [] and r.gaps == []
    notes = [n.text for n in r.notes if "caller starts talking" in n.text]
    assert notes == [f"caller starts talking (turn {i} of 3)" for i in (1, 2, 3)]


def test_turns_think_time_is_measured_from_the_end_of_the_answer_as_played() -> None:
    fast = SimulatedCall(
        b"", stream_sid="MZ1", turns=THREE_TURNS[:2], turn_taking=TurnTaking(think_s=0.2)
    )
    r = run_fake(fast, FakeAgent(answer_s=2.0))
    # The 2 s answer arrives in one message at 3.02 s: the caller hears it until 5.02 s.
    assert _starts(r) == [1.5, 5.22]


def test_no_greeting_and_unanswered_turns_time_out() -> None:
    taking = TurnTaking(greeting_timeout_s=2.0, answer_timeout_s=1.5)
    call = SimulatedCall(b"", stream_sid="MZ1", turns=THREE_TURNS, turn_taking=taking, linger_s=0.3)
    r = run_fake(call, FakeAgent(greeting_s=0.0, answers=False))
    assert _starts(r) == [2.0, 4.5, 6.5]  # each 1.5 s after the previous turn ended
    assert r.time_to_first_audio_s is None
    assert [t.response_s for t in r.turns] == [None, None, None]
    # The last turn's answer is awaited for answer_timeout_s too (linger_s has passed by
    # then: the line has been quiet since the caller stopped).
    assert r.duration_s == pytest.approx(7.2 + 1.5)
    texts = [n.text for n in r.notes]
    assert "caller starts talking (turn 1 of 3, no greeting after 2 s)" in texts
    assert "caller starts talking (turn 2 of 3, no answer after 1.5 s)" in texts


def test_barge_in_mode_talks_over_each_answer_but_not_the_greeting() -> None:
    taking = TurnTaking(think_s=0.6, barge_in_after_s=0.4)
    call = SimulatedCall(b"", stream_sid="MZ1", turns=THREE_TURNS, turn_taking=taking)
    r = run_fake(call, FakeAgent(answer_s=2.0, clear_after_frames=3))
    # Turn 1 after the greeting (1.3 + 0.6); answer 1 plays from 3.42 s: turn 2 at 3.82 s;
    # it ends at 4.32 s, answer 2 plays from 4.84 s: turn 3 at 5.24 s.
    assert _starts(r) == [1.9, 3.82, 5.24]
    cleared = [it for it in r.interruptions if it.clear_s is not None]
    assert [it.speech_start_s for it in cleared] == pytest.approx([3.82, 5.24])
    # Three loud frames: the third leaves 60 ms after the caller starts talking.
    assert [it.latency_ms for it in cleared] == pytest.approx([60.0, 60.0])
    assert [t.latency_s for t in r.turns] == pytest.approx([0.52, 0.52, 0.52])
    assert "over the agent" in "\n".join(n.text for n in r.notes)


def test_barge_in_mode_waits_out_a_short_answer() -> None:
    taking = TurnTaking(think_s=0.6, barge_in_after_s=0.8)
    call = SimulatedCall(b"", stream_sid="MZ1", turns=THREE_TURNS[:2], turn_taking=taking)
    r = run_fake(call, FakeAgent(answer_s=0.3))
    # The answer (3.42-3.72 s) is over before 0.8 s into it: talk after it as in turns mode.
    assert _starts(r) == [1.9, 4.32]
    assert r.interruptions == []


def test_stale_answer_going_on_over_a_turn_is_not_its_answer() -> None:
    # The agent never clears: its first answer goes on after the caller's barge-in turn ends.
    # That audio started before the turn, so the turn still waits for its own answer.
    taking = TurnTaking(think_s=0.6, barge_in_after_s=0.4)
    call = SimulatedCall(b"", stream_sid="MZ1", turns=THREE_TURNS, turn_taking=taking)
    r = run_fake(call, FakeAgent(answer_s=1.0))
    assert _starts(r) == [1.9, 3.82, 5.24]


def test_turn_keys_keep_their_spacing_and_hold_the_next_turn() -> None:
    turns = [CallerTurn(b"", dtmf=((0.0, "1"), (0.3, "2"))), CallerTurn(tone(0.4))]
    taking = TurnTaking(think_s=0.6, answer_timeout_s=1.0)
    call = SimulatedCall(b"", stream_sid="MZ1", turns=turns, turn_taking=taking)
    r = run_fake(call, FakeAgent(answer_s=0.5))
    assert [(round(t, 3), d) for t, d in r.dtmf_sent] == [(1.9, "1"), (2.2, "2")]
    # Keys are a turn: their answer is awaited like any other (this agent never answers).
    assert _starts(r) == [3.2]
    with pytest.raises(ValueError):
        SimulatedCall(b"", turns=[CallerTurn(b"", dtmf=((0.0, "x"),))])
    with pytest.raises(ValueError):
        SimulatedCall(b"", turns=THREE_TURNS, after_greeting_s=1.0)
    with pytest.raises(ValueError):
        TurnTaking(think_s=-1)


def test_realtime_replay_keeps_recorded_timing() -> None:
    audio = SILENCE * 25 + tone(0.4) + SILENCE * 100 + tone(0.3)
    recording = RecordedCall("rec", audio, dtmf=((1.0, "5"),), custom_parameters={"k": "v"})
    call = simulated_call(recording, "realtime", stream_sid="MZ1", linger_s=0.2)
    r = run_fake(call, FakeAgent(greeting_s=0.0, answers=False))
    assert _flat(r.caller_segments) == pytest.approx([0.5, 0.9, 2.9, 3.2])
    assert r.dtmf_sent == [(1.0, "5")]
    assert r.caller_audio[: len(audio)] == audio
    assert r.caller_done


def test_media_received_counts_bytes_before_each_message() -> None:
    call = SimulatedCall(b"", stream_sid="MZ1", linger_s=0.1)
    out = OutboundBuilder("MZ1")
    call.open(0.0)
    call.receive(0.1, out.media(b"\x00" * 400))
    call.receive(0.1, out.mark("m"))
    call.receive(0.2, out.media(b"\x00" * 160))
    call.receive(0.3, out.media(b""))
    call.server_closed(0.4, 1000, "")
    r = call.result()
    assert r.media_received == [(0.1, 0), (0.2, 400), (0.3, 560)]
    assert r.media_bytes_received == 560


# ---------------------------------------------------------------------------------------------
# Audio gaps
# ---------------------------------------------------------------------------------------------


def _runs(*spans: tuple[float, float]) -> list[Played]:
    return [Played(a, b"\x00" * round((b - a) * 8000)) for a, b in spans]


def test_find_gaps_inside_one_answer() -> None:
    played = _runs((0.0, 1.0), (1.05, 2.0), (2.3, 3.0), (5.5, 6.0), (6.5, 7.0))
    gaps = find_gaps(played)
    # 50 ms: not a gap; 300 ms: a gap; 2.5 s: a new answer; 500 ms: a gap.
    assert [x for g in gaps for x in (g.start_s, g.end_s)] == pytest.approx([2.0, 2.3, 6.0, 6.5])
    assert gaps[0].duration_s == pytest.approx(0.3)
    # Exactly at the limits: > min_s and <= resume_within_s.
    assert find_gaps(_runs((0, 1), (1.1, 2))) == []
    assert len(find_gaps(_runs((0, 1), (3.0, 4)))) == 1
    assert find_gaps(_runs((0, 1), (3.01, 4))) == []


def test_find_gaps_ignores_holes_the_caller_or_a_clear_explains() -> None:
    played = _runs((0.0, 1.0), (1.5, 2.0), (2.5, 3.0), (3.5, 4.0), (4.5, 5.0))
    assert len(find_gaps(played)) == 4
    gaps = find_gaps(
        played,
        caller_segments=[(0.9, 1.2)],  # the caller spoke into the first hole
        clears=[2.0],  # a clear at the start of the second
        dtmf=[3.2],  # a key press in the third
    )
    assert [x for g in gaps for x in (g.start_s, g.end_s)] == pytest.approx([4.0, 4.5])


def test_gaps_reach_the_result_and_summary() -> None:
    call = SimulatedCall(b"", stream_sid="MZ1", linger_s=0.1)
    out = OutboundBuilder("MZ1")
    call.open(0.0)
    call.receive(0.0, out.media(tone(0.4)))
    t = 0.0
    for k in range(1, 40):
        t = k / 50
        if k == 35:  # 0.7 s: the rest of the answer comes 300 ms late
            call.receive(t, out.media(tone(0.2)))
        call.due(t)
    call.server_closed(t, 1000, "")
    r = call.result()
    assert [x for g in r.gaps for x in (g.start_s, g.end_s)] == pytest.approx([0.4, 0.7])
    assert "audio gap at 0.40 s: agent silent for 300 ms" in r.summary()


# ---------------------------------------------------------------------------------------------
# Recordings: audio files and calls our server recorded
# ---------------------------------------------------------------------------------------------


def test_split_turns_cuts_utterances_with_padding_and_groups_keys() -> None:
    audio = SILENCE * 50 + tone(0.6) + SILENCE * 100 + tone(0.4) + SILENCE * 150
    turns = split_turns(audio, dtmf=[(3.5, "1"), (3.8, "2"), (4.2, "#"), (8.0, "9")])
    assert [t.recorded_at_s for t in turns] == pytest.approx([0.9, 3.5, 8.0])
    first, second, keys = turns
    # 0.1 s of lead-in, the words, 0.2 s of tail (VAD frames are 20 ms).
    assert first.audio == SILENCE * 5 + tone(0.6) + SILENCE * 10
    assert second.audio == SILENCE * 5 + tone(0.4) + SILENCE * 10
    assert first.lead_s == pytest.approx(0.1)
    # Keys within 1.5 s of a turn join it, with their spacing; a lone key is its own turn.
    assert [d for d, _ in second.dtmf] == pytest.approx([0.0, 0.3, 0.7])
    assert [k for _, k in second.dtmf] == ["1", "2", "#"]
    assert keys.audio == b"" and keys.dtmf == ((0.0, "9"),)
    assert second.duration_s == pytest.approx(0.7)
    assert split_turns(SILENCE * 100) == []


def test_split_turns_never_pads_into_the_neighbour() -> None:
    audio = tone(0.3) + SILENCE * 4 * 16 + tone(0.3)  # 0.64 s apart, > the VAD's 0.5 s
    turns = split_turns(audio)
    assert len(turns) == 2
    assert len(turns[0].audio) + len(turns[1].audio) <= len(audio)
    assert turns[0].audio.startswith(tone(0.3)) and turns[1].audio.endswith(tone(0.3))


def write_recorded_call(
    root: Path, audio_ulaw: bytes, events: list[dict[str, Any]], meta: dict[str, Any] | None = None
) -> Path:
    """A call directory in the format of telephony.call.recorder (via its own writer's layout)."""
    root.mkdir(parents=True, exist_ok=True)
    sf.write(
        root / "caller.wav", np.frombuffer(ulaw_decode(audio_ulaw), "<i2"), 8000, subtype="PCM_16"
    )
    head = {
        "type": "meta",
        "version": 1,
        "call_sid": "CA1",
        "stream_sid": "MZ1",
        "custom_parameters": {"from": "+15550100", "to": "+15550199"},
        "started_at": 1.0,
        **(meta or {}),
    }
    lines = [json.dumps(e) for e in [head, *events]]
    (root / "events.jsonl").write_text("\n".join(lines) + "\n")
    return root


def test_load_recorded_call(tmp_path: Path) -> None:
    audio = SILENCE * 50 + tone(0.5) + SILENCE * 60
    path = write_recorded_call(
        tmp_path / "CA1",
        audio,
        [
            {"t": 0.0, "type": "media_gap", "at_ms": 0, "missing_ms": 0},
            {"t": 1.25, "type": "dtmf", "digit": "4"},
            {"t": 1.3, "type": "mark", "name": "x"},
            {"t": 2.0, "type": "stop"},
            {"t": 2.1, "type": "end", "outcome": "completed"},
        ],
    )
    rec = load_recorded_call(path)
    assert rec.audio == audio  # μ-law -> PCM16 WAV -> μ-law is exact
    assert rec.dtmf == ((1.25, "4"),)
    assert rec.custom_parameters == {"from": "+15550100", "to": "+15550199"}
    assert (rec.call_sid, rec.stream_sid) == ("CA1", "MZ1")
    assert rec.duration_s == pytest.approx(len(audio) / 8000)
    assert load_recording(path) == rec
    assert [t.recorded_at_s for t in rec.turns()] == pytest.approx([0.9])
    assert rec.turns()[0].dtmf == ((pytest.approx(0.35), "4"),)


def test_load_recorded_call_errors(tmp_path: Path) -> None:
    good = write_recorded_call(tmp_path / "a", tone(0.2), [])
    with pytest.raises(RecordingError, match="incomplete"):
        load_recorded_call(tmp_path)
    # A last line cut short (crash while writing) is ignored; a bad line elsewhere is not.
    events = good / "events.jsonl"
    events.write_text(events.read_text() + '{"t": 0.5, "type": "dtm')
    assert load_recorded_call(good).dtmf == ()
    events.write_text(events.read_text().replace('{"t": 0.5, "type": "dtm', "") + "oops\n{}\n")
    with pytest.raises(RecordingError, match="not JSON"):
        load_recorded_call(good)
    write_recorded_call(good, tone(0.2), [], meta={"version": 99})
    with pytest.raises(RecordingError, match="version"):
        load_recorded_call(good)
    write_recorded_call(good, tone(0.2), [{"t": 1.0, "type": "dtmf", "digit": "x"}])
    with pytest.raises(RecordingError, match="DTMF"):
        load_recorded_call(good)
    (good / "events.jsonl").write_text('{"type": "start"}\n')
    with pytest.raises(RecordingError, match="meta"):
        load_recorded_call(good)
    with pytest.raises(RecordingError):
        load_recording(tmp_path / "missing.wav")


def test_recorder_output_replays(tmp_path: Path) -> None:
    # The server's own recorder writes what this reader reads.
    rec = CallRecorder(tmp_path)
    start = Start(1, "MZ7", "CA7", "AC7", ("inbound",), {"from": "+1555"}, MediaFormat())
    rec.start(start, now=10.0)
    words = tone(0.3)
    track = SILENCE * 10 + words + SILENCE * 20
    for k in range(len(track) // FRAME_BYTES):
        rec.caller_audio(track[k * FRAME_BYTES : (k + 1) * FRAME_BYTES], k * 20)
    rec.event("dtmf", 10.5, digit="7")
    rec.end(11.0)
    loaded = load_recorded_call(rec.write())
    assert loaded.audio == track
    assert loaded.dtmf == ((0.5, "7"),)
    assert loaded.custom_parameters == {"from": "+1555"}


def test_simulated_call_modes() -> None:
    words = tone(0.5) + SILENCE * 50 + tone(0.5)
    recording = RecordedCall("r", SILENCE * 50 + words, custom_parameters={"a": "b"})
    taking = TurnTaking(barge_in_after_s=0.3)
    # Turns mode ignores barge_in_after_s; barge-in mode uses it (0.5 s when unset).
    turns = run_fake(
        simulated_call(recording, "turns", turn_taking=taking, stream_sid="MZ1"), FakeAgent()
    )
    barge = run_fake(
        simulated_call(recording, "barge-in", turn_taking=taking, stream_sid="MZ1"), FakeAgent()
    )
    default = run_fake(simulated_call(recording, "barge-in", stream_sid="MZ1"), FakeAgent())
    # The words (not their lead-in) start on time: 0.6 s after the greeting; the answer
    # comes 0.52 s after the words end and lasts 1 s.
    answer_1 = 1.9 + 0.5 + 0.52
    assert _starts(turns) == pytest.approx([1.9, answer_1 + 1.0 + 0.6])
    assert _starts(barge) == pytest.approx([1.9, answer_1 + 0.3])
    assert _starts(default) == pytest.approx([1.9, answer_1 + 0.5])
    call = simulated_call(recording, "realtime", call_sid="CA5", custom_parameters={"x": "y"})
    start = json.loads(call.open(0.0)[1])["start"]
    assert (start["callSid"], start["customParameters"]) == ("CA5", {"x": "y"})
    default_params = json.loads(simulated_call(recording, "turns").open(0.0)[1])["start"]
    assert default_params["customParameters"] == {"a": "b"}


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


async def test_cli_replays_a_recorded_call_turn_by_turn(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write_recorded_call(tmp_path / "CA9", SILENCE * 50 + tone(0.3) + SILENCE * 10, [])
    bot = Bot(greeting=tone(0.2), reply=tone(0.1), reply_after_quiet_frames=3)
    async with running(bot) as url:
        argv = [str(path), "--url", url, "--out", str(tmp_path / "h.wav"), "--linger", "0.2"]
        code = await asyncio.to_thread(main, [*argv, "--replay", "turns", "--think-time", "0.2"])
        assert code == 0
        assert await asyncio.to_thread(main, [*argv, "--replay", "turns", "--dtmf", "1:1"]) == 2
    text = capsys.readouterr().out
    assert "caller starts talking" in text and "turn 1" in text
    # The recording's parameters reach start (what it lacks is filled in like Twilio's).
    assert bot.received[1][1]["start"]["customParameters"] == {
        "from": "+15550100",
        "to": "+15550199",
        "direction": "inbound",
    }
