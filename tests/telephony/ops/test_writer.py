"""The record writer: no record lost when the database refuses writes (real SQLite, real
spool files; the database "refusing" is a read-only SQLite connection or a store that raises
what SQLAlchemy raises)."""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy.exc import OperationalError

from telephony.call.summary import CallSummary, Outcome, Turn
from telephony.ops.records import IN_PROGRESS, INTERRUPTED, record_from_summary
from telephony.ops.spool import Spool
from telephony.ops.store import CallStore, Instance
from telephony.ops.writer import RecordWriter, storable
from telephony.server.metrics import Metrics

FAST = (0.02, 0.05)  # retry backoff for tests


def final(sid: str, text: str = "bye") -> dict[str, Any]:
    s = CallSummary(call_sid=sid, outcome=Outcome.COMPLETED, reason="caller hung up")
    s.turns.append(Turn(at_s=1.0, caller=text, agent="ok"))
    return record_from_summary(s)


def snapshot(sid: str, text: str = "hello") -> dict[str, Any]:
    s = CallSummary(call_sid=sid)
    s.turns.append(Turn(at_s=1.0, caller=text, agent="ok"))
    return record_from_summary(s, in_progress=True)


async def until(predicate: Callable[[], bool], timeout_s: float = 5.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not predicate():  # noqa: ASYNC110 - polling what the writer thread does
            await asyncio.sleep(0.01)


class Outage:
    """Makes ``store.upsert`` fail as a database that refuses writes does (or works)."""

    def __init__(self, store: CallStore) -> None:
        self.broken = True
        self.attempts: list[tuple[float, str]] = []
        self.written: list[str] = []
        self._upsert = store.upsert
        store.upsert = self.upsert  # type: ignore[method-assign]

    def upsert(self, row: dict[str, Any]) -> None:
        self.attempts.append((time.monotonic(), row["call_sid"]))
        if self.broken:
            raise OperationalError("INSERT ...", {}, Exception("database or disk is full"))
        self._upsert(row)
        self.written.append(row["call_sid"])


@pytest.fixture
def db_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'calls.db'}"


@pytest.fixture
def spools(tmp_path: Path) -> Iterator[Callable[..., Spool]]:
    opened: list[Spool] = []

    def open_(name: str = "a", **kwargs: Any) -> Spool:
        spool = Spool(tmp_path / "spool", name, **kwargs)
        opened.append(spool)
        return spool

    yield open_
    for spool in opened:
        spool.close()


async def test_a_read_only_database_loses_nothing_across_a_restart(
    tmp_path: Path, db_url: str, spools: Callable[..., Spool]
) -> None:
    path = tmp_path / "calls.db"
    CallStore(db_url).close()  # the database exists ...
    # ... but this process can only read it: SQLite itself refuses every write.
    read_only = CallStore(f"sqlite:///file:{path}?mode=ro&uri=true")
    writer = RecordWriter(read_only, spool=spools(), retry_backoff_s=FAST)
    for i in range(3):
        writer.submit(snapshot(f"CA{i}"))
        writer.submit(final(f"CA{i}", text=f"call {i}"))
    assert await writer.flush(5)
    assert writer.stats.spooled == 6 and writer.stats.written == 0
    assert writer.pending == 6
    await writer.aclose(5)  # the process stops: the rows stay spooled
    assert writer.stats.dropped == 0

    # The next start, with a database that takes writes again, replays the spool in order.
    store = CallStore(db_url)
    again = RecordWriter(store, spool=spools(), retry_backoff_s=FAST)
    await until(lambda: again.pending == 0)
    assert again.stats.replayed == 6
    for i in range(3):
        record = store.get(f"CA{i}")
        assert record is not None and record["outcome"] == "completed"
        assert record["transcript"][0]["text"] == f"call {i}"
    await again.aclose(5)


async def test_rows_wait_with_backoff_and_arrive_in_order_once_writes_work(
    db_url: str, spools: Callable[..., Spool]
) -> None:
    store = CallStore(db_url)
    outage = Outage(store)
    writer = RecordWriter(store, spool=spools(), retry_backoff_s=(0.05, 0.1, 0.2))
    rows = [snapshot("CA1"), snapshot("CA2"), final("CA1"), final("CA2")]
    for row in rows:
        writer.submit(row)
    await writer.flush(5)
    await asyncio.sleep(0.5)
    # The first row found the database down; the others went straight to the spool without
    # waiting on it; retries back off (0.05, 0.1, 0.2, 0.2 ...), each one a single row.
    times = [t for t, _ in outage.attempts]
    assert 3 <= len(times) <= 6
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert all(g >= 0.04 for g in gaps)
    assert writer.stats.spooled == 4 and writer.pending == 4
    outage.broken = False
    await until(lambda: writer.pending == 0)
    assert outage.written == ["CA1", "CA2", "CA1", "CA2"]  # in the order submitted
    assert store.get("CA1")["outcome"] == "completed"  # type: ignore[index]
    assert writer.stats.replayed == 4 and writer.stats.dropped == 0
    # Back to normal: new rows go straight to the database.
    writer.submit(final("CA3"))
    await writer.flush(5)
    assert store.get("CA3") is not None and writer.stats.written == 5
    await writer.aclose(5)


async def test_a_replayed_snapshot_never_replaces_a_final_record(
    db_url: str, spools: Callable[..., Spool]
) -> None:
    store = CallStore(db_url)
    spool = spools()
    spool.append(snapshot("CA1", "old state"))  # a snapshot left by a previous life ...
    spool.close()
    store.upsert(final("CA1", "the end"))  # ... but the call's final record made it
    writer = RecordWriter(store, spool=spools(), retry_backoff_s=FAST)
    await until(lambda: writer.pending == 0)
    record = store.get("CA1")
    assert record is not None and record["outcome"] == "completed"
    assert record["transcript"][0]["text"] == "the end"
    await writer.aclose(5)


async def test_snapshots_of_calls_in_progress_are_held_not_spooled_while_down(
    db_url: str, spools: Callable[..., Spool]
) -> None:
    store = CallStore(db_url)
    outage = Outage(store)
    spool = spools()
    writer = RecordWriter(store, spool=spool, retry_backoff_s=FAST)
    writer.submit(snapshot("CA1", "first"))  # the call's first row: always spooled
    for i in range(50):
        writer.submit(snapshot("CA1", f"refresh {i}"), refresh=True)
        writer.submit(snapshot("CA2", f"refresh {i}"), refresh=True)
    await writer.flush(5)
    assert writer.stats.spooled == 1  # the periodic refreshes did not fill the spool ...
    assert writer.pending == 3  # ... only the latest of each call is held
    writer.submit(final("CA2"))  # a final row supersedes the held snapshot
    await writer.flush(5)
    assert writer.pending == 3
    outage.broken = False
    await until(lambda: writer.pending == 0)
    assert store.get("CA1")["transcript"][0]["text"] == "refresh 49"  # type: ignore[index]
    assert store.get("CA2")["outcome"] == "completed"  # type: ignore[index]
    await writer.aclose(5)


async def test_on_shutdown_whatever_is_pending_is_spooled(
    db_url: str, spools: Callable[..., Spool]
) -> None:
    store = CallStore(db_url)
    Outage(store)
    writer = RecordWriter(store, spool=spools(), retry_backoff_s=FAST)
    writer.submit(snapshot("CA1"))
    for i in range(3):
        writer.submit(snapshot("CA1", f"state {i}"), refresh=True)
    await writer.flush(5)
    await writer.aclose(5)
    # The held snapshot (the call's last known state) was spooled too.
    with spools() as spool:
        rows = []
        while (row := spool.first()) is not None:
            rows.append(row)
            spool.ack()
    assert [r["transcript"][0]["text"] for r in rows] == ["hello", "state 2"]
    assert writer.stats.dropped == 0


async def test_an_unwritable_spool_keeps_rows_in_memory_bounded(
    db_url: str, spools: Callable[..., Spool], monkeypatch: pytest.MonkeyPatch
) -> None:
    store = CallStore(db_url)
    outage = Outage(store)
    spool = spools()
    full_disk = True
    real_append = spool.append

    def append(row: dict[str, Any]) -> None:
        if full_disk:
            raise OSError(28, "No space left on device")
        real_append(row)

    monkeypatch.setattr(spool, "append", append)
    dropped: list[int] = []
    writer = RecordWriter(
        store, spool=spool, retry_backoff_s=FAST, memory_rows=5, on_dropped=dropped.append
    )
    for i in range(8):
        writer.submit(final(f"CA{i}"))
    await writer.flush(5)
    # Neither the database nor the disk takes them: the newest 5 wait in memory.
    assert writer.pending == 5 and writer.stats.spooled == 0
    assert writer.stats.dropped == 3 and sum(dropped) == 3
    full_disk = False  # the disk has room again: the rows move to the spool, in order
    await until(lambda: writer.stats.spooled == 5)
    outage.broken = False
    await until(lambda: writer.pending == 0)
    assert outage.written == [f"CA{i}" for i in range(3, 8)]
    await writer.aclose(5)


async def test_a_row_the_database_cannot_store_does_not_block_the_others(
    db_url: str, spools: Callable[..., Spool]
) -> None:
    store = CallStore(db_url)
    writer = RecordWriter(store, spool=spools(), retry_backoff_s=FAST)
    bad = final("CAbad")
    bad["reason"] = "model said \udc80"  # a lone surrogate: the driver cannot encode it
    writer.submit(bad)
    writer.submit(final("CAgood"))
    await writer.flush(5)
    assert store.get("CAgood") is not None
    stored = store.get("CAbad")
    assert stored is not None and stored["reason"] == "model said ?"
    assert writer.stats.dropped == 0 and writer.pending == 0
    await writer.aclose(5)
    assert storable({"x": float("nan"), "y": ["a\x00b"]}) == {"x": None, "y": ["ab"]}


async def test_the_spool_bound_and_the_metrics(db_url: str, spools: Callable[..., Spool]) -> None:
    store = CallStore(db_url)
    outage = Outage(store)
    metrics = Metrics()
    lost: list[int] = []
    writer = RecordWriter(
        store,
        spool=spools(max_bytes=256 * 1024),
        retry_backoff_s=FAST,
        on_dropped=lost.append,
    )
    metrics.watch_records(lambda: writer)
    big = "word " * 2000  # ~10 kB rows
    for i in range(60):
        writer.submit(final(f"CA{i}", text=big))
    await writer.flush(10)
    text = metrics.exposition().decode()
    dropped = writer.stats.dropped
    assert dropped > 0 and sum(lost) == dropped
    assert f"voice_agent_records_dropped_total {dropped:.1f}" in text
    assert "voice_agent_records_spooled_total 60.0" in text
    assert f"voice_agent_records_pending {60 - dropped:.1f}" in text
    assert writer.spool is not None
    on_disk = sum(p.stat().st_size for p in writer.spool.dir.glob("segment-*"))
    assert 0 < writer.spool_bytes == on_disk <= 256 * 1024
    assert f"voice_agent_records_spool_bytes {on_disk:.1f}" in text
    outage.broken = False
    await until(lambda: writer.pending == 0)
    text = metrics.exposition().decode()
    assert f"voice_agent_records_replayed_total {60 - dropped:.1f}" in text
    assert "voice_agent_records_pending 0.0" in text
    assert "voice_agent_records_spool_bytes 0.0" in text
    # The oldest went; the newest are in the database.
    assert store.get("CA59") is not None and store.get("CA0") is None
    await writer.aclose(5)


def test_metrics_without_a_writer_are_zeros() -> None:
    text = Metrics().exposition().decode()
    assert "voice_agent_records_pending 0.0" in text
    assert "voice_agent_records_spool_bytes 0.0" in text
    assert "voice_agent_records_dropped_total 0.0" in text
    assert 'voice_agent_calls_total{outcome="interrupted"} 0.0' in text


async def test_a_slow_database_never_blocks_the_loop(db_url: str) -> None:
    store = CallStore(db_url)
    gate = threading.Event()
    real = store.upsert

    def slow(row: dict[str, Any]) -> None:
        gate.wait(5)
        real(row)

    store.upsert = slow  # type: ignore[method-assign]
    writer = RecordWriter(store)
    loop = asyncio.get_running_loop()
    began = loop.time()
    for i in range(20):
        writer.submit(final(f"CA{i}"))
    assert loop.time() - began < 0.2
    assert not await writer.flush(0.1)  # still writing
    gate.set()
    assert await writer.flush(5)
    assert store.count() == 20
    await writer.aclose(5)


async def test_heartbeat_and_sweep_run_in_the_writer_thread(
    db_url: str, spools: Callable[..., Spool]
) -> None:
    store = CallStore(db_url)
    # A record of an instance that stopped long ago without ending it.
    gone = Instance("gone", "h", 1, 1000.0, 15.0, "t" * 32)
    store.claim_instance(gone, now=1000.0)
    row = snapshot("CAold")
    row.update(instance_id="gone", updated_at=1010.0)
    store.upsert(row)
    spool = spools("me")
    me = Instance("me", "h", 2, time.time(), 0.05, spool.token)
    interrupted: list[int] = []
    writer = RecordWriter(store, spool=spool, instance=me, on_interrupted=interrupted.append)
    await until(lambda: sum(interrupted) == 1)
    assert store.get("CAold")["outcome"] == INTERRUPTED  # type: ignore[index]
    writer.submit(snapshot("CAmine"))
    await writer.flush(5)
    mine = store.get("CAmine")
    assert mine is not None and mine["instance_id"] == "me" and mine["outcome"] == IN_PROGRESS
    beat = store.instance_heartbeat("me")
    await asyncio.sleep(0.2)
    assert store.instance_heartbeat("me") > beat  # type: ignore[operator]
    assert store.get("CAmine")["outcome"] == IN_PROGRESS  # type: ignore[index]  # never its own
    await writer.aclose(5)
    assert store.instance_heartbeat("me") is None  # released at a clean exit
