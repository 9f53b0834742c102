"""Unit tests of the phone-path codecs and converters (telephony.audio)."""

from __future__ import annotations

import math
import warnings

import numpy as np
import pytest
from numpy.typing import NDArray

from agent.pcm import StreamResampler
from telephony.audio import (
    PHONE_PASSBAND_HZ,
    PHONE_STOPBAND_HZ,
    UPLINK_STOPBAND_HZ,
    CallerToModel,
    ModelToCaller,
    pcm16_to_ulaw_8k,
    ulaw_8k_to_pcm16,
    ulaw_decode,
    ulaw_encode,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

F64 = NDArray[np.float64]
AMP = 16384.0  # -6 dBFS test tones
ULAW_SILENCE = 0xFF  # μ-law code of PCM 0


# -- an independent G.711 μ-law reference (the ITU algorithm, vectorised) --------------


def _g711_decode(codes: NDArray[np.int64]) -> NDArray[np.int64]:
    u = ~codes & 0xFF
    t = (((u & 0x0F) << 3) + 0x84) << ((u >> 4) & 0x07)
    return np.where((u & 0x80) != 0, 0x84 - t, t - 0x84).astype(np.int64)


def _g711_encode(pcm: NDArray[np.int64]) -> NDArray[np.int64]:
    v = pcm >> 2  # 16 -> 14 bits (arithmetic shift: -1 stays -1)
    mask = np.where(v < 0, 0x7F, 0xFF)
    mag = np.minimum(np.abs(v), 8159) + 0x21  # clip, add the bias (0x84 >> 2)
    seg = np.searchsorted(np.array([0x3F, 0x7F, 0xFF, 0x1FF, 0x3FF, 0x7FF, 0xFFF, 0x1FFF]), mag)
    code = (seg << 4) | ((mag >> (seg + 1)) & 0x0F)
    return (np.where(seg >= 8, 0x7F, code) ^ mask).astype(np.int64)


def test_ulaw_decode_all_256_codes_bit_exact() -> None:
    codes = bytes(range(256))
    got = np.frombuffer(ulaw_decode(codes), dtype="<i2")
    assert ulaw_decode(codes) == audioop.ulaw2lin(codes, 2)
    assert np.array_equal(got, _g711_decode(np.arange(256, dtype=np.int64)))
    assert ulaw_8k_to_pcm16(codes) == ulaw_decode(codes)


def test_ulaw_encode_all_65536_values_bit_exact() -> None:
    values = np.arange(-32768, 32768, dtype=np.int64)
    pcm = values.astype("<i2").tobytes()
    got = ulaw_encode(pcm)
    assert got == audioop.lin2ulaw(pcm, 2)
    assert np.array_equal(np.frombuffer(got, dtype=np.uint8), _g711_encode(values))


def test_ulaw_encode_rejects_odd_byte_count() -> None:
    with pytest.raises(ValueError):
        ulaw_encode(b"\x00\x01\x02")


# -- spectra ---------------------------------------------------------------------------


def _blackman_harris(n: int) -> F64:
    k = np.arange(n) * (2.0 * np.pi / n)
    w: F64 = 0.35875 - 0.48829 * np.cos(k) + 0.14128 * np.cos(2 * k) - 0.01168 * np.cos(3 * k)
    return w


def _amplitudes(seg: F64) -> F64:
    """One-sided amplitude spectrum; DC and Nyquist projected out before windowing."""
    alt = np.where(np.arange(seg.shape[0]) % 2 == 0, 1.0, -1.0)
    dc, nyq = float(seg.mean()), float((seg * alt).mean())
    w = _blackman_harris(seg.shape[0])
    spec: F64 = np.abs(np.fft.rfft((seg - dc - nyq * alt) * w)) * (2.0 / w.sum())
    spec[0], spec[-1] = abs(dc), abs(nyq)
    return spec


def _db(ratio: float) -> float:
    return 20.0 * math.log10(max(ratio, 1e-12))


def _cos(freq: float, rate: int, n: int, amp: float = AMP) -> F64:
    x: F64 = amp * np.cos(2 * np.pi * freq * np.arange(n) / rate)
    return x


def _pcm(x: F64) -> bytes:
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


def _up(freq: float, seconds: float) -> F64:
    """Stream a μ-law tone through CallerToModel in 20 ms frames; 16 kHz float out."""
    ulaw = audioop.lin2ulaw(_pcm(_cos(freq, 8000, int(8000 * seconds))), 2)
    conv = CallerToModel()
    out = b"".join(conv.process(ulaw[i : i + 160]) for i in range(0, len(ulaw), 160))
    return np.frombuffer(out, dtype="<i2").astype(np.float64)


def _down(freq: float, seconds: float) -> F64:
    """Stream a 24 kHz tone through ModelToCaller in 20 ms frames; decoded 8 kHz out."""
    pcm = _pcm(_cos(freq, 24000, int(24000 * seconds)))
    conv = ModelToCaller()
    out = b"".join(conv.process(pcm[i : i + 960]) for i in range(0, len(pcm), 960))
    return np.frombuffer(audioop.ulaw2lin(out, 2), dtype="<i2").astype(np.float64)


# -- quality (spec: >= 40 dB rejection, +-0.5 dB passband; the design gives ~70 dB) -----


def test_model_to_caller_rejects_every_tone_from_4k6_to_12k() -> None:
    worst = -999.0
    for f in range(4600, 12001, 100):
        y = _down(float(f), 0.32)
        seg = y[400:2400]  # skip warm-up; 0.25 s, 4 Hz bins: every 100 Hz tone on a bin
        worst = max(worst, _db(_amplitudes(seg).max() / AMP))  # all of 0-4 kHz, DC included
    assert worst < -60.0, worst


def test_caller_to_model_rejects_images_above_4k1() -> None:
    # Tones up to 3.9 kHz: their images (8 kHz - f) start at the uplink's 4.1 kHz stopband.
    worst = -999.0
    for f in range(300, 3901, 100):
        y = _up(float(f), 0.32)
        spec = _amplitudes(y[800:4800])  # 4 Hz bins
        worst = max(worst, _db(spec[int(UPLINK_STOPBAND_HZ) // 4 :].max() / AMP))
    assert worst < -60.0, worst


# Odd frequencies (302 Hz, not 300): a tone that repeats every few samples gets a
# periodic μ-law rounding error that shifts its own level by up to 0.25 dB.
PASSBAND_TONES = [*(f + 2 for f in range(300, 3400, 100)), 3398]


def test_caller_to_model_passband_flat() -> None:
    for f in PASSBAND_TONES:
        spec = _amplitudes(_up(float(f), 0.6)[1600:9600])  # 0.5 s, 2 Hz bins
        assert abs(_db(spec[f // 2] / AMP)) < 0.5, f


def test_model_to_caller_passband_flat() -> None:
    for f in PASSBAND_TONES:
        spec = _amplitudes(_down(float(f), 0.6)[800:4800])
        assert abs(_db(spec[f // 2] / AMP)) < 0.5, f


def test_one_khz_tone_keeps_frequency_and_duration() -> None:
    y = _down(1000.0, 1.0)
    assert y.shape[0] == 8000  # 1 s in, 1 s out
    spec = _amplitudes(y[800:4800])
    assert int(np.argmax(spec)) * 2 == 1000 and abs(_db(spec[500] / AMP)) < 0.2
    y = _up(1000.0, 1.0)
    assert y.shape[0] == 16000
    spec = _amplitudes(y[1600:9600])
    assert int(np.argmax(spec)) * 2 == 1000 and abs(_db(spec[500] / AMP)) < 0.2


def test_delay_small() -> None:
    # Budget 5 ms per direction; the designs give 3.19 ms up and 1.875 ms down.
    assert 0.0 < CallerToModel().delay_ms <= 3.5
    assert 0.0 < ModelToCaller().delay_ms <= 2.0
    # measured: a click comes out centred delay_ms later (8k -> 16k, 2 output samples/input)
    conv = CallerToModel()
    click = np.zeros(160)
    click[40] = 30000.0
    y = np.frombuffer(conv.process(audioop.lin2ulaw(_pcm(click), 2)), dtype="<i2")
    peak = int(np.argmax(np.abs(y)))
    assert (peak - 80) / 16.0 == pytest.approx(conv.delay_ms, abs=1 / 16)


# -- framing -------------------------------------------------------------------------


def test_every_20ms_frame_gives_20ms_from_the_first_call() -> None:
    rng = np.random.default_rng(0)
    up, down = CallerToModel(), ModelToCaller()
    for _ in range(100):
        ulaw = audioop.lin2ulaw(_pcm(rng.normal(0, 4000, 160)), 2)
        assert len(up.process(ulaw)) == 640
        assert len(down.process(_pcm(rng.normal(0, 4000, 480)))) == 160


def test_random_chunks_exact_counts_and_same_bytes() -> None:
    rng = np.random.default_rng(1)
    pcm = _pcm(rng.normal(0, 6000, 24000))
    whole = ModelToCaller().process(pcm)
    assert len(whole) == 8000
    conv, out, pos = ModelToCaller(), [], 0
    while pos < len(pcm):
        n = int(rng.integers(0, 1500))  # odd byte counts included: the odd byte is carried
        out.append(conv.process(pcm[pos : pos + n]))
        pos = min(pos + n, len(pcm))
        assert sum(map(len, out)) == (pos // 2) // 3
    assert b"".join(out) == whole

    ulaw = audioop.lin2ulaw(pcm[:16000], 2)
    whole = CallerToModel().process(ulaw)
    up, out, pos = CallerToModel(), [], 0
    while pos < len(ulaw):
        n = int(rng.integers(0, 500))
        out.append(up.process(ulaw[pos : pos + n]))
        pos = min(pos + n, len(ulaw))
        assert sum(map(len, out)) == 4 * pos
    assert b"".join(out) == whole


def test_reset_drops_history_and_carried_byte() -> None:
    down = ModelToCaller()
    down.process(_pcm(_cos(1000.0, 24000, 4801, amp=30000.0)) + b"\x7f")  # odd: carries a byte
    down.reset()
    assert down.process(bytes(960)) == bytes([ULAW_SILENCE]) * 160  # no stale audio
    up = CallerToModel()
    up.process(audioop.lin2ulaw(_pcm(_cos(1000.0, 8000, 1601, amp=30000.0)), 2))
    up.reset()
    assert up.process(bytes([ULAW_SILENCE]) * 160) == bytes(640)


def test_flush_emits_the_tail() -> None:
    down = ModelToCaller()
    down.process(_pcm(_cos(1000.0, 24000, 960)))
    tail = down.flush()
    assert 0 < len(tail) <= math.ceil(2 * down.delay_ms * 8) + 1
    assert any(b != ULAW_SILENCE for b in tail)
    assert down.process(bytes(960)) == bytes([ULAW_SILENCE]) * 160  # flush also resets


def test_full_scale_square_wave_does_not_wrap() -> None:
    n = 24000 // 4
    square = np.where((np.arange(n) // 48) % 2 == 0, 32767, -32768).astype(np.int16)  # 250 Hz
    out = ModelToCaller().process(square.astype("<i2").tobytes())
    y = np.frombuffer(audioop.ulaw2lin(out, 2), dtype="<i2")
    # float reference of the same filter: the sampled edges overshoot int16 by ~2 %
    taps = StreamResampler(
        24000, 8000, passband_hz=PHONE_PASSBAND_HZ, stopband_hz=PHONE_STOPBAND_HZ
    ).taps
    ref = np.convolve(square.astype(np.float64), taps)[:n:3]
    assert ref.max() > 33000 and ref.min() < -33000
    # overshoot saturates at the loudest μ-law level instead of wrapping to the other sign
    assert np.all(y[ref > 32767.5] == 32124) and np.all(y[ref < -32768.5] == -32124)
    loud = np.abs(ref) > 1000
    assert np.array_equal(np.sign(y[loud]), np.sign(ref[loud]))


# -- offline helpers ---------------------------------------------------------------------


@pytest.mark.parametrize("rate", [44100, 48000, 16000, 24000, 11025, 8000, 6000])
def test_pcm16_to_ulaw_8k_any_rate(rate: int) -> None:
    n = rate // 2 + 3
    ulaw = pcm16_to_ulaw_8k(_pcm(_cos(1000.0, rate, n)), rate)
    assert len(ulaw) == n * 8000 // rate
    y = np.frombuffer(ulaw_8k_to_pcm16(ulaw), dtype="<i2").astype(np.float64)
    spec = _amplitudes(y[400:3600])  # 2.5 Hz bins
    assert abs(int(np.argmax(spec)) * 2.5 - 1000.0) < 1.0
    assert abs(_db(spec[400] / AMP)) < 0.3
