"""The phone-path resamplers as a loaded server runs them: many streams, one block each in turn.

Run ``python bench/resampler_streams.py`` (``--streams 50``, ``--rounds 100``, ``--json``).

``bench/codec.py`` times one stream in 20 ms frames, whose filter state and buffers stay in
the CPU's caches. A server with 50 calls converts one block for each call in turn, so every
block meets cold caches, and the blocks are of the sizes ``telephony.call.uplink`` and the
model produce: 20 ms (prompt), 40/60 ms (speech blocks), 100 ms (quiet blocks) up; 20 to
120 ms model chunks down. For each size this prints the mean time per block across all
streams in the fastest of ``--rounds`` rounds (the least disturbed, as ``timeit`` advises:
on a shared VM the others measure the neighbours too), with the bare ``StreamResampler``
(PCM16 both sides).
"""

from __future__ import annotations

import argparse
import json
import time

import numpy as np

from telephony.audio import (
    MODEL_IN_RATE,
    MODEL_OUT_RATE,
    PHONE_RATE,
    phone_resampler,
)

#: (input rate, output rate, block sizes in ms).
CASES = (
    (PHONE_RATE, MODEL_IN_RATE, (20, 40, 60, 100)),
    (MODEL_OUT_RATE, PHONE_RATE, (20, 40, 80, 120)),
)


def measure(in_rate: int, out_rate: int, block_ms: int, streams: int, rounds: int) -> float:
    """µs per block, ``streams`` resamplers taking one block each in turn (best round)."""
    rng = np.random.default_rng(block_ms)
    n = in_rate * block_ms // 1000
    block = np.clip(rng.normal(0, 8000, n), -32768, 32767).astype(np.int16)
    resamplers = [phone_resampler(in_rate, out_rate) for _ in range(streams)]
    for rs in resamplers:  # warm up: designs, buffers and plans
        rs.process_array(block)
    per_round: list[float] = []
    for _ in range(rounds):
        t0 = time.perf_counter()
        for rs in resamplers:
            rs.process_array(block)
        per_round.append((time.perf_counter() - t0) / streams * 1e6)
    return min(per_round)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--streams", type=int, default=50)
    ap.add_argument("--rounds", type=int, default=100)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args(argv)
    results = [
        {
            "in_rate": in_rate,
            "out_rate": out_rate,
            "block_ms": ms,
            "us_per_block": measure(in_rate, out_rate, ms, args.streams, args.rounds),
        }
        for in_rate, out_rate, sizes in CASES
        for ms in sizes
    ]
    if args.json:
        print(json.dumps(results, indent=2))
        return 0
    print(f"{args.streams} streams, one block each in turn, best of {args.rounds} rounds")
    for r in results:
        route = f"{r['in_rate'] // 1000}k->{r['out_rate'] // 1000}k"
        print(f"  {route:<8} {r['block_ms']:>4} ms blocks: {r['us_per_block']:6.1f} us per block")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
