"""Capacity benchmark: what one server process costs per call, and what callers experience.

Three processes: the real server (``voice-agent serve``), the Live API simulator
(``bench/sim_process.py``; the server reaches it through the SDK's own variables
GOOGLE_GEMINI_BASE_URL and SSL_CERT_FILE), and this one, which plays Twilio. For each load
level it places that many concurrent simulated Twilio calls (webhook first, as Twilio does,
then the Media Stream) and measures, for the *server process alone* (from /proc, so the load
generator and the simulator don't count):

- CPU per active call: ms of server CPU per second of call, and the implied calls per core;
- RSS per active call (MiB), over the idle baseline;
- added latency of the bridge: simulator hands an audio chunk to its socket → that audio
  reaches the caller, p50/p99 (CLOCK_MONOTONIC is system-wide, so the simulator's chunk
  times and this process's receive times compare directly), over the first 0.9 s of each
  answer: later audio is held by the pacer on purpose (at most 1 s ahead of Twilio's
  playback), which is not latency the caller hears;
- clear latency (``interrupted`` received → ``clear`` sent), from the server's own log;
- audio gaps: agent audio that stopped for > 100 ms inside an answer, as played;
- messages per call-second in each direction over the window: Twilio -> server (media frames
  at their 20 ms pace, mark echoes), server -> Twilio (media, marks, clears as received),
  server -> model and model -> server (counted by the simulator), and server CPU per message
  (all four directions together).

The server runs with what a production deployment runs: call records (SQLite), metrics,
pacing, the built-in tools plus a declared operator HTTP tool, and a knowledge base loaded.
Each level also says how busy the server's core was: at 90 % or more it is *saturated* (it
reads Twilio's frames late, so its CPU per call-second is capped by the core, not what a call
costs), and the ``capacity`` line reads calls per core from the largest unsaturated level.

Each call: the caller listens to the greeting, then says a sentence every ~6.5 s. One call in
five talks over the greeting (barge-in). Calls are started 40 ms apart.

    python bench/capacity.py [--levels 50 100 200] [--window 10] [--json]

With 2+ cores the server is pinned to one core and the simulator and load generator to the
others. The load generator's own event-loop lag is printed next to the latency figures, which
include it (they are upper bounds for the server).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import gc
import json
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from agent.simulator.voice import synthesize
from telephony.audio import pcm16_to_ulaw_8k
from telephony.caller import BargeIn, CallResult, place_call
from telephony.caller.simulated import FRAME_S
from telephony.loadtest.metrics import percentile
from telephony.server.runner import free_port, wait_ready
from telephony.twilio.media_stream import ULAW_SILENCE

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")
STAGGER_S = 0.04
#: A server whose core is this busy is saturated: it falls behind (reads Twilio's frames late),
#: so its CPU per call-second is a ceiling set by the core, not what a call costs.
SATURATED_PCT = 90.0
#: Past this p99 event-loop lag the load generator and simulator are late themselves, and the
#: latency figures measure them as much as the server.
LAGGING_MS = 20.0
#: The sizing rule: plan for this share of a core, keeping headroom for bursts (call setup,
#: tool calls, reconnections) and for the p99 latency.
SIZING_PCT = 70.0
SENTENCE = "I would like to check the opening hours for the weekend please"


def pct(values: list[float], q: float) -> float:
    """``telephony.loadtest.metrics.percentile`` (one definition for every report), NaN
    for no samples so that the tables print."""
    value = percentile(values, q)
    return float("nan") if value is None else value


KNOWLEDGE_DIR = Path(__file__).with_name("data") / "knowledge" / "clinic"


def write_tools_file(folder: Path) -> Path:
    """An operator HTTP tool, declared to the model on every call (never called here)."""
    path = folder / "tools.json"
    tool = {
        "name": "lookup_order",
        "description": "Look up the status of the caller's order by its number.",
        "parameters": {
            "type": "object",
            "properties": {"order": {"type": "string", "description": "the order number"}},
            "required": ["order"],
        },
        "url": "http://127.0.0.1:9/lookup",
    }
    path.write_text(json.dumps({"tools": [tool]}))
    return path


def proc_cpu_s(pid: int) -> float:
    """utime + stime of a process, in seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLK_TCK


def proc_rss_mib(pid: int) -> float:
    return int(Path(f"/proc/{pid}/statm").read_text().split()[1]) * PAGE / 2**20


@dataclass
class LoopLag:
    """How late this process's event loop wakes up (load generator + simulator)."""

    samples: list[float] = field(default_factory=list)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(0.01)
            self.samples.append((loop.time() - before - 0.01) * 1000)


@dataclass
class Level:
    calls: int
    window_s: float
    cpu_ms_per_call_s: float = 0.0
    rss_mib_per_call: float = 0.0
    rss_mib: float = 0.0
    added_latency_ms: list[float] = field(default_factory=list)
    gaps: int = 0
    failed: int = 0
    greeting_s: list[float] = field(default_factory=list)
    response_s: list[float] = field(default_factory=list)
    loop_lag_ms: list[float] = field(default_factory=list)
    calls_done: list[tuple[str, CallResult]] = field(default_factory=list)
    #: Messages per call-second by direction, over the measurement window.
    messages: dict[str, float] = field(default_factory=dict)
    cpu_us_per_message: float = float("nan")
    #: Server CPU over the window, as a share of one core (its own, when pinned).
    core_busy_pct: float = 0.0


def twilio_messages(result: CallResult, t0: float, t1: float) -> tuple[int, int]:
    """(caller -> server, server -> caller) messages of one call inside ``[t0, t1]``.

    Sent media are counted at their pace (frame k leaves at ``(k + 1) * FRAME_S``), the rest
    at the times the caller simulator recorded.
    """
    start = result.started_at
    first = max(0, int((t0 - start) / FRAME_S))
    last = min(result.frames_sent, int((t1 - start) / FRAME_S))
    sent = max(0, last - first)
    sent += sum(1 for e in result.marks_echoed if t0 <= start + e.sent_s <= t1)
    received = sum(1 for t, _ in result.media_received if t0 <= start + t <= t1)
    received += sum(1 for t, _ in result.marks_received if t0 <= start + t <= t1)
    received += sum(1 for c in result.clears if t0 <= start + c.time_s <= t1)
    return sent, received


#: The simulator pauses at least this long between answers (it waits for the caller).
ANSWER_GAP_S = 0.3
#: The first this much of each answer leaves the server at once (under the pacer's 1 s lead).
UNPACED_S = 0.9


def chunk_latencies(
    chunk_log: list[tuple[float, int]], result: CallResult, started: float
) -> list[float]:
    """Per model chunk: simulator emit → first byte of it received by the caller (ms).

    The bridge converts 24 kHz to 8 kHz with exact sample counts, so a chunk that started at
    24 kHz sample S arrives at 8 kHz byte S // 3 of the caller's received stream.
    """
    received_log = result.media_received
    offsets = [cum for _, cum in received_log]
    out: list[float] = []
    answer_start = 0
    previous = -float("inf")
    for emitted, samples_before in chunk_log:
        if emitted - previous > ANSWER_GAP_S:
            answer_start = samples_before  # a new answer: Twilio's playback has caught up
        previous = emitted
        if (samples_before - answer_start) / 24_000 >= UNPACED_S:
            # Beyond the pacer's lead the server holds audio until Twilio has played up to
            # it, on purpose: that wait is pacing, not latency the bridge adds.
            continue
        byte = samples_before // 3
        j = bisect.bisect_right(offsets, byte) - 1
        if j < 0:
            continue
        received = started + received_log[j][0]
        out.append((received - emitted) * 1000)
    return out


async def run_level(
    n: int,
    window_s: float,
    sessions: asyncio.Queue[str],
    base: str,
    pid: int,
    idle_rss: float,
    lag: LoopLag,
    sim_stats: Callable[[], Awaitable[dict[str, Any]]],
) -> Level:
    level = Level(n, window_s)
    sentence = pcm16_to_ulaw_8k(synthesize(SENTENCE, "Charon").pcm, 24_000)
    pause = ULAW_SILENCE * int(4.5 * 8000)
    call_s = n * STAGGER_S + window_s + 12
    script = b""
    while len(script) / 8000 < call_s:
        script += sentence + pause
    interjection = pcm16_to_ulaw_8k(synthesize("sorry, one moment", "Charon").pcm, 24_000)
    mapping: dict[str, str] = {}  # call SID → simulator session id
    results: dict[str, tuple[CallResult, float]] = {}
    pairing = asyncio.Lock()

    async def one(i: int, http: httpx.AsyncClient) -> None:
        # Unique across levels: the server pre-connects no session for a CallSid seen before.
        call_sid = f"CA{n:04x}{i:028x}"
        async with pairing:
            # Twilio's order: webhook (the server pre-connects the model), then the stream.
            await http.post("/twilio/voice", data={"CallSid": call_sid, "From": "+15550001"})
            async with asyncio.timeout(20):
                mapping[call_sid] = await sessions.get()
        try:
            result = await place_call(
                base.replace("http", "ws") + "/twilio/media",
                script,
                call_sid=call_sid,
                after_greeting_s=5.0,
                barge_in=BargeIn(interjection, after_s=1.0) if i % 5 == 4 else None,
                linger_s=1.0,
                max_duration_s=call_s + 20,
            )
        except Exception as exc:  # a failed call is a figure, not a crash of the benchmark
            print(f"call {i} failed: {exc}", file=sys.stderr)
            level.failed += 1
            return
        results[call_sid] = (result, result.started_at)

    async with httpx.AsyncClient(base_url=base, timeout=30) as http, asyncio.TaskGroup() as tg:
        for i in range(n):
            tg.create_task(one(i, http))
            await asyncio.sleep(STAGGER_S)
        # All calls are up (they run for call_s): measure a steady window.
        await asyncio.sleep(2.0)
        lag.samples.clear()
        cpu0, t0 = proc_cpu_s(pid), time.monotonic()
        sim0 = await sim_stats()
        await asyncio.sleep(window_s)
        sim1 = await sim_stats()
        cpu1, t1 = proc_cpu_s(pid), time.monotonic()
        level.rss_mib = proc_rss_mib(pid)
        level.loop_lag_ms = list(lag.samples)
    level.cpu_ms_per_call_s = (cpu1 - cpu0) * 1000 / (n * (t1 - t0))
    level.core_busy_pct = (cpu1 - cpu0) * 100 / (t1 - t0)
    level.rss_mib_per_call = (level.rss_mib - idle_rss) / n
    level.calls_done = [(mapping[sid], result) for sid, (result, _) in results.items()]
    from_twilio = to_twilio = 0
    for result, _ in results.values():
        sent, received = twilio_messages(result, t0, t1)
        from_twilio += sent
        to_twilio += received
    sim_s = sim1["stats"] - sim0["stats"]
    to_model = sim1["messages_in"] - sim0["messages_in"]
    from_model = sim1["messages_out"] - sim0["messages_out"]
    call_s, sim_call_s = n * (t1 - t0), n * sim_s
    level.messages = {
        "twilio_to_server": round(from_twilio / call_s, 2),
        "server_to_twilio": round(to_twilio / call_s, 2),
        "server_to_model": round(to_model / sim_call_s, 2),
        "model_to_server": round(from_model / sim_call_s, 2),
    }
    total = from_twilio + to_twilio + to_model * (t1 - t0) / sim_s + from_model * (t1 - t0) / sim_s
    if total:
        level.cpu_us_per_message = (cpu1 - cpu0) * 1e6 / total
    for result, _ in results.values():
        if result.ended_by not in ("caller", "server") or result.close_code not in (None, 1000):
            level.failed += 1
        if result.time_to_first_audio_s is not None:
            level.greeting_s.append(result.time_to_first_audio_s)
        level.response_s += [t.latency_s for t in result.turns if t.latency_s is not None]
        level.gaps += len(result.gaps)
    return level


async def main_async(
    levels: list[int],
    window_s: float,
    sdk_path: bool,
    chunk_ms: int | None = None,
    server_tree: Path | None = None,
) -> dict[str, Any]:
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    lag = LoopLag()
    sessions: asyncio.Queue[str] = asyncio.Queue()
    chunk_logs: dict[str, list[tuple[float, int]]] = {}
    # On a machine with 2+ cores, the server gets a core of its own and the simulator and this
    # load generator share the rest, so the server's figures are not the others' contention.
    cores = sorted(os.sched_getaffinity(0))
    isolate = len(cores) >= 2
    if isolate:
        os.sched_setaffinity(0, cores[1:])  # inherited by the simulator process
    sim = await asyncio.create_subprocess_exec(
        sys.executable,
        str(Path(__file__).with_name("sim_process.py")),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
    )
    assert sim.stdout is not None and sim.stdin is not None
    first = json.loads(await sim.stdout.readline())
    stats: asyncio.Queue[dict[str, Any]] = asyncio.Queue()

    async def sim_stats() -> dict[str, Any]:
        assert sim.stdin is not None
        sim.stdin.write(b"stats\n")
        await sim.stdin.drain()
        async with asyncio.timeout(10):
            return await stats.get()

    async def read_simulator() -> None:
        assert sim.stdout is not None
        async for line in sim.stdout:
            entry = json.loads(line)
            if "session" in entry:
                sessions.put_nowait(entry["session"])
            elif "stats" in entry:
                stats.put_nowait(entry)
            elif "chunks" in entry:
                chunk_logs[entry["chunks"]] = [tuple(x) for x in entry["log"]]

    reader = asyncio.create_task(read_simulator())
    with tempfile.TemporaryDirectory() as tmp:
        log_path = Path(tmp) / "server.log"
        env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("GEMINI", "GOOGLE"))},
            "GEMINI_API_KEY": "bench",
            "ALLOW_UNSIGNED": "true",  # the load comes unsigned, from loopback
            "GOOGLE_GEMINI_BASE_URL": first["base_url"],
            "SSL_CERT_FILE": first["ca"],
            "MAX_CONCURRENT_CALLS": str(max(levels) * 2),
            # Every call comes from loopback: one address for the per-client pending limit.
            "MAX_PENDING_STREAMS_PER_CLIENT": str(max(levels) * 2),
            "LOG_FORMAT": "json",
            "MODEL_FAST_PATH": "false" if sdk_path else "true",
            # What a production deployment runs besides records, metrics and pacing: an
            # operator HTTP tool declared and a knowledge base loaded (keyword index: the
            # bench has no embedding service; a search costs nothing per frame either way).
            "AGENT_TOOLS": "end_call,transfer_call",
            "AGENT_TRANSFER_NUMBER": "+15005550006",
            "AGENT_TOOLS_FILE": str(write_tools_file(Path(tmp))),
            "AGENT_KNOWLEDGE": str(KNOWLEDGE_DIR),
            "KNOWLEDGE_INDEX": str(Path(tmp) / "knowledge.db"),
            "KNOWLEDGE_EMBEDDINGS": "off",
            # Records on, as in production, but in the run's own database: never mixed into
            # the calls.db of whoever runs the benchmark.
            "DATABASE_URL": f"sqlite:///{Path(tmp) / 'calls.db'}",
            "RECORDS_SPOOL_DIR": str(Path(tmp) / "spool"),
        }
        if chunk_ms is not None:
            env["MODEL_AUDIO_CHUNK_MS"] = str(chunk_ms)
        if server_tree is not None:
            # Another checkout's server (e.g. the tree before a change) under this load
            # generator and simulator: a before/after that differs only in the server.
            env["PYTHONPATH"] = str(server_tree)
        with log_path.open("wb") as log_file:
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                "telephony.cli",
                "serve",
                "--host",
                "127.0.0.1",
                "--port",
                str(port),
                env=env,
                cwd=server_tree,
                stdout=asyncio.subprocess.DEVNULL,
                stderr=log_file,
            )
        if isolate:
            os.sched_setaffinity(proc.pid, cores[:1])
        lag_task = asyncio.create_task(lag.run())
        try:
            await wait_ready(base)
            await asyncio.sleep(1.0)
            idle_rss = proc_rss_mib(proc.pid)
            idle_cpu = proc_cpu_s(proc.pid)
            results = []
            for n in levels:
                print(f"  running {n} concurrent calls ...", file=sys.stderr)
                results.append(
                    await run_level(n, window_s, sessions, base, proc.pid, idle_rss, lag, sim_stats)
                )
        finally:
            lag_task.cancel()
            proc.terminate()
            await proc.wait()
            sim.stdin.close()
            async with asyncio.timeout(30):
                await reader
                await sim.wait()
        clear_ms = [
            entry["clear_latency_ms"]
            for line in log_path.read_text().splitlines()
            if line.startswith("{") and '"call.interrupted"' in line
            for entry in [json.loads(line)]
        ]
    for lv in results:
        for session_id, result in lv.calls_done:
            if not result.interruptions and not result.clears:
                log = chunk_logs.get(session_id, [])
                lv.added_latency_ms += chunk_latencies(log, result, result.started_at)
    return {
        "server_tree": str(server_tree) if server_tree is not None else None,
        "model_fast_path": not sdk_path,
        "model_audio_chunk_ms": chunk_ms,
        "server_pinned_to_own_core": isolate,
        "idle_rss_mib": round(idle_rss, 1),
        "startup_cpu_s": round(idle_cpu, 2),
        "levels": [
            {
                "concurrent_calls": lv.calls,
                "window_s": lv.window_s,
                "server_cpu_ms_per_call_s": round(lv.cpu_ms_per_call_s, 2),
                "calls_per_core": round(1000 / lv.cpu_ms_per_call_s)
                if lv.cpu_ms_per_call_s
                else None,
                "server_rss_mib": round(lv.rss_mib, 1),
                "rss_mib_per_call": round(lv.rss_mib_per_call, 3),
                "added_latency_ms_p50": round(pct(lv.added_latency_ms, 50), 2),
                "added_latency_ms_p99": round(pct(lv.added_latency_ms, 99), 2),
                "latency_samples": len(lv.added_latency_ms),
                "greeting_s_p50": round(pct(lv.greeting_s, 50), 3),
                "response_s_p50": round(pct(lv.response_s, 50), 3),
                "response_s_p95": round(pct(lv.response_s, 95), 3),
                "audio_gaps": lv.gaps,
                "failed_calls": lv.failed,
                "loadgen_loop_lag_ms_p50": round(pct(lv.loop_lag_ms, 50), 2),
                "loadgen_loop_lag_ms_p99": round(pct(lv.loop_lag_ms, 99), 2),
                "messages_per_call_s": lv.messages,
                "server_cpu_us_per_message": round(lv.cpu_us_per_message, 2),
                "server_core_busy_pct": round(lv.core_busy_pct, 1),
                "server_saturated": lv.core_busy_pct >= SATURATED_PCT,
                "load_generator_lagging": pct(lv.loop_lag_ms, 99) > LAGGING_MS,
            }
            for lv in results
        ],
        "capacity": capacity(results),
        "clear_latency_ms": {
            "count": len(clear_ms),
            "p50": round(pct(clear_ms, 50), 3),
            "p99": round(pct(clear_ms, 99), 3),
            "max": round(max(clear_ms, default=float("nan")), 3),
            "mean": round(statistics.fmean(clear_ms), 3) if clear_ms else None,
        },
    }


def capacity(levels: list[Level]) -> dict[str, Any] | None:
    """Calls per core from the largest level whose server was not saturated (a saturated
    level's CPU per call is capped by the core), raw and at the sizing rule."""
    measured = [lv for lv in levels if lv.core_busy_pct < SATURATED_PCT and lv.cpu_ms_per_call_s]
    if not measured:
        return None
    basis = max(measured, key=lambda lv: lv.calls)
    return {
        "from_level": basis.calls,
        "cpu_ms_per_call_s": round(basis.cpu_ms_per_call_s, 2),
        "calls_per_core": int(1000 / basis.cpu_ms_per_call_s),
        "sizing_pct": SIZING_PCT,
        "calls_per_core_at_sizing": int(10 * SIZING_PCT / basis.cpu_ms_per_call_s),
        "rss_mib_per_call": round(basis.rss_mib_per_call, 3),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--levels", type=int, nargs="+", default=[50, 100, 200])
    parser.add_argument("--window", type=float, default=10.0, help="measurement window (s)")
    parser.add_argument(
        "--sdk-path", action="store_true", help="run the server with MODEL_FAST_PATH=false"
    )
    parser.add_argument(
        "--chunk-ms",
        type=int,
        choices=(20, 40, 60),
        help="MODEL_AUDIO_CHUNK_MS for the server (default: the server's default)",
    )
    parser.add_argument(
        "--server-tree",
        type=Path,
        help="run the server from this checkout (e.g. a git worktree of an older commit) "
        "under this load generator and simulator, for before/after comparisons",
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    if args.server_tree is not None and not (args.server_tree / "telephony").is_dir():
        parser.error(f"--server-tree {args.server_tree}: no telephony/ package there")
    # The load generator must measure the server, not itself: no multi-10-ms garbage
    # collector pauses (everything built so far is frozen out of the GC's way).
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)
    figures = asyncio.run(
        main_async(args.levels, args.window, args.sdk_path, args.chunk_ms, args.server_tree)
    )
    if args.json:
        print(json.dumps(figures, indent=2))
        return
    print(
        f"server idle RSS {figures['idle_rss_mib']} MiB; fast path "
        f"{'on' if figures['model_fast_path'] else 'off (SDK path)'}; server on its own core: "
        f"{figures['server_pinned_to_own_core']}"
        + (f"; server from {figures['server_tree']}" if figures["server_tree"] else "")
    )
    header = (
        f"{'calls':>5} {'CPU ms/call-s':>13} {'calls/core':>10} {'RSS MiB':>8} {'MiB/call':>8} "
        f"{'added p50':>9} {'added p99':>9} {'gaps':>4} {'failed':>6} {'resp p50':>8} "
        f"{'loadgen lag p99':>15} {'core busy':>9}"
    )
    print(header)
    print("-" * len(header))
    for lv in figures["levels"]:
        print(
            f"{lv['concurrent_calls']:>5} {lv['server_cpu_ms_per_call_s']:>13.2f} "
            f"{lv['calls_per_core']!s:>10} {lv['server_rss_mib']:>8.1f} "
            f"{lv['rss_mib_per_call']:>8.3f} {lv['added_latency_ms_p50']:>7.2f}ms "
            f"{lv['added_latency_ms_p99']:>7.2f}ms {lv['audio_gaps']:>4} {lv['failed_calls']:>6} "
            f"{lv['response_s_p50']:>7.3f}s {lv['loadgen_loop_lag_ms_p99']:>13.2f}ms "
            f"{lv['server_core_busy_pct']:>8.0f}%"
            + (" saturated" if lv["server_saturated"] else "")
            + (" loadgen-late" if lv["load_generator_lagging"] else "")
        )
    if any(lv["server_saturated"] for lv in figures["levels"]):
        print(
            f"saturated: the server's core was >= {SATURATED_PCT:.0f}% busy, so it fell behind; "
            "its CPU per call-second there is capped by the core (not a cost) and its latency "
            "is queueing"
        )
    if any(lv["load_generator_lagging"] for lv in figures["levels"]):
        print(
            f"loadgen-late: this process's event loop lagged > {LAGGING_MS:.0f} ms at p99 (it and "
            "the simulator share the other core): latency there includes their lateness"
        )
    header = (
        f"{'calls':>5} {'msgs/call-s: twilio->srv':>25} {'srv->twilio':>11} {'srv->model':>10} "
        f"{'model->srv':>10} {'CPU us/msg':>10}"
    )
    print(header)
    print("-" * len(header))
    for lv in figures["levels"]:
        m = lv["messages_per_call_s"]
        print(
            f"{lv['concurrent_calls']:>5} {m['twilio_to_server']:>25.1f} "
            f"{m['server_to_twilio']:>11.1f} {m['server_to_model']:>10.1f} "
            f"{m['model_to_server']:>10.1f} {lv['server_cpu_us_per_message']:>10.1f}"
        )
    cap = figures["capacity"]
    if cap is None:
        print("capacity: every level saturated the server; run lower levels")
    else:
        print(
            f"capacity (from {cap['from_level']} calls, the largest level not saturated): "
            f"{cap['cpu_ms_per_call_s']} ms CPU per call-second = {cap['calls_per_core']} calls "
            f"per core; sizing rule ({cap['sizing_pct']:.0f}% of a core): "
            f"{cap['calls_per_core_at_sizing']} calls per core, "
            f"{cap['rss_mib_per_call']} MiB RSS per call"
        )
    c = figures["clear_latency_ms"]
    print(
        f"clear latency (interrupted received -> clear sent, server log, {c['count']} barge-ins): "
        f"p50 {c['p50']} ms, p99 {c['p99']} ms, max {c['max']} ms"
    )


if __name__ == "__main__":
    main()
