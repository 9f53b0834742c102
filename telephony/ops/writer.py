"""The server's record writer: call records reach the database from one thread, none is lost.

``RecordWriter.submit()`` never blocks the event loop: rows are queued for one dedicated
thread, which writes them in order. When the database refuses a write (down, full, locked,
read-only), nothing is dropped:

- the row goes to the **spool** (``telephony.ops.spool``: durable JSON lines on local disk),
  and so does every row after it, to keep their order, without waiting on the database again;
- the database is tried again with capped exponential backoff (``RETRY_BACKOFF_S``); once it
  accepts a write, the spool is replayed in order, a batch at a time, then new rows go
  straight to the database again. A spool left by a previous life of this instance (killed,
  or stopped while the database was down) is replayed the same way at startup;
- if the spool cannot be written either (the disk is full too), rows wait in memory, at most
  ``MEMORY_ROWS`` of them (beyond, the oldest are dropped: logged, counted);
- periodic snapshots of calls in progress (``submit(..., refresh=True)``) are not spooled
  while the database is down: only the latest one per call is kept (in memory), and written
  after the spool. A call's first and final rows are always spooled.

A row the database refuses because of *what it holds* (a value it cannot store) while it
accepts others is written again with every value made storable; if even that fails it is
dropped (logged, counted), so that it never blocks the rows behind it.

The same thread keeps this instance's heartbeat (every ``heartbeat_s``) and, at startup and
then with each heartbeat, ends the ``in_progress`` records of instances that stopped without
ending them (``CallStore.interrupt_stale``), and those of this instance's previous life once
its spool has been replayed. Nothing here runs on the per-frame path.

On shutdown (``aclose``) whatever has not reached the database is spooled before exit.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import json
import logging
import math
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final, Literal

from sqlalchemy.exc import DataError, DBAPIError, IntegrityError, StatementError

from agent.logs import fields
from telephony.ops.records import bounded
from telephony.ops.spool import Spool
from telephony.ops.store import CallStore, Instance, StoreError

__all__ = ["RecordWriter", "WriterStats"]

log = logging.getLogger(__name__)

#: Waits between attempts to reach a database that refused a write (the last one repeats).
RETRY_BACKOFF_S: Final = (0.5, 1.0, 2.0, 4.0, 8.0, 15.0, 30.0)
#: Rows kept in memory when neither the database nor the spool takes them.
MEMORY_ROWS: Final = 10_000
#: Spooled rows replayed between two looks at the queue.
REPLAY_BATCH: Final = 200
#: At shutdown, the database gets this long to take what is spooled before it stays spooled.
FINAL_REPLAY_S: Final = 5.0
#: At shutdown, how long the writer thread may take to finish a write it has begun.
JOIN_TIMEOUT_S: Final = 5.0

_Result = Literal["ok", "outage", "dropped"]


@dataclass
class WriterStats:
    """Counters of one writer (read by ``/metrics``)."""

    written: int = 0
    spooled: int = 0
    replayed: int = 0
    dropped: int = 0
    interrupted: int = 0


@dataclass
class _Row:
    row: dict[str, Any]
    refresh: bool


@dataclass
class _Job:
    fn: Callable[[], Any]
    future: concurrent.futures.Future[Any]


class RecordWriter:
    """Writes call records from the event loop without ever waiting on the database.

    ``spool``: where rows go while the database refuses them (None: memory only).
    ``instance``: this process, registered (``CallStore.claim_instance``: ``InstanceInUse``
    if a live instance has its id) and kept alive by heartbeats; None: no heartbeat, no
    sweeping (tools and tests that only write rows). The constructor does the claim: call it
    off the event loop. ``on_dropped(n)`` and ``on_interrupted(n)`` are called from the
    writer thread (for the metrics).
    """

    def __init__(
        self,
        store: CallStore,
        *,
        spool: Spool | None = None,
        instance: Instance | None = None,
        on_dropped: Callable[[int], None] | None = None,
        on_interrupted: Callable[[int], None] | None = None,
        retry_backoff_s: tuple[float, ...] = RETRY_BACKOFF_S,
        memory_rows: int = MEMORY_ROWS,
    ) -> None:
        self.store = store
        self.spool = spool
        self.instance = instance
        self.stats = WriterStats()
        self._on_dropped = on_dropped
        self._on_interrupted = on_interrupted
        self._backoff = retry_backoff_s
        self._memory_rows = memory_rows
        # The queue (submit → thread): guarded by _cond, held only for a moment.
        self._cond = threading.Condition()
        self._queue: deque[_Row | _Job] = deque()
        self._busy: _Row | _Job | None = None
        self._stop = False
        self._closed = False
        # The backlog (rows not in the database, oldest first: spool, then memory, then the
        # held snapshots): owned by the thread; _state guards it against the shutdown path.
        self._state = threading.Lock()
        self._memory: deque[dict[str, Any]] = deque()
        self._latest: dict[str, dict[str, Any]] = {}
        self._abandoned = False
        self._backlog_rows = len(spool) if spool is not None else 0
        #: Bytes of rows in the spool, not replayed yet (kept by the thread, for the metrics).
        self.spool_bytes = spool.size if spool is not None else 0
        self._spool_dropped = spool.dropped if spool is not None else 0
        self._failures = 0
        self._down_until = 0.0  # monotonic: no database attempt before this
        self._spool_failing = False
        self._taken_over = False
        self._previous_life: tuple[float | None] | None = None
        if instance is not None:
            self._previous_life = (store.claim_instance(instance),)
        self._next_beat = 0.0
        self._readers = concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="call-records-read"
        )
        # One thread: rows are written in the order submitted, and SQLite sees one writer.
        self._thread = threading.Thread(target=self._run, name="call-records", daemon=True)
        self._thread.start()
        if self._backlog_rows:
            log.warning(
                "records.spool_found",
                extra=fields(rows=self._backlog_rows, spool=str(spool.dir) if spool else None),
            )

    # -- the event loop's side ------------------------------------------------------------

    def submit(self, row: dict[str, Any], *, refresh: bool = False) -> None:
        """Queue a row for writing. Returns at once; never raises.

        ``refresh``: a periodic snapshot of a call in progress (superseded by the next one).
        """
        if self._closed:
            log.error(
                "records.write_after_close",
                extra=fields(call_sid=row.get("call_sid"), outcome=row.get("outcome")),
            )
            return
        stamped = dict(row)
        stamped.setdefault("updated_at", time.time())  # when the state was taken
        if self.instance is not None:
            stamped.setdefault("instance_id", self.instance.id)
        with self._cond:
            self._queue.append(_Row(stamped, refresh))
            self._cond.notify()

    @property
    def pending(self) -> int:
        """Rows (and store calls) not in the database yet: queued, being written, spooled or
        held in memory."""
        return len(self._queue) + (self._busy is not None) + self._backlog_rows

    @property
    def written(self) -> int:
        return self.stats.written

    @property
    def failed(self) -> int:
        """Rows lost (should stay 0)."""
        return self.stats.dropped

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every row submitted so far is in the database or durably spooled
        (True), or ``timeout_s`` passes."""
        if not self._queue and self._busy is None:
            return True
        done = await asyncio.to_thread(self._wait_idle, timeout_s)
        if not done:
            log.error("records.flush_timeout", extra=fields(unwritten=len(self._queue)))
        return done

    def _wait_idle(self, timeout_s: float) -> bool:
        with self._cond:
            return self._cond.wait_for(
                lambda: not self._queue and self._busy is None, timeout=timeout_s
            )

    async def aclose(self, timeout_s: float) -> bool:
        """Flush, give the database a last chance at the backlog, spool what it does not
        take, release the instance's id and the spool; then the threads and the pool."""
        flushed = await self.flush(timeout_s)
        with self._cond:
            self._closed = True  # what is queued now is the last
            self._stop = True
            self._cond.notify_all()
        await asyncio.to_thread(self._thread.join, FINAL_REPLAY_S + JOIN_TIMEOUT_S)
        if self._thread.is_alive():
            # Stuck in a database call: spool everything from here (a duplicate of the row
            # in flight is harmless: writes are upserts).
            log.error("records.writer_stuck", extra=fields(pending=self.pending))
            await asyncio.to_thread(self._abandon)
        self._readers.shutdown(wait=False)
        if self.spool is not None:
            self.spool.close()
        await asyncio.to_thread(self.store.close)
        log.info(
            "records.closed",
            extra=fields(
                written=self.stats.written,
                spooled=self.stats.spooled,
                replayed=self.stats.replayed,
                dropped=self.stats.dropped,
                still_spooled=self._backlog_rows,
                ok=flushed and not self._thread.is_alive(),
            ),
        )
        return flushed

    async def in_order(self, fn: Callable[..., Any], *args: Any, timeout_s: float = 10.0) -> Any:
        """Run a ``CallStore`` write in the writer thread, after the rows already queued
        (and, if the database was refusing writes, after the spool has been replayed:
        ``StoreError`` if it still refuses).

        Waits at most ``timeout_s`` (``TimeoutError``); the write still goes ahead, and
        ``flush()`` waits for it like any row.
        """
        if self._closed:
            raise StoreError("the record writer is closed")
        future: concurrent.futures.Future[Any] = concurrent.futures.Future()
        with self._cond:
            self._queue.append(_Job(lambda: fn(*args), future))
            self._cond.notify()
        async with asyncio.timeout(timeout_s):
            return await asyncio.shield(asyncio.wrap_future(future))

    async def read(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a ``CallStore`` read in a reader thread (not behind queued writes)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: fn(*args, **kwargs))

    # -- the writer thread ----------------------------------------------------------------

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._stop and not self._due():
                    self._cond.wait(self._wait_s())
                if self._stop and not self._queue:
                    break
                item = self._queue.popleft() if self._queue else None
                self._busy = item
            try:
                if isinstance(item, _Row):
                    self._take(item)
                elif isinstance(item, _Job):
                    self._job(item)
                self._housekeeping()
            except Exception:  # a bug here must not stop every later record
                log.exception("records.writer_error")
            finally:
                with self._cond:
                    self._busy = None
                    self._cond.notify_all()
        try:
            self._final()
        except Exception:
            log.exception("records.writer_error")

    def _due(self) -> bool:
        now = time.monotonic()
        if self.instance is not None and now >= self._next_beat:
            return True
        return bool(self._backlog_rows) and now >= self._down_until and not self._abandoned

    def _wait_s(self) -> float | None:
        now = time.monotonic()
        deadlines = []
        if self.instance is not None:
            deadlines.append(self._next_beat)
        if self._backlog_rows:
            deadlines.append(self._down_until)
        if not deadlines:
            return None
        return max(0.01, min(deadlines) - now)

    def _take(self, item: _Row) -> None:
        row, sid = item.row, str(item.row.get("call_sid", ""))
        with self._state:
            if not item.refresh and self._latest.pop(sid, None) is not None:
                self._count_backlog()
            if self._backlog_rows or self._down():
                self._to_backlog(row, item.refresh)
                return
        if self._write(row) == "outage":
            with self._state:
                self._to_backlog(row, item.refresh)

    def _job(self, job: _Job) -> None:
        if not job.future.set_running_or_notify_cancel():
            return
        if self._backlog_rows and not self._replay(None):
            job.future.set_exception(
                StoreError(f"the call database {self.store.url} is not accepting writes")
            )
            return
        try:
            job.future.set_result(job.fn())
        except Exception as exc:
            job.future.set_exception(exc)

    def _housekeeping(self) -> None:
        if self._backlog_rows and not self._down():
            self._replay(REPLAY_BATCH)
        if self.instance is not None and time.monotonic() >= self._next_beat:
            self._next_beat = time.monotonic() + self.instance.heartbeat_s
            self._beat(self.instance)

    def _beat(self, me: Instance) -> None:
        try:
            if not self.store.heartbeat(me) and not self._taken_over:
                self._taken_over = True
                log.error(
                    "instance.taken_over",
                    extra=fields(
                        instance_id=me.id,
                        message=(
                            "another process has taken this INSTANCE_ID over (this one was "
                            "presumed dead: its heartbeat had stopped)"
                        ),
                    ),
                )
            ended = 0
            if self._previous_life is not None and not self._backlog_rows:
                # Once its spool is replayed, what is left of its previous life is unended.
                (last_seen,) = self._previous_life
                ended += self._report(
                    me.id, self.store.interrupt_previous_life(me.id, last_seen, me.started_at)
                )
                self._previous_life = None
            for owner, count in self.store.interrupt_stale(me.id).items():
                ended += self._report(owner, count)
            if ended and self._on_interrupted is not None:
                self._on_interrupted(ended)
        except Exception as exc:
            self._failed(exc, what="heartbeat")
            return
        if self._failures:
            self._recovered()

    def _report(self, owner: str | None, count: int) -> int:
        if count:
            self.stats.interrupted += count
            log.warning(
                "records.interrupted",
                extra=fields(
                    instance_id=owner,
                    records=count,
                    message="calls whose server stopped without ending them: now interrupted",
                ),
            )
        return count

    # -- writing, spooling, replaying -----------------------------------------------------

    def _write(self, row: dict[str, Any]) -> _Result:
        """One attempt: in the database ("ok"), refused for a reason that is not the row
        ("outage"), or given up because of what it holds ("dropped")."""
        try:
            self.store.upsert(row)
        except Exception as exc:
            if not _row_problem(exc):
                self._failed(exc, what="write", call_sid=row.get("call_sid"))
                return "outage"
            log.warning(
                "records.row_refused",
                extra=fields(call_sid=row.get("call_sid"), error=_one_line(exc)),
            )
            try:
                self.store.upsert(storable(row))
            except Exception as again:
                if not _row_problem(again):
                    self._failed(again, what="write", call_sid=row.get("call_sid"))
                    return "outage"
                self._drop(1, "the database refuses this row", row.get("call_sid"))
                return "dropped"
        self.stats.written += 1
        if self._failures:
            self._recovered()
        return "ok"

    def _down(self) -> bool:
        return time.monotonic() < self._down_until

    def _failed(self, exc: BaseException, *, what: str, call_sid: Any = None) -> None:
        self._failures += 1
        wait = self._backoff[min(self._failures, len(self._backoff)) - 1]
        self._down_until = time.monotonic() + wait
        log.warning(
            "records.database_unavailable",
            extra=fields(
                what=what,
                call_sid=call_sid,
                attempt=self._failures,
                retry_in_s=wait,
                error=_one_line(exc),
                backlog=self._backlog_rows,
            ),
        )

    def _recovered(self) -> None:
        log.warning(
            "records.database_back",
            extra=fields(failed_attempts=self._failures, backlog=self._backlog_rows),
        )
        self._failures = 0
        self._down_until = 0.0

    def _to_backlog(self, row: dict[str, Any], refresh: bool) -> None:
        """(Under ``_state``.) Keep a row the database has not taken, after the others."""
        if refresh:
            self._latest[str(row.get("call_sid", ""))] = row
        else:
            if len(self._memory) >= self._memory_rows:
                lost = self._memory.popleft()
                self._drop(1, "the in-memory queue is full", lost.get("call_sid"))
            self._memory.append(row)
            self._spill()
        self._count_backlog()

    def _spill(self) -> None:
        """(Under ``_state``.) Move rows from memory to the spool, in order, while it takes
        them."""
        spool = self.spool
        while self._memory and spool is not None and not self._abandoned:
            try:
                spool.append(self._memory[0])
            except (OSError, TypeError, ValueError) as exc:
                if not self._spool_failing:
                    self._spool_failing = True
                    log.error(
                        "records.spool_failed",
                        extra=fields(
                            spool=str(spool.dir),
                            error=str(exc),
                            in_memory=len(self._memory),
                            message="rows wait in memory (bounded) until it can be written",
                        ),
                    )
                return
            self._memory.popleft()
            self.stats.spooled += 1
            if self._spool_failing:
                self._spool_failing = False
                log.warning("records.spool_back", extra=fields(spool=str(spool.dir)))

    def _replay(self, limit: int | None) -> bool:
        """Write the backlog, oldest first, until it is empty (True), the database refuses
        again, or ``limit`` rows have been written."""
        done = 0
        while limit is None or done < limit:
            with self._state:
                if self._abandoned:
                    return False
                if self._memory and self._spool_failing:
                    self._spill()  # the disk may have room again
                try:
                    row, source = self._head()
                except OSError as exc:  # the spool cannot be read: try again later
                    self._failed(exc, what="spool read")
                    return False
                if row is None:
                    self._count_backlog()
                    return True
            result = self._write(row)
            if result == "outage":
                return False
            with self._state:
                if self._abandoned:
                    return False
                self._pop(source, row)
                if result == "ok":
                    self.stats.replayed += 1
                self._count_backlog()
            done += 1
        return not self._backlog_rows

    def _head(self) -> tuple[dict[str, Any] | None, str]:
        if self.spool is not None:
            row = self.spool.first()
            if row is not None:
                return row, "spool"
        if self._memory:
            return self._memory[0], "memory"
        for row in self._latest.values():
            return row, "latest"
        return None, ""

    def _pop(self, source: str, row: dict[str, Any]) -> None:
        if source == "spool" and self.spool is not None:
            self.spool.ack()
        elif source == "memory" and self._memory and self._memory[0] is row:
            self._memory.popleft()
        elif source == "latest":
            sid = str(row.get("call_sid", ""))
            if self._latest.get(sid) is row:
                del self._latest[sid]

    def _count_backlog(self) -> None:
        """(Under ``_state``.) Recount the backlog; count the rows the spool had to drop."""
        spooled = 0
        if self.spool is not None:
            spooled = len(self.spool)
            self.spool_bytes = self.spool.size
            if self.spool.dropped > self._spool_dropped:
                # Logged by the spool (full, or an unreadable line).
                self._drop(self.spool.dropped - self._spool_dropped, "spool", None, logged=True)
                self._spool_dropped = self.spool.dropped
        self._backlog_rows = spooled + len(self._memory) + len(self._latest)

    def _drop(self, count: int, why: str, call_sid: Any, *, logged: bool = False) -> None:
        self.stats.dropped += count
        if not logged:
            log.error("records.lost", extra=fields(call_sid=call_sid, rows=count, reason=why))
        if self._on_dropped is not None:
            self._on_dropped(count)

    # -- shutdown -------------------------------------------------------------------------

    def _final(self) -> None:
        """(The thread, on stop.) A last replay, then everything not written is spooled."""
        deadline = time.monotonic() + FINAL_REPLAY_S
        if self._backlog_rows and not self._down():
            while self._backlog_rows and time.monotonic() < deadline:
                if not self._replay(REPLAY_BATCH):
                    break
        with self._state:
            self._keep_at_exit()
        me = self.instance
        if me is not None and not self._backlog_rows and not self._taken_over:
            try:
                self.store.release_instance(me)
            except Exception as exc:
                log.warning("instance.release_failed", extra=fields(error=_one_line(exc)))

    def _abandon(self) -> None:
        """(Shutdown, the thread stuck.) Spool the queue, the row in flight and the backlog."""
        with self._cond:
            items = ([self._busy] if self._busy is not None else []) + list(self._queue)
            self._queue.clear()
        with self._state:
            for item in items:
                if isinstance(item, _Row):
                    self._memory.append(item.row)
                elif not item.future.done():
                    item.future.set_exception(StoreError("the record writer stopped"))
            self._keep_at_exit()
            self._abandoned = True

    def _keep_at_exit(self) -> None:
        """(Under ``_state``.) The held snapshots join the spool (they are the last known
        state of their calls); rows the spool will not take are lost, and said so."""
        if self._abandoned:
            return  # done once already, by _abandon
        self._memory.extend(self._latest.values())
        self._latest.clear()
        self._spill()
        if self._memory:
            self._drop(len(self._memory), "the process stopped and the spool refused it", None)
            self._memory.clear()
        self._count_backlog()
        if self._backlog_rows:
            log.warning(
                "records.left_spooled",
                extra=fields(
                    rows=self._backlog_rows,
                    spool=str(self.spool.dir) if self.spool is not None else None,
                    message="replayed at the next start with this INSTANCE_ID",
                ),
            )


def _row_problem(exc: BaseException) -> bool:
    """Whether the database refused the row for what it holds (it accepts other writes)."""
    if isinstance(exc, DataError | IntegrityError):
        return True
    if isinstance(exc, StatementError) and not isinstance(exc, DBAPIError):
        return True  # the value could not even be sent (encoding, serialisation)
    return isinstance(exc, ValueError | TypeError)


def _one_line(exc: BaseException) -> str:
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def storable(row: dict[str, Any]) -> dict[str, Any]:
    """``row`` with every value made storable anywhere: text without NUL or lone surrogates,
    finite numbers, JSON-able structures only; bounded columns cut to fit."""
    return bounded({str(k): _scrub(v) for k, v in row.items()})


def _scrub(value: Any) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, str):
        text = value.encode("utf-8", "replace").decode("utf-8")
        return text.replace("\x00", "")
    if isinstance(value, dict):
        return {str(_scrub(str(k))): _scrub(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_scrub(v) for v in value]
    return _scrub(json.dumps(value, default=str))
