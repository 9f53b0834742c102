"""Barge-in benchmark: how fast does the caller's talking over the agent stop the agent?

Runs the real server (uvicorn, in this process) against the embedded Live API simulator and
places simulated Twilio calls in which the caller talks over the agent's greeting. Prints:

- server: ``interrupted`` received → ``clear`` sent (the bridge's own reaction; target ≤ 10 ms),
  as recorded by each call;
- caller: caller speech start → ``clear`` received, as the caller simulator measured it (this
  includes the simulator's voice activity detection, ~100 ms, like the real service's);
- whether any audio of an interrupted turn played after its clear (must be none).

    python bench/barge_in.py [--calls 20] [--concurrency 10] [--json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import statistics
import tempfile

from agent.simulator.voice import synthesize
from telephony.audio import pcm16_to_ulaw_8k
from telephony.caller import BargeIn, CallResult, place_call
from telephony.loadtest.metrics import percentile
from telephony.server.runner import local_server
from telephony.settings import Settings


def pct(values: list[float], q: float) -> float:
    """``telephony.loadtest.metrics.percentile`` (one definition for every report), NaN
    for no samples so that the tables print."""
    value = percentile(values, q)
    return float("nan") if value is None else value


def stale_audio_after_clear(result: CallResult) -> int:
    """Runs of agent audio that started after a clear but before the caller stopped talking."""
    stale = 0
    for it in result.interruptions:
        if it.clear_s is None or it.speech_start_s is None:
            continue
        segment_end = next(
            (end for start, end in result.caller_segments if abs(start - it.speech_start_s) < 0.05),
            it.speech_start_s,
        )
        stale += sum(
            1 for p in result.played if it.clear_s + 1e-3 < p.end and p.start < segment_end
        )
    return stale


async def run(calls: int, concurrency: int, records_dir: str) -> dict[str, object]:
    # Every call comes from loopback (one address for the per-client pending limit), and a call
    # that has just ended holds its slot a moment longer than the caller's semaphore: without
    # headroom the next stream is refused (HTTP 403) and the benchmark fails.
    slots = str(2 * max(concurrency, 1))
    env = {
        **os.environ,
        "LIVE_SIMULATOR": "on",
        "LIVE_SIMULATOR_DIALOGUE": "echo",  # the server is measured, not the simulator
        "MAX_CONCURRENT_CALLS": slots,
        "MAX_PENDING_STREAMS_PER_CLIENT": slots,
        # Records on, as in production, in a database of the run's own (not ./calls.db).
        "DATABASE_URL": f"sqlite:///{records_dir}/calls.db",
    }
    settings = Settings.from_env(env)
    interjection = pcm16_to_ulaw_8k(synthesize("sorry, one moment please", "Charon").pcm, 24_000)
    results: list[CallResult] = []
    async with local_server(settings) as local:
        gate = asyncio.Semaphore(concurrency)

        async def one(i: int) -> None:
            async with gate:
                # Stagger the barge-ins so calls don't all interrupt in the same millisecond.
                after = 0.8 + (i % 10) * 0.1
                result = await place_call(
                    local.media_url,
                    b"",
                    barge_in=BargeIn(interjection, after_s=after),
                    linger_s=1.0,
                    max_duration_s=20,
                )
                results.append(result)

        async with asyncio.TaskGroup() as tg:
            for i in range(calls):
                tg.create_task(one(i))
        async with asyncio.timeout(10):
            while len(local.service.recent) < calls:  # noqa: ASYNC110 - bench polling
                await asyncio.sleep(0.01)
        summaries = list(local.service.recent)

    server_ms = [it.clear_latency_ms for s in summaries for it in s.interruptions]
    caller_ms = [ms for r in results for it in r.interruptions if (ms := it.latency_ms) is not None]
    missed = sum(1 for r in results for it in r.interruptions if it.clear_s is None)
    return {
        "calls": calls,
        "concurrency": concurrency,
        "interruptions": len(server_ms),
        "server_interrupted_to_clear_ms": {
            "p50": pct(server_ms, 50),
            "p95": pct(server_ms, 95),
            "p99": pct(server_ms, 99),
            "max": max(server_ms, default=float("nan")),
            "mean": statistics.fmean(server_ms) if server_ms else float("nan"),
        },
        "caller_speech_to_clear_ms": {
            "p50": pct(caller_ms, 50),
            "p95": pct(caller_ms, 95),
            "max": max(caller_ms, default=float("nan")),
        },
        "barge_ins_without_clear": missed,
        "stale_audio_runs_after_clear": sum(stale_audio_after_clear(r) for r in results),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=20)
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    logging.basicConfig(level=logging.ERROR)
    with tempfile.TemporaryDirectory(prefix="barge-in-") as records_dir:
        figures = asyncio.run(run(args.calls, args.concurrency, records_dir))
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    srv = figures["server_interrupted_to_clear_ms"]
    clr = figures["caller_speech_to_clear_ms"]
    assert isinstance(srv, dict) and isinstance(clr, dict)
    print(
        f"barge-in: {figures['calls']} calls, {figures['concurrency']} concurrent, "
        f"{figures['interruptions']} interruptions"
    )
    print(
        "  server  interrupted -> clear sent  (ms): "
        f"p50 {srv['p50']:.3f}  p95 {srv['p95']:.3f}  p99 {srv['p99']:.3f}  max {srv['max']:.3f}"
    )
    print(
        "  caller  speech start -> clear recv (ms): "
        f"p50 {clr['p50']:.1f}  p95 {clr['p95']:.1f}  max {clr['max']:.1f}"
        "  (includes the simulator's ~100 ms VAD)"
    )
    print(f"  barge-ins without a clear: {figures['barge_ins_without_clear']}")
    print(
        f"  stale agent audio played after a clear: {figures['stale_audio_runs_after_clear']} runs"
    )


if __name__ == "__main__":
    main()
