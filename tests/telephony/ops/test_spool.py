"""The records spool: durable, ordered, bounded, one process per directory (real files)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from telephony.ops.spool import Spool, SpoolError, other_spools

Opener = Callable[..., Spool]


@pytest.fixture
def open_spool(tmp_path: Path) -> Iterator[Opener]:
    """Spool(tmp_path, name, ...), every one closed at the end of the test."""
    opened: list[Spool] = []

    def open_(name: str, **kwargs: Any) -> Spool:
        spool = Spool(tmp_path, name, **kwargs)
        opened.append(spool)
        return spool

    yield open_
    for spool in opened:
        spool.close()


def drain(spool: Spool) -> list[dict[str, Any]]:
    rows = []
    while (row := spool.first()) is not None:
        rows.append(row)
        spool.ack()
    return rows


def row(i: int, size: int = 0) -> dict[str, Any]:
    return {"call_sid": f"CA{i}", "outcome": "completed", "pad": "x" * size}


def test_rows_come_back_in_order_across_a_restart_and_only_once(
    tmp_path: Path, open_spool: Opener
) -> None:
    spool = open_spool("a")
    for i in range(5):
        spool.append(row(i))
    assert spool.rows == 5 and len(spool) == 5
    assert spool.first() == row(0)
    assert spool.first() == row(0)  # not acknowledged: still first
    spool.ack()
    spool.close()  # the process stops with 4 rows to go

    again = open_spool("a")
    # A restart replays the whole segment it had begun (at least once, in order) ...
    assert [r["call_sid"] for r in drain(again)] == [f"CA{i}" for i in range(5)]
    assert again.rows == 0
    again.append(row(9))
    assert drain(again) == [row(9)]
    again.close()
    # ... and nothing once fully replayed: no segment is left behind.
    assert not list((tmp_path / "a").glob("segment-*"))
    assert open_spool("a").first() is None


def test_one_process_per_directory(tmp_path: Path, open_spool: Opener) -> None:
    first = open_spool("a")
    with pytest.raises(SpoolError, match="INSTANCE_ID=a is in use by a live process on this host"):
        Spool(tmp_path, "a")
    other = open_spool("b")  # another instance's directory is its own
    assert other.token != first.token
    token = first.token
    first.close()
    # Released: the next process takes it, with the same token (it names the directory).
    assert open_spool("a").token == token


def test_the_bound_drops_the_oldest_rows_and_counts_them(
    tmp_path: Path, open_spool: Opener
) -> None:
    spool = open_spool("a", max_bytes=1024 * 1024)  # segments of 64 KiB
    for i in range(400):
        spool.append(row(i, size=4000))  # ~1.6 MB offered
    assert spool.size <= 1024 * 1024
    assert spool.dropped > 0
    kept = drain(spool)
    assert len(kept) + spool.dropped == 400
    # The newest rows are kept, still in order.
    assert [r["call_sid"] for r in kept] == [f"CA{i}" for i in range(spool.dropped, 400)]


def test_a_torn_last_line_is_skipped_and_counted(tmp_path: Path, open_spool: Opener) -> None:
    spool = open_spool("a")
    spool.append(row(1))
    spool.append(row(2))
    spool.close()
    [segment] = (tmp_path / "a").glob("segment-*.jsonl")
    with segment.open("ab") as f:
        f.write(b'{"call_sid": "CA3", "outc')  # killed in the middle of an append
    again = open_spool("a")
    assert again.rows == 3
    assert drain(again) == [row(1), row(2)]
    assert again.dropped == 1
    # New rows go to a new segment, never glued to the torn line.
    again.append(row(4))
    assert drain(again) == [row(4)]


def test_a_failed_append_leaves_nothing_half_written(
    open_spool: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    spool = open_spool("a")
    spool.append(row(1))

    def full(fd: int) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr("telephony.ops.spool.os.fsync", full)
    with pytest.raises(OSError, match="No space"):
        spool.append(row(2))
    monkeypatch.undo()
    assert spool.rows == 1
    spool.append(row(3))
    assert drain(spool) == [row(1), row(3)]


def test_spools_of_other_ids_are_reported(tmp_path: Path, open_spool: Opener) -> None:
    old = open_spool("old-name")
    old.append(row(1))
    old.close()
    open_spool("empty").close()
    assert other_spools(tmp_path, "new-name") == {"old-name": 1}


def test_an_unusable_directory_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SpoolError, match="cannot use the records spool"):
        Spool(blocker, "a")
