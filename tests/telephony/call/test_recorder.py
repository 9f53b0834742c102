"""Call recording: the recorder's timelines with made-up clocks, the files it writes, and one
recorded call through the real stack."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import orjson
import pytest
import soundfile as sf

from support import run_stack, speech
from telephony.audio import ulaw_decode
from telephony.call import recorder as recording
from telephony.call.recorder import CallRecorder, safe_dirname
from telephony.caller import BargeIn, merge_runs
from telephony.settings import ConfigError, Settings
from telephony.twilio import media_stream as ms

T0 = 1000.0  # an arbitrary monotonic clock reading at stream start
RATE = 8000


def start_event(call_sid: str = "CA123", params: dict[str, str] | None = None) -> ms.Start:
    return ms.Start(
        sequence_number=1,
        stream_sid="MZ456",
        call_sid=call_sid,
        account_sid="AC" + "0" * 32,
        tracks=("inbound",),
        custom_parameters=params or {"from": "+14155550100"},
        media_format=ms.MediaFormat(),
    )


def started(
    tmp_path: Path, params: dict[str, str] | None = None, max_audio_s: float = 7200.0
) -> CallRecorder:
    rec = CallRecorder(tmp_path, max_audio_s=max_audio_s)
    rec.start(start_event(params=params), T0, wall=1_700_000_000.0)
    return rec


def tone(n: int, value: int = 0x10) -> bytes:
    """``n`` μ-law bytes of something that is not silence."""
    return bytes([value]) * n


def runs(track: bytes) -> list[tuple[int, int]]:
    """(start, end) byte offsets of the non-silent stretches of a μ-law track."""
    out: list[tuple[int, int]] = []
    for i, b in enumerate(track):
        if b != 0xFF:
            if out and out[-1][1] == i:
                out[-1] = (out[-1][0], i + 1)
            else:
                out.append((i, i + 1))
    return out


def kinds(rec: CallRecorder) -> list[str]:
    return [e["type"] for e in rec.events]


# -- caller track ---------------------------------------------------------------------------


def test_caller_frames_follow_their_timestamps_and_gaps_become_silence(tmp_path: Path) -> None:
    rec = started(tmp_path)
    for k in range(5):
        rec.caller_audio(tone(160, 0x10 + k), k * 20)
    # Frames 5 and 6 never arrived: frame 7 goes where its timestamp says.
    rec.caller_audio(tone(160, 0x20), 140)
    track = rec.caller_audio_ulaw
    assert len(track) == 8 * 160
    assert track[:160] == tone(160, 0x10)
    assert track[5 * 160 : 7 * 160] == ms.ULAW_SILENCE * 320
    assert track[7 * 160 :] == tone(160, 0x20)
    [gap] = [e for e in rec.events if e["type"] == "media_gap"]
    # Noted when the frame after it came in (t), from where the track ended (at_ms).
    assert gap == {"t": 0.14, "type": "media_gap", "at_ms": 100, "missing_ms": 40}


def test_caller_timestamp_jitter_and_missing_timestamps_keep_arrival_order(
    tmp_path: Path,
) -> None:
    rec = started(tmp_path)
    # Stamps a few ms off (or absent, parsed as 0) are not gaps: frames stay back to back.
    for k, stamp in enumerate([3, 21, 45, 59, 0, 0]):
        rec.caller_audio(tone(160, 0x10 + k), stamp)
    assert rec.caller_audio_ulaw == b"".join(tone(160, 0x10 + k) for k in range(6))
    assert "media_gap" not in kinds(rec)


def test_a_stream_whose_audio_starts_late_is_padded_from_stream_start(tmp_path: Path) -> None:
    rec = started(tmp_path)
    rec.caller_audio(tone(160), 500)
    assert runs(rec.caller_audio_ulaw) == [(4000, 4160)]


# -- agent track ----------------------------------------------------------------------------


def test_agent_audio_plays_back_to_back_like_twilio_not_at_send_time(tmp_path: Path) -> None:
    rec = started(tmp_path)
    # One second of speech sent in 4 chunks within 30 ms (faster than real time) at 0.5 s...
    for i in range(4):
        rec.agent_audio(tone(2000, 0x10 + i), T0 + 0.5 + i * 0.01)
    # ...and an answer sent at 3 s, long after the queue ran dry: it starts when sent.
    rec.agent_audio(tone(800, 0x30), T0 + 3.0)
    track = rec.agent_audio_ulaw
    assert runs(track) == [(4000, 12000), (24000, 24800)]
    assert track[4000:6000] == tone(2000, 0x10)
    assert track[10000:12000] == tone(2000, 0x13)


def test_clear_drops_what_had_not_played_yet(tmp_path: Path) -> None:
    rec = started(tmp_path)
    rec.agent_audio(tone(16000), T0 + 1.0)  # 2 s queued at 1 s
    rec.clear(T0 + 1.25)  # the caller heard 0.25 s of it
    assert runs(rec.agent_audio_ulaw) == [(8000, 10000)]
    [clear] = [e for e in rec.events if e["type"] == "clear"]
    assert clear == {"t": 1.25, "type": "clear", "dropped_ms": 1750}
    # The next answer starts when it is sent, not where the dropped audio would have ended.
    rec.agent_audio(tone(800, 0x20), T0 + 2.0)
    assert runs(rec.agent_audio_ulaw) == [(8000, 10000), (16000, 16800)]
    # A clear with nothing queued drops nothing.
    rec.clear(T0 + 5.0)
    assert rec.events[-1]["dropped_ms"] == 0
    assert len(rec.agent_audio_ulaw) == 16800


def test_end_cuts_unplayed_agent_audio_and_pads_to_the_end_of_the_call(tmp_path: Path) -> None:
    rec = started(tmp_path)
    rec.agent_audio(tone(8000), T0 + 1.0)
    rec.end(T0 + 1.5, outcome="completed")
    assert runs(rec.agent_audio_ulaw) == [(8000, 12000)]
    rec2 = started(tmp_path)
    rec2.agent_audio(tone(800), T0 + 1.0)
    rec2.end(T0 + 4.0, outcome="completed")
    assert len(rec2.agent_audio_ulaw) == 4 * RATE


# -- events and bounds ----------------------------------------------------------------------


def test_events_are_timed_from_stream_start_and_never_go_back(tmp_path: Path) -> None:
    rec = started(tmp_path)
    rec.event("dtmf", T0 + 1.23456, digit="4")
    rec.event("interrupted", T0 + 1.0, heard_ms=200)  # a time taken before the last event
    rec.event("mark", T0 + 2.0, name="1:160:1")
    assert [(e["t"], e["type"]) for e in rec.events[1:]] == [
        (1.235, "dtmf"),
        (1.235, "interrupted"),
        (2.0, "mark"),
    ]
    rec.end(T0 + 3.0, outcome="completed", reason="caller hung up")
    rec.event("dtmf", T0 + 4.0, digit="5")  # after the end: ignored
    assert kinds(rec)[-1] == "end"


def test_nothing_is_recorded_before_start(tmp_path: Path) -> None:
    rec = CallRecorder(tmp_path)
    rec.event("dtmf", T0, digit="1")
    rec.agent_audio(tone(160), T0)
    assert rec.events == []
    assert not rec.started


def test_audio_beyond_the_limit_is_not_kept_and_the_limit_is_noted(tmp_path: Path) -> None:
    rec = started(tmp_path, max_audio_s=1.0)
    for k in range(60):  # 1.2 s of caller audio
        rec.caller_audio(tone(160), k * 20)
    rec.agent_audio(tone(4000), T0 + 0.8)  # 0.5 s at 0.8 s: 0.3 s over
    rec.agent_audio(tone(4000), T0 + 5.0)
    assert len(rec.caller_audio_ulaw) == RATE
    assert len(rec.agent_audio_ulaw) == 6400  # the chunk that did not fit is left out
    limits = [e for e in rec.events if e["type"] == "recording_limit"]
    assert [(e["track"], e["max_s"]) for e in limits] == [("caller", 1.0), ("agent", 1.0)]
    rec.end(T0 + 6.0)
    assert len(rec.agent_audio_ulaw) == 6400
    end = rec.events[-1]
    assert end["caller_frames"] == 60


def test_a_huge_timestamp_jump_cannot_exhaust_memory(tmp_path: Path) -> None:
    rec = started(tmp_path, max_audio_s=2.0)
    rec.caller_audio(tone(160), 0)
    rec.caller_audio(tone(160), 10**12)
    assert len(rec.caller_audio_ulaw) == 2 * RATE
    assert kinds(rec) == ["meta", "media_gap", "recording_limit"]


def test_events_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(recording, "MAX_EVENTS", 10)
    rec = started(tmp_path)
    for i in range(25):
        rec.event("mark", T0 + i, name=str(i))
    assert len(rec.events) == 11
    rec.end(T0 + 30)  # always recorded: a reader relies on it
    assert len(rec.events) == 12
    assert rec.events[-1]["type"] == "end"
    assert rec.events[-1]["events_dropped"] == 15


# -- files ----------------------------------------------------------------------------------


def read_events(path: Path) -> list[dict[str, Any]]:
    return [orjson.loads(line) for line in path.read_bytes().splitlines()]


def test_written_files_are_wavs_and_jsonl_in_the_documented_format(tmp_path: Path) -> None:
    rec = started(tmp_path, params={"from": "+14155550100", "lang": "de"})
    caller = bytes(range(256)) * 5
    for k in range(len(caller) // 160):
        rec.caller_audio(caller[k * 160 : (k + 1) * 160], k * 20)
    rec.agent_audio(tone(1600), T0 + 0.1)
    rec.event("dtmf", T0 + 0.05, digit="4")
    rec.event("tool_call", T0 + 0.2, id="t1", name="end_call", args={"n": 1}, result={"ok": 1})
    rec.end(T0 + 0.5, outcome="completed", reason="caller hung up")
    path = rec.write()
    assert path == tmp_path / "CA123"
    assert sorted(p.name for p in path.iterdir()) == ["agent.wav", "caller.wav", "events.jsonl"]

    for name, expected in [("caller.wav", caller), ("agent.wav", rec.agent_audio_ulaw)]:
        info = sf.info(path / name)
        assert (info.samplerate, info.channels, info.subtype) == (8000, 1, "PCM_16")
        data, _ = sf.read(path / name, dtype="int16")
        assert data.tobytes() == ulaw_decode(expected)  # exactly the decoded μ-law
    assert sf.info(path / "agent.wav").frames == 4000  # runs to the end of the call

    events = read_events(path / "events.jsonl")
    assert events[0] == {
        "type": "meta",
        "version": 1,
        "call_sid": "CA123",
        "stream_sid": "MZ456",
        "custom_parameters": {"from": "+14155550100", "lang": "de"},
        "started_at": 1_700_000_000.0,
        "caller_rate": 8000,
        "agent_rate": 8000,
        "max_audio_s": 7200.0,
    }
    assert [e["type"] for e in events[1:]] == ["dtmf", "tool_call", "end"]
    assert events[2]["args"] == {"n": 1}
    assert events[3]["outcome"] == "completed"
    assert events[3]["caller_s"] == len(caller) / 8000
    ts = [e["t"] for e in events[1:]]
    assert ts == sorted(ts)


def test_directory_names_are_safe_and_never_reused(tmp_path: Path) -> None:
    assert safe_dirname("CA0123abc") == "CA0123abc"
    assert safe_dirname("../../etc/passwd") == "______etc_passwd"
    assert safe_dirname("") == "unknown"
    paths = []
    for _ in range(3):
        rec = CallRecorder(tmp_path / "new" / "dir")
        rec.start(start_event("../x"), T0)
        rec.end(T0 + 1)
        paths.append(rec.write())
    root = tmp_path / "new" / "dir"
    assert [p.name for p in paths] == ["___x", "___x-2", "___x-3"]
    assert all(p.parent == root for p in paths)


async def test_finish_writes_off_the_loop(tmp_path: Path) -> None:
    rec = started(tmp_path)
    rec.caller_audio(tone(160), 0)
    await rec.finish(T0 + 1.0, outcome="completed")
    assert rec.path is not None and (rec.path / "events.jsonl").exists()
    assert read_events(rec.path / "events.jsonl")[-1]["outcome"] == "completed"


async def test_a_disk_error_is_logged_with_the_call_sid_and_not_raised(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    rec = CallRecorder(blocker / "calls")
    rec.start(start_event(), T0)
    with caplog.at_level(logging.ERROR, logger="telephony.call.recorder"):
        await rec.finish(T0 + 1.0, outcome="completed")
    [record] = caplog.records
    assert record.getMessage() == "recording.failed"
    assert record.event_fields["call_sid"] == "CA123"  # type: ignore[attr-defined]
    assert not record.exc_info  # an OSError is the disk's fault, not a bug: no traceback


async def test_a_stream_that_never_started_writes_nothing(tmp_path: Path) -> None:
    await CallRecorder(tmp_path / "calls").finish(T0)
    assert not (tmp_path / "calls").exists()


# -- settings -------------------------------------------------------------------------------


def test_record_calls_settings(tmp_path: Path) -> None:
    assert Settings.from_env({}).record_calls is None
    s = Settings.from_env({"RECORD_CALLS": str(tmp_path / "rec"), "RECORD_CALLS_MAX_S": "60"})
    assert s.record_calls == tmp_path / "rec"
    assert s.record_calls_max_s == 60.0
    assert Settings.from_env({"RECORD_CALLS": str(tmp_path)}).record_calls_max_s == 7200.0
    (tmp_path / "f").write_text("")
    with pytest.raises(ConfigError, match=r"RECORD_CALLS: .* not a directory"):
        Settings.from_env({"RECORD_CALLS": str(tmp_path / "f")})
    with pytest.raises(ConfigError, match="RECORD_CALLS_MAX_S"):
        Settings.from_env({"RECORD_CALLS": str(tmp_path), "RECORD_CALLS_MAX_S": "0"})


# -- through the real stack -----------------------------------------------------------------


def pcm(path: Path) -> np.ndarray[Any, np.dtype[np.int16]]:
    data, rate = sf.read(path, dtype="int16")
    assert rate == 8000 and data.ndim == 1
    return np.asarray(data, dtype=np.int16)


def find(haystack: np.ndarray[Any, Any], needle: bytes) -> float:
    """Where the μ-law ``needle`` (decoded) starts in ``haystack``, in seconds (-1: absent)."""
    pos = haystack.tobytes().find(ulaw_decode(needle))
    assert pos % 2 == 0
    return -1.0 if pos < 0 else pos / 2 / RATE


async def test_a_recorded_call_has_both_legs_on_one_timeline(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    utterance = speech("I would like to book a table for two people tonight please")
    async with run_stack(monkeypatch, {"RECORD_CALLS": str(tmp_path)}) as stack:
        result = await stack.call(
            utterance, lead_silence_s=5.0, linger_s=1.5, custom_parameters={"from": "+1415"}
        )
        summary = await stack.summary()  # the recording is written before the summary is kept
    path = tmp_path / result.call_sid
    assert sorted(p.name for p in path.iterdir()) == ["agent.wav", "caller.wav", "events.jsonl"]

    # The caller's words, exactly as sent, where the caller said them.
    caller = pcm(path / "caller.wav")
    assert abs(find(caller, utterance) - 5.0) < 0.04
    assert abs(len(caller) / RATE - result.frames_sent * 0.02) < 0.04

    # What the agent said, where the caller heard it: the greeting, then the answer.
    agent = pcm(path / "agent.wav")
    heard = [p for p in merge_runs(result.played) if len(p.audio) >= 4000]
    assert len(heard) >= 2 and heard[0].start < 2.0 and heard[-1].start > 5.0
    for run in heard:
        assert abs(find(agent, run.audio[:4000]) - run.start) < 0.04
    assert abs(len(agent) / RATE - result.duration_s) < 0.2

    events = read_events(path / "events.jsonl")
    meta = events[0]
    assert meta["type"] == "meta" and meta["version"] == 1
    assert (meta["call_sid"], meta["stream_sid"]) == (result.call_sid, result.stream_sid)
    assert meta["custom_parameters"] == {"from": "+1415"}
    ts = [e["t"] for e in events[1:]]
    assert ts == sorted(ts) and ts[-1] < result.duration_s + 1.0
    types = [e["type"] for e in events[1:]]
    assert types[-2:] == ["stop", "end"]
    assert "mark" in types and "media_gap" not in types
    turns = [e for e in events if e["type"] == "turn"]
    assert [t["agent"] for t in turns] == [t.agent for t in summary.turns]
    assert turns[-1]["caller"] and turns[-1]["agent"]  # the utterance and its answer
    assert events[-1]["outcome"] == "completed"
    assert events[-1]["caller_frames"] == result.frames_sent


async def test_a_barge_in_cuts_the_recorded_agent_leg_where_the_caller_stopped_hearing_it(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    interjection = speech("sorry, hold on a second")
    async with run_stack(monkeypatch, {"RECORD_CALLS": str(tmp_path)}) as stack:
        result = await stack.call(b"", barge_in=BargeIn(interjection, after_s=1.0), linger_s=1.0)
        await stack.summary()
    path = tmp_path / result.call_sid
    events = read_events(path / "events.jsonl")
    [clear] = [e for e in events if e["type"] == "clear"]
    [cut] = [e for e in events if e["type"] == "interrupted"]
    assert clear["dropped_ms"] > 500  # most of the greeting was still queued at Twilio
    assert 900 < cut["heard_ms"] < 2000
    greeting, answer = [p for p in merge_runs(result.played) if len(p.audio) >= 4000][:2]
    assert abs(clear["t"] - greeting.end) < 0.04
    # The recorded agent leg: the greeting up to the clear, silence, then the answer.
    agent = pcm(path / "agent.wav")
    assert abs(find(agent, greeting.audio[:4000]) - greeting.start) < 0.04
    assert abs(find(agent, answer.audio[:4000]) - answer.start) < 0.04
    quiet = agent[round((greeting.end + 0.04) * RATE) : round((answer.start - 0.04) * RATE)]
    assert quiet.size > 0 and not quiet.any()
    assert np.abs(agent[round((greeting.end - 0.3) * RATE) : round(greeting.end * RATE)]).max() > 0
