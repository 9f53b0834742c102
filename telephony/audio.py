"""Phone-path audio: G.711 μ-law codecs and the two streaming converters of a call.

Twilio Media Streams carry 8 kHz G.711 μ-law (160 bytes per 20 ms); Gemini Live takes
16 kHz and returns 24 kHz PCM16 (little-endian, mono).  The converters here sit between
them:

* :class:`CallerToModel` - μ-law 8 kHz -> PCM16 16 kHz (for the model's input).
* :class:`ModelToCaller` - PCM16 24 kHz -> μ-law 8 kHz (for the caller's ear).

Both stream (state carried across calls: click-free, exact sample counts, every
20 ms in gives exactly 20 ms out), add a few milliseconds of delay (3.19 ms up,
1.875 ms down) and cost well under 25 µs per 20 ms frame.  Call ``reset()`` on
barge-in.

Why the filter bands: telephone speech occupies 300-3400 Hz, which must pass flat.
The two directions differ in what lies above it:

* Down (24 k -> 8 k): everything above 4 kHz folds back.  A stopband from 4.6 kHz
  (rather than 4.0) lets only 4.0-4.6 kHz fold, and it lands in 3.4-4.0 kHz, outside
  the speech band and removed by the phone network's own band limiting.  That wide
  transition band keeps the filter short (91 taps, 1.875 ms).
* Up (8 k -> 16 k): the caller's 8 kHz signal may carry content (and μ-law noise) right
  up to 4 kHz, and its images start just above 4 kHz.  A stopband from 4.6 kHz let the
  images of 3.4-4 kHz through at 4-4.6 kHz, which the model hears as a harsh, buzzy top
  (PESQ-WB 4.19 vs 4.50 for an ideal resampler on full-band speech, bench/quality.py).
  The uplink filter stops from 4.1 kHz instead (103 taps, 3.19 ms), which brings it
  within 0.02 of the ideal; stopping at exactly 4.0 kHz measured no better and costs
  taps.

Two offline helpers serve a caller simulator that plays WAV files:
:func:`pcm16_to_ulaw_8k` (any rate -> 8 kHz μ-law) and :func:`ulaw_8k_to_pcm16`.

All PCM here is int16 little-endian mono; the module assumes a little-endian host
(``audioop`` works in native byte order).
"""

from __future__ import annotations

import sys
from typing import Final

import numpy as np

from agent.g711 import audioop
from agent.live_wire import INPUT_RATE, OUTPUT_RATE
from agent.pcm import StreamResampler, resample
from telephony.twilio.media_stream import SAMPLE_RATE

# ``audioop`` is the G.711 reference (CPython's C code, ~0.3 µs per frame, about 3x
# faster than a numpy lookup table at this size); see ``agent.g711``.

if sys.byteorder != "little":  # pragma: no cover - every supported platform is LE
    raise ImportError("telephony.audio assumes a little-endian host (audioop is native-order)")

__all__ = [
    "ATTENUATION_DB",
    "MODEL_IN_RATE",
    "MODEL_OUT_RATE",
    "PHONE_PASSBAND_HZ",
    "PHONE_RATE",
    "PHONE_STOPBAND_HZ",
    "UPLINK_STOPBAND_HZ",
    "CallerToModel",
    "ModelToCaller",
    "pcm16_to_ulaw_8k",
    "phone_resampler",
    "phone_stopband_hz",
    "ulaw_8k_to_pcm16",
    "ulaw_decode",
    "ulaw_encode",
]

#: The rates, each defined once: Twilio's (8 kHz μ-law) and the Live API's (16 k in, 24 k out).
PHONE_RATE: Final = SAMPLE_RATE
MODEL_IN_RATE: Final = INPUT_RATE  # what Gemini Live expects from us
MODEL_OUT_RATE: Final = OUTPUT_RATE  # what Gemini Live sends
PHONE_PASSBAND_HZ: Final = 3400.0
PHONE_STOPBAND_HZ: Final = 4600.0  # 24 k -> 8 k (and offline -> 8 k): see the module doc
UPLINK_STOPBAND_HZ: Final = 4100.0  # 8 k -> 16 k: images of 3.4-4 kHz start above 4 kHz
# 70 dB design target; the μ-law step itself sits ~38 dB under a loud signal, so the
# filter is never the weakest link (measured worst alias/image: see bench/codec.py).
ATTENUATION_DB: Final = 70.0


def ulaw_decode(ulaw: bytes | bytearray | memoryview) -> bytes:
    """G.711 μ-law bytes -> PCM16 LE (2 bytes per input byte), bit-exact to audioop."""
    return audioop.ulaw2lin(ulaw, 2)


def ulaw_encode(pcm: bytes | bytearray | memoryview) -> bytes:
    """PCM16 LE -> G.711 μ-law (1 byte per sample), bit-exact to audioop.

    Raises ``ValueError`` on an odd byte count (not whole samples).
    """
    if len(pcm) & 1:
        raise ValueError(f"PCM16 needs an even byte count, got {len(pcm)}")
    return audioop.lin2ulaw(pcm, 2)


def phone_stopband_hz(in_rate: int, out_rate: int) -> float:
    """The stopband for a conversion: 4.1 kHz up from the phone rate, else 4.6 kHz."""
    return UPLINK_STOPBAND_HZ if in_rate == PHONE_RATE < out_rate else PHONE_STOPBAND_HZ


def phone_resampler(in_rate: int, out_rate: int) -> StreamResampler:
    """A streaming resampler with the phone band's filter (3.4 kHz pass; stop 4.1 kHz up
    from 8 kHz, 4.6 kHz otherwise, see the module doc)."""
    return StreamResampler(
        in_rate,
        out_rate,
        passband_hz=PHONE_PASSBAND_HZ,
        stopband_hz=phone_stopband_hz(in_rate, out_rate),
        attenuation_db=ATTENUATION_DB,
    )


class CallerToModel:
    """Caller audio for the model: 8 kHz μ-law -> 16 kHz PCM16 LE, streaming.

    Each call returns exactly twice as many samples as μ-law bytes given (320 samples,
    640 bytes, per 20 ms frame).  Images of the 0-3.9 kHz band (4.1-8 kHz at 16 kHz)
    are filtered out; the result is delayed by :attr:`delay_ms` (3.19 ms).
    """

    def __init__(self) -> None:
        self._rs = phone_resampler(PHONE_RATE, MODEL_IN_RATE)

    @property
    def delay_ms(self) -> float:
        """Delay added by the conversion, in milliseconds."""
        return self._rs.delay_ms

    def process(self, ulaw: bytes | bytearray | memoryview) -> bytes:
        """Convert one chunk of μ-law bytes (any length, including 0)."""
        return self._rs.process(audioop.ulaw2lin(ulaw, 2))

    def reset(self) -> None:
        """Drop filter history (start of a new stream)."""
        self._rs.reset()


class ModelToCaller:
    """Model audio for the caller: 24 kHz PCM16 LE -> 8 kHz μ-law, streaming.

    After ``N`` input samples in total, exactly ``N // 3`` μ-law bytes have been
    returned (160 per 20 ms frame, from the first call).  Everything from 4.6 to
    12 kHz is removed before decimation so it cannot alias into the phone band.
    An odd byte count is tolerated: the dangling byte is carried into the next call.
    """

    def __init__(self) -> None:
        self._rs = phone_resampler(MODEL_OUT_RATE, PHONE_RATE)

    @property
    def delay_ms(self) -> float:
        """Delay added by the conversion, in milliseconds."""
        return self._rs.delay_ms

    def process(self, pcm24k: bytes | bytearray | memoryview) -> bytes:
        """Convert one chunk of 24 kHz PCM16 LE (any length) to 8 kHz μ-law."""
        return audioop.lin2ulaw(self._rs.process(pcm24k), 2)

    def flush(self) -> bytes:
        """End of a turn: emit what is still inside the filter (~3.7 ms), then reset.

        Optional: without it the tail simply comes out with the next turn's first frame.
        """
        return audioop.lin2ulaw(self._rs.flush(), 2)

    def reset(self) -> None:
        """Barge-in: drop history and any carried byte so stale audio never leaks."""
        self._rs.reset()


def pcm16_to_ulaw_8k(pcm: bytes | bytearray | memoryview, rate: int) -> bytes:
    """Offline: mono PCM16 LE at ``rate`` Hz -> 8 kHz μ-law, as a caller would send it.

    Output length is exactly ``floor(samples * 8000 / rate)`` bytes, time-aligned with
    the input (filter delay removed).  Rates above 8 kHz use the phone bands (flat to
    3.4 kHz, stopband from 4.6 kHz); rates below 8 kHz use the resampler's default band
    for their own Nyquist rate; 8 kHz is a plain encode.
    """
    if len(pcm) & 1:
        raise ValueError(f"PCM16 needs an even byte count, got {len(pcm)}")
    if rate == PHONE_RATE:
        return audioop.lin2ulaw(pcm, 2)
    x = np.frombuffer(pcm, dtype="<i2").astype(np.int16, copy=False)
    if rate > PHONE_RATE:
        y = resample(
            x,
            rate,
            PHONE_RATE,
            passband_hz=PHONE_PASSBAND_HZ,
            stopband_hz=PHONE_STOPBAND_HZ,
            attenuation_db=ATTENUATION_DB,
        )
    else:
        y = resample(x, rate, PHONE_RATE, attenuation_db=ATTENUATION_DB)
    return audioop.lin2ulaw(y.tobytes(), 2)


def ulaw_8k_to_pcm16(ulaw: bytes | bytearray | memoryview) -> bytes:
    """8 kHz μ-law (what the caller hears) -> 8 kHz PCM16 LE, e.g. for writing a WAV."""
    return audioop.ulaw2lin(ulaw, 2)
