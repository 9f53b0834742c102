"""The records spool: call records the database would not take, kept on local disk.

One directory per instance (``RECORDS_SPOOL_DIR/<INSTANCE_ID>/``), held by one process at a
time (an exclusive ``flock`` on its ``lock`` file, released by the kernel when the process
dies, however it dies). Rows are appended to JSON-lines segment files, each append written
and ``fsync``-ed before it counts: a row in the spool survives the process being killed.
Segments are replayed oldest first, in order; a fully replayed segment is deleted. A process
killed during a replay replays that segment's rows again at its next start: writes are
upserts, and a snapshot never replaces a final record, so that is harmless.

Bounded: beyond ``max_bytes`` the oldest segment is deleted (its rows are counted as dropped
and logged); a segment holds at most 1/16 of the bound, so at most that much goes at once.

The directory's ``token`` (random, made once) names it in the ``instances`` table: a process
that holds the lock and finds its token on the heartbeat of its ``INSTANCE_ID`` knows that
heartbeat is its own previous life's, not a live twin's.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import re
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from agent.logs import fields
from telephony.errors import TelephonyError

__all__ = ["DEFAULT_MAX_BYTES", "Spool", "SpoolError", "SpoolInUse", "other_spools"]

log = logging.getLogger(__name__)

DEFAULT_MAX_BYTES: Final = 64 * 1024 * 1024
#: A segment holds at most this share of the bound (and at least this many bytes).
SEGMENTS_PER_BOUND: Final = 16
MIN_SEGMENT_BYTES: Final = 64 * 1024
_SEGMENT = re.compile(r"^segment-(\d{12})\.jsonl$")


class SpoolError(TelephonyError):
    """The spool directory can't be used (in use by another process, or not writable)."""


class SpoolInUse(SpoolError):
    """Another live process holds this spool directory (and so this ``INSTANCE_ID``)."""


@dataclass
class _Segment:
    path: Path
    seq: int
    rows: int
    size: int
    #: Bytes of it already replayed (in this process; a restart replays from 0).
    offset: int = 0
    done_rows: int = 0


class Spool:
    """Append-only, ordered, bounded, durable storage of rows (JSON objects)."""

    def __init__(self, root: Path, name: str, *, max_bytes: int = DEFAULT_MAX_BYTES) -> None:
        self.dir = Path(root).expanduser() / name
        self.max_bytes = max_bytes
        self.segment_bytes = max(MIN_SEGMENT_BYTES, max_bytes // SEGMENTS_PER_BOUND)
        #: Rows deleted unreplayed because the spool was full (or unreadable: a torn line).
        self.dropped = 0
        try:
            self.dir.mkdir(parents=True, exist_ok=True)
            self._lock = (self.dir / "lock").open("a+b")
        except OSError as exc:
            raise SpoolError(f"cannot use the records spool {self.dir}: {exc.strerror}") from None
        try:
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lock.close()
            raise SpoolInUse(
                f"INSTANCE_ID={name} is in use by a live process on this host (it holds the "
                f"records spool {self.dir}): stop it, or give this process another INSTANCE_ID"
            ) from None
        try:
            self.token = self._token()
            self._segments = [self._scan(p) for p in self._segment_paths()]
        except OSError as exc:
            self.close()
            raise SpoolError(f"cannot use the records spool {self.dir}: {exc.strerror}") from None
        # Never append to a segment of a previous life (its last line may be torn).
        self._next_seq = (self._segments[-1].seq + 1) if self._segments else 1
        self._writing: _Segment | None = None
        self._head: tuple[_Segment, int] | None = None

    # -- state ----------------------------------------------------------------------------

    @property
    def rows(self) -> int:
        """Rows waiting to be replayed."""
        return sum(s.rows - s.done_rows for s in self._segments)

    @property
    def size(self) -> int:
        return sum(s.size - s.offset for s in self._segments)

    def __len__(self) -> int:
        return self.rows

    # -- writing --------------------------------------------------------------------------

    def append(self, row: dict[str, Any]) -> None:
        """Write ``row`` durably (``OSError`` if the disk refuses: nothing is half-counted)."""
        line = (json.dumps(row, separators=(",", ":"), default=str) + "\n").encode()
        seg = self._writing
        if seg is None or (seg.size and seg.size + len(line) > self.segment_bytes):
            seg = self._new_segment()
        with seg.path.open("ab") as f:
            try:
                f.write(line)
                f.flush()
                os.fsync(f.fileno())
            except OSError:
                # Leave no partial line behind for the next append to be glued to.
                with contextlib.suppress(OSError):
                    f.truncate(seg.size)
                raise
        seg.size += len(line)
        seg.rows += 1
        self._bound()

    def _new_segment(self) -> _Segment:
        seq = self._next_seq
        path = self.dir / f"segment-{seq:012d}.jsonl"
        path.touch()
        self._next_seq += 1
        seg = _Segment(path, seq, 0, 0)
        self._segments.append(seg)
        self._writing = seg
        return seg

    def _bound(self) -> None:
        while self.size > self.max_bytes and len(self._segments) > 1:
            oldest = self._segments[0]
            lost = oldest.rows - oldest.done_rows
            self._remove(oldest)
            self.dropped += lost
            log.error(
                "records.spool_full",
                extra=fields(
                    spool=str(self.dir),
                    dropped_rows=lost,
                    max_bytes=self.max_bytes,
                    message="the records spool is full: its oldest rows were deleted unwritten",
                ),
            )

    # -- replaying ------------------------------------------------------------------------

    def first(self) -> dict[str, Any] | None:
        """The oldest row not replayed yet (None: the spool is empty). It stays first until
        ``ack()`` says it has been written."""
        while self._segments:
            seg = self._segments[0]
            if seg.done_rows >= seg.rows:
                self._remove(seg)
                continue
            with seg.path.open("rb") as f:
                f.seek(seg.offset)
                line = f.readline()
            if not line:  # shorter than counted (cut by hand): nothing more in it
                seg.done_rows = seg.rows
                continue
            end = seg.offset + len(line)
            row = _parse(line) if line.endswith(b"\n") else None  # a torn last line
            if row is None:
                log.error("records.spool_bad_line", extra=fields(spool=str(seg.path)))
                self.dropped += 1
                self._advance(seg, end)
                continue
            self._head = (seg, end)
            return row
        return None

    def ack(self) -> None:
        """The row ``first()`` returned is in the database: move past it."""
        head, self._head = self._head, None
        if head is not None and head[0] in self._segments:
            self._advance(*head)

    def _advance(self, seg: _Segment, offset: int) -> None:
        seg.offset = offset
        seg.done_rows += 1
        if seg.done_rows >= seg.rows:
            self._remove(seg)  # fully replayed: a restart must not replay it again

    def _remove(self, seg: _Segment) -> None:
        with contextlib.suppress(FileNotFoundError):
            seg.path.unlink()
        self._segments.remove(seg)
        if seg is self._writing:
            self._writing = None

    # -- the directory --------------------------------------------------------------------

    def _token(self) -> str:
        path = self.dir / "token"
        try:
            token = path.read_text().strip()
            if re.fullmatch(r"[0-9a-f]{32}", token):
                return token
        except FileNotFoundError:
            pass
        token = secrets.token_hex(16)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(token + "\n")
        os.replace(tmp, path)
        return token

    def _segment_paths(self) -> list[Path]:
        found = [(int(m.group(1)), p) for p in self.dir.iterdir() if (m := _SEGMENT.match(p.name))]
        return [p for _, p in sorted(found)]

    def _scan(self, path: Path) -> _Segment:
        data = path.read_bytes()
        # A torn last line (killed mid-append) is not a row; it is reported when read.
        rows = data.count(b"\n") + (0 if not data or data.endswith(b"\n") else 1)
        seq = int(_SEGMENT.match(path.name).group(1))  # type: ignore[union-attr]
        return _Segment(path, seq, rows, len(data))

    def close(self) -> None:
        """Release the directory (the rows stay for the next process with this name)."""
        if self._lock.closed:
            return
        with contextlib.suppress(OSError):
            fcntl.flock(self._lock.fileno(), fcntl.LOCK_UN)
        self._lock.close()

    def __enter__(self) -> Spool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _parse(line: bytes) -> dict[str, Any] | None:
    try:
        row = json.loads(line)
    except ValueError:
        return None
    return row if isinstance(row, dict) else None


def other_spools(root: Path, name: str) -> dict[str, int]:
    """Spool directories beside ``name``'s that hold rows (of another INSTANCE_ID): their
    names and row counts, for a warning (they are replayed only under their own id)."""
    found: dict[str, int] = {}
    try:
        entries = list(Path(root).expanduser().iterdir())
    except OSError:
        return found
    for entry in entries:
        if entry.name == name or not entry.is_dir():
            continue
        with contextlib.suppress(OSError):
            rows = sum(
                p.read_bytes().count(b"\n") for p in entry.iterdir() if _SEGMENT.match(p.name)
            )
            if rows:
                found[entry.name] = rows
    return found
