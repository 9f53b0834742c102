"""Call records: what writing them costs the event loop, and how fast the database keeps up.

    python bench/records.py [--calls 2000] [--turns 20] [--database-url sqlite:///...]

Builds realistic final records (``--turns`` caller/agent turns, tool calls, interruptions) and
submits them through ``RecordWriter`` as the server does at the end of each call, while a
20 ms ticker (standing in for a call's audio loop) measures how late the event loop wakes up.
Prints: the cost of ``record_from_summary`` + ``submit`` on the loop (µs per call), the ticker's
lateness while the writer thread works (p50/p99/max), and the writer's throughput (records/s).
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

from telephony.call import CallSummary, Interruption, Outcome
from telephony.records import record_from_summary
from telephony.store import CallStore, RecordWriter

TICK_S = 0.020


def summary(i: int, turns: int) -> CallSummary:
    return CallSummary(
        call_sid=f"CA{i:032d}",
        stream_sid=f"MZ{i:032d}",
        direction="inbound",
        caller="+14155550100",
        callee="+14155550199",
        outcome=Outcome.COMPLETED,
        reason="caller hung up",
        started_at=time.time(),
        duration_s=180.0,
        first_audio_ms=310.0,
        model_connect_ms=120.0,
        turns=[
            {
                "at_s": 5.0 * t,
                "caller": "I would like to change my booking to Thursday evening please " * 2,
                "agent": "Of course. Thursday at seven is available; shall I book it for you?",
                "interrupted": t % 5 == 0,
                "agent_heard": "Of course. Thursday at",
                "response_ms": 700.0 + t,
            }
            for t in range(turns)
        ],
        interruptions=[
            Interruption(5.0 * t, 0.03, 3000, 1200, 1000, "Of course. Thursday at")
            for t in range(0, turns, 5)
        ],
        dtmf=["1", "2"],
        tool_calls=[{"id": "t1", "name": "end_call", "args": {}, "result": {"result": "ok"}}],
        tokens={"prompt": 5000, "response": 1200, "total": 6200},
    )


async def ticker(stop: asyncio.Event, lateness: list[float]) -> None:
    loop = asyncio.get_running_loop()
    due = loop.time() + TICK_S
    while not stop.is_set():
        await asyncio.sleep(max(0.0, due - loop.time()))
        lateness.append((loop.time() - due) * 1000)
        due += TICK_S


async def run(calls: int, turns: int, url: str) -> None:
    store = CallStore(url)
    writer = RecordWriter(store)
    summaries = [summary(i, turns) for i in range(calls)]
    stop = asyncio.Event()
    lateness: list[float] = []
    tick = asyncio.create_task(ticker(stop, lateness))
    await asyncio.sleep(0.5)  # baseline ticks
    submit_us: list[float] = []
    began = time.perf_counter()
    for s in summaries:
        t0 = time.perf_counter()
        writer.submit(record_from_summary(s))
        submit_us.append((time.perf_counter() - t0) * 1e6)
        await asyncio.sleep(0)  # calls end one at a time, between other work
    assert await writer.flush(600)
    elapsed = time.perf_counter() - began
    stop.set()
    await tick
    await writer.aclose(10)
    quantiles = statistics.quantiles(lateness, n=100)
    path = Path(url.removeprefix("sqlite:///"))
    size = (await asyncio.to_thread(path.stat)).st_size if url.startswith("sqlite") else 0
    print(f"database: {store.url}")
    print(f"records: {calls} calls x {turns} turns; written {writer.written}, ", end="")
    print(f"failed {writer.failed}")
    print(
        f"on the event loop (build + submit), per call: p50 {statistics.median(submit_us):.0f} µs, "
        f"max {max(submit_us):.0f} µs"
    )
    print(
        f"20 ms ticker lateness while writing: p50 {quantiles[49]:.2f} ms, "
        f"p99 {quantiles[98]:.2f} ms, max {max(lateness):.2f} ms ({len(lateness)} ticks)"
    )
    print(f"writer throughput: {writer.written / elapsed:.0f} records/s ({elapsed:.2f} s)")
    if size:
        print(f"database size: {size / 1e6:.1f} MB ({size / calls / 1e3:.1f} kB per call)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--database-url", help="default: SQLite in a temporary directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/calls.db"
        asyncio.run(run(args.calls, args.turns, url))


if __name__ == "__main__":
    main()
