"""The simulator's small synthetic voice."""

from __future__ import annotations

import numpy as np

from agent.simulator.voice import OUTPUT_RATE, synthesize
from support.sim import band_fraction


def test_synthetic_voice_sounds_like_speech_on_a_phone_line() -> None:
    speech = synthesize("Hello, thanks for calling. How can I help you today?", "Puck")
    assert speech is synthesize("Hello, thanks for calling. How can I help you today?", "Puck")
    assert "".join(p for p, _ in speech.words) == speech.text
    x = np.frombuffer(speech.pcm, "<i2").astype(np.float64)
    assert band_fraction(speech.pcm, OUTPUT_RATE) > 0.85
    assert np.abs(x).max() < 32767 * 0.6
    # Syllable rhythm: the 10 ms energy envelope switches between loud and quiet many times.
    env = np.sqrt(np.mean(x[: len(x) // 240 * 240].reshape(-1, 240) ** 2, axis=1))
    loud = env > env.max() * 0.1
    bursts = int(np.sum(loud[1:] & ~loud[:-1]))
    words = 10
    assert words <= bursts <= 25
    assert 2.5 <= words / speech.duration_s <= 4.5

    # Higher voices are higher: compare harmonic spacing within the first syllable.
    def f0(voice: str) -> float:
        x = np.frombuffer(synthesize("Okay.", voice).pcm, "<i2").astype(np.float64)
        seg = x[int(0.09 * OUTPUT_RATE) : int(0.19 * OUTPUT_RATE)]
        spectrum = np.abs(np.fft.rfft(seg * np.hanning(len(seg)), 8 * len(seg)))
        freqs = np.fft.rfftfreq(8 * len(seg), 1 / OUTPUT_RATE)
        inner = spectrum[1:-1]
        peaks = np.flatnonzero(
            (inner > spectrum[:-2]) & (inner > spectrum[2:]) & (inner > 0.03 * spectrum.max())
        )
        return float(np.median(np.diff(freqs[peaks + 1][freqs[peaks + 1] < 2000])))

    assert 100 < f0("Puck") < 180 < f0("Kore") < 300
