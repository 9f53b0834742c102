"""Speech quality of the phone path: PESQ both ways, ours vs an ideal resampler and audioop.

Run ``python bench/quality.py`` (``--json`` for machine-readable figures, ``--clips DIR``
for other 16 kHz mono WAV files; ``--no-tones`` skips the tone figures of bench/codec.py).
Needs the ``bench`` extra (``pesq``, ITU-T P.862); without it the PESQ rows say so and the
other figures still print.

* **agent -> caller** (24 kHz PCM16 -> 8 kHz μ-law, ModelToCaller): each clip, ideally
  resampled to 24 kHz, is what the model says.  Reference: the same signal ideally
  resampled to 8 kHz (no μ-law).  PESQ-NB (P.862, 8 kHz).
* **caller -> model** (8 kHz μ-law -> 16 kHz PCM16, CallerToModel): the caller's 8 kHz
  signal is the clip ideally resampled to 8 kHz, either full band (0-4 kHz) or band-limited
  to 300-3400 Hz as a phone network may deliver it.  Reference: that 8 kHz signal ideally
  resampled to 16 kHz (no μ-law).  PESQ-WB (P.862.2, 16 kHz).

Rows: ``polyphase`` = ours, streamed in 20 ms frames as on a call, its constant filter delay
removed; ``ideal`` = an FFT brick-wall resampler + the μ-law step, i.e. the best any
resampler can do with μ-law in the path (the limit); ``audioop.ratecv`` = the stdlib
converter (state carried across frames) for context; streamed 8 k -> 16 k it gives 319
samples for some 20 ms frames, so its output drifts against the reference, which PESQ
punishes hard.  Figures are means over the clips.
The tone figures (worst alias/image, in-band SNR, delay) come from bench/codec.py.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import statistics
import sys
import warnings
import wave
from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent.parent))

from bench import codec
from telephony.audio import (
    MODEL_IN_RATE,
    MODEL_OUT_RATE,
    PHONE_RATE,
    CallerToModel,
    ModelToCaller,
)

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

F64 = NDArray[np.float64]
ROOT = pathlib.Path(__file__).resolve().parent.parent
SHARED_CLIPS = ROOT.parent / "shared" / "fixtures" / "speech"
OWN_CLIPS = ROOT / "telephony" / "caller" / "samples"
PHONE_BAND = (300.0, 3400.0)
FRAMES_PER_S = 50  # 20 ms frames, as on a call


def default_clips() -> pathlib.Path:
    return SHARED_CLIPS if SHARED_CLIPS.is_dir() else OWN_CLIPS


def load_wav(path: pathlib.Path) -> tuple[F64, int]:
    with wave.open(str(path)) as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise ValueError(f"{path}: need mono 16-bit PCM")
        pcm = w.readframes(w.getnframes())
        return np.frombuffer(pcm, dtype="<i2").astype(np.float64), w.getframerate()


def ideal(x: F64, in_rate: int, out_rate: int, band: tuple[float, float] | None = None) -> F64:
    """Brick-wall band-limited resampling by FFT (zero-padded: no wrap-around)."""
    n = x.shape[0]
    step = in_rate // math.gcd(in_rate, out_rate)  # lengths whose output length is whole
    n_pad = -(-(n + 4096) // step) * step
    padded = np.concatenate([x, np.zeros(n_pad - n)])
    spec = np.fft.rfft(padded)
    freqs = np.fft.rfftfreq(n_pad, 1.0 / in_rate)
    keep = freqs < 0.5 * min(in_rate, out_rate)
    if band is not None:
        keep &= (freqs >= band[0]) & (freqs <= band[1])
    spec = np.where(keep, spec, 0.0)
    m = n_pad * out_rate // in_rate
    out = np.zeros(m // 2 + 1, dtype=np.complex128)
    k = min(out.shape[0], spec.shape[0])
    out[:k] = spec[:k]
    y: F64 = np.fft.irfft(out, m) * (out_rate / in_rate)
    return y[: n * out_rate // in_rate]


def to_pcm(x: F64) -> bytes:
    return np.clip(np.rint(x), -32768, 32767).astype("<i2").tobytes()


def from_pcm(b: bytes) -> F64:
    return np.frombuffer(b, dtype="<i2").astype(np.float64)


def ulaw_round_trip(x: F64) -> F64:
    return from_pcm(audioop.ulaw2lin(audioop.lin2ulaw(to_pcm(x), 2), 2))


def framed(data: bytes, step: int, convert: Callable[[bytes], bytes]) -> bytes:
    return b"".join(convert(data[i : i + step]) for i in range(0, len(data), step))


def undelay(y: F64, samples: int, n: int) -> F64:
    """Drop a converter's constant delay; pad or cut to ``n`` samples."""
    y = y[samples:]
    return np.concatenate([y, np.zeros(max(0, n - y.shape[0]))])[:n]


def ratecv_stream(in_rate: int, out_rate: int) -> Callable[[bytes], bytes]:
    state: Any = None

    def run(pcm: bytes) -> bytes:
        nonlocal state
        out, state = audioop.ratecv(pcm, 2, 1, in_rate, out_rate, state)
        return bytes(out)

    return run


# -- the two directions: (reference, {row: degraded}) --------------------------------------


def downlink(clip: F64, rate: int) -> tuple[F64, dict[str, F64]]:
    src = ideal(clip, rate, MODEL_OUT_RATE)  # what the model says, at 24 kHz
    n = src.shape[0] * PHONE_RATE // MODEL_OUT_RATE
    ref = ideal(src, MODEL_OUT_RATE, PHONE_RATE)[:n]
    pcm = to_pcm(src)
    step = 2 * MODEL_OUT_RATE // FRAMES_PER_S
    conv = ModelToCaller()
    ours = from_pcm(audioop.ulaw2lin(framed(pcm, step, conv.process) + conv.flush(), 2))
    ours = undelay(ours, round(conv.delay_ms * PHONE_RATE / 1000), n)
    rcv = framed(pcm, step, ratecv_stream(MODEL_OUT_RATE, PHONE_RATE))
    ratecv = undelay(from_pcm(audioop.ulaw2lin(audioop.lin2ulaw(rcv, 2), 2)), 0, n)
    return ref, {"polyphase": ours, "ideal": ulaw_round_trip(ref), "audioop.ratecv": ratecv}


def uplink(clip: F64, rate: int, band: tuple[float, float] | None) -> tuple[F64, dict[str, F64]]:
    caller = np.clip(np.rint(ideal(clip, rate, PHONE_RATE, band)), -32768, 32767)
    n = caller.shape[0] * MODEL_IN_RATE // PHONE_RATE
    ref = ideal(caller, PHONE_RATE, MODEL_IN_RATE)
    ulaw = audioop.lin2ulaw(to_pcm(caller), 2)
    step = PHONE_RATE // FRAMES_PER_S
    conv = CallerToModel()
    ours = from_pcm(framed(ulaw, step, conv.process) + conv.process(b"\xff" * 160))
    ours = undelay(ours, round(conv.delay_ms * MODEL_IN_RATE / 1000), n)
    decode: Callable[[bytes], bytes] = ratecv_stream(PHONE_RATE, MODEL_IN_RATE)
    ratecv = undelay(from_pcm(framed(ulaw, step, lambda u: decode(audioop.ulaw2lin(u, 2)))), 0, n)
    limit = ideal(ulaw_round_trip(caller), PHONE_RATE, MODEL_IN_RATE)
    return ref, {"polyphase": ours, "ideal": limit, "audioop.ratecv": ratecv}


def pesq_figures(clips: list[pathlib.Path]) -> dict[str, Any]:
    try:
        from pesq import pesq
    except ImportError:
        return {
            "error": "PESQ not measured: the `pesq` package is not installed (pip install"
            " -e '.[bench]', or pip install pesq; it builds C code, so it needs a compiler)"
        }

    def score(rate: int, mode: str, ref: F64, deg: F64) -> float:
        return float(pesq(rate, np.rint(ref), np.rint(np.clip(deg, -32768, 32767)), mode))

    cases: dict[str, Callable[[F64, int], tuple[F64, dict[str, F64]]]] = {
        "down_24k_8k_pesq_nb": downlink,
        "up_8k_16k_full_band_pesq_wb": lambda x, r: uplink(x, r, None),
        "up_8k_16k_300_3400_pesq_wb": lambda x, r: uplink(x, r, PHONE_BAND),
    }
    out: dict[str, Any] = {}
    for name, case in cases.items():
        rate, mode = (PHONE_RATE, "nb") if name.startswith("down") else (MODEL_IN_RATE, "wb")
        per_clip: dict[str, list[float]] = {}
        for path in clips:
            clip, clip_rate = load_wav(path)
            ref, rows = case(clip, clip_rate)
            for row, deg in rows.items():
                per_clip.setdefault(row, []).append(round(score(rate, mode, ref, deg), 3))
        out[name] = {
            row: {"mean": round(statistics.fmean(v), 3), "per_clip": v}
            for row, v in per_clip.items()
        }
    return out


def tone_figures() -> dict[str, Any]:
    """The filter figures of bench/codec.py for ours and audioop.ratecv (μ-law included)."""
    out: dict[str, Any] = {}
    for name in ("polyphase", "audioop.ratecv"):
        up, down = codec.CONVERTERS[name]
        image, image_at = codec.worst_image(up)
        alias, alias_at = codec.worst_alias(down)
        up_delay, up_snr = codec.delay_and_snr(up)
        down_delay, down_snr = codec.delay_and_snr(down)
        out[name] = {
            "up_worst_image_db": round(image, 1),
            "up_image_at_hz": image_at,
            "up_snr_db": round(up_snr, 1),
            "up_delay_ms": round(up_delay, 3),
            "down_worst_alias_db": round(alias, 1),
            "down_alias_at_hz": alias_at,
            "down_snr_db": round(down_snr, 1),
            "down_delay_ms": round(down_delay, 3),
        }
    return out


def print_report(figures: dict[str, Any]) -> None:
    print(f"clips: {figures['clips_dir']} ({len(figures['clips'])} files)")
    pq = figures["pesq"]
    if "error" in pq:
        print(pq["error"])
    else:
        labels = {
            "down_24k_8k_pesq_nb": "agent->caller 24k->8k u-law, PESQ-NB",
            "up_8k_16k_full_band_pesq_wb": "caller->model 8k u-law->16k, full-band src, PESQ-WB",
            "up_8k_16k_300_3400_pesq_wb": "caller->model 8k u-law->16k, 300-3400 Hz src, PESQ-WB",
        }
        head = f"{'path':<56} {'polyphase':>9} {'ideal':>6} {'gap':>6} {'ratecv':>6}"
        print(head)
        print("-" * len(head))
        for name, label in labels.items():
            rows = pq[name]
            ours, lim = rows["polyphase"]["mean"], rows["ideal"]["mean"]
            print(
                f"{label:<56} {ours:>9.3f} {lim:>6.3f} {ours - lim:>+6.3f} "
                f"{rows['audioop.ratecv']['mean']:>6.3f}"
            )
        print(
            "ideal = FFT brick-wall resampler + u-law (the limit); gap = ours - ideal; "
            "means over the clips"
        )
    tones = figures.get("tones")
    if tones:
        print()
        head = (
            f"{'converter':<15} {'up image dB':>11} {'up SNR':>6} {'up ms':>6} "
            f"{'down alias dB':>13} {'down SNR':>8} {'down ms':>7}"
        )
        print(head)
        print("-" * len(head))
        for name, t in tones.items():
            print(
                f"{name:<15} {t['up_worst_image_db']:>11.1f} {t['up_snr_db']:>6.1f} "
                f"{t['up_delay_ms']:>6.3f} {t['down_worst_alias_db']:>13.1f} "
                f"{t['down_snr_db']:>8.1f} {t['down_delay_ms']:>7.3f}"
            )
        print(
            "tones via bench/codec.py: image = strongest >= 4.1 kHz for 8 kHz tones 0.3-3.9 kHz;"
            " alias = strongest 0-4 kHz for 24 kHz tones 4.6-12 kHz; SNR in band (0.3-3.4 kHz)"
            " vs an ideal resampler"
        )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--clips", type=pathlib.Path, default=default_clips(), help="WAV folder")
    ap.add_argument("--json", action="store_true", help="print the figures as JSON")
    ap.add_argument("--no-tones", action="store_true", help="skip the bench/codec.py figures")
    args = ap.parse_args(argv)
    clips = sorted(args.clips.glob("*.wav"))
    if not clips:
        ap.error(f"no .wav files in {args.clips}")
    figures: dict[str, Any] = {
        "clips_dir": str(args.clips),
        "clips": [p.name for p in clips],
        "pesq": pesq_figures(clips),
    }
    if not args.no_tones:
        figures["tones"] = tone_figures()
    if args.json:
        print(json.dumps(figures, indent=2))
    else:
        print_report(figures)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
