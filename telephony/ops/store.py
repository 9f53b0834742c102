"""The call-record database: SQLite by default, any SQLAlchemy database by URL.

``CallStore`` is synchronous SQLAlchemy Core over two tables: ``calls`` (one row per call)
and ``instances`` (one row per server process: its heartbeat). It is used by the server's
writer thread (``telephony.ops.writer``), by API reads (in worker threads) and directly by
``voice-agent calls``.

Rows are upserted by call SID: a call is written when its stream starts (``in_progress``),
refreshed while it runs, and written again when it ends, so a process that dies mid-call still
leaves a record. A snapshot never overwrites a finished record (writes for one call are
ordered, but a shutdown snapshot may be taken after the call's own final write was queued, and
a spooled snapshot may be replayed late). A final record replaces an ``interrupted`` one: the
call's own account of its end is better than a guess.

Crash consistency: each record carries the ``instance_id`` of the server that served it, and
each server refreshes its heartbeat in ``instances``. ``interrupt_stale`` ends (``interrupted``)
the ``in_progress`` records of instances whose heartbeat is stale or absent; a restarted
instance ends those of its own previous life (``claim_instance``, ``interrupt_previous_life``).

Schema changes: tables are created if missing (``create_all``), and columns added since are
added at open (``ALTER TABLE ... ADD COLUMN``, nullable ones only: ``migrate``).
``SCHEMA_VERSION`` is also stored in each row's ``detail``.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Engine,
    Float,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    case,
    create_engine,
    delete,
    event,
    exists,
    func,
    insert,
    inspect,
    select,
    text,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, SQLAlchemyError

from agent.logs import fields
from telephony.errors import TelephonyError
from telephony.ops.records import COLUMN_CHARS, DIALING, IN_PROGRESS, INTERRUPTED, bounded

__all__ = ["FEEDBACK_COLUMNS", "CallStore", "Instance", "InstanceInUse", "StoreError"]

log = logging.getLogger(__name__)

#: 2: ``calls.instance_id`` and the ``instances`` table (crash consistency).
#: 3: ``calls.feedback_rating``, ``feedback_comment``, ``feedback_at`` (the operator's verdict).
SCHEMA_VERSION: Final = 3
#: The most rows one list request returns.
MAX_LIMIT: Final = 500
#: An instance whose heartbeat is older than this many of its own intervals is gone.
STALE_HEARTBEATS: Final = 4
#: Records written before instances had ids (schema 1) are ended once this old.
LEGACY_STALE_S: Final = 300.0
#: Heartbeats of instances gone this long are deleted (their calls were ended long ago).
FORGET_INSTANCES_S: Final = 86_400.0
#: SQLite: how long a write waits for another writer's lock (``?timeout=`` in the URL wins).
SQLITE_BUSY_TIMEOUT_S: Final = 10

_JSON = JSON().with_variant(JSONB(), "postgresql")

metadata = MetaData()

calls = Table(
    "calls",
    metadata,
    Column("call_sid", String(COLUMN_CHARS["call_sid"]), primary_key=True),
    Column("stream_sid", String(COLUMN_CHARS["stream_sid"]), nullable=False, default=""),
    Column("direction", String(COLUMN_CHARS["direction"]), nullable=False, default="inbound"),
    Column("caller", String(COLUMN_CHARS["caller"]), nullable=False, default=""),
    Column("callee", String(COLUMN_CHARS["callee"]), nullable=False, default=""),
    Column("outcome", String(COLUMN_CHARS["outcome"]), nullable=False, index=True),
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
    # Schema 2 (added to older tables by `migrate`, so nullable): the server that served it.
    Column("instance_id", String(COLUMN_CHARS["instance_id"])),
    # Schema 3: an operator's feedback on the call (1-5, a comment, when). Written only by
    # `set_feedback`: call rows never carry these keys, so a late upsert keeps them.
    Column("feedback_rating", Integer),
    Column("feedback_comment", Text),
    Column("feedback_at", Float),
)

instances = Table(
    "instances",
    metadata,
    Column("id", String(COLUMN_CHARS["instance_id"]), primary_key=True),
    Column("host", String(255), nullable=False, default=""),
    Column("pid", Integer, nullable=False, default=0),
    # Names the spool directory the instance holds locked: a process that holds it now and
    # finds its token here knows the heartbeat is its own previous life's.
    Column("token", String(64), nullable=False, default=""),
    Column("started_at", Float, nullable=False),
    Column("heartbeat_at", Float, nullable=False),
    Column("heartbeat_s", Float, nullable=False),
)

#: Columns of a list entry (everything but the bulky transcript and detail).
SUMMARY_COLUMNS: Final = tuple(c for c in calls.c if c.name not in {"transcript", "detail"})
_OPEN_OUTCOMES: Final = (IN_PROGRESS, DIALING)
#: Written by the operator, never by the call (``CallStore.set_feedback``).
FEEDBACK_COLUMNS: Final = ("feedback_rating", "feedback_comment", "feedback_at")
#: Columns the dashboard's statistics are computed from (``telephony.ops.stats``).
_STATS_COLUMNS: Final = (
    calls.c.started_at,
    calls.c.outcome,
    calls.c.greeting_ms,
    calls.c.interruptions,
    calls.c.reconnects,
    calls.c.detail,
)


@dataclass(frozen=True, slots=True)
class Instance:
    """One server process, as the ``instances`` table knows it."""

    id: str
    host: str
    pid: int
    started_at: float
    heartbeat_s: float
    #: The spool directory's token (``telephony.ops.spool``); "" without a spool.
    token: str = ""

    def row(self, now: float) -> dict[str, Any]:
        return {
            "id": self.id,
            "host": self.host[:255],
            "pid": self.pid,
            "token": self.token,
            "started_at": self.started_at,
            "heartbeat_at": now,
            "heartbeat_s": self.heartbeat_s,
        }


class StoreError(TelephonyError):
    """The database can't be opened or used (the message says which URL and why)."""


class InstanceInUse(StoreError):
    """This process's ``INSTANCE_ID`` belongs to a live instance (the message says which)."""


def _when(ts: float) -> str:
    return dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def interrupted_reason(instance_id: str | None, last_seen: float | None) -> str:
    """What an ``interrupted`` record says happened."""
    seen = f"last seen {_when(last_seen)}" if last_seen is not None else "no heartbeat on record"
    return (
        "the server serving this call stopped without ending it "
        f"(instance {instance_id or 'unknown'}, {seen})"
    )


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
                options["connect_args"] = {"check_same_thread": False}
                if "timeout" not in parsed.query:  # sqlite:///calls.db?timeout=2 wins
                    options["connect_args"]["timeout"] = SQLITE_BUSY_TIMEOUT_S
            elif parsed.get_driver_name() in {"psycopg", "psycopg2"}:
                # Never wait forever on a database that doesn't answer (libpq has no default).
                options["connect_args"] = {"connect_timeout": 10}
            self.engine: Engine = create_engine(parsed, **options)
            if parsed.get_backend_name() == "sqlite":
                event.listen(self.engine, "connect", _sqlite_pragmas)
            if create:
                metadata.create_all(self.engine)
            migrate(self.engine, required=create)
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
        values = bounded({k: v for k, v in row.items() if k not in FEEDBACK_COLUMNS})
        # A spooled row keeps the time it was taken: "last known alive" stays true on replay.
        if values.get("updated_at") is None:
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

    def set_feedback(
        self, call_sid: str, rating: int, comment: str, now: float | None = None
    ) -> bool:
        """Keep an operator's feedback on a call (replacing any before); False: no such call."""
        with self.engine.begin() as conn:
            result = conn.execute(
                update(calls)
                .where(calls.c.call_sid == call_sid)
                .values(
                    feedback_rating=rating,
                    feedback_comment=comment,
                    feedback_at=time.time() if now is None else now,
                )
            )
            return bool(result.rowcount)

    def prune(self, before: float) -> int:
        """Delete finished (or interrupted) records of calls started before ``before`` (epoch
        s); how many."""
        with self.engine.begin() as conn:
            result = conn.execute(
                delete(calls).where(
                    (calls.c.started_at < before) & calls.c.outcome.not_in(_OPEN_OUTCOMES)
                )
            )
            return int(result.rowcount)

    # -- instances ------------------------------------------------------------------------

    def instance_conflict(self, me: Instance, now: float | None = None) -> str | None:
        """Why ``me`` may not take its id (a live instance holds it), or None."""
        now = time.time() if now is None else now
        try:
            with self.engine.connect() as conn:
                row = conn.execute(select(instances).where(instances.c.id == me.id)).first()
        except SQLAlchemyError as exc:
            raise StoreError(f"cannot read instances from {self.url}: {_one_line(exc)}") from exc
        return None if row is None else _conflict(row._mapping, me, now)

    def claim_instance(self, me: Instance, now: float | None = None) -> float | None:
        """Register ``me``; ``InstanceInUse`` if a live instance holds the id.

        Returns the last heartbeat of the id's previous life (a process that stopped without
        releasing it, e.g. killed), or None.
        """
        try:
            return self._claim(me, time.time() if now is None else now)
        except SQLAlchemyError as exc:
            raise StoreError(
                f"cannot register instance {me.id} in {self.url}: {_one_line(exc)}"
            ) from exc

    def _claim(self, me: Instance, now: float) -> float | None:
        values = me.row(now)
        with self.engine.begin() as conn:
            try:
                with conn.begin_nested():
                    conn.execute(insert(instances).values(values))
                return None
            except IntegrityError:
                pass
            row = conn.execute(select(instances).where(instances.c.id == me.id)).first()
            if row is None:  # released in between
                conn.execute(insert(instances).values(values))
                return None
            old = row._mapping
            problem = _conflict(old, me, now)
            if problem is not None:
                raise InstanceInUse(problem)
            # Compare-and-set: of two processes taking over the same stale id, one wins.
            taken = conn.execute(
                update(instances)
                .where(
                    (instances.c.id == me.id)
                    & (instances.c.heartbeat_at == old["heartbeat_at"])
                    & (instances.c.token == old["token"])
                )
                .values(values)
            )
            if not taken.rowcount:
                raise InstanceInUse(f"INSTANCE_ID={me.id} was taken by another process just now")
            return float(old["heartbeat_at"])

    def heartbeat(self, me: Instance, now: float | None = None) -> bool:
        """Refresh ``me``'s heartbeat (re-registering if its row is gone); False if another
        process has taken the id over (this one was presumed dead)."""
        now = time.time() if now is None else now
        with self.engine.begin() as conn:
            done = conn.execute(
                update(instances)
                .where((instances.c.id == me.id) & (instances.c.token == me.token))
                .values(heartbeat_at=now, host=me.host[:255], pid=me.pid)
            )
            if done.rowcount:
                return True
            if conn.execute(select(instances.c.id).where(instances.c.id == me.id)).first():
                return False
            try:
                with conn.begin_nested():
                    conn.execute(insert(instances).values(me.row(now)))
            except IntegrityError:
                return False
            return True

    def instance_heartbeat(self, instance_id: str) -> float | None:
        """The last heartbeat of ``instance_id`` (None: not registered)."""
        with self.engine.connect() as conn:
            beat = conn.execute(
                select(instances.c.heartbeat_at).where(instances.c.id == instance_id)
            ).scalar()
        return None if beat is None else float(beat)

    def release_instance(self, me: Instance) -> None:
        """A clean exit: the id is free at once (its calls have all been ended)."""
        with self.engine.begin() as conn:
            conn.execute(
                delete(instances).where((instances.c.id == me.id) & (instances.c.token == me.token))
            )

    def interrupt_stale(self, me: str, now: float | None = None) -> dict[str | None, int]:
        """End (``interrupted``) the ``in_progress`` records of every instance but ``me``
        (``""``: a tool, not an instance) whose heartbeat is stale or absent; how many, by
        instance. Never touches a live instance's records: the check is repeated inside each
        update."""
        now = time.time() if now is None else now
        with self.engine.connect() as conn:
            owners = list(
                conn.execute(
                    select(calls.c.instance_id).where(calls.c.outcome == IN_PROGRESS).distinct()
                ).scalars()
            )
            named = [o for o in owners if o is not None and o != me]
            beats = {
                r.id: r for r in conn.execute(select(instances).where(instances.c.id.in_(named)))
            }
        ended: dict[str | None, int] = {}
        for owner in owners:
            if owner == me:
                continue
            if owner is None:  # written before records had an instance
                count = self._interrupt(None, None, now, older_than=now - LEGACY_STALE_S)
            else:
                beat = beats.get(owner)
                if beat is not None and not _stale(beat.heartbeat_at, beat.heartbeat_s, now):
                    continue
                seen = None if beat is None else float(beat.heartbeat_at)
                count = self._interrupt(owner, seen, now)
            if count:
                ended[owner] = count
        with self.engine.begin() as conn:
            conn.execute(
                delete(instances).where(
                    (instances.c.heartbeat_at < now - FORGET_INSTANCES_S) & (instances.c.id != me)
                )
            )
        return ended

    def interrupt_previous_life(
        self, me: str, last_seen: float | None, started_at: float, now: float | None = None
    ) -> int:
        """End the ``in_progress`` records ``me`` wrote before ``started_at`` (its previous
        life: this process has served none of them); how many."""
        now = time.time() if now is None else now
        return self._interrupt(me, last_seen, now, older_than=started_at, check_alive=False)

    def _interrupt(
        self,
        owner: str | None,
        last_seen: float | None,
        now: float,
        *,
        older_than: float | None = None,
        check_alive: bool = True,
    ) -> int:
        condition = calls.c.outcome == IN_PROGRESS
        if owner is None:
            condition = condition & calls.c.instance_id.is_(None)
        else:
            condition = condition & (calls.c.instance_id == owner)
            if check_alive:
                alive = select(instances.c.id).where(
                    (instances.c.id == owner)
                    & (instances.c.heartbeat_at + STALE_HEARTBEATS * instances.c.heartbeat_s >= now)
                )
                condition = condition & ~exists(alive)
        if older_than is not None:
            condition = condition & (calls.c.updated_at < older_than)
        # The record's last write is the last time the call was known alive; its transcript
        # and details (the last snapshot) stay as they are.
        lived = calls.c.updated_at - calls.c.started_at
        with self.engine.begin() as conn:
            result = conn.execute(
                update(calls)
                .where(condition)
                .values(
                    outcome=INTERRUPTED,
                    reason=interrupted_reason(owner, last_seen),
                    ended_at=calls.c.updated_at,
                    duration_s=case((lived < 0, 0.0), else_=lived),
                    updated_at=now,
                )
            )
            return int(result.rowcount)

    # -- reading --------------------------------------------------------------------------

    def window(self, since: float, until: float, *, limit: int = 50_000) -> list[dict[str, Any]]:
        """What the dashboard needs of the calls started in [since, until), oldest first, at
        most ``limit`` of them."""
        query = (
            select(*_STATS_COLUMNS)
            .where((calls.c.started_at >= since) & (calls.c.started_at < until))
            .order_by(calls.c.started_at)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(query)]

    def export(self, since: float | None = None, *, batch: int = 500) -> Iterator[dict[str, Any]]:
        """Every record (``since``: started at or after), oldest first, a batch at a time."""
        after: tuple[float, str] | None = None
        while True:
            query = select(calls).order_by(calls.c.started_at, calls.c.call_sid).limit(batch)
            if since is not None:
                query = query.where(calls.c.started_at >= since)
            if after is not None:
                query = query.where(
                    (calls.c.started_at > after[0])
                    | ((calls.c.started_at == after[0]) & (calls.c.call_sid > after[1]))
                )
            with self.engine.connect() as conn:
                rows = [dict(r._mapping) for r in conn.execute(query)]
            yield from rows
            if len(rows) < batch:
                return
            after = (rows[-1]["started_at"], rows[-1]["call_sid"])

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


def _stale(heartbeat_at: float, heartbeat_s: float, now: float) -> bool:
    return heartbeat_at + STALE_HEARTBEATS * heartbeat_s < now


def _conflict(row: Any, me: Instance, now: float) -> str | None:
    """Why the id in ``row`` is not free for ``me``, or None."""
    if _stale(row["heartbeat_at"], row["heartbeat_s"], now):
        return None  # gone (killed, or its host is)
    if row["token"] and row["token"] == me.token:
        # Written by a process that used the spool directory this one now holds locked: a
        # previous life here (killed moments ago), not a live twin.
        return None
    age = max(0.0, now - row["heartbeat_at"])
    return (
        f"INSTANCE_ID={me.id} is in use by a live instance (host {row['host']}, pid "
        f"{row['pid']}, heartbeat {age:.0f} s ago): stop it, or give this process another "
        "INSTANCE_ID"
    )


def migrate(engine: Engine, *, required: bool = True) -> list[str]:
    """Add the columns this version has and an existing ``calls`` table lacks; their names.

    Only nullable columns are ever added, so it is safe on a table in use by an older
    version. Two instances migrating at once: the loser sees the column and moves on.
    ``required=False`` (a read-only command): a failure is logged, not raised.
    """
    added: list[str] = []
    with engine.connect() as conn:
        missing = _missing_columns(conn)
    for column in missing:
        if column.primary_key or not column.nullable:
            raise StoreError(f"cannot add the required column calls.{column.name} to a table")
        kind = column.type.compile(dialect=engine.dialect)
        name = engine.dialect.identifier_preparer.quote(column.name)
        try:
            with engine.begin() as conn:
                conn.execute(text(f"ALTER TABLE calls ADD COLUMN {name} {kind}"))
            added.append(column.name)
        except SQLAlchemyError as exc:
            with engine.connect() as conn:
                if column.name not in {c.name for c in _missing_columns(conn)}:
                    continue  # added by another instance meanwhile
            if required:
                raise
            log.warning(
                "records.migration_failed",
                extra=fields(column=column.name, error=_one_line(exc)),
            )
            return added
    if added:
        log.warning("records.migrated", extra=fields(added_columns=added, schema=SCHEMA_VERSION))
    return added


def _missing_columns(conn: Connection) -> list[Column[Any]]:
    inspector = inspect(conn)
    if not inspector.has_table("calls"):
        return []
    have = {c["name"] for c in inspector.get_columns("calls")}
    return [c for c in calls.c if c.name not in have]
