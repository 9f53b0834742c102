"""Energy VAD: boundaries, hysteresis and chunking, on synthetic signals."""

from __future__ import annotations

import numpy as np
import pytest

from agent.vad import EnergyVad, VadEvent, speech_segments

RATE = 8000
FRAME_S = 0.02


def _silence(seconds: float) -> np.ndarray:
    return np.zeros(round(seconds * RATE), dtype=np.float64)


def _tone(seconds: float, dbfs: float = -12.0, hz: float = 440.0) -> np.ndarray:
    n = round(seconds * RATE)
    # Sine RMS is peak/sqrt(2): choose the peak that gives the requested RMS level.
    peak = 32768 * 10 ** (dbfs / 20) * np.sqrt(2)
    return np.asarray(peak * np.sin(2 * np.pi * hz * np.arange(n) / RATE), dtype=np.float64)


def _noise(seconds: float, dbfs: float = -20.0, seed: int = 1) -> np.ndarray:
    n = round(seconds * RATE)
    return np.random.default_rng(seed).normal(0.0, 32768 * 10 ** (dbfs / 20), n)


def _pcm(*parts: np.ndarray) -> bytes:
    x = np.concatenate(parts)
    return np.clip(np.round(x), -32768, 32767).astype("<i2").tobytes()


def _assert_segments(got: list[tuple[float, float]], want: list[tuple[float, float]]) -> None:
    assert len(got) == len(want), got
    for (gs, ge), (ws, we) in zip(got, want, strict=True):
        assert gs == pytest.approx(ws, abs=FRAME_S + 1e-9)
        assert ge == pytest.approx(we, abs=FRAME_S + 1e-9)


def test_single_tone_boundaries() -> None:
    pcm = _pcm(_silence(0.5), _tone(1.0), _silence(1.0))
    _assert_segments(speech_segments(pcm, RATE), [(0.5, 1.5)])


def test_boundaries_not_on_frame_edges() -> None:
    pcm = _pcm(_silence(0.513), _noise(0.777), _silence(0.9))
    _assert_segments(speech_segments(pcm, RATE), [(0.513, 1.29)])


def test_two_utterances_and_clip_ending_in_speech() -> None:
    pcm = _pcm(_silence(0.3), _tone(0.6), _silence(0.8), _noise(0.5))
    _assert_segments(speech_segments(pcm, RATE), [(0.3, 0.9), (1.7, 2.2)])


def test_short_click_ignored() -> None:
    click = np.full(round(0.005 * RATE), 20000.0)
    pcm = _pcm(_silence(0.5), click, _silence(0.5), _tone(0.06), _silence(0.5))
    assert speech_segments(pcm, RATE) == []


def test_short_pause_does_not_split() -> None:
    pcm = _pcm(_silence(0.2), _tone(0.5), _silence(0.3), _tone(0.5), _silence(1.0))
    _assert_segments(speech_segments(pcm, RATE), [(0.2, 1.5)])
    # A pause longer than end_ms does split.
    _assert_segments(speech_segments(pcm, RATE, end_ms=200), [(0.2, 0.7), (1.0, 1.5)])


def test_threshold() -> None:
    quiet = _pcm(_silence(0.2), _tone(0.5, dbfs=-50.0), _silence(0.6))
    assert speech_segments(quiet, RATE) == []
    _assert_segments(speech_segments(quiet, RATE, threshold_dbfs=-55.0), [(0.2, 0.7)])


def test_events_are_reported_after_hysteresis_with_true_positions() -> None:
    pcm = _pcm(_silence(0.2), _tone(0.4), _silence(0.8))
    vad = EnergyVad(RATE, start_ms=100, end_ms=500)
    seen: list[tuple[int, VadEvent]] = []
    step = 160
    for i in range(0, len(pcm), step * 2):
        for event in vad.push(pcm[i : i + step * 2]):
            seen.append((vad.position, event))
    assert [e.kind for _, e in seen] == ["start", "end"]
    (start_at, start), (end_at, end) = seen
    assert start.sample == 1600 and start.time_s == pytest.approx(0.2)
    # Decided once 100 ms of loudness has been seen ...
    assert start_at == 1600 + 800
    assert end.sample == 4800 and end.time_s == pytest.approx(0.6)
    # ... and 500 ms of quiet.
    assert end_at == 4800 + 4000
    assert not vad.in_speech


@pytest.mark.parametrize("chunk", [1, 7, 160, 333, 4096])
def test_chunking_invariance(chunk: int) -> None:
    pcm = _pcm(_silence(0.31), _noise(0.45), _silence(0.2), _tone(0.3), _silence(0.7), _tone(0.25))
    whole = EnergyVad(RATE)
    expected = whole.push(pcm) + whole.flush()
    assert len(expected) == 4
    vad = EnergyVad(RATE)
    got: list[VadEvent] = []
    for i in range(0, len(pcm), chunk):
        got += vad.push(pcm[i : i + chunk])
    got += vad.flush()
    assert got == expected


def test_reset_and_other_rates() -> None:
    vad = EnergyVad(16000)
    tone = np.sin(2 * np.pi * 300 * np.arange(16000) / 16000) * 8000
    pcm = np.concatenate([np.zeros(8000), tone, np.zeros(16000)]).astype("<i2").tobytes()
    events = vad.push(pcm)
    assert [(e.kind, e.time_s) for e in events] == [("start", 0.5), ("end", 1.5)]
    vad.reset()
    assert vad.position == 0 and not vad.in_speech
    assert [(e.kind, e.time_s) for e in vad.push(pcm)] == [("start", 0.5), ("end", 1.5)]


def test_silence_and_empty_input() -> None:
    assert speech_segments(b"", RATE) == []
    assert speech_segments(bytes(RATE * 2), RATE) == []
    assert EnergyVad(RATE).push(b"\x00") == []
