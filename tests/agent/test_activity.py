"""The caller's activity: utterances dated back to the audio, one end claimed once."""

from __future__ import annotations

import numpy as np
import pytest

from agent.activity import CallerActivity


def frames(seconds: float, loud: bool) -> list[bytes]:
    t = np.arange(320) / 16000
    frame = (np.sin(2 * np.pi * 300 * t) * (10000 if loud else 0)).astype("<i2").tobytes()
    return [frame] * round(seconds * 50)


def play(activity: CallerActivity, parts: list[tuple[float, bool]], start: float = 0.0) -> float:
    now = start
    for seconds, loud in parts:
        for frame in frames(seconds, loud):
            now += 0.02
            activity.push(frame, now)
    return now


def test_an_utterance_is_dated_where_the_audio_says() -> None:
    a = CallerActivity(0.0, end_ms=500)
    assert not a.speaking and a.started_at is None and a.ended_at is None
    play(a, [(1.0, False), (1.2, True)])
    assert a.speaking
    assert a.started_at == pytest.approx(1.0, abs=0.03)  # not where the VAD decided
    assert a.last_speech_at == pytest.approx(2.2, abs=0.03)
    play(a, [(1.0, False)], start=2.2)
    assert not a.speaking
    assert a.ended_at == pytest.approx(2.2, abs=0.03)
    assert a.end_decided_at == pytest.approx(2.7, abs=0.03)  # 500 ms of quiet later


def test_the_end_of_an_utterance_is_claimed_once() -> None:
    a = CallerActivity(0.0)
    play(a, [(0.5, True), (1.0, False)])
    ended = a.take_speech_end()
    assert ended == pytest.approx(0.5, abs=0.03)
    assert a.take_speech_end() is None


def test_an_end_is_not_claimed_while_the_caller_talks_again() -> None:
    a = CallerActivity(0.0)
    play(a, [(0.5, True), (1.0, False), (0.5, True)])
    assert a.speaking and a.take_speech_end() is None
