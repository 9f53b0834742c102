"""The call-record database: SQLite by default, any SQLAlchemy database by URL.

Two layers:

- ``CallStore``: synchronous SQLAlchemy Core (one table, ``calls``). Used by the server's
  writer thread, by API reads (in worker threads) and directly by ``voice-agent calls``.
- ``RecordWriter``: the server's façade. ``submit()`` never blocks the event loop: rows go to
  one dedicated writer thread, in order, with retries; ``flush()``/``aclose()`` wait
  (boundedly) until every submitted row is written, which the server does on shutdown.

Rows are upserted by call SID: a call is written when its stream starts (``in_progress``), and
again when it ends, so a process that dies mid-call still leaves a record. A snapshot never
overwrites a finished record (writes for one call are ordered, but a shutdown snapshot may be
taken after the call's own final write was queued).

Schema changes: the table is created if missing (``create_all``); there are no migrations
yet. ``SCHEMA_VERSION`` is stored in each row's ``detail`` so a future migration can tell.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from sqlalchemy import (
    JSON,
    Column,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    create_engine,
    delete,
    event,
    func,
    insert,
    select,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from agent.logs import fields
from telephony.errors import TelephonyError
from telephony.ops.records import DIALING, IN_PROGRESS

__all__ = ["CallStore", "RecordWriter", "StoreError"]

log = logging.getLogger(__name__)

SCHEMA_VERSION: Final = 1
#: Attempts per row before it is given up (and logged with its call SID).
WRITE_ATTEMPTS: Final = 3
WRITE_BACKOFF_S: Final = (0.2, 1.0)
#: The most rows one list request returns.
MAX_LIMIT: Final = 500

_JSON = JSON().with_variant(JSONB(), "postgresql")

metadata = MetaData()

calls = Table(
    "calls",
    metadata,
    Column("call_sid", String(64), primary_key=True),
    Column("stream_sid", String(64), nullable=False, default=""),
    Column("direction", String(16), nullable=False, default="inbound"),
    Column("caller", String(64), nullable=False, default=""),
    Column("callee", String(64), nullable=False, default=""),
    Column("outcome", String(32), nullable=False, index=True),
    Column("reason", Text, nullable=False, default=""),
    # Seconds since the epoch (UTC): the same meaning on every database, no timezone pitfalls.
    Column("started_at", Float, nullable=False, index=True),
    Column("ended_at", Float),
    Column("duration_s", Float),
    Column("turns", Integer, nullable=False, default=0),
    Column("interruptions", Integer, nullable=False, default=0),
    Column("reconnects", Integer, nullable=False, default=0),
    Column("stalls", Integer, nullable=False, default=0),
    Column("tokens_total", Integer, nullable=False, default=0),
    Column("greeting_ms", Float),
    Column("response_ms_p50", Float),
    Column("transcript", _JSON, nullable=False),
    Column("detail", _JSON, nullable=False),
    Column("updated_at", Float, nullable=False),
)

#: Columns of a list entry (everything but the bulky transcript and detail).
SUMMARY_COLUMNS: Final = tuple(c for c in calls.c if c.name not in {"transcript", "detail"})
_OPEN_OUTCOMES: Final = (IN_PROGRESS, DIALING)


class StoreError(TelephonyError):
    """The database can't be opened or used (the message says which URL and why)."""


def _safe_url(url: str) -> str:
    """The URL without its password, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return "<unparseable database URL>"


def _one_line(exc: BaseException) -> str:
    """The driver's message without SQLAlchemy's SQL echo and background link."""
    orig = getattr(exc, "orig", None)
    text = str(orig if orig is not None else exc)
    return text.strip().splitlines()[0] if text.strip() else type(exc).__name__


class CallStore:
    """Synchronous access to the ``calls`` table. Thread-safe (SQLAlchemy's pool)."""

    def __init__(self, url: str, *, create: bool = True) -> None:
        self.url = _safe_url(url)
        try:
            parsed = make_url(url)
            options: dict[str, Any] = {"pool_pre_ping": True}
            if parsed.get_backend_name() == "sqlite":
                database = parsed.database
                if database and database != ":memory:" and not database.startswith("file:"):
                    Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
                options["connect_args"] = {"check_same_thread": False, "timeout": 10}
            elif parsed.get_driver_name() in {"psycopg", "psycopg2"}:
                # Never wait forever on a database that doesn't answer (libpq has no default).
                options["connect_args"] = {"connect_timeout": 10}
            self.engine: Engine = create_engine(parsed, **options)
            if parsed.get_backend_name() == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
            if create:
                metadata.create_all(self.engine)
        except ImportError as exc:
            raise StoreError(
                f"cannot open the call database {self.url}: its driver is not installed "
                f"({exc}); for PostgreSQL: pip install 'gemini-phone-agent[postgres]'"
            ) from exc
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"cannot open the call database {self.url}: {_one_line(exc)}") from exc

    def check_writable(self) -> None:
        """Raise ``StoreError`` unless records can be written (a read-only file, a standby,
        a role without INSERT): at startup, so it is not discovered at the first call's end."""
        try:
            with self.engine.begin() as conn:
                # A write that changes nothing still needs write access to the table.
                conn.execute(delete(calls).where(calls.c.call_sid == ""))
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot write call records to {self.url}: {_one_line(exc)}") from exc

    # -- writing --------------------------------------------------------------------------

    def upsert(self, row: dict[str, Any]) -> None:
        """Insert or update one call's row (a snapshot never replaces a finished record)."""
        values = dict(row)
        values["updated_at"] = time.time()
        values["detail"] = {**values.get("detail", {}), "schema_version": SCHEMA_VERSION}
        sid = values["call_sid"]
        snapshot = values["outcome"] in _OPEN_OUTCOMES
        condition = calls.c.call_sid == sid
        if snapshot:
            condition = condition & calls.c.outcome.in_(_OPEN_OUTCOMES)
        with self.engine.begin() as conn:
            if conn.execute(update(calls).where(condition).values(values)).rowcount:
                return
            exists = conn.execute(select(calls.c.call_sid).where(calls.c.call_sid == sid)).first()
            if exists is not None:
                return  # a snapshot arriving after the final record: keep the final one
            try:
                with conn.begin_nested():
                    conn.execute(insert(calls).values(values))
            except IntegrityError:
                # Another writer (another instance, same database) inserted it first.
                conn.execute(update(calls).where(condition).values(values))

    def set_outcome_if_open(self, call_sid: str, outcome: str, reason: str) -> bool:
        """End a record that never got a stream (an outbound call not answered)."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(calls)
                .where((calls.c.call_sid == call_sid) & (calls.c.outcome == DIALING))
                .values(outcome=outcome, reason=reason, ended_at=time.time(), duration_s=0.0)
            )
            return bool(result.rowcount)

    def prune(self, before: float) -> int:
        """Delete finished records of calls started before ``before`` (epoch s); how many."""
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(calls).where(
                    (calls.c.started_at < before) & calls.c.outcome.not_in(_OPEN_OUTCOMES)
                )
            )
            return int(result.rowcount)

    # -- reading --------------------------------------------------------------------------

    def list(
        self,
        *,
        limit: int = 50,
        before: float | None = None,
        outcome: str | None = None,
        direction: str | None = None,
    ) -> list[dict[str, Any]]:
        """Newest first; ``before`` (a ``started_at``) pages back through older calls."""
        query = select(*SUMMARY_COLUMNS).order_by(calls.c.started_at.desc(), calls.c.call_sid)
        if before is not None:
            query = query.where(calls.c.started_at < before)
        if outcome:
            query = query.where(calls.c.outcome == outcome)
        if direction:
            query = query.where(calls.c.direction == direction)
        query = query.limit(max(1, min(limit, MAX_LIMIT)))
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def get(self, call_sid: str) -> dict[str, Any] | None:
        with self.engine.connect() as conn:
            row = conn.execute(select(calls).where(calls.c.call_sid == call_sid)).first()
        return dict(row._mapping) if row is not None else None

    def count(self) -> int:
        with self.engine.connect() as conn:
            return int(conn.execute(select(func.count()).select_from(calls)).scalar_one())

    def close(self) -> None:
        self.engine.dispose()


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # WAL: readers (the API, `voice-agent calls`) never block the writer, nor it them.
    # synchronous=NORMAL is durable across a process crash in WAL mode (not an OS crash).
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.close()


class RecordWriter:
    """Writes call records from the event loop without ever waiting on the database.

    ``on_failure`` is called (in the loop) with the call SID of a row that could not be
    written after ``WRITE_ATTEMPTS`` (for the metrics); the failure is logged there too.
    """

    def __init__(self, store: CallStore, on_failure: Callable[[str], None] | None = None) -> None:
        self.store = store
        self._on_failure = on_failure
        # One thread: rows are written in the order submitted, and SQLite sees one writer.
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="call-records"
        )
        self._readers = concurrent.futures.ThreadPoolExecutor(
            max_workers=2, thread_name_prefix="call-records-read"
        )
        self._pending: set[asyncio.Future[Any]] = set()
        self._closed = False
        self.written = 0
        self.failed = 0
        self._lock = threading.Lock()

    def submit(self, row: dict[str, Any]) -> None:
        """Queue a row for writing. Returns at once; never raises."""
        if self._closed:
            log.error(
                "records.write_after_close",
                extra=fields(call_sid=row.get("call_sid"), outcome=row.get("outcome")),
            )
            return
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, self._write, row)
        self._pending.add(future)
        sid = str(row.get("call_sid", ""))
        future.add_done_callback(lambda f: self._done(f, sid))

    def _write(self, row: dict[str, Any]) -> bool:
        sid = row.get("call_sid")
        for attempt in range(1, WRITE_ATTEMPTS + 1):
            try:
                self.store.upsert(row)
                with self._lock:
                    self.written += 1
                return True
            except Exception as exc:  # the database is down, full, locked…
                log.warning(
                    "records.write_failed",
                    extra=fields(call_sid=sid, attempt=attempt, error=str(exc)),
                )
                if attempt < WRITE_ATTEMPTS:
                    time.sleep(WRITE_BACKOFF_S[min(attempt - 1, len(WRITE_BACKOFF_S) - 1)])
        with self._lock:
            self.failed += 1
        log.error("records.lost", extra=fields(call_sid=sid, outcome=row.get("outcome")))
        return False

    def _done(self, future: asyncio.Future[bool], call_sid: str) -> None:
        self._pending.discard(future)
        if future.cancelled():
            return
        if (future.exception() is not None or not future.result()) and self._on_failure:
            self._on_failure(call_sid)

    @property
    def pending(self) -> int:
        return len(self._pending)

    async def flush(self, timeout_s: float) -> bool:
        """Wait until every row submitted so far is written (True) or ``timeout_s`` passes."""
        if not self._pending:
            return True
        _, not_done = await asyncio.wait(set(self._pending), timeout=timeout_s)
        if not_done:
            log.error("records.flush_timeout", extra=fields(unwritten=len(not_done)))
        return not not_done

    async def aclose(self, timeout_s: float) -> bool:
        """Flush, then release the threads and the connection pool."""
        flushed = await self.flush(timeout_s)
        self._closed = True
        self._executor.shutdown(wait=False)
        self._readers.shutdown(wait=False)
        await asyncio.to_thread(self.store.close)
        log.info(
            "records.closed", extra=fields(written=self.written, failed=self.failed, ok=flushed)
        )
        return flushed

    async def in_order(self, fn: Callable[..., Any], *args: Any, timeout_s: float = 10.0) -> Any:
        """Run a ``CallStore`` write in the writer thread, after the rows already queued.

        Waits at most ``timeout_s`` (``TimeoutError``); the write still goes ahead, and
        ``flush()`` waits for it like any row.
        """
        loop = asyncio.get_running_loop()
        future = loop.run_in_executor(self._executor, lambda: fn(*args))
        self._pending.add(future)
        future.add_done_callback(self._pending.discard)
        async with asyncio.timeout(timeout_s):
            return await asyncio.shield(future)

    async def read(self, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        """Run a ``CallStore`` read in a reader thread (not behind queued writes)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._readers, lambda: fn(*args, **kwargs))
