"""Unit tests of the pure streaming resampler (agent.pcm)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from numpy.typing import NDArray

from agent.pcm import StreamResampler, resample

F64 = NDArray[np.float64]

PHONE = {"passband_hz": 3400.0, "stopband_hz": 4600.0}
# The uplink (8 k -> 16 k) stops from 4.1 kHz: images of 3.4-4 kHz start just above 4 kHz.
UPLINK = {"passband_hz": 3400.0, "stopband_hz": 4100.0}


def _bands(in_rate: int, out_rate: int) -> dict[str, float]:
    return UPLINK if (in_rate, out_rate) == (8000, 16000) else PHONE


# (in_rate, out_rate, band kwargs): the two hot telephony paths plus odd ratios.
RATE_CASES = [
    (8000, 16000, UPLINK),
    (24000, 8000, PHONE),
    (16000, 24000, {}),
    (16000, 8000, {}),
    (48000, 8000, PHONE),
    (44100, 8000, PHONE),
    (11025, 8000, {}),
    (8000, 11025, {}),
    (8000, 8000, {}),
]


def _ids(case: tuple[int, int, dict[str, float]]) -> str:
    return f"{case[0]}->{case[1]}"


def _noise(n: int, seed: int = 0, scale: float = 8000.0) -> NDArray[np.int16]:
    rng = np.random.default_rng(seed)
    return np.clip(np.rint(rng.normal(0.0, scale, n)), -32768, 32767).astype(np.int16)


def _tone(freq: float, rate: int, n: int, amp: float = 16384.0) -> NDArray[np.int16]:
    t = np.arange(n) / rate
    return np.rint(amp * np.cos(2 * np.pi * freq * t)).astype(np.int16)


def _blackman_harris(n: int) -> F64:
    k = np.arange(n) * (2.0 * np.pi / n)
    w: F64 = 0.35875 - 0.48829 * np.cos(k) + 0.14128 * np.cos(2 * k) - 0.01168 * np.cos(3 * k)
    return w


def _amplitudes(seg: F64) -> F64:
    """One-sided amplitude spectrum (a sine of amplitude A on a bin reads A).

    DC and Nyquist are projected out first so their window leakage is not doubled.
    """
    alt = np.where(np.arange(seg.shape[0]) % 2 == 0, 1.0, -1.0)
    dc, nyq = float(seg.mean()), float((seg * alt).mean())
    w = _blackman_harris(seg.shape[0])
    spec: F64 = np.abs(np.fft.rfft((seg - dc - nyq * alt) * w)) * (2.0 / w.sum())
    spec[0], spec[-1] = abs(dc), abs(nyq)
    return spec


def _db(ratio: float) -> float:
    return 20.0 * math.log10(max(ratio, 1e-12))


def _random_chunks(x: NDArray[np.int16], seed: int) -> list[NDArray[np.int16]]:
    """Chunks of sizes 0, 1, odd, primes and one huge chunk (forces buffer growth)."""
    rng = np.random.default_rng(seed)
    out, pos = [], 0
    sizes = [0, 1, 1, 2, 3, 0, 7, 441, 13, 160, 479, 481, 5000]
    while pos < x.shape[0]:
        n = sizes.pop(0) if sizes else int(rng.integers(0, 700))
        out.append(x[pos : pos + n])
        pos += n
    return out


# -- counts and chunking --------------------------------------------------------------


@pytest.mark.parametrize("case", RATE_CASES, ids=_ids)
def test_exact_counts_and_chunking_invariance(case: tuple[int, int, dict[str, float]]) -> None:
    in_rate, out_rate, bands = case
    x = _noise(12000, seed=in_rate)
    whole = StreamResampler(in_rate, out_rate, **bands).process_array(x)
    g = math.gcd(in_rate, out_rate)
    up, down = out_rate // g, in_rate // g
    assert whole.shape[0] == x.shape[0] * up // down

    for seed in range(3):
        rs = StreamResampler(in_rate, out_rate, **bands)
        parts, total_in, total_out = [], 0, 0
        for chunk in _random_chunks(x, seed):
            y = rs.process_array(chunk)
            total_in += chunk.shape[0]
            total_out += y.shape[0]
            assert total_out == total_in * up // down  # never drifts, after every call
            parts.append(y)
        assert np.array_equal(np.concatenate(parts), whole)


def test_model_chunks_of_any_size_share_a_few_plans(monkeypatch: pytest.MonkeyPatch) -> None:
    """The model's audio comes in chunks of any size: the strided views are built for a
    handful of rounded sizes, not once per chunk, and the output is still exact."""
    built: list[tuple[int, int, int]] = []
    make_plan = StreamResampler._make_plan

    def counting(self: StreamResampler, *key: int) -> object:
        built.append(key)
        return make_plan(self, *key)

    monkeypatch.setattr(StreamResampler, "_make_plan", counting)
    x = _noise(24000 * 8, seed=7)
    rng = np.random.default_rng(8)
    sizes = [int(n) for n in rng.integers(480, 2881, 400)]  # 20-120 ms at 24 kHz
    rs = StreamResampler(24000, 8000, **PHONE)
    parts, pos = [], 0
    for n in sizes:
        parts.append(rs.process_array(x[pos : pos + n]))
        pos += n
    # 160-960 outputs, rounded up to multiples of 32: 26 sizes, and a few more while the
    # buffers first grow (one plan per exact size would be ~400).
    assert len(built) <= 40, len(built)
    whole = StreamResampler(24000, 8000, **PHONE).process_array(x[:pos])
    assert np.array_equal(np.concatenate(parts), whole)


@pytest.mark.parametrize("case", RATE_CASES[:3], ids=_ids)
def test_bytes_api_with_odd_byte_counts(case: tuple[int, int, dict[str, float]]) -> None:
    in_rate, out_rate, bands = case
    x = _noise(3000, seed=1)
    whole = StreamResampler(in_rate, out_rate, **bands).process_array(x).astype("<i2").tobytes()
    data = x.astype("<i2").tobytes()
    rs = StreamResampler(in_rate, out_rate, **bands)
    rng = np.random.default_rng(2)
    out, pos = [], 0
    while pos < len(data):
        n = int(rng.integers(0, 301))  # odd and even byte counts: samples split in two
        out.append(rs.process(data[pos : pos + n]))
        pos += n
    assert b"".join(out) == whole


def test_hot_paths_20ms_frames_give_20ms_from_first_call() -> None:
    up = StreamResampler(8000, 16000, **UPLINK)
    down = StreamResampler(24000, 8000, **PHONE)
    for i in range(50):
        assert up.process_array(_noise(160, seed=i)).shape[0] == 320
        assert down.process_array(_noise(480, seed=i)).shape[0] == 160


# -- signal integrity ------------------------------------------------------------------


def _float_reference(rs: StreamResampler, x: NDArray[np.int16]) -> F64:
    """Straightforward zero-stuff, convolve, decimate, in float64 (no rounding)."""
    up, down = rs.ratio
    u = np.zeros(x.shape[0] * up)
    u[::up] = x
    full = np.convolve(u, rs.taps)[: u.shape[0]]
    return full[::down][: x.shape[0] * up // down]


@pytest.mark.parametrize("case", RATE_CASES[:5], ids=_ids)  # cheap float references
def test_full_scale_square_wave_clips_instead_of_wrapping(
    case: tuple[int, int, dict[str, float]],
) -> None:
    in_rate, out_rate, bands = case
    n = in_rate // 5
    period = in_rate // 250  # 250 Hz square wave: Gibbs overshoot of ~9 % at each edge
    x = np.where((np.arange(n) // (period // 2)) % 2 == 0, 32767, -32768).astype(np.int16)
    rs = StreamResampler(in_rate, out_rate, **bands)
    y = np.concatenate([rs.process_array(c) for c in _random_chunks(x, 5)])
    ref = _float_reference(StreamResampler(in_rate, out_rate, **bands), x)
    assert ref.max() > 32767.5 and ref.min() < -32768.5  # the test really overshoots
    # round, then clip: bit-exact against the float reference
    assert np.array_equal(y, np.clip(np.rint(ref), -32768, 32767).astype(np.int16))
    assert np.all(y[ref > 30000] > 0) and np.all(y[ref < -30000] < 0)  # no sign flips


@pytest.mark.parametrize("case", RATE_CASES[:2], ids=_ids)
def test_block_plans_and_strided_plans_give_the_same_samples(
    case: tuple[int, int, dict[str, float]],
) -> None:
    """The hot pairs compute with block-Toeplitz plans; the general strided plans, the
    float reference and they agree sample for sample, in any chunking."""
    in_rate, out_rate, bands = case
    x = _noise(20000, seed=4, scale=12000.0)
    blocked = StreamResampler(in_rate, out_rate, **bands)
    strided = StreamResampler(in_rate, out_rate, **bands)
    assert blocked._blocks is not None
    strided._blocks = None  # the path taken by large factors (44.1 k -> 8 k)
    a = np.concatenate([blocked.process_array(c) for c in _random_chunks(x, 2)])
    b = np.concatenate([strided.process_array(c) for c in _random_chunks(x, 3)])
    ref = _float_reference(StreamResampler(in_rate, out_rate, **bands), x)
    assert np.array_equal(a, b)
    assert np.array_equal(a, np.clip(np.rint(ref), -32768, 32767).astype(np.int16))


def test_max_amplitude_noise_never_wraps() -> None:
    rng = np.random.default_rng(9)
    x = rng.choice(np.array([-32768, 32767], dtype=np.int16), 24000)  # worst-case overshoot
    rs = StreamResampler(24000, 8000, **PHONE)
    y = rs.process_array(x).astype(np.float64)
    ref = _float_reference(StreamResampler(24000, 8000, **PHONE), x)
    assert np.abs(ref).max() > 40000
    assert np.array_equal(y, np.clip(np.rint(ref), -32768, 32767))


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (24000, 8000), (44100, 8000)])
def test_one_khz_tone_arrives_at_one_khz(in_rate: int, out_rate: int) -> None:
    rs = StreamResampler(in_rate, out_rate, **PHONE)
    x = _tone(1000.0, in_rate, in_rate)  # 1 s
    y = np.concatenate([rs.process_array(x[i : i + 320]) for i in range(0, in_rate, 320)])
    assert y.shape[0] == out_rate  # 1 s out
    seg = y[out_rate // 10 : out_rate // 10 + out_rate // 2].astype(np.float64)  # 2 Hz bins
    spec = _amplitudes(seg)
    assert int(np.argmax(spec)) * 2 == 1000
    assert abs(_db(spec[500] / 16384.0)) < 0.1


def test_resample_offline_44k1_to_8k_length_and_frequency() -> None:
    n = 44100 + 4321
    y = resample(_tone(1000.0, 44100, n), 44100, 8000, **PHONE)
    assert y.shape[0] == n * 80 // 441
    spec = _amplitudes(y[800 : 800 + 4000].astype(np.float64))  # 2 Hz bins
    assert int(np.argmax(spec)) * 2 == 1000
    assert abs(_db(spec[500] / 16384.0)) < 0.1


@pytest.mark.parametrize(
    ("in_rate", "out_rate"), [(44100, 8000), (24000, 8000), (8000, 16000), (16000, 24000)]
)
def test_resample_offline_removes_the_delay_exactly(in_rate: int, out_rate: int) -> None:
    n = in_rate // 2 + 7
    y = resample(_tone(1000.0, in_rate, n), in_rate, out_rate)
    assert y.shape[0] == n * out_rate // in_rate
    # output n is the 1 kHz cosine at time n / out_rate: in phase, not shifted
    expected = 16384.0 * np.cos(2 * np.pi * 1000.0 * np.arange(y.shape[0]) / out_rate)
    edge = out_rate // 100  # the signal starts and stops abruptly: skip 10 ms each side
    err = np.abs(y[edge:-edge] - expected[edge:-edge]).max()
    assert err < 16384.0 * 0.002  # a shift by 1/8 sample would already be ~0.1 here


def test_identity_is_a_passthrough() -> None:
    rs = StreamResampler(8000, 8000)
    x = _noise(1234)
    assert np.array_equal(rs.process_array(x), x)
    assert rs.process(x.tobytes()) == x.tobytes()
    assert rs.delay_ms == 0.0
    assert rs.flush() == b""


# -- quality of the designs -------------------------------------------------------------


def test_phone_bands_reject_aliases_and_images_by_60_db() -> None:
    # Spec is >= 40 dB; the 70 dB Kaiser design measures ~72 dB on int16 output.
    worst = -999.0
    for f in range(4600, 12001, 200):
        y = StreamResampler(24000, 8000, **PHONE).process_array(_tone(f, 24000, 7200))
        worst = max(worst, _db(_amplitudes(y[400:2400].astype(np.float64)).max() / 16384.0))
    assert worst < -60.0
    # Up: tones to 3.9 kHz, whose images (8 kHz - f) start at the 4.1 kHz stopband.
    worst = -999.0
    for f in range(300, 3901, 100):
        y = StreamResampler(8000, 16000, **UPLINK).process_array(_tone(f, 8000, 2400))
        spec = _amplitudes(y[800:4800].astype(np.float64))  # 4 Hz bins
        worst = max(worst, _db(spec[4100 // 4 :].max() / 16384.0))
    assert worst < -60.0


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (24000, 8000)])
def test_phone_passband_flat_within_half_db(in_rate: int, out_rate: int) -> None:
    for f in [*range(300, 3400, 100), 3400]:
        rs = StreamResampler(in_rate, out_rate, **_bands(in_rate, out_rate))
        y = rs.process_array(_tone(f, in_rate, in_rate))
        spec = _amplitudes(y[out_rate // 10 : out_rate // 10 + out_rate // 2].astype(np.float64))
        assert abs(_db(spec[f // 2] / 16384.0)) < 0.5, f


def test_default_band_16k_to_24k_passes_6k_and_removes_images() -> None:
    rs = StreamResampler(16000, 24000)  # default: flat to 6.8 kHz, stopband from 8 kHz
    y = rs.process_array(_tone(6000.0, 16000, 16000))
    spec = _amplitudes(y[2400:14400].astype(np.float64))  # 2 Hz bins
    assert abs(_db(spec[3000] / 16384.0)) < 0.1
    assert _db(spec[8000 // 2 :].max() / 16384.0) < -60.0  # image at 10 kHz gone


def _measured_delay_ms(in_rate: int, out_rate: int) -> float:
    """Group delay from the phase slope of periodic band-limited noise (0.3-3.4 kHz)."""
    p_in, p_out = in_rate // 4, out_rate // 4  # 0.25 s period, 4 Hz bins
    bins = np.arange(75, 851)
    rng = np.random.default_rng(4)
    coef = np.zeros(p_in // 2 + 1, dtype=np.complex128)
    coef[bins] = np.exp(2j * np.pi * rng.random(bins.shape[0]))
    x = np.fft.irfft(coef, n=p_in)
    x *= 6000.0 / x.std()
    rs = StreamResampler(in_rate, out_rate, **_bands(in_rate, out_rate))
    y = rs.process_array(np.rint(np.tile(x, 3)).astype(np.int16)).astype(np.float64)
    h = np.fft.rfft(y[2 * p_out : 3 * p_out])[bins] / np.fft.rfft(x)[bins]
    slope = np.polyfit(2 * np.pi * bins * 4.0, np.unwrap(np.angle(h)), 1)[0]
    return -1000.0 * float(slope)


@pytest.mark.parametrize(("in_rate", "out_rate"), [(8000, 16000), (24000, 8000)])
def test_delay_is_small_and_as_reported(in_rate: int, out_rate: int) -> None:
    rs = StreamResampler(in_rate, out_rate, **_bands(in_rate, out_rate))
    assert 0.0 < rs.delay_ms <= (3.5 if in_rate == 8000 else 2.0)  # 3.19 and 1.875 ms
    assert rs.delay_samples == pytest.approx(rs.delay_ms * out_rate / 1000.0)
    assert _measured_delay_ms(in_rate, out_rate) == pytest.approx(rs.delay_ms, abs=0.01)


# -- state handling ---------------------------------------------------------------------


@pytest.mark.parametrize("case", RATE_CASES[:3], ids=_ids)
def test_reset_really_clears_history(case: tuple[int, int, dict[str, float]]) -> None:
    in_rate, out_rate, bands = case
    rs = StreamResampler(in_rate, out_rate, **bands)
    rs.process_array(_noise(1001, scale=20000.0))  # loud, odd length: mid-phase
    rs.process(b"\x01")  # and a carried half sample
    rs.reset()
    silence = rs.process_array(np.zeros(480, dtype=np.int16))
    assert not silence.any()  # nothing of the old audio leaks out
    assert rs.process(b"") == b""  # the carried byte is gone too
    rs.reset()
    x = _noise(2000, seed=3)
    assert np.array_equal(
        rs.process_array(x), StreamResampler(in_rate, out_rate, **bands).process_array(x)
    )


@pytest.mark.parametrize("case", RATE_CASES[:4], ids=_ids)
def test_flush_emits_the_whole_tail_then_resets(case: tuple[int, int, dict[str, float]]) -> None:
    in_rate, out_rate, bands = case
    rs = StreamResampler(in_rate, out_rate, **bands)
    x = _tone(1000.0, in_rate, 4801)
    y = rs.process_array(x)
    tail = rs.flush_array()
    assert 0 < tail.shape[0] <= math.ceil(2 * rs.delay_samples) + 1
    # the tail is the stream continued with silence, and after it there is nothing left
    ref = StreamResampler(in_rate, out_rate, **bands).process_array(
        np.concatenate([x, np.zeros(4000, dtype=np.int16)])
    )
    assert np.array_equal(np.concatenate([y, tail]), ref[: y.shape[0] + tail.shape[0]])
    assert tail[-1] != 0 or tail[-2] != 0
    assert not ref[y.shape[0] + tail.shape[0] :].any()
    assert rs.flush_array().shape[0] == 0  # nothing fed since: nothing to flush
    assert not rs.process_array(np.zeros(300, dtype=np.int16)).any()  # reset after flush


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError):
        StreamResampler(0, 8000)
    with pytest.raises(ValueError):
        StreamResampler(24000, 8000, passband_hz=4000, stopband_hz=3000)
    with pytest.raises(ValueError):
        StreamResampler(8000, 16000, passband_hz=3400, stopband_hz=9000)  # > 8 kHz Nyquist
    with pytest.raises(TypeError):
        StreamResampler(8000, 16000).process_array(np.zeros(10, dtype=np.float32))
    with pytest.raises(TypeError):
        StreamResampler(8000, 16000).process_array(np.zeros((2, 10), dtype=np.int16))


def test_design_is_cached_between_instances() -> None:
    a = StreamResampler(24000, 8000, **PHONE)
    b = StreamResampler(24000, 8000, **PHONE)
    assert a.taps.shape == b.taps.shape and np.array_equal(a.taps, b.taps)
    assert a._design is b._design
