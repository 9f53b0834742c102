"""Outbound answer detection: first words, silence, or a long voicemail greeting."""

from __future__ import annotations

import numpy as np
import pytest

from telephony.call.answer import AnswerDetector


def pcm(seconds: float, loud: bool) -> list[bytes]:
    """20 ms frames of 16 kHz PCM16: a 300 Hz tone, or silence."""
    n = round(seconds * 50)
    t = np.arange(320) / 16000
    frame = (np.sin(2 * np.pi * 300 * t) * (10000 if loud else 0)).astype("<i2").tobytes()
    return [frame] * n


def feed(detector: AnswerDetector, frames: list[bytes], start: float) -> tuple[str | None, float]:
    now = start
    for frame in frames:
        now += 0.02
        how = detector.push(frame, now)
        if how is not None:
            return how, now
    return None, now


def test_the_callees_first_words_ending_is_an_answer() -> None:
    d = AnswerDetector(0.0, timeout_s=5.0)
    assert feed(d, pcm(0.8, loud=True), 0.0)[0] is None
    how, at = feed(d, pcm(1.0, loud=False), 0.8)
    assert how == "callee spoke"
    assert at == pytest.approx(1.3, abs=0.03)  # 500 ms of quiet after the words
    assert d.answered == "callee spoke"
    assert d.check(100.0) is None and d.push(pcm(0.1, True)[0], 101.0) is None  # only once


def test_silence_until_the_timeout_is_an_answer() -> None:
    d = AnswerDetector(10.0, timeout_s=5.0)
    assert d.check(14.9) is None
    assert d.check(15.0) == "silence"


def test_a_voicemail_greeting_is_cut_short() -> None:
    d = AnswerDetector(0.0, timeout_s=5.0, max_speech_s=30.0)
    feed(d, pcm(0.5, loud=True), 0.0)
    assert d.check(29.0) is None  # talking: no silence timeout
    assert d.check(30.5) == "long speech"
