"""The call-record store against a real PostgreSQL (Debian's, one server for the module:
``support.services.postgres``): what SQLite lets through and PostgreSQL refuses (a value longer
than its column, a NUL), the migration of a table made by the previous schema, instances."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import create_engine, insert, inspect, text
from sqlalchemy.exc import DataError

from support.services import postgres
from telephony.call.summary import CallSummary, Outcome, Turn, call_parameters
from telephony.ops.records import IN_PROGRESS, INTERRUPTED, record_from_summary
from telephony.ops.spool import Spool
from telephony.ops.store import (
    SCHEMA_VERSION,
    STALE_HEARTBEATS,
    CallStore,
    Instance,
    InstanceInUse,
    calls,
    metadata,
)
from telephony.ops.writer import RecordWriter

T0 = 1_800_000_000.0


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with postgres(tmp_path_factory.mktemp("postgres")) as url:
        yield url


@pytest.fixture
def url(server: str) -> Iterator[str]:
    """The server's URL, with no table in its database once the test is over."""
    yield server
    engine = create_engine(server)
    metadata.drop_all(engine)
    engine.dispose()


@pytest.fixture
def store(url: str) -> Iterator[CallStore]:
    store = CallStore(url)
    yield store
    store.close()


def hostile_summary() -> CallSummary:
    caller, callee, direction = call_parameters(
        {"from": "+1" + "5" * 10_000, "to": "+14155550199\n\x00", "direction": "x" * 500}
    )
    summary = CallSummary(
        call_sid="CA" + "f" * 5000,
        stream_sid="MZ" + "e" * 300,
        caller=caller,
        callee=callee,
        direction=direction,  # 64 characters: the column holds 16
        outcome=Outcome.COMPLETED,
        reason="r" * 5000,
    )
    summary.turns.append(Turn(at_s=1.0, caller="x" * 20_000, agent="fine"))
    return summary


def test_postgres_refuses_what_sqlite_keeps_and_records_are_cut_to_fit(store: CallStore) -> None:
    # The reason for the bounds: PostgreSQL enforces VARCHAR lengths (SQLite would keep this).
    row = record_from_summary(CallSummary(call_sid="CAraw"))
    with pytest.raises(DataError, match="value too long"), store.engine.begin() as conn:
        conn.execute(insert(calls).values({**row, "caller": "+1" + "5" * 10_000}))

    record = record_from_summary(hostile_summary())
    store.upsert(record)
    stored = store.get(record["call_sid"])
    assert stored is not None and stored["outcome"] == "completed"
    assert stored["caller"] == "+1" + "5" * 62 and stored["callee"] == "+14155550199"
    assert len(stored["call_sid"]) == 64 and stored["call_sid"].startswith("CAfff")
    assert len(stored["stream_sid"]) == 64 and len(stored["direction"]) == 16
    assert len(stored["reason"]) == 1000
    assert stored["transcript"][0]["text"] == "x" * 20_000  # free text is not cut
    # A row built elsewhere (not by record_from_summary) is bounded by the store itself.
    store.upsert(
        {**row, "call_sid": "CA" + "a" * 99, "caller": "x" * 1000, "instance_id": "i" * 99}
    )
    [other] = [r for r in store.list() if r["call_sid"].startswith("CAaaa")]
    assert other["caller"] == "x" * 64 and other["instance_id"] == "i" * 64


async def test_a_row_postgres_cannot_store_is_made_storable_not_lost(
    url: str, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """NUL is refused in text and in JSONB by PostgreSQL alone: the writer writes the row
    again cleaned instead of spooling it forever (or losing it)."""
    store = CallStore(url)
    writer = RecordWriter(store, spool=Spool(tmp_path / "spool", "pg"))
    summary = CallSummary(call_sid="CAnul", outcome=Outcome.FAILED, reason="model said \x00")
    summary.turns.append(Turn(at_s=1.0, caller="a\x00b", agent="ok"))
    writer.submit(record_from_summary(summary))
    writer.submit(record_from_summary(CallSummary(call_sid="CAnext")))
    assert await writer.flush(10)
    stored = store.get("CAnul")
    assert stored is not None and stored["reason"] == "model said "
    assert stored["transcript"][0]["text"] == "ab"
    assert store.get("CAnext") is not None
    refused = [r for r in caplog.records if r.getMessage() == "records.row_refused"]
    assert len(refused) == 1  # PostgreSQL did refuse it (SQLite would have kept the NUL)
    assert writer.stats.dropped == 0 and writer.stats.spooled == 0 and writer.pending == 0
    await writer.aclose(5)


#: What schema 1 (the previous release) created on PostgreSQL: no ``instance_id``, no
#: ``instances`` table.
SCHEMA_1 = """
CREATE TABLE calls (
    call_sid VARCHAR(64) NOT NULL, stream_sid VARCHAR(64) NOT NULL,
    direction VARCHAR(16) NOT NULL, caller VARCHAR(64) NOT NULL, callee VARCHAR(64) NOT NULL,
    outcome VARCHAR(32) NOT NULL, reason TEXT NOT NULL, started_at FLOAT NOT NULL,
    ended_at FLOAT, duration_s FLOAT, turns INTEGER NOT NULL, interruptions INTEGER NOT NULL,
    reconnects INTEGER NOT NULL, stalls INTEGER NOT NULL, tokens_total INTEGER NOT NULL,
    greeting_ms FLOAT, response_ms_p50 FLOAT, transcript JSONB NOT NULL, detail JSONB NOT NULL,
    updated_at FLOAT NOT NULL, PRIMARY KEY (call_sid)
);
CREATE INDEX ix_calls_outcome ON calls (outcome);
CREATE INDEX ix_calls_started_at ON calls (started_at);
INSERT INTO calls VALUES ('CAup', 'MZup', 'inbound', '', '', 'in_progress', '', 1700000000.0,
    NULL, NULL, 0, 0, 0, 0, 0, NULL, NULL, '[]', '{"schema_version": 1}', 1700000001.0);
"""


def running(sid: str, owner: str, at: float) -> dict[str, Any]:
    row = record_from_summary(CallSummary(call_sid=sid, started_at=at - 60), in_progress=True)
    row.update(instance_id=owner, updated_at=at)
    return row


def test_a_postgres_table_of_the_previous_schema_is_migrated_and_instances_work(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        for statement in SCHEMA_1.split(";"):
            if statement.strip():
                conn.execute(text(statement))
    engine.dispose()
    reader = CallStore(url, create=False)  # `voice-agent calls list`: reads it at once
    assert [r["instance_id"] for r in reader.list()] == [None]
    reader.close()
    store = CallStore(url)
    columns = {c["name"] for c in inspect(store.engine).get_columns("calls")}
    assert "instance_id" in columns and inspect(store.engine).has_table("instances")
    assert {"feedback_rating", "feedback_comment", "feedback_at"} <= columns  # schema 3
    assert store.set_feedback("CAup", 2, "slow to answer", now=T0)
    assert store.get("CAup")["feedback_rating"] == 2  # type: ignore[index]

    beat = 15.0
    gone = Instance("gone", "h1", 1, T0, beat, "a" * 32)
    live = Instance("live", "h2", 2, T0, beat, "b" * 32)
    assert store.claim_instance(gone, now=T0) is None
    assert store.claim_instance(live, now=T0) is None
    with pytest.raises(InstanceInUse):  # a twin (another token) while it lives
        store.claim_instance(Instance("live", "h3", 3, T0, beat, "c" * 32), now=T0 + 1)
    later = T0 + STALE_HEARTBEATS * beat + 30
    assert store.heartbeat(live, now=later)
    store.upsert(running("CAgone", "gone", T0 + 10))
    store.upsert(running("CAlive", "live", later))
    ended = store.interrupt_stale("me", now=later + 1)
    assert ended == {"gone": 1, None: 1}
    assert store.get("CAgone")["outcome"] == INTERRUPTED  # type: ignore[index]
    assert store.get("CAup")["outcome"] == INTERRUPTED  # type: ignore[index]
    assert store.get("CAlive")["outcome"] == IN_PROGRESS  # type: ignore[index]
    assert store.get("CAlive")["detail"]["schema_version"] == SCHEMA_VERSION  # type: ignore[index]
    store.release_instance(live)
    assert store.instance_heartbeat("live") is None
    assert store.prune(later + 1) == 2  # the interrupted ones
    store.close()


def test_feedback_stats_and_export_on_postgres(store: CallStore) -> None:
    store.upsert(running("CA1", "a", T0))
    store.upsert({**running("CA2", "a", T0 + 10), "outcome": "completed", "greeting_ms": 300.0})
    assert store.set_feedback("CA2", 5, "ok", now=T0 + 20)
    store.upsert({**running("CA2", "a", T0 + 10), "outcome": "completed"})  # a late write
    assert store.get("CA2")["feedback_comment"] == "ok"  # type: ignore[index]
    window = store.window(T0 - 60, T0)  # started 60 s before their writes
    assert [r["outcome"] for r in window] == ["in_progress", "completed"]
    assert [r["call_sid"] for r in store.export(T0 - 55, batch=1)] == ["CA2"]
