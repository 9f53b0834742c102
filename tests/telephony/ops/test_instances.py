"""Crash consistency in the store: instances, heartbeats, interrupted records, the migration
of a database made by the previous schema (real SQLite)."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import pytest

from telephony.call.summary import CallSummary, Outcome, Turn, call_parameters
from telephony.ops.records import IN_PROGRESS, INTERRUPTED, record_from_summary
from telephony.ops.store import (
    SCHEMA_VERSION,
    STALE_HEARTBEATS,
    CallStore,
    Instance,
    InstanceInUse,
)

T0 = 1_800_000_000.0
BEAT = 15.0
STALE = STALE_HEARTBEATS * BEAT


@pytest.fixture
def store(tmp_path: Path) -> CallStore:
    return CallStore(f"sqlite:///{tmp_path / 'calls.db'}")


def instance(name: str, token: str = "", started_at: float = T0) -> Instance:
    return Instance(name, "host-" + name, 100, started_at, BEAT, token or name * 4)


def running(sid: str, owner: str | None, at: float, text: str = "hello") -> dict[str, Any]:
    s = CallSummary(call_sid=sid, started_at=at - 60)
    s.turns.append(Turn(at_s=2.0, caller=text, agent="hi there"))
    row = record_from_summary(s, in_progress=True)
    row.update(instance_id=owner, updated_at=at)
    return row


def test_an_id_held_by_a_live_instance_is_refused(store: CallStore) -> None:
    assert store.claim_instance(instance("a", "t1"), now=T0) is None
    twin = instance("a", "t2")  # another process (another spool directory)
    problem = store.instance_conflict(twin, now=T0 + 5)
    assert problem is not None
    assert problem.startswith("INSTANCE_ID=a is in use by a live instance (host host-a, pid 100")
    with pytest.raises(InstanceInUse, match="in use by a live instance"):
        store.claim_instance(twin, now=T0 + 5)
    # Once its heartbeat is stale, the id is free again.
    assert store.claim_instance(twin, now=T0 + STALE + 1) == T0


def test_a_restart_holding_the_same_spool_takes_its_id_back_at_once(store: CallStore) -> None:
    store.claim_instance(instance("a", "tok"), now=T0)
    # Killed, restarted a second later with the same spool directory (the same token, and
    # it could lock it, so the process that wrote that heartbeat is gone).
    again = instance("a", "tok", started_at=T0 + 1)
    assert store.instance_conflict(again, now=T0 + 1) is None
    assert store.claim_instance(again, now=T0 + 1) == T0


def test_stale_and_absent_instances_calls_are_interrupted_live_ones_untouched(
    store: CallStore,
) -> None:
    store.claim_instance(instance("dead"), now=T0)
    store.claim_instance(instance("live"), now=T0)
    store.claim_instance(instance("me"), now=T0)
    store.heartbeat(instance("live"), now=T0 + 100)
    store.upsert(running("CAdead", "dead", T0 + 30, text="I was saying"))
    store.upsert(running("CAlive", "live", T0 + 90))
    store.upsert(running("CAmine", "me", T0 + 30))
    store.upsert(running("CAghost", "never-registered", T0 + 50))
    store.upsert(running("CAlegacy", None, T0 - 1000))  # schema 1: no instance
    store.upsert(running("CAlegacy2", None, T0 + 100))  # ... too recent to judge
    ended = store.interrupt_stale("me", now=T0 + 110)
    assert ended == {"dead": 1, "never-registered": 1, None: 1}
    dead = store.get("CAdead")
    assert dead is not None and dead["outcome"] == INTERRUPTED
    assert dead["reason"] == (
        "the server serving this call stopped without ending it "
        "(instance dead, last seen 2027-01-15 08:00:00 UTC)"
    )
    # Ended when it was last known alive, with what it had said by then.
    assert dead["ended_at"] == T0 + 30 and dead["duration_s"] == 60
    assert dead["transcript"][0]["text"] == "I was saying"
    assert "no heartbeat on record" in store.get("CAghost")["reason"]  # type: ignore[index]
    assert "instance unknown" in store.get("CAlegacy")["reason"]  # type: ignore[index]
    for sid in ("CAlive", "CAmine", "CAlegacy2"):
        assert store.get(sid)["outcome"] == IN_PROGRESS  # type: ignore[index]
    assert store.interrupt_stale("me", now=T0 + 111) == {}  # nothing twice


def test_a_previous_life_s_calls_are_ended_not_the_new_life_s(store: CallStore) -> None:
    store.upsert(running("CAbefore", "a", T0 + 10))
    store.upsert(running("CAafter", "a", T0 + 21))  # this life started at T0 + 20
    assert store.interrupt_previous_life("a", T0 + 12, started_at=T0 + 20, now=T0 + 25) == 1
    assert store.get("CAbefore")["outcome"] == INTERRUPTED  # type: ignore[index]
    assert store.get("CAafter")["outcome"] == IN_PROGRESS  # type: ignore[index]


def test_interrupted_records_take_a_final_record_not_a_snapshot_and_are_pruned(
    store: CallStore,
) -> None:
    store.upsert(running("CA1", "gone", T0))
    store.upsert(running("CA2", "gone", T0))
    store.interrupt_stale("me", now=T0 + STALE + 10)
    store.upsert(running("CA1", "gone", T0 + 5, text="a late snapshot"))
    assert store.get("CA1")["outcome"] == INTERRUPTED  # type: ignore[index]
    # A final record replayed from the spool is the call's own account: it wins.
    done = record_from_summary(
        CallSummary(call_sid="CA2", outcome=Outcome.COMPLETED, started_at=T0 - 60)
    )
    store.upsert(done)
    assert store.get("CA2")["outcome"] == "completed"  # type: ignore[index]
    # `calls prune` deletes interrupted records like finished ones.
    assert store.prune(T0) == 2


def test_calls_prune_ends_a_gone_instance_s_calls_first_even_with_no_server_up(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from telephony.ops.cli import calls_main

    url = f"sqlite:///{tmp_path / 'calls.db'}"
    store = CallStore(url)
    now = time.time()
    store.claim_instance(instance("live"), now=now)
    store.upsert(running("CAgone", "gone", now - 3 * 86_400))  # killed; no server since
    store.upsert(running("CAlive", "live", now))
    monkeypatch.setenv("DATABASE_URL", url)
    assert calls_main(["prune", "--older-than-days", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out == [
        "ended 1 records of calls whose server stopped without ending them (interrupted)",
        "deleted 1 call records older than 1 days",
    ]
    assert store.get("CAgone") is None
    assert store.get("CAlive")["outcome"] == IN_PROGRESS  # type: ignore[index]
    store.close()


def test_heartbeats_and_release(store: CallStore) -> None:
    me = instance("a", "tok")
    store.claim_instance(me, now=T0)
    assert store.heartbeat(me, now=T0 + 15) and store.instance_heartbeat("a") == T0 + 15
    # Presumed dead (no heartbeat for a minute), its id taken over by another process:
    store.claim_instance(instance("a", "other"), now=T0 + 15 + STALE + 1)
    assert not store.heartbeat(me, now=T0 + 100)
    store.release_instance(me)  # not its row any more: left alone
    assert store.instance_heartbeat("a") == T0 + 15 + STALE + 1
    store.release_instance(instance("a", "other"))
    assert store.instance_heartbeat("a") is None
    assert store.heartbeat(me, now=T0 + 200)  # re-registers


SCHEMA_1 = """
CREATE TABLE calls (
    call_sid VARCHAR(64) NOT NULL, stream_sid VARCHAR(64) NOT NULL,
    direction VARCHAR(16) NOT NULL, caller VARCHAR(64) NOT NULL, callee VARCHAR(64) NOT NULL,
    outcome VARCHAR(32) NOT NULL, reason TEXT NOT NULL, started_at FLOAT NOT NULL,
    ended_at FLOAT, duration_s FLOAT, turns INTEGER NOT NULL, interruptions INTEGER NOT NULL,
    reconnects INTEGER NOT NULL, stalls INTEGER NOT NULL, tokens_total INTEGER NOT NULL,
    greeting_ms FLOAT, response_ms_p50 FLOAT, transcript JSON NOT NULL, detail JSON NOT NULL,
    updated_at FLOAT NOT NULL, PRIMARY KEY (call_sid)
);
CREATE INDEX ix_calls_started_at ON calls (started_at);
CREATE INDEX ix_calls_outcome ON calls (outcome);
INSERT INTO calls VALUES ('CAold', 'MZold', 'inbound', '+14155550100', '+14155550199',
    'completed', 'caller hung up', 1700000000.0, 1700000042.0, 42.0, 3, 0, 0, 0, 150, 310.0,
    800.0, '[{"role": "caller", "text": "hi", "at_s": 1.0}]', '{"schema_version": 1}',
    1700000042.0);
INSERT INTO calls VALUES ('CAup', 'MZup', 'inbound', '', '', 'in_progress', '',
    1700000000.0, NULL, NULL, 0, 0, 0, 0, 0, NULL, NULL, '[]', '{"schema_version": 1}',
    1700000001.0);
"""


def test_a_database_made_by_the_previous_schema_is_migrated_at_open(tmp_path: Path) -> None:
    """The DDL above is what schema 1 (the previous release) created on SQLite."""
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA_1)
    conn.close()
    url = f"sqlite:///{path}"
    # `voice-agent calls list` (a read-only command) can read it right away ...
    reader = CallStore(url, create=False)
    [old, _up] = sorted(reader.list(), key=lambda r: r["call_sid"])
    reader.close()
    assert old["call_sid"] == "CAold" and old["instance_id"] is None
    store = CallStore(url)  # ... and the server's open is idempotent
    assert store.get("CAold")["transcript"] == [  # type: ignore[index]
        {"role": "caller", "text": "hi", "at_s": 1.0}
    ]
    # New records carry their instance; a record of before is ended like an absent one's.
    row = running("CAnew", "a", T0)
    store.upsert(row)
    assert store.get("CAnew")["instance_id"] == "a"  # type: ignore[index]
    assert store.get("CAnew")["detail"]["schema_version"] == SCHEMA_VERSION  # type: ignore[index]
    assert store.interrupt_stale("a", now=T0) == {None: 1}
    assert store.get("CAup")["outcome"] == INTERRUPTED  # type: ignore[index]
    assert store.claim_instance(instance("a"), now=T0) is None  # the new table is there
    columns = {r[1] for r in sqlite3.connect(path).execute("PRAGMA table_info(calls)")}
    assert "instance_id" in columns
    store.close()


def test_untrusted_call_parameters_fit_the_schema(store: CallStore) -> None:
    hostile = {"from": "+1" + "9" * 10_000, "to": "sip:\x00evil\nline", "direction": "x" * 99}
    caller, callee, direction = call_parameters(hostile)
    assert len(caller) == 64 and callee == "sip:evilline" and len(direction) == 64
    long_sid = "CA" + "f" * 5000
    s = CallSummary(
        call_sid=long_sid,
        stream_sid="MZ" + "e" * 300,
        caller="+1" + "9" * 10_000,  # as if it had come through unbounded
        callee=callee,
        direction="outbound-api" + "x" * 100,
        outcome=Outcome.COMPLETED,
    )
    row = record_from_summary(s)
    assert len(row["caller"]) == 64 and len(row["stream_sid"]) == 64
    assert len(row["direction"]) == 16
    # A hostile SID is cut to fit, and two of them never share a record.
    assert len(row["call_sid"]) == 64 and row["call_sid"].startswith("CAfff")
    other = record_from_summary(CallSummary(call_sid=long_sid + "g"))
    assert other["call_sid"] != row["call_sid"]
    store.upsert(row)
    store.upsert(other)
    assert store.count() == 2
    # The store applies the same bounds to rows built elsewhere.
    raw = dict(row, call_sid="CAraw", caller="x" * 1000)
    store.upsert(raw)
    assert store.get("CAraw")["caller"] == "x" * 64  # type: ignore[index]
