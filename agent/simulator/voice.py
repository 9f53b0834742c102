"""A tiny speech-like synthesizer: not a real voice, but something a phone line carries well.

Each word becomes one voiced burst per syllable: a harmonic (glottal-like) source around
120-220 Hz, shaped by three vowel formants, with a falling pitch over the phrase, short gaps
between words and longer ones at punctuation (about 3-4 words per second). Energy is pushed
into 300-3400 Hz so it survives an 8 kHz telephone channel and trips energy VADs like speech.
Pure numpy, vectorized per syllable; results are cached because the same prompts (greetings)
are spoken over and over under load.
"""

from __future__ import annotations

import re
import zlib
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from numpy.typing import NDArray

from agent.live_wire import OUTPUT_RATE as LIVE_OUTPUT_RATE

__all__ = ["OUTPUT_RATE", "Speech", "synthesize"]

OUTPUT_RATE = LIVE_OUTPUT_RATE

_F64 = NDArray[np.float64]

# (F1, F2, F3) in Hz of a few vowels (adult male averages; scaled up for higher voices).
_VOWELS: tuple[tuple[float, float, float], ...] = (
    (730.0, 1090.0, 2440.0),  # a
    (270.0, 2290.0, 3010.0),  # i
    (300.0, 870.0, 2240.0),  # u
    (530.0, 1840.0, 2480.0),  # e
    (570.0, 840.0, 2410.0),  # o
    (660.0, 1720.0, 2410.0),  # ae
    (490.0, 1350.0, 1690.0),  # er
)
_BANDWIDTHS = np.array([90.0, 110.0, 170.0])
_FORMANT_GAINS = np.array([1.0, 0.75, 0.4])

# Prebuilt Live API voices usually described as female get a higher pitch.
_HIGH_VOICES = frozenset(
    {
        "kore",
        "aoede",
        "leda",
        "zephyr",
        "autonoe",
        "callirrhoe",
        "despina",
        "erinome",
        "gacrux",
        "laomedeia",
        "pulcherrima",
        "sulafat",
        "vindemiatrix",
        "achernar",
    }
)

_TOKENS = re.compile(r"[A-Za-z0-9']+|[.,!?;:]")
_VOWEL_GROUPS = re.compile(r"[aeiouy]+")
_PAUSE_S = {",": 0.18, ";": 0.22, ":": 0.22, ".": 0.32, "!": 0.32, "?": 0.32}


def _syllables(word: str) -> int:
    if word.isdigit():
        return min(len(word), 4)
    n = len(_VOWEL_GROUPS.findall(word.lower()))
    if n > 1 and word.lower().endswith("e"):
        n -= 1  # a silent final e ("cAll-ing" vs "lIke")
    return max(1, min(n, 4))


def _voice_params(voice: str) -> tuple[float, float]:
    """(base f0 in Hz, formant scale) for a voice name; stable across runs."""
    jitter = (zlib.crc32(voice.encode()) % 21 - 10) / 10  # -1.0 .. 1.0
    if voice.lower() in _HIGH_VOICES:
        return 205.0 + 12.0 * jitter, 1.15
    return 125.0 + 8.0 * jitter, 1.0


def _envelope(freqs: _F64, formants: _F64) -> _F64:
    """Spectral envelope (linear gain) at ``freqs`` for one vowel."""
    d = (freqs[:, None] - formants[None, :]) / _BANDWIDTHS[None, :]
    peaks: _F64 = (_FORMANT_GAINS[None, :] / (1.0 + d * d)).sum(axis=1)
    # Attenuate below ~300 Hz: a phone line drops it anyway, and energy there would make the
    # level measured at 24 kHz overstate what a caller hears.
    highpass = 1.0 / (1.0 + (280.0 / np.maximum(freqs, 1.0)) ** 4)
    out: _F64 = (0.05 + peaks) * highpass
    return out


def _syllable(
    n: int, f0_start: float, f0_end: float, formants: _F64, rng: np.random.Generator
) -> _F64:
    sr = OUTPUT_RATE
    f0 = np.linspace(f0_start, f0_end, n)
    phase = 2 * np.pi * np.cumsum(f0) / sr
    k = np.arange(1, int(3600 // max(f0_start, f0_end)) + 1, dtype=np.float64)
    amps = _envelope(k * 0.5 * (f0_start + f0_end), formants) / np.sqrt(k)
    voiced: _F64 = amps @ np.sin(np.outer(k, phase))
    # Fast attack, slower release, slight decay: a syllable, not a tone burst.
    t = np.arange(n) / sr
    attack = np.minimum(1.0, t / 0.02)
    release = np.minimum(1.0, (n / sr - t) / 0.05)
    shape = attack * release * (1.0 - 0.3 * t / max(t[-1], 1e-9))
    out: _F64 = voiced * np.sqrt(np.clip(shape, 0.0, 1.0))
    # An unvoiced onset ("s", "t", "k") on some syllables: band-limited noise, 2-3.4 kHz.
    if rng.random() < 0.5:
        m = min(n, int(0.03 * sr))
        spec = np.fft.rfft(rng.standard_normal(m))
        f = np.fft.rfftfreq(m, 1 / sr)
        spec[(f < 2000) | (f > 3400)] = 0
        burst = np.fft.irfft(spec, m)
        burst *= 0.2 * np.abs(voiced).max() / max(np.abs(burst).max(), 1e-9)
        out[:m] += burst * np.hanning(m)
    return out


@dataclass(frozen=True, slots=True)
class Speech:
    """Synthesized speech: ``pcm`` is PCM16 LE mono at 24 kHz.

    ``words`` holds ``(piece, sample offset)`` per word; the pieces concatenate back to the
    text exactly (spaces and punctuation included), so a transcript sent piece by piece as
    the audio goes out adds up to the spoken text.
    """

    text: str
    pcm: bytes
    words: tuple[tuple[str, int], ...]

    @property
    def duration_s(self) -> float:
        return len(self.pcm) / 2 / OUTPUT_RATE


@lru_cache(maxsize=256)
def synthesize(text: str, voice: str = "") -> Speech:
    """Speak ``text`` with a voice named like a Live API prebuilt voice (any string works).

    Deterministic for a given text and voice.
    """
    rng = np.random.default_rng(zlib.crc32(f"{voice}\x00{text}".encode()))
    base_f0, fscale = _voice_params(voice or "Puck")
    tokens = list(_TOKENS.finditer(text))
    words = [m for m in tokens if m.group()[0] not in _PAUSE_S]
    total_syll = sum(_syllables(m.group()) for m in words) or 1

    parts: list[_F64] = [np.zeros(int(0.06 * OUTPUT_RATE))]
    offset = len(parts[0])
    timings: list[tuple[str, int]] = []
    text_pos = 0
    done_syll = 0
    question = text.rstrip().endswith("?")
    for i, m in enumerate(tokens):
        tok = m.group()
        if tok[0] in _PAUSE_S:
            gap = np.zeros(int(_PAUSE_S[tok[0]] * OUTPUT_RATE))
            parts.append(gap)
            offset += len(gap)
            continue
        # The transcript piece runs up to the next word, so punctuation stays attached.
        nxt = next((t.start() for t in tokens[i + 1 :] if t.group()[0] not in _PAUSE_S), None)
        end = len(text) if nxt is None else nxt
        timings.append((text[text_pos:end], offset))
        text_pos = end
        n_syll = _syllables(tok)
        for s in range(n_syll):
            progress = done_syll / total_syll
            done_syll += 1
            # Declination over the phrase, a lift on the stressed (first) syllable, and a
            # final fall (statement) or rise (question).
            f0 = base_f0 * (1.12 - 0.2 * progress) * (1.08 if s == 0 else 1.0)
            f0 *= 1.0 + rng.uniform(-0.03, 0.03)
            f_end = f0 * 0.97
            if done_syll == total_syll:
                f_end = f0 * (1.2 if question else 0.82)
            formants = np.array(_VOWELS[int(rng.integers(len(_VOWELS)))]) * fscale
            n = int(rng.uniform(0.13, 0.19) * OUTPUT_RATE)
            syl = _syllable(n, f0, f_end, formants, rng) * rng.uniform(0.8, 1.0)
            parts.append(syl)
            offset += n
            if s < n_syll - 1:  # a consonant closure inside the word
                gap = np.zeros(int(0.025 * OUTPUT_RATE))
                parts.append(gap)
                offset += len(gap)
        gap = np.zeros(int(rng.uniform(0.05, 0.09) * OUTPUT_RATE))
        parts.append(gap)
        offset += len(gap)
    parts.append(np.zeros(int(0.12 * OUTPUT_RATE)))

    signal = np.concatenate(parts)
    peak = float(np.abs(signal).max())
    if peak > 0:
        signal *= 0.5 * 32767 / peak  # -6 dBFS peak: loud and clear, never clipping
    return Speech(text, signal.astype("<i2").tobytes(), tuple(timings))
