"""Benchmark and quality report for the phone-path converters (telephony.audio).

Run ``python bench/codec.py`` (add ``--json`` for machine-readable figures, which also
carry the 99th-percentile frame time).

Both directions are streamed in 20 ms frames exactly as a call does.  Rows:
``polyphase`` = CallerToModel / ModelToCaller, μ-law step included; ``audioop.ratecv``
= the stdlib converter with its state carried across frames, μ-law included, for
comparison; ``polyphase PCM`` = the bare StreamResampler with PCM16 on both sides,
i.e. the filter's own figures without the codec.

* µs per 20 ms frame: median over many frames (``--frames``, default 20000).
* alias (24k -> 8k): tones 4.6-12 kHz in 100 Hz steps; the strongest component of the
  8 kHz output (0-4 kHz, DC included), relative to the input tone's amplitude.  With
  μ-law the figure bottoms out near -66 dB: a -72 dB residual is about 4 LSB, and the
  codec's smallest steps are 8 LSB apart, so it is rounded up.
* image (8k -> 16k): tones 0.3-3.9 kHz in 100 Hz steps; the strongest output component at
  or above the uplink stopband (4.1 kHz), where their images (8 kHz - f) land.
* passband: gain of tones 0.3-3.4 kHz, min..max in dB (target within +-0.5 dB).  The
  tones are 301, 401, ... 3301, 3399 Hz (see ``PASSBAND_TONES``).
* delay: group delay from the phase slope of a periodic band-limited noise (0.3-3.4 kHz)
  against an ideal zero-delay reference; SNR is the in-band error after removing that
  delay (the μ-law step alone limits it to ~38 dB).
* bursts: every 20 ms frame in must give exactly 20 ms out from the first frame on;
  random chunk sizes (1..2000 samples) must give exactly floor(N * L / M) in total.

Spectra are taken on steady-state output (filter warm-up skipped) with a 4-term
Blackman-Harris window; all test tones sit on FFT bins.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import pathlib
import statistics
import sys
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from telephony.audio import (
    MODEL_IN_RATE,
    MODEL_OUT_RATE,
    PHONE_RATE,
    UPLINK_STOPBAND_HZ,
    CallerToModel,
    ModelToCaller,
    phone_resampler,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

Frame = Callable[[bytes], bytes]
F64 = NDArray[np.float64]

PHONE, UP_OUT, DOWN_IN = PHONE_RATE, MODEL_IN_RATE, MODEL_OUT_RATE
AMP = 16384.0  # test tone amplitude (-6 dBFS)
SEG_S = 0.25  # analysis segment: 4 Hz bins, so 100 Hz tones fall on bins
WARM_S = 0.06  # skipped before the segment (filter warm-up)


# -- converters under test ------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """One direction of one converter, as a factory of per-frame callables."""

    make: Callable[[], Frame]
    up: bool  # 8k -> 16k (caller to model) or 24k -> 8k (model to caller)
    ulaw: bool  # True: the phone side is μ-law (the real path); False: PCM16 only

    @property
    def rates(self) -> tuple[int, int]:
        return (PHONE, UP_OUT) if self.up else (DOWN_IN, PHONE)

    @property
    def bytes_in(self) -> int:
        return 1 if self.up and self.ulaw else 2

    @property
    def bytes_out(self) -> int:
        return 1 if not self.up and self.ulaw else 2


def _phone_rs(in_rate: int, out_rate: int) -> Frame:
    return phone_resampler(in_rate, out_rate).process


def _ratecv(in_rate: int, out_rate: int, ulaw_in: bool, ulaw_out: bool) -> Frame:
    state: Any = None

    def run(data: bytes) -> bytes:
        nonlocal state
        pcm = audioop.ulaw2lin(data, 2) if ulaw_in else data
        out, state = audioop.ratecv(pcm, 2, 1, in_rate, out_rate, state)
        return audioop.lin2ulaw(out, 2) if ulaw_out else out

    return run


CONVERTERS: dict[str, tuple[Route, Route]] = {
    "polyphase": (
        Route(lambda: CallerToModel().process, up=True, ulaw=True),
        Route(lambda: ModelToCaller().process, up=False, ulaw=True),
    ),
    "audioop.ratecv": (
        Route(lambda: _ratecv(PHONE, UP_OUT, True, False), up=True, ulaw=True),
        Route(lambda: _ratecv(DOWN_IN, PHONE, False, True), up=False, ulaw=True),
    ),
    "polyphase PCM": (  # the bare resampler, no μ-law step: the filter's own figures
        Route(lambda: _phone_rs(PHONE, UP_OUT), up=True, ulaw=False),
        Route(lambda: _phone_rs(DOWN_IN, PHONE), up=False, ulaw=False),
    ),
}


# -- helpers ------------------------------------------------------------------------


def to_input(x: F64, route: Route) -> bytes:
    """Float signal -> the bytes a route consumes (μ-law on the phone side of up)."""
    pcm = np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()
    return audioop.lin2ulaw(pcm, 2) if route.bytes_in == 1 else pcm


def from_output(b: bytes, route: Route) -> F64:
    pcm = audioop.ulaw2lin(b, 2) if route.bytes_out == 1 else b
    return np.frombuffer(pcm, dtype="<i2").astype(np.float64)


def stream(route: Route, data: bytes) -> list[bytes]:
    """Feed ``data`` in 20 ms frames to a fresh converter; return each frame's output."""
    conv = route.make()
    step = route.rates[0] // 50 * route.bytes_in
    return [conv(data[i : i + step]) for i in range(0, len(data), step)]


def blackman_harris(n: int) -> F64:
    k = np.arange(n) * (2.0 * np.pi / n)
    w: F64 = 0.35875 - 0.48829 * np.cos(k) + 0.14128 * np.cos(2 * k) - 0.01168 * np.cos(3 * k)
    return w


def amplitude_spectrum(seg: F64) -> F64:
    """Peak amplitude per bin: a sine of amplitude A on a bin reads A.

    DC and Nyquist are measured by projection and removed before the windowed FFT:
    otherwise their window leakage into the neighbouring bins would be read with the
    factor 2 of a one-sided spectrum (DC would show up 2.7 dB too loud in bin 1).
    The segment length must be even.
    """
    alt = np.where(np.arange(seg.shape[0]) % 2 == 0, 1.0, -1.0)
    dc = float(seg.mean())
    nyq = float((seg * alt).mean())
    rest = seg - dc - nyq * alt
    w = blackman_harris(seg.shape[0])
    spec: F64 = np.abs(np.fft.rfft(rest * w)) * (2.0 / w.sum())
    spec[0] = abs(dc)
    spec[-1] = abs(nyq)
    return spec


def tone_run(route: Route, freq: float, seg_s: float = SEG_S) -> tuple[F64, float]:
    """Stream one tone; return the output amplitude spectrum and the bin width (Hz)."""
    in_rate, out_rate = route.rates
    n_frames = int(np.ceil((WARM_S + seg_s) / 0.02)) + 1
    t = np.arange(n_frames * in_rate // 50) / in_rate
    data = to_input(AMP * np.cos(2 * np.pi * freq * t), route)
    y = from_output(b"".join(stream(route, data)), route)
    start = int(WARM_S * out_rate)
    seg = y[start : start + int(seg_s * out_rate)]
    return amplitude_spectrum(seg), 1.0 / seg_s


def db(x: float) -> float:
    return float(20.0 * np.log10(max(x, 1e-12)))


# -- measurements -------------------------------------------------------------------


def worst_alias(route: Route) -> tuple[float, float]:
    """Strongest output component (dB re input) over tones 4.6-12 kHz, and its tone."""
    worst, worst_f = -999.0, 0.0
    for f in np.arange(4600.0, 12000.0 + 1, 100.0):
        spec, _ = tone_run(route, float(f))
        level = db(float(spec.max()) / AMP)
        if level > worst:
            worst, worst_f = level, float(f)
    return worst, worst_f


def worst_image(route: Route) -> tuple[float, float]:
    """Strongest output component >= 4.1 kHz (dB re input) over tones 0.3-3.9 kHz."""
    worst, worst_f = -999.0, 0.0
    for f in np.arange(300.0, 3900.0 + 1, 100.0):
        spec, df = tone_run(route, float(f))
        level = db(float(spec[int(np.ceil(UPLINK_STOPBAND_HZ / df)) :].max()) / AMP)
        if level > worst:
            worst, worst_f = level, float(f)
    return worst, worst_f


# 301, 401, ... 3301 and 3399 Hz rather than round numbers: a tone at e.g. 2000 Hz
# repeats every 4 samples at 8 kHz, so its μ-law rounding error is periodic too and
# moves the measured gain by up to +-0.25 dB, which is the codec, not the filter.  An
# odd frequency spreads the rounding error into broadband noise.
PASSBAND_TONES = [*(f + 1.0 for f in range(300, 3400, 100)), 3399.0]


def passband(route: Route) -> tuple[float, float]:
    """Min and max gain (dB) of tones across 0.3-3.4 kHz (1 s segments, 1 Hz bins)."""
    gains = []
    for f in PASSBAND_TONES:
        spec, df = tone_run(route, f, seg_s=1.0)
        gains.append(db(float(spec[round(f / df)]) / AMP))
    return min(gains), max(gains)


def delay_and_snr(route: Route) -> tuple[float, float]:
    """Group delay (ms) and in-band SNR (dB) against an ideal zero-delay resampler."""
    in_rate, out_rate = route.rates
    p_in, p_out = int(in_rate * SEG_S), int(out_rate * SEG_S)
    rng = np.random.default_rng(7)
    bins = np.arange(round(300 * SEG_S), round(3400 * SEG_S) + 1)
    coef = np.zeros(p_in // 2 + 1, dtype=np.complex128)
    coef[bins] = np.exp(2j * np.pi * rng.random(bins.shape[0]))
    x = np.fft.irfft(coef, n=p_in)
    x *= 0.2 * 32768 / np.sqrt(np.mean(x**2))  # -14 dBFS RMS, like loud speech
    ref_coef = np.zeros(p_out // 2 + 1, dtype=np.complex128)
    ref_coef[bins] = np.fft.rfft(x)[bins] * (p_out / p_in)
    periods = 4
    data = to_input(np.tile(x, periods), route)
    y = from_output(b"".join(stream(route, data)), route)
    seg = y[(periods - 1) * p_out : periods * p_out]  # steady state, one whole period
    yc = np.fft.rfft(seg)[bins]
    rc = ref_coef[bins]
    freqs = bins / SEG_S
    phase = np.unwrap(np.angle(yc / rc))
    slope, _ = np.polyfit(2 * np.pi * freqs, phase, 1)
    tau = -float(slope)
    err = yc - rc * np.exp(-2j * np.pi * freqs * tau)
    snr = 10 * np.log10(np.sum(np.abs(rc) ** 2) / np.sum(np.abs(err) ** 2))
    return 1000.0 * tau, float(snr)


def bursts(route: Route) -> tuple[bool, bool]:
    """(every 20 ms frame -> exactly 20 ms out, random chunks -> exact total count)."""
    in_rate, out_rate = route.rates
    bps_in, bps_out = route.bytes_in, route.bytes_out
    rng = np.random.default_rng(3)
    data = to_input(rng.normal(0, 3000, in_rate // 50 * 500), route)
    outs = stream(route, data)
    frames_ok = all(len(o) == (out_rate // 50) * bps_out for o in outs)
    conv = route.make()
    total_in = total_out = 0
    exact = True
    pos = 0
    while pos < len(data):
        n = int(rng.integers(1, 2000)) * bps_in
        chunk = data[pos : pos + n]
        pos += len(chunk)
        total_in += len(chunk) // bps_in
        total_out += len(conv(chunk)) // bps_out
        exact &= total_out == total_in * out_rate // in_rate
    return frames_ok, exact


def us_per_frame(route: Route, frames: int) -> tuple[float, float]:
    """(median, 99th percentile) µs per 20 ms frame, GC off, after a warm-up."""
    rng = np.random.default_rng(5)
    frame = to_input(rng.normal(0, 3000, route.rates[0] // 50), route)
    conv = route.make()
    for _ in range(200):
        conv(frame)
    times = []
    clock = time.perf_counter_ns
    gc_was = gc.isenabled()
    gc.disable()
    try:
        for _ in range(frames):
            t0 = clock()
            conv(frame)
            times.append(clock() - t0)
    finally:
        if gc_was:
            gc.enable()
    times.sort()
    return statistics.median(times) / 1000.0, times[int(0.99 * (len(times) - 1))] / 1000.0


def measure(frames: int) -> dict[str, dict[str, dict[str, Any]]]:
    results: dict[str, dict[str, dict[str, Any]]] = {}
    for name, routes in CONVERTERS.items():
        res: dict[str, dict[str, Any]] = {}
        for direction, route in zip(("up_8k_16k", "down_24k_8k"), routes, strict=True):
            up = route.up
            worst, at = worst_image(route) if up else worst_alias(route)
            lo, hi = passband(route)
            delay, snr = delay_and_snr(route)
            frames_ok, exact = bursts(route)
            median_us, p99_us = us_per_frame(route, frames)
            res[direction] = {
                "ulaw": route.ulaw,
                "us_per_frame": round(median_us, 2),
                "us_per_frame_p99": round(p99_us, 2),
                "worst_image_db" if up else "worst_alias_db": round(worst, 1),
                "worst_at_hz": at,
                "passband_min_db": round(lo, 3),
                "passband_max_db": round(hi, 3),
                "delay_ms": round(delay, 3),
                "snr_db": round(snr, 1),
                "every_frame_20ms": frames_ok,
                "exact_counts_random_chunks": exact,
            }
        results[name] = res
    return results


def print_table(results: dict[str, dict[str, dict[str, Any]]], frames: int) -> None:
    head = (
        f"{'converter':<15} {'direction':<12} {'us/frame':>8} {'alias/image':>12} "
        f"{'at Hz':>6} {'passband dB':>16} {'delay ms':>8} {'SNR dB':>6} {'20ms->20ms':>10} "
        f"{'exact N':>7}"
    )
    print(
        f"python {sys.version.split()[0]}, numpy {np.__version__}, {os.cpu_count()} cores; "
        f"20 ms frames; us/frame = median of {frames} frames"
    )
    print(head)
    print("-" * len(head))
    for name, res in results.items():
        for direction, r in res.items():
            worst = r.get("worst_alias_db", r.get("worst_image_db"))
            label = "8k->16k" if direction.startswith("up") else "24k->8k"
            kind = "img" if direction.startswith("up") else "alias"
            band = f"{r['passband_min_db']:+.2f}..{r['passband_max_db']:+.2f}"
            print(
                f"{name:<15} {label:<12} {r['us_per_frame']:>8.2f} "
                f"{f'{worst:.1f} {kind}':>12} {r['worst_at_hz']:>6.0f} {band:>16} "
                f"{r['delay_ms']:>8.3f} {r['snr_db']:>6.1f} "
                f"{'yes' if r['every_frame_20ms'] else 'NO':>10} "
                f"{'yes' if r['exact_counts_random_chunks'] else 'NO':>7}"
            )
    print(
        "alias: strongest 0-4 kHz output component for 24 kHz tones 4.6-12 kHz; image:"
        " strongest >= 4.1 kHz component\nfor 8 kHz tones 0.3-3.9 kHz; both dB re the input"
        " tone.  'polyphase' and 'audioop.ratecv' rows include the μ-law\nstep (as on a"
        " call); 'polyphase PCM' is the bare resampler (PCM16 both sides), i.e. the filter's"
        " own figures."
    )


def vad_us(frames: int) -> dict[str, float]:
    """µs per push of the call's VAD (agent.vad.EnergyVad, 16 kHz) for 20 and 100 ms blocks
    of noise at speech level."""
    from agent.vad import EnergyVad

    rng = np.random.default_rng(7)
    out: dict[str, float] = {}
    for ms in (20, 100):
        block = rng.normal(0, 3000, 16 * ms).astype("<i2").tobytes()
        vad = EnergyVad(16_000)
        for _ in range(200):
            vad.push(block)
        started = time.perf_counter()
        for _ in range(frames):
            vad.push(block)
        out[f"{ms}ms"] = (time.perf_counter() - started) / frames * 1e6
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--frames", type=int, default=20000, help="frames timed per direction")
    args = ap.parse_args(argv)
    results = measure(args.frames)
    vad = vad_us(args.frames)
    if args.json:
        print(json.dumps({**results, "vad_us_per_push": vad}, indent=2))
    else:
        print_table(results, args.frames)
        print(
            f"call VAD (EnergyVad, 16 kHz): {vad['20ms']:.2f} µs per 20 ms push, "
            f"{vad['100ms']:.2f} µs per 100 ms push"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
