"""The soft "working on it" sound a caller hears while a slow tool runs.

Dead air is what callers hate most about voice agents that look things up: after about 700 ms
of silence people start asking "hello?". While the model waits for a blocking tool, the call
plays this loop: a quiet, low two-note pulse every 1.2 s (about -30 dBFS, well under speech
level, at the bottom of the phone band so μ-law keeps it clean), until the model speaks again.
It is made here once, at 8 kHz μ-law, and never goes to the model or into the transcript.
"""

from __future__ import annotations

from functools import cache
from typing import Final

import numpy as np

from agent.g711 import audioop
from telephony.twilio.media_stream import SAMPLE_RATE

__all__ = ["FILLER_CHUNK_BYTES", "FillerLoop", "filler_ulaw"]

#: One 100 ms chunk per send: small enough that the model's answer waits at most that long
#: behind it at Twilio.
FILLER_CHUNK_BYTES: Final = SAMPLE_RATE // 10
_PERIOD_S: Final = 1.2
_LEVEL_DBFS: Final = -30.0


@cache
def filler_ulaw() -> bytes:
    """One period of the loop, 8 kHz μ-law."""
    rate = SAMPLE_RATE
    out = np.zeros(round(_PERIOD_S * rate))
    amplitude = 32767 * 10 ** (_LEVEL_DBFS / 20)
    for start_s, freq in ((0.0, 392.0), (0.18, 523.0)):  # G4 then C5: a soft "hm-hm"
        n = round(0.14 * rate)
        t = np.arange(n) / rate
        # Raised-cosine envelope: no click at either end.
        envelope = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(n) / (n - 1))
        start = round(start_s * rate)
        out[start : start + n] += amplitude * envelope * np.sin(2 * np.pi * freq * t)
    pcm = np.clip(np.round(out), -32768, 32767).astype("<i2").tobytes()
    return audioop.lin2ulaw(pcm, 2)


class FillerLoop:
    """Hands out the loop in ``FILLER_CHUNK_BYTES`` chunks, continuing where it left off."""

    def __init__(self) -> None:
        self._sound = filler_ulaw()
        self._pos = 0

    def next_chunk(self) -> bytes:
        sound, pos, n = self._sound, self._pos, FILLER_CHUNK_BYTES
        chunk = sound[pos : pos + n]
        if len(chunk) < n:
            chunk += sound[: n - len(chunk)]
        self._pos = (pos + n) % len(sound)
        return chunk

    def restart(self) -> None:
        self._pos = 0
