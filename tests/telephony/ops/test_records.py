"""Call records: the row built from a summary (pure) and the SQLAlchemy store (SQLite)."""

from __future__ import annotations

import asyncio
import threading
from pathlib import Path
from typing import Any

import pytest

from telephony.call.summary import CallSummary, Interruption, Outcome, Turn
from telephony.ops.records import (
    DIALING,
    IN_PROGRESS,
    dialing_record,
    record_from_summary,
    transcript_of,
)
from telephony.ops.store import SCHEMA_VERSION, CallStore, StoreError
from telephony.ops.writer import RecordWriter


def summary(sid: str = "CA1", **changes: Any) -> CallSummary:
    s = CallSummary(
        call_sid=sid,
        stream_sid="MZ1",
        direction="inbound",
        caller="+14155550100",
        callee="+14155550199",
        outcome=Outcome.ENDED_BY_AGENT,
        reason="agent ended the call",
        started_at=1_700_000_000.0,
        duration_s=42.5,
        model_connect_ms=120.0,
        first_audio_ms=310.0,
        turns=[
            Turn(at_s=3.0, caller="", agent="Hello! How can I help?", interrupted=False),
            Turn(
                at_s=9.0,
                caller="I need a table, call me on 415 555 0100",
                agent="Of course, for how many people and at what time?",
                interrupted=True,
                agent_heard="Of course, for how",
                response_ms=800.0,
            ),
            Turn(at_s=14.0, caller="four", agent="Done. Bye!", response_ms=600.0),
        ],
        interruptions=[
            Interruption(
                at_s=10.0,
                clear_latency_ms=0.03,
                sent_ms=3000,
                heard_ms=1100,
                confirmed_ms=1000,
                transcript_heard="Of course, for how",
            )
        ],
        dtmf=["1", "#"],
        tool_calls=[{"id": "t1", "name": "end_call", "args": {}, "result": {"result": "ok"}}],
        tokens={"prompt": 100, "response": 50, "total": 150},
        reconnects=1,
        stalls=1,
        stalls_recovered=1,
    )
    for key, value in changes.items():
        setattr(s, key, value)
    return s


def test_transcript_cuts_interrupted_agent_turns_to_what_was_heard() -> None:
    assert transcript_of(summary()) == [
        {"role": "agent", "text": "Hello! How can I help?", "at_s": 3.0},
        {"role": "caller", "text": "I need a table, call me on 415 555 0100", "at_s": 9.0},
        {
            "role": "agent",
            "text": "Of course, for how",
            "at_s": 9.0,
            "interrupted": True,
            "generated": "Of course, for how many people and at what time?",
            "response_ms": 800.0,
        },
        {"role": "caller", "text": "four", "at_s": 14.0},
        {"role": "agent", "text": "Done. Bye!", "at_s": 14.0, "response_ms": 600.0},
    ]


def test_record_carries_everything_the_operator_asks_about() -> None:
    row = record_from_summary(summary(), now=1_700_000_050.0)
    assert row["call_sid"] == "CA1"
    assert (row["caller"], row["callee"], row["direction"]) == (
        "+14155550100",
        "+14155550199",
        "inbound",
    )
    assert (row["outcome"], row["reason"]) == ("ended_by_agent", "agent ended the call")
    assert (row["started_at"], row["ended_at"], row["duration_s"]) == (
        1_700_000_000.0,
        1_700_000_050.0,
        42.5,
    )
    assert (row["turns"], row["interruptions"], row["reconnects"], row["stalls"]) == (3, 1, 1, 1)
    assert row["tokens_total"] == 150
    assert row["greeting_ms"] == 310.0
    assert row["response_ms_p50"] == 700.0
    detail = row["detail"]
    assert detail["dtmf"] == ["1", "#"]
    assert detail["tool_calls"][0]["name"] == "end_call"
    assert detail["latency"]["response_ms"] == [800.0, 600.0]
    assert detail["latency"]["model_connect_ms"] == 120.0
    assert detail["tokens"] == {"prompt": 100, "response": 50, "total": 150}
    assert detail["interruptions"][0]["heard_ms"] == 1100
    assert detail["redacted"] is False


def test_in_progress_snapshot_has_no_end() -> None:
    row = record_from_summary(summary(), in_progress=True)
    assert row["outcome"] == IN_PROGRESS
    assert row["ended_at"] is None and row["duration_s"] is None and row["reason"] == ""


def test_redaction_masks_numbers_in_fields_transcript_and_tools() -> None:
    s = summary()
    s.tool_calls = [{"id": "t", "name": "transfer_call", "args": {"to": "+14155550123"}}]
    row = record_from_summary(s, redact=True)
    assert (row["caller"], row["callee"]) == ("+*******0100", "+*******0199")
    assert row["transcript"][1]["text"] == "I need a table, call me on *** *** 0100"
    assert row["detail"]["tool_calls"][0]["args"] == {"to": "+*******0123"}
    assert row["detail"]["redacted"] is True
    assert "555" not in repr(row)


def test_a_call_cut_at_shutdown_gets_its_duration_from_the_clock() -> None:
    row = record_from_summary(
        summary(outcome=Outcome.SHUTDOWN, duration_s=0.0), now=1_700_000_012.5
    )
    assert row["duration_s"] == 12.5


# -- the store ----------------------------------------------------------------------------


@pytest.fixture
def store(tmp_path: Path) -> CallStore:
    return CallStore(f"sqlite:///{tmp_path / 'records' / 'calls.db'}")


def test_store_round_trips_a_record(store: CallStore) -> None:
    row = record_from_summary(summary())
    store.upsert(row)
    got = store.get("CA1")
    assert got is not None
    for key in ("caller", "outcome", "started_at", "transcript", "turns", "tokens_total"):
        assert got[key] == row[key]
    assert got["detail"]["dtmf"] == ["1", "#"]
    assert got["detail"]["schema_version"] == SCHEMA_VERSION == 3
    assert store.get("CA-missing") is None


def test_final_record_replaces_the_snapshot_but_never_the_reverse(store: CallStore) -> None:
    store.upsert(record_from_summary(summary(), in_progress=True))
    assert store.get("CA1")["outcome"] == IN_PROGRESS  # type: ignore[index]
    store.upsert(record_from_summary(summary()))
    assert store.get("CA1")["outcome"] == "ended_by_agent"  # type: ignore[index]
    # A late snapshot (taken at shutdown after the final write was queued) changes nothing.
    store.upsert(record_from_summary(summary(), in_progress=True))
    got = store.get("CA1")
    assert got is not None and got["outcome"] == "ended_by_agent" and got["ended_at"]
    assert store.count() == 1


def test_listing_is_newest_first_filterable_and_pages(store: CallStore) -> None:
    for i in range(7):
        outcome = Outcome.FAILED if i % 3 == 0 else Outcome.COMPLETED
        s = summary(f"CA{i}", started_at=1_700_000_000.0 + i, outcome=outcome)
        s.direction = "outbound" if i == 6 else "inbound"
        store.upsert(record_from_summary(s))
    first = store.list(limit=3)
    assert [r["call_sid"] for r in first] == ["CA6", "CA5", "CA4"]
    assert "transcript" not in first[0] and "detail" not in first[0]
    older = store.list(limit=3, before=first[-1]["started_at"])
    assert [r["call_sid"] for r in older] == ["CA3", "CA2", "CA1"]
    assert [r["call_sid"] for r in store.list(outcome="failed")] == ["CA6", "CA3", "CA0"]
    assert [r["call_sid"] for r in store.list(direction="outbound")] == ["CA6"]
    assert len(store.list(limit=100_000)) == 7  # bounded by MAX_LIMIT, not by the caller


def test_prune_deletes_only_old_finished_records(store: CallStore) -> None:
    store.upsert(record_from_summary(summary("CAold", started_at=1_000.0)))
    store.upsert(record_from_summary(summary("CAlive", started_at=1_000.0), in_progress=True))
    store.upsert(record_from_summary(summary("CAnew", started_at=5_000.0)))
    assert store.prune(before=2_000.0) == 1
    assert store.get("CAold") is None
    assert store.get("CAlive") is not None  # a call still up is never pruned
    assert store.get("CAnew") is not None


def test_dialing_records_end_only_while_still_dialing(store: CallStore) -> None:
    store.upsert(dialing_record("CAd", "+14155550100", "+14155550111"))
    assert store.set_outcome_if_open("CAd", "no-answer", "Twilio: no-answer")
    got = store.get("CAd")
    assert got is not None and got["outcome"] == "no-answer" and got["direction"] == "outbound"
    # Once the call reached the agent, Twilio's status no longer decides the outcome.
    store.upsert(dialing_record("CAe", "+14155550100", "+14155550111"))
    store.upsert(record_from_summary(summary("CAe"), in_progress=True))
    assert not store.set_outcome_if_open("CAe", "failed", "x")
    assert store.get("CAe")["outcome"] == IN_PROGRESS  # type: ignore[index]
    assert DIALING == "dialing"


def test_a_bad_url_or_unreachable_database_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(StoreError, match="cannot open the call database sqlite:///"):
        CallStore(f"sqlite:///{blocker}/calls.db")
    with pytest.raises(StoreError, match=r"\*\*\*"):  # the password is never shown
        CallStore("postgresql+nosuchdriver://user:secret@127.0.0.1:1/db")


async def test_writer_never_blocks_the_loop_and_flushes_everything(tmp_path: Path) -> None:
    store = CallStore(f"sqlite:///{tmp_path / 'calls.db'}")
    gate = threading.Event()
    real_upsert = store.upsert

    def slow_upsert(row: dict[str, Any]) -> None:
        gate.wait(5)  # the database is slow: the event loop must not notice
        real_upsert(row)

    store.upsert = slow_upsert  # type: ignore[method-assign]
    writer = RecordWriter(store)
    loop = asyncio.get_running_loop()
    began = loop.time()
    for i in range(50):
        writer.submit(record_from_summary(summary(f"CA{i}")))
    assert loop.time() - began < 0.5  # submit returned at once although nothing is written
    assert writer.pending == 50
    gate.set()
    assert await writer.flush(10)
    assert writer.pending == 0 and writer.written == 50
    assert store.count() == 50
    assert await writer.aclose(5)


def test_calls_command_says_where_it_looked_when_there_is_no_database(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from telephony.ops.cli import calls_main

    missing = tmp_path / "nowhere" / "calls.db"
    monkeypatch.setenv("DATABASE_URL", f"sqlite:///{missing}")
    assert calls_main(["list"]) == 1
    err = capsys.readouterr().err
    assert f"no call records at {missing}" in err
    assert not missing.exists()  # looking did not create an empty database
    store = CallStore(f"sqlite:///{missing}")
    store.upsert(record_from_summary(summary("CAseen")))
    store.close()
    assert calls_main(["list"]) == 0
    assert "CAseen" in capsys.readouterr().out


def test_each_side_of_a_turn_is_dated_when_it_began_speaking() -> None:
    s = CallSummary(
        call_sid="CA2",
        turns=[
            Turn(
                at_s=12.0,
                caller="what time do you open",
                caller_at_s=5.2,
                agent="At nine.",
                agent_at_s=7.9,
            )
        ],
    )
    assert transcript_of(s) == [
        {"role": "caller", "text": "what time do you open", "at_s": 5.2},
        {"role": "agent", "text": "At nine.", "at_s": 7.9},
    ]


def test_transcript_fragments_are_joined_with_spaces_only_between_units() -> None:
    from telephony.call.summary import join_fragments

    assert join_fragments(["Hello", " there", ", how", " are you?"]) == "Hello there, how are you?"
    assert join_fragments(["[caller speech 2.4 s]", "[caller speech 1.1 s]"]) == (
        "[caller speech 2.4 s] [caller speech 1.1 s]"
    )
    assert join_fragments(["Is that all?", "Yes."]) == "Is that all? Yes."
    assert join_fragments(["Hel", "lo"]) == "Hello"  # a word split mid-way stays one word
    assert join_fragments(["今日は", "いい天気"]) == "今日はいい天気"
    assert join_fragments(["Wait...", "?"]) == "Wait...?"
    assert join_fragments(["", " ok "]) == "ok"
