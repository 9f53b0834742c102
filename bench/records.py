"""Call records: what writing them costs the event loop, and how fast the database keeps up.

    python bench/records.py [--calls 2000] [--turns 20] [--database-url sqlite:///...]

Builds realistic final records (``--turns`` caller/agent turns, tool calls, interruptions) and
submits them through ``RecordWriter`` as the server does at the end of each call, while a
20 ms ticker (standing in for a call's audio loop) measures how late the event loop wakes up.
Two phases: *paced* (``--rate`` calls ending per second: 20/s is a 100-call instance whose
calls last 5 s, far busier than real) and *burst* (``--calls`` at once: the writer saturated).
Prints for each: the cost of ``record_from_summary`` + ``submit`` on the loop (µs per call),
the ticker's lateness while the writer thread works (p50/p99/max), and records written per s.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import tempfile
import time
from pathlib import Path

from telephony.call.summary import CallSummary, Interruption, Outcome, Turn
from telephony.loadtest.metrics import percentile
from telephony.ops.records import record_from_summary
from telephony.ops.store import CallStore
from telephony.ops.writer import RecordWriter

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
            Turn(
                at_s=5.0 * t,
                caller="I would like to change my booking to Thursday evening please " * 2,
                agent="Of course. Thursday at seven is available; shall I book it for you?",
                interrupted=t % 5 == 0,
                agent_heard="Of course. Thursday at",
                response_ms=700.0 + t,
            )
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


async def phase(
    writer: RecordWriter, summaries: list[CallSummary], rate: float | None
) -> tuple[list[float], list[float], float]:
    """Submit every summary (at ``rate`` per second, or all at once); wait until written."""
    stop = asyncio.Event()
    lateness: list[float] = []
    tick = asyncio.create_task(ticker(stop, lateness))
    await asyncio.sleep(0.2)
    submit_us: list[float] = []
    written_before = writer.written
    began = time.perf_counter()
    for i, s in enumerate(summaries):
        if rate:
            await asyncio.sleep(max(0.0, began + i / rate - time.perf_counter()))
        t0 = time.perf_counter()
        writer.submit(record_from_summary(s))
        submit_us.append((time.perf_counter() - t0) * 1e6)
        await asyncio.sleep(0)  # calls end one at a time, between other work
    assert await writer.flush(600)
    elapsed = time.perf_counter() - began
    stop.set()
    await tick
    return submit_us, lateness, (writer.written - written_before) / elapsed


def report(name: str, submit_us: list[float], lateness: list[float], throughput: float) -> None:
    q = {n: percentile(lateness, n) or 0.0 for n in (50, 99)}
    print(f"{name}:")
    print(
        f"  on the event loop (build + submit), per call: p50 "
        f"{statistics.median(submit_us):.0f} µs, max {max(submit_us):.0f} µs"
    )
    print(
        f"  20 ms ticker lateness: p50 {q[50]:.2f} ms, p99 {q[99]:.2f} ms, "
        f"max {max(lateness):.2f} ms ({len(lateness)} ticks)"
    )
    print(f"  records written per second: {throughput:.0f}")


async def run(calls: int, turns: int, url: str, rate: float, paced_s: float) -> None:
    store = CallStore(url)
    writer = RecordWriter(store)
    paced = [summary(i, turns) for i in range(round(rate * paced_s))]
    burst = [summary(len(paced) + i, turns) for i in range(calls)]
    # The inputs are the bench's own: thousands of summaries alive at once never exist in
    # the server (it holds one per call in progress). Keep them out of the cyclic GC's walks,
    # as the server does with what it holds at startup (create_app(freeze_gc=True)).
    gc.collect()
    gc.freeze()
    print(f"database: {store.url}; {turns} turns per call")
    report(
        f"paced: {rate:g} calls ending per second for {paced_s:g} s",
        *await phase(writer, paced, rate),
    )
    report(f"burst: {calls} calls ending at once", *await phase(writer, burst, None))
    await writer.aclose(10)
    print(f"written {writer.written}, failed {writer.failed}")
    path = Path(url.removeprefix("sqlite:///"))
    if url.startswith("sqlite"):
        size = (await asyncio.to_thread(path.stat)).st_size
        print(f"database size: {size / 1e6:.1f} MB ({size / writer.written / 1e3:.1f} kB per call)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=2000, help="calls in the burst")
    parser.add_argument(
        "--rate", type=float, default=20.0, help="calls ending per second in the paced phase"
    )
    parser.add_argument("--paced-s", type=float, default=5.0)
    parser.add_argument("--turns", type=int, default=20)
    parser.add_argument("--database-url", help="default: SQLite in a temporary directory")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        url = args.database_url or f"sqlite:///{tmp}/calls.db"
        asyncio.run(run(args.calls, args.turns, url, args.rate, args.paced_s))


if __name__ == "__main__":
    main()
