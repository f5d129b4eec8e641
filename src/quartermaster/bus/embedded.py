"""The embedded event log: a table in the control-plane database (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import cast

import orjson
from sqlalchemy import Connection, Dialect, Engine, Table, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from quartermaster.bus.models import ConsumerCursor, EventLogEntry
from quartermaster.bus.notify import AppendNotifier
from quartermaster.bus.protocol import AppendResult, LoggedEvent, LogRecord
from quartermaster.domain.timeutil import utc_now
from quartermaster.storage import make_read_session_factory

# Held for the rest of the appending transaction on PostgreSQL, so positions become visible in
# the order they were assigned and a consumer can never skip past a slower commit.
_APPEND_LOCK_KEY = 0x716D_6C6F67  # "qmlog"
_LOOKUP_CHUNK = 900
# Rows per INSERT statement: 6,000 parameters, under SQLite's (32,766) and PostgreSQL's limits.
_INSERT_CHUNK = 500
_COLUMNS = (
    "tenant_id",
    "source",
    "event_id",
    "type",
    "subject",
    "event_time",
    "recorded_at",
    "content_hash",
    "app_id",
    "resource_id",
    "late",
    "payload",
)
_PG_INSERT = (
    f"INSERT INTO event_log ({', '.join(_COLUMNS)}) "
    f"SELECT {', '.join(_COLUMNS)} FROM json_populate_recordset(NULL::event_log, %s::json)"
    " WITH ORDINALITY AS batch ORDER BY batch.ordinality"  # positions in append order
    " ON CONFLICT (tenant_id, source, event_id) DO NOTHING"
    " RETURNING tenant_id, source, event_id"
)


class EmbeddedEventLog:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory
        self._insert_sql_cache: dict[int, str] = {}
        self._time_processors: dict[str, Callable[[datetime], object]] = {}
        self._notifier = AppendNotifier(session_factory)
        self._read_sessions: sessionmaker[Session] | None = None

    def append(self, records: Sequence[LogRecord], *, session: Session) -> AppendResult:
        result = AppendResult()
        if not records:
            return result
        connection = session.connection()
        if connection.dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _APPEND_LOCK_KEY})
        # The first occurrence of a key in the batch is the one to store; later ones are
        # compared with it (or with the stored event, if there was one).
        first: dict[tuple[str, str, str], int] = {}
        for index, record in enumerate(records):
            first.setdefault((record.tenant_id, record.source, record.event_id), index)
        candidates = [records[i] for i in first.values()]
        inserted = self._insert_new(candidates, connection=connection)
        stored = self._stored_hashes(
            [r for r in candidates if (r.tenant_id, r.source, r.event_id) not in inserted],
            session=session,
        )
        for index, record in enumerate(records):
            key = (record.tenant_id, record.source, record.event_id)
            if key in inserted:
                if first[key] == index:
                    result.appended.append(index)
                    continue
                reference: str | None = records[first[key]].content_hash
            else:
                reference = stored.get(key)
                if reference is None:
                    raise RuntimeError(
                        f"event {key} was neither inserted nor found in the log; retry the append"
                    )
            if reference == record.content_hash:
                result.duplicates.append(index)
            else:
                result.conflicts.append(index)
        return result

    def _insert_new(
        self, records: Sequence[LogRecord], *, connection: Connection
    ) -> set[tuple[str, str, str]]:
        """Insert each record unless its key is stored (ON CONFLICT DO NOTHING); the keys that
        were inserted, in one statement per chunk through the driver: SQLAlchemy's per-row
        parameter processing cost more than the database's own work at ingest rates."""
        if connection.dialect.name == "postgresql":
            return self._insert_new_postgresql(records, connection=connection)
        time_to_db = self._time_processor(connection.dialect)
        inserted: set[tuple[str, str, str]] = set()
        recorded_at: tuple[datetime | None, object] = (None, None)
        for start in range(0, len(records), _INSERT_CHUNK):
            chunk = records[start : start + _INSERT_CHUNK]
            params: list[object] = []
            for r in chunk:
                if r.recorded_at != recorded_at[0]:  # one receipt time per ingest batch
                    recorded_at = (r.recorded_at, time_to_db(r.recorded_at))
                params += (
                    r.tenant_id,
                    r.source,
                    r.event_id,
                    r.type,
                    r.subject,
                    time_to_db(r.event_time),
                    recorded_at[1],
                    r.content_hash,
                    r.app_id,
                    r.resource_id,
                    r.late,
                    r.payload,
                )
            # No RETURNING: SQLite steps once per returned row, and each step hands the GIL
            # back and forth with the threads validating the next batches. The rows a
            # statement inserts get consecutive positions (one writer holds the database),
            # so rowcount and lastrowid say which they are.
            result = connection.exec_driver_sql(self._insert_sql(len(chunk)), tuple(params))
            count, last = result.rowcount, result.lastrowid
            if count == len(chunk):
                inserted.update((r.tenant_id, r.source, r.event_id) for r in chunk)
            elif count > 0:
                rows = connection.exec_driver_sql(
                    "SELECT tenant_id, source, event_id FROM event_log"
                    " WHERE position > ? AND position <= ?",
                    (last - count, last),
                )
                inserted.update((t, s, e) for t, s, e in rows)
        return inserted

    def _insert_new_postgresql(
        self, records: Sequence[LogRecord], *, connection: Connection
    ) -> set[tuple[str, str, str]]:
        # The batch as one JSON parameter that PostgreSQL expands (json_populate_recordset):
        # psycopg's conversion of thousands of placeholders, or of arrays, element by element
        # in Python, cost several times the insert itself.
        time_to_db = self._time_processor(connection.dialect)
        batch = orjson.dumps(
            [
                {
                    "tenant_id": r.tenant_id,
                    "source": r.source,
                    "event_id": r.event_id,
                    "type": r.type,
                    "subject": r.subject,
                    "event_time": time_to_db(r.event_time),
                    "recorded_at": time_to_db(r.recorded_at),
                    "content_hash": r.content_hash,
                    "app_id": r.app_id,
                    "resource_id": r.resource_id,
                    "late": r.late,
                    "payload": r.payload,
                }
                for r in records
            ]
        )
        rows = connection.exec_driver_sql(_PG_INSERT, (batch.decode(),))
        return {(t, s, e) for t, s, e in rows.all()}

    def _insert_sql(self, rows: int) -> str:
        sql = self._insert_sql_cache.get(rows)
        if sql is None:
            row = "(" + ", ".join(["?"] * len(_COLUMNS)) + ")"
            sql = (
                f"INSERT INTO event_log ({', '.join(_COLUMNS)}) VALUES "
                + ", ".join([row] * rows)
                + " ON CONFLICT (tenant_id, source, event_id) DO NOTHING"
            )
            self._insert_sql_cache[rows] = sql
        return sql

    def _time_processor(self, dialect: Dialect) -> Callable[[datetime], object]:
        """The UTCDateTime column's own bind processing, so values are stored exactly as an
        ORM or Core insert would store them (on SQLite: naive UTC text, microseconds)."""
        processor = self._time_processors.get(dialect.name)
        if processor is None and dialect.name == "sqlite":
            processor = self._time_processors[dialect.name] = _sqlite_utc_text
        if processor is None:
            column_type = cast(Table, EventLogEntry.__table__).c.event_time.type
            bind = column_type.dialect_impl(dialect).bind_processor(dialect)
            processor = bind if bind is not None else (lambda value: value)
            self._time_processors[dialect.name] = processor
        return processor

    @staticmethod
    def _stored_hashes(
        records: Sequence[LogRecord], *, session: Session
    ) -> dict[tuple[str, str, str], str]:
        # One IN list per (tenant, source), so each lookup is a range of the unique index;
        # SQLite does not use that index for an IN list of (tenant, source, id) row values.
        by_stream: dict[tuple[str, str], set[str]] = {}
        for r in records:
            by_stream.setdefault((r.tenant_id, r.source), set()).add(r.event_id)
        found: dict[tuple[str, str, str], str] = {}
        for (tenant_id, source), ids in by_stream.items():
            event_ids = sorted(ids)
            for start in range(0, len(event_ids), _LOOKUP_CHUNK):
                rows = session.execute(
                    select(EventLogEntry.event_id, EventLogEntry.content_hash).where(
                        EventLogEntry.tenant_id == tenant_id,
                        EventLogEntry.source == source,
                        EventLogEntry.event_id.in_(event_ids[start : start + _LOOKUP_CHUNK]),
                    )
                )
                for event_id, content_hash in rows:
                    found[(tenant_id, source, event_id)] = content_hash
        return found

    def read(self, consumer: str, *, limit: int) -> list[LoggedEvent]:
        return self.read_after(self.position(consumer), limit=limit)

    def _reader(self) -> sessionmaker[Session]:
        """Sessions for reads: on SQLite a deferred transaction, which takes no write lock.
        Reading a chunk of the log in an IMMEDIATE transaction held ingestion's appends back
        for as long as the rows took to fetch (up to busy_timeout under load)."""
        if self._read_sessions is None:
            bind = self._session_factory.kw.get("bind")
            if not isinstance(bind, Engine):
                return self._session_factory
            self._read_sessions = make_read_session_factory(bind)
        return self._read_sessions

    def read_after(self, position: int, *, limit: int) -> list[LoggedEvent]:
        with self._reader()() as session:
            # Columns, not ORM entities: building 20k mapped instances per batch cost the
            # pipeline more than everything else it does with them.
            rows = session.execute(
                select(EventLogEntry.position, *_RECORD_COLUMNS)
                .where(EventLogEntry.position > position)
                .order_by(EventLogEntry.position)
                .limit(limit)
            ).all()
            return [
                LoggedEvent(position=row[0], record=LogRecord(*row[1:]))  # type: ignore[call-arg]
                for row in rows
            ]

    def on_append(self, callback: Callable[[], None]) -> Callable[[], None]:
        return self._notifier.subscribe(callback)

    def ack(self, consumer: str, position: int) -> None:
        with self._session_factory.begin() as session:
            cursor = session.get(ConsumerCursor, consumer)
            if cursor is None:
                session.add(ConsumerCursor(name=consumer, position=position, updated_at=utc_now()))
            elif position > cursor.position:
                cursor.position = position
                cursor.updated_at = utc_now()

    def position(self, consumer: str) -> int:
        with self._reader()() as session:
            return self._position(consumer, session=session)

    def head(self) -> int:
        with self._reader()() as session:
            return int(
                session.scalar(select(func.coalesce(func.max(EventLogEntry.position), 0))) or 0
            )

    @staticmethod
    def _position(consumer: str, *, session: Session) -> int:
        value = session.scalar(
            select(ConsumerCursor.position).where(ConsumerCursor.name == consumer)
        )
        return int(value or 0)


# In LogRecord's field order, so a row builds a record positionally.
_RECORD_COLUMNS = (
    EventLogEntry.tenant_id,
    EventLogEntry.source,
    EventLogEntry.event_id,
    EventLogEntry.type,
    EventLogEntry.subject,
    EventLogEntry.event_time,
    EventLogEntry.recorded_at,
    EventLogEntry.content_hash,
    EventLogEntry.app_id,
    EventLogEntry.resource_id,
    EventLogEntry.late,
    EventLogEntry.payload,
)


def _sqlite_utc_text(value: datetime) -> str:
    """What UTCDateTime + SQLAlchemy's SQLite DATETIME store (naive UTC text, always with
    microseconds), at a third of the cost; a test compares the two."""
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
