"""Call records survive what the running server meets: SIGKILL with calls up, a second
instance on the same database, a duplicate INSTANCE_ID, a database that refuses writes, and
untrusted call parameters. Real servers (``voice-agent serve`` subprocesses), real SQLite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import re
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from support import run_stack, silence, speech
from support.serve import serve_refused, serve_subprocess
from support.services import postgres
from telephony.caller import place_call
from telephony.ops.store import CallStore

REASON = re.compile(
    r"^the server serving this call stopped without ending it \(instance alpha, last seen "
    r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC\)$"
)


async def until(predicate: Callable[[], bool], timeout_s: float = 20.0, what: str = "") -> None:
    try:
        async with asyncio.timeout(timeout_s):
            while not predicate():  # noqa: ASYNC110 - polling another process's writes
                await asyncio.sleep(0.1)
    except TimeoutError:
        raise AssertionError(f"timed out waiting for {what or predicate}") from None


def records(store: CallStore, prefix: str) -> list[dict[str, Any]]:
    return [r for r in (store.get(sid) for sid in sids(prefix)) if r is not None]


def sids(prefix: str, n: int = 5) -> list[str]:
    return [f"CA{prefix}{i:02d}".ljust(34, "0") for i in range(n)]


def metric(text: str, name: str) -> float:
    match = re.search(rf"^{re.escape(name)} (\S+)$", text, re.M)
    assert match, name
    return float(match.group(1))


async def metrics_of(base_url: str) -> str:
    async with httpx.AsyncClient(base_url=base_url, timeout=5) as http:
        return (await http.get("/metrics")).text


async def test_sigkill_with_calls_up_leaves_interrupted_records_not_in_progress_ones(
    tmp_path: Path,
) -> None:
    store = CallStore(os.environ["DATABASE_URL"])
    token = "operator-token-0123456789"
    alpha = {"INSTANCE_ID": "alpha", "RECORDS_SNAPSHOT_S": "0.5", "API_TOKEN": token}
    beta = {"INSTANCE_ID": "beta", "RECORDS_SNAPSHOT_S": "0.5"}
    words = speech("I would like to book a table for four people tonight")
    async with (
        serve_subprocess(tmp_path, env=alpha, name="alpha") as a,
        serve_subprocess(tmp_path, env=beta, name="beta") as b,
    ):
        a_calls = [
            asyncio.create_task(
                place_call(a.media_url, words + silence(40), call_sid=sid, max_duration_s=60)
            )
            for sid in sids("aa")
        ]
        b_calls = [
            asyncio.create_task(
                place_call(b.media_url, silence(40), call_sid=sid, max_duration_s=60)
            )
            for sid in sids("bb", 2)
        ]
        # Five calls up on alpha, each with a transcript so far in its (refreshed) record.
        await until(
            lambda: (
                len(rows := records(store, "aa")) == 5
                and all(r["outcome"] == "in_progress" and r["transcript"] for r in rows)
            ),
            what="alpha's calls in progress with a transcript",
        )
        await until(lambda: len(records(store, "bb")) == 2, what="beta's calls")

        # A second process with beta's INSTANCE_ID refuses to start while beta lives: on
        # this host (the same spool directory, which beta holds) ...
        code, err = await serve_refused(beta)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "INSTANCE_ID=beta is in use by a live process on this host" in err
        # ... and from anywhere else (another spool directory: the heartbeat says so).
        elsewhere = {**beta, "RECORDS_SPOOL_DIR": str(tmp_path / "elsewhere")}
        code, err = await serve_refused(elsewhere)
        assert code == 2 and len(err.strip().splitlines()) == 1, err
        assert "INSTANCE_ID=beta is in use by a live instance (host" in err

        a.proc.kill()  # SIGKILL: no drain, no final records
        await a.proc.wait()
        await asyncio.gather(*a_calls, return_exceptions=True)
        last_known = {r["call_sid"]: r for r in records(store, "aa")}
        assert all(r["outcome"] == "in_progress" for r in last_known.values())

        # Restarted with the same INSTANCE_ID and database: its previous life's calls end.
        async with serve_subprocess(tmp_path, env=alpha, name="alpha-again") as again:
            await until(
                lambda: all(r["outcome"] == "interrupted" for r in records(store, "aa")),
                timeout_s=10,
                what="alpha's calls interrupted",
            )
            text = await metrics_of(again.http_url)
            async with httpx.AsyncClient(base_url=again.http_url, timeout=5) as http:
                api = await http.get(
                    "/calls",
                    params={"outcome": "interrupted"},
                    headers={"Authorization": f"Bearer {token}"},
                )
            command = [sys.executable, "-m", "telephony.cli", "calls", "list"]
            listing = await asyncio.to_thread(
                subprocess.run,
                [*command, "--outcome", "interrupted", "--json"],
                capture_output=True,
                text=True,
                timeout=30,
                check=True,
            )
        # The live instance's calls were left alone.
        assert [r["outcome"] for r in records(store, "bb")] == ["in_progress"] * 2
        assert not any(t.done() for t in b_calls)
        for task in b_calls:
            task.cancel()
        await asyncio.gather(*b_calls, return_exceptions=True)

    for record in records(store, "aa"):
        before = last_known[record["call_sid"]]
        assert REASON.match(record["reason"]), record["reason"]
        assert record["instance_id"] == "alpha"
        # Ended when it was last known alive, with its last known state.
        assert record["ended_at"] == before["updated_at"]
        assert record["duration_s"] == pytest.approx(before["updated_at"] - record["started_at"])
        assert record["duration_s"] > 0
        assert record["transcript"] == before["transcript"] != []
    assert metric(text, 'voice_agent_calls_total{outcome="interrupted"}') == 5
    assert sorted(r["call_sid"] for r in json.loads(listing.stdout)) == sids("aa")
    assert api.status_code == 200
    assert sorted(r["call_sid"] for r in api.json()["calls"]) == sids("aa")
    assert {r["outcome"] for r in api.json()["calls"]} == {"interrupted"}
    assert {r["instance_id"] for r in store.list(outcome="in_progress", limit=100)} == {"beta"}


async def test_a_live_instance_ends_the_calls_of_one_gone_for_good(tmp_path: Path) -> None:
    """A pod replaced under a new name never comes back with its id: once its heartbeat is
    stale, a live instance ends its calls (and only its)."""
    store = CallStore(os.environ["DATABASE_URL"])
    fast = {"INSTANCE_HEARTBEAT_S": "0.5", "RECORDS_SNAPSHOT_S": "0.5"}
    async with (
        serve_subprocess(tmp_path, env={**fast, "INSTANCE_ID": "pod-a"}, name="pod-a") as a,
        serve_subprocess(tmp_path, env={**fast, "INSTANCE_ID": "pod-b"}, name="pod-b") as b,
    ):
        up = [
            asyncio.create_task(place_call(s.media_url, silence(40), call_sid=sid))
            for s, sid in ((a, sids("ee")[0]), (a, sids("ee")[1]), (b, sids("ff")[0]))
        ]
        await until(
            lambda: len(records(store, "ee")) == 2 and len(records(store, "ff")) == 1,
            what="the calls in progress",
        )
        a.proc.kill()
        await a.proc.wait()
        killed = asyncio.get_running_loop().time()
        await until(
            lambda: all(r["outcome"] == "interrupted" for r in records(store, "ee")),
            timeout_s=15,
            what="pod-a's calls ended by pod-b",
        )
        # Not before pod-a had missed 4 heartbeats (2 s): a slow instance is not a dead one.
        assert asyncio.get_running_loop().time() - killed > 1.0
        text = await metrics_of(b.http_url)
        assert [r["outcome"] for r in records(store, "ff")] == ["in_progress"]
        assert not up[2].done()
        for task in up:
            task.cancel()
        await asyncio.gather(*up, return_exceptions=True)
    assert metric(text, 'voice_agent_calls_total{outcome="interrupted"}') == 2
    for record in records(store, "ee"):
        assert "(instance pod-a, last seen " in record["reason"]
    store.close()


async def test_a_database_refusing_writes_loses_no_record_even_across_a_restart(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The database is locked by another process (a backup, a long migration): SQLite
    refuses the server's writes with "database is locked" once its busy timeout is over."""
    path = tmp_path / "calls.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{path}?timeout=0.3")
    env = {"INSTANCE_ID": "gamma", "INSTANCE_HEARTBEAT_S": "1"}
    store = CallStore(f"sqlite:///{path}")
    lock = sqlite3.connect(path, isolation_level=None)

    async def calls(served: Any, prefix: str, n: int) -> None:
        audio = speech("what time do you open") + silence(1.0)
        tasks = [
            place_call(served.media_url, audio, call_sid=sid, linger_s=0.5, max_duration_s=30)
            for sid in sids(prefix, n)
        ]
        results = await asyncio.gather(*tasks)
        assert all(r.ended_by == "caller" for r in results)

    async with serve_subprocess(tmp_path, env=env, name="gamma") as server:
        # Calls start while the database works (their first rows are written) ...
        first = asyncio.create_task(calls(server, "cc", 3))
        await until(lambda: len(records(store, "cc")) == 3, what="records of calls up")
        lock.execute("BEGIN IMMEDIATE")  # ... and end while it refuses every write.
        await first
        text = ""

        async def spooled(n: float) -> bool:
            nonlocal text
            text = await metrics_of(server.http_url)
            return metric(text, "voice_agent_records_spooled_total") >= n

        async with asyncio.timeout(15):
            while not await spooled(3):  # noqa: ASYNC110 - polling another process
                await asyncio.sleep(0.1)
        assert metric(text, "voice_agent_records_pending") >= 3
        assert [r["outcome"] for r in records(store, "cc")] == ["in_progress"] * 3
        lock.execute("ROLLBACK")  # writes work again: the spool is replayed
        await until(
            lambda: [r["outcome"] for r in records(store, "cc")] == ["completed"] * 3,
            what="the spooled records replayed",
        )
        text = await metrics_of(server.http_url)
        assert metric(text, "voice_agent_records_replayed_total") >= 3
        assert metric(text, "voice_agent_records_dropped_total") == 0

        # Again, but the process is killed before the database is back.
        lock.execute("BEGIN IMMEDIATE")
        await calls(server, "dd", 2)
        spooled_before = metric(text, "voice_agent_records_spooled_total")
        async with asyncio.timeout(15):
            # Two calls: their first and final rows.
            while not await spooled(spooled_before + 4):  # noqa: ASYNC110 - another process
                await asyncio.sleep(0.1)
        server.proc.kill()
        await server.proc.wait()
    assert records(store, "dd") == []  # nothing reached the database
    lock.execute("ROLLBACK")
    lock.close()
    # The next start replays what the killed process had spooled.
    async with serve_subprocess(tmp_path, env=env, name="gamma-again"):
        await until(
            lambda: [r["outcome"] for r in records(store, "dd")] == ["completed"] * 2,
            what="the previous life's spool replayed",
        )
    assert [r["outcome"] for r in records(store, "cc")] == ["completed"] * 3
    assert not list((tmp_path / "spool" / "gamma").glob("segment-*"))


@pytest.mark.parametrize("database", ["sqlite", "postgresql"])
async def test_a_10_kb_from_parameter_is_bounded_and_the_record_written(
    database: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """PostgreSQL enforces the columns' lengths (SQLite would keep anything): a real one."""
    hostile = "+1" + "5" * 10_000
    long_sid = "CA" + "f" * 200
    with contextlib.ExitStack() as resources:
        if database == "postgresql":
            url = resources.enter_context(postgres(tmp_path / "postgres"))
            monkeypatch.setenv("DATABASE_URL", url)
        async with run_stack(monkeypatch) as stack:
            result = await stack.call(
                silence(1.0),
                call_sid=long_sid,
                custom_parameters={
                    "from": hostile,
                    "to": "+14155550199\n\x00",
                    "direction": "x" * 500,
                },
                linger_s=0.3,
            )
            summary = await stack.summary()
            records_writer = stack.service.records
            assert records_writer is not None
            assert await records_writer.flush(5)
            assert records_writer.stats.dropped == 0 and records_writer.stats.spooled == 0
        assert result.call_sid == long_sid
        store = CallStore(os.environ["DATABASE_URL"])
        [stored] = store.list()
        assert stored["outcome"] == "completed" and stored["call_sid"].startswith("CAfff")
        assert len(stored["call_sid"]) == 64
        assert stored["caller"] == hostile[:64] and summary.caller == hostile[:64]
        assert stored["callee"] == "+14155550199"
        assert stored["direction"] == "inbound"
        store.close()
