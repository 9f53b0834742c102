"""Reading what the caller says: audio files (any rate, any channels) and calls our server
recorded, including what the server's own recorder writes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile as sf

from support.caller import SILENCE, tone, write_recorded_call
from telephony.audio import ulaw_decode, ulaw_encode
from telephony.call.recorder import CallRecorder
from telephony.caller.recordings import (
    RecordingError,
    load_caller_audio,
    load_recorded_call,
    load_recording,
)
from telephony.twilio.media_stream import FRAME_BYTES, MediaFormat, Start


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
