"""Caller simulator: pure bookkeeping, the sans-I/O call on a fake clock, and real calls
against a tiny in-test server that plays the server's part with OutboundBuilder."""

from __future__ import annotations

import asyncio
import base64
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from websockets.asyncio.server import ServerConnection, serve

from telephony.audio import ulaw_decode, ulaw_encode
from telephony.caller import (
    BargeIn,
    CallFailed,
    ClearRecord,
    Interruption,
    ResponseTurn,
    SimulatedCall,
    assemble_heard,
    load_caller_audio,
    main,
    match_interruptions,
    merge_runs,
    place_call,
    response_turns,
    signature_url_for,
    talk_spurts,
    write_wav,
)
from telephony.media_stream import (
    FRAME_BYTES,
    InboundBuilder,
    OutboundBuilder,
    parse_inbound,
)
from telephony.playback import Played
from telephony.signature import is_valid, sign

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
    assert 0.3 - 1e-3 <= it.speech_start_s - result.time_to_first_audio_s < 0.42
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
    assert bot.received[1][1]["start"]["customParameters"] == {"lang": "en"}


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
