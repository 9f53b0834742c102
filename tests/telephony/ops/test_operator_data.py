"""Feedback (schema 3), the dashboard's figures, export, and recordings on disk."""

from __future__ import annotations

import csv
import io
import json
import sqlite3
import wave
from pathlib import Path
from typing import Any

import pytest

from telephony.call.summary import CallSummary, Outcome, Turn
from telephony.ops import cli
from telephony.ops.recordings import recording_file
from telephony.ops.records import record_from_summary
from telephony.ops.stats import dashboard, percentile
from telephony.ops.store import SCHEMA_VERSION, CallStore

T0 = 1_700_000_000.0


def record(sid: str, started_at: float, **changes: Any) -> dict[str, Any]:
    s = CallSummary(
        call_sid=sid,
        stream_sid="MZ" + sid,
        direction="inbound",
        caller="+14155550100",
        callee="+14155550199",
        outcome=Outcome.COMPLETED,
        reason="caller hung up",
        started_at=started_at,
        duration_s=20.0,
        first_audio_ms=300.0,
        turns=[
            Turn(at_s=2.0, caller="hello", agent="Hi, how can I help?", response_ms=600.0),
            Turn(at_s=6.0, caller="a table", agent="For how many?", response_ms=900.0),
        ],
        tool_calls=[{"id": "1", "name": "lookup", "args": {}, "result": {}, "outcome": "error"}],
    )
    for key, value in changes.items():
        setattr(s, key, value)
    return record_from_summary(s, now=started_at + 20)


def test_percentiles_are_nearest_rank() -> None:
    assert percentile([], 50) is None
    assert percentile([5.0], 95) == 5.0
    assert percentile([1.0, 2.0, 3.0, 4.0], 50) == 2.0
    assert percentile([float(i) for i in range(1, 101)], 95) == 95.0


def test_the_dashboard_buckets_calls_by_hour() -> None:
    rows = [
        record("CA1", T0 + 10),
        record("CA2", T0 + 20, outcome=Outcome.FAILED, reason="model"),
        record("CA3", T0 + 3600 + 5),
        record("CAlate", T0 + 3 * 3600),  # outside the window
        {"started_at": None, "outcome": "completed"},  # ignored, not a crash
    ]
    stats = dashboard(rows, T0, T0 + 2 * 3600, 3600)
    assert stats["calls"] == 3
    assert stats["outcomes"] == ["completed", "failed"]
    first, second = stats["buckets"]
    assert first["start"] == T0 and second["start"] == T0 + 3600
    assert first["outcomes"] == {"completed": 1, "failed": 1} and second["calls"] == 1
    assert first["response_ms"] == {"p50": 600.0, "p95": 900.0, "count": 4}
    assert first["greeting_ms"]["p50"] == 300.0
    assert first["tool_calls"] == 2 and first["tool_errors"] == 2
    assert stats["total"]["calls"] == 3 and stats["total"]["tool_errors"] == 3
    with pytest.raises(ValueError):
        dashboard([], T0, T0, 3600)


def test_feedback_is_kept_across_later_writes_of_the_call(tmp_path: Path) -> None:
    store = CallStore(f"sqlite:///{tmp_path / 'calls.db'}")
    store.upsert(record("CA1", T0))
    assert store.set_feedback("CA1", 4, "good answer", now=T0 + 60)
    assert not store.set_feedback("CAnone", 4, "")
    # A late replay of the call's final row (the spool) must not erase the operator's verdict.
    store.upsert({**record("CA1", T0), "feedback_rating": None})
    got = store.get("CA1")
    assert got is not None
    assert (got["feedback_rating"], got["feedback_comment"], got["feedback_at"]) == (
        4,
        "good answer",
        T0 + 60,
    )
    assert got["detail"]["schema_version"] == SCHEMA_VERSION == 3
    [listed] = store.list()
    assert listed["feedback_rating"] == 4
    store.close()


SCHEMA_2_CALLS = """
CREATE TABLE calls (
    call_sid VARCHAR(64) NOT NULL, stream_sid VARCHAR(64) NOT NULL,
    direction VARCHAR(16) NOT NULL, caller VARCHAR(64) NOT NULL, callee VARCHAR(64) NOT NULL,
    outcome VARCHAR(32) NOT NULL, reason TEXT NOT NULL, started_at FLOAT NOT NULL,
    ended_at FLOAT, duration_s FLOAT, turns INTEGER NOT NULL, interruptions INTEGER NOT NULL,
    reconnects INTEGER NOT NULL, stalls INTEGER NOT NULL, tokens_total INTEGER NOT NULL,
    greeting_ms FLOAT, response_ms_p50 FLOAT, transcript JSON NOT NULL, detail JSON NOT NULL,
    updated_at FLOAT NOT NULL, instance_id VARCHAR(64), PRIMARY KEY (call_sid)
);
INSERT INTO calls VALUES ('CAold', 'MZold', 'inbound', '+14155550100', '+14155550199',
    'completed', 'caller hung up', 1700000000.0, 1700000042.0, 42.0, 3, 0, 0, 0, 150, 310.0,
    800.0, '[]', '{"schema_version": 2}', 1700000042.0, 'web-1');
"""


def test_a_schema_2_table_gets_the_feedback_columns(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    with sqlite3.connect(path) as conn:
        conn.executescript(SCHEMA_2_CALLS)
    conn.close()
    store = CallStore(f"sqlite:///{path}")
    assert store.get("CAold")["feedback_rating"] is None  # type: ignore[index]
    assert store.set_feedback("CAold", 1, "the agent talked over the caller")
    assert store.get("CAold")["feedback_rating"] == 1  # type: ignore[index]
    store.close()


def test_export_writes_csv_and_json_lines_with_feedback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    url = f"sqlite:///{tmp_path / 'calls.db'}"
    store = CallStore(url)
    for i in range(3):
        store.upsert(record(f"CA{i}", T0 + i * 86_400))
    store.set_feedback("CA2", 5, 'great, "quoted"\nand two lines', now=T0 + 2 * 86_400 + 30)
    # More than one batch of the export's paging, in order.
    assert [r["call_sid"] for r in store.export(batch=2)] == ["CA0", "CA1", "CA2"]
    store.close()
    monkeypatch.setenv("DATABASE_URL", url)
    assert cli.calls_main(["export", "--format", "jsonl", "--since", "2023-11-15"]) == 0
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["call_sid"] for r in lines] == ["CA1", "CA2"]
    assert lines[1]["feedback"]["rating"] == 5 and lines[0]["feedback"] is None
    assert lines[1]["transcript"][0] == {"role": "caller", "text": "hello", "at_s": 2.0}
    out = tmp_path / "calls.csv"
    assert cli.calls_main(["export", "--format", "csv", "--output", str(out)]) == 0
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert [r["call_sid"] for r in rows] == ["CA0", "CA1", "CA2"]
    assert rows[2]["feedback_rating"] == "5"
    assert rows[2]["feedback_comment"] == 'great, "quoted"\nand two lines'
    assert rows[0]["tool_errors"] == "1"
    assert rows[0]["transcript"].startswith("Caller: hello\nAgent: Hi, how can I help?")
    assert cli.calls_main(["export", "--since", "yesterday-ish"]) == 1
    assert "--since" in capsys.readouterr().err


def test_since_takes_relative_iso_and_epoch() -> None:
    assert cli.parse_since("24h", now=T0) == T0 - 86_400
    assert cli.parse_since("30m", now=T0) == T0 - 1800
    assert cli.parse_since("1700000000") == T0
    assert cli.parse_since("2023-11-14T22:13:20Z") == T0
    assert cli.parse_since("2023-11-14T22:13:20") == T0  # UTC unless it says


def wav(path: Path, samples: list[int]) -> None:
    with wave.open(str(path), "wb") as w:
        w.setnchannels(1)
        w.setsampwidth(2)
        w.setframerate(8000)
        w.writeframes(b"".join(s.to_bytes(2, "little", signed=True) for s in samples))


def test_recordings_are_found_by_name_only_under_the_root(tmp_path: Path) -> None:
    root = tmp_path / "rec"
    call = root / "CA1"
    call.mkdir(parents=True)
    wav(call / "caller.wav", [1, 2, 3])
    wav(call / "agent.wav", [-1, -2])
    assert recording_file(root, "CA1", "caller") is None  # no events.jsonl yet: incomplete
    (call / "events.jsonl").write_text("{}\n")
    assert recording_file(root, "CA1", "caller") == call / "caller.wav"
    both = recording_file(root, "CA1", "both")
    assert both == call / "both.wav"
    with wave.open(str(both), "rb") as w:
        assert (w.getnchannels(), w.getframerate(), w.getnframes()) == (2, 8000, 3)
        frames = w.readframes(3)
    pairs = [int.from_bytes(frames[i : i + 2], "little", signed=True) for i in range(0, 12, 2)]
    assert pairs == [1, -1, 2, -2, 3, 0]  # caller left, agent right, the shorter padded
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "events.jsonl").write_text("{}")
    wav(tmp_path / "secret" / "caller.wav", [7])
    for name in ("..", "../secret", "CA1/../../secret", "", "CA1\x00"):
        assert recording_file(root, name, "caller") is None
    assert recording_file(root, "CA1", "events") is None  # type: ignore[arg-type]
    assert recording_file(root, "CAnone", "both") is None
