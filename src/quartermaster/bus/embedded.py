"""The embedded event log: a table in the control-plane database (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from hashlib import blake2b
from itertools import chain
from typing import cast, overload

import orjson
from sqlalchemy import Connection, Dialect, Engine, Table, func, select, text
from sqlalchemy.orm import Session, sessionmaker

from quartermaster.bus.models import ConsumerCursor, EventLogEntry, EventLogIdentity
from quartermaster.bus.notify import AppendNotifier
from quartermaster.bus.protocol import (
    AppendResult,
    LoggedEvent,
    LogRecord,
    PreparedAppend,
    new_log_record,
)
from quartermaster.bus.sqlite_dedup import (
    FLUSH_AT,
    FLUSH_SLICES,
    MERGE_AT,
    SqliteDedupIndex,
    stored_content_hashes,
)
from quartermaster.config import ConfigurationError
from quartermaster.domain.frozen import fast_constructor
from quartermaster.domain.timeutil import utc_now
from quartermaster.storage import make_read_session_factory

# Held for the rest of the appending transaction on PostgreSQL: appends are serialized, so
# the dedup lookup and the insert that follows it see no concurrent append, and positions
# become visible in the order they were assigned (a consumer never skips a slower commit).
# On SQLite the write transaction (BEGIN IMMEDIATE) already gives both.
_APPEND_LOCK_KEY = 0x716D_6C6F67  # "qmlog"
# Rows per INSERT statement: 6,500 parameters, under SQLite's (32,766) and PostgreSQL's limits.
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
_INSERT_COLUMNS = (*_COLUMNS, "dedup_key")
_CONTENT_HASH = _INSERT_COLUMNS.index("content_hash")
_DEDUP_KEY = _INSERT_COLUMNS.index("dedup_key")
# Lookup and insert in one statement (one round trip): rows whose key is stored are skipped,
# and the keys inserted come back. The stored keys are found through the dedup-key index by
# an array of the batch's hashes (computed first, so the planner cannot choose to hash the
# whole log for an anti-join, which it did when the lookup was a correlated NOT EXISTS).
_PG_INSERT = (
    "WITH batch AS MATERIALIZED (SELECT * FROM json_populate_recordset(NULL::event_log, %s::json)"
    " WITH ORDINALITY), stored AS MATERIALIZED (SELECT tenant_id, source, event_id FROM event_log"
    " WHERE dedup_key = ANY(ARRAY(SELECT dedup_key FROM batch)))"
    f" INSERT INTO event_log ({', '.join(_INSERT_COLUMNS)})"
    f" SELECT {', '.join(_INSERT_COLUMNS)} FROM batch WHERE NOT EXISTS (SELECT 1 FROM stored"
    " WHERE stored.tenant_id = batch.tenant_id AND stored.source = batch.source"
    " AND stored.event_id = batch.event_id)"
    " ORDER BY batch.ordinality"  # positions in append order
    " RETURNING tenant_id, source, event_id"
)

EventKey = tuple[str, str, str]


def dedup_key(tenant_id: str, source: str, event_id: str) -> int:
    """The signed 64-bit hash that indexes an event's (tenant_id, source, event_id) in the log.
    NUL separates the parts: validation refuses it in a source or id, and tenant ids are slugs."""
    digest = blake2b(f"{tenant_id}\x00{source}\x00{event_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class EmbeddedEventLog:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        *,
        dedup_merge_at: int = MERGE_AT,
        dedup_flush_at: int = FLUSH_AT,
        dedup_flush_slices: int = FLUSH_SLICES,
    ) -> None:
        self._session_factory = session_factory
        self._insert_sql_cache: dict[int, str] = {}
        self._time_processors: dict[str, Callable[[datetime], object]] = {}
        self._notifier = AppendNotifier(session_factory)
        self._read_sessions: sessionmaker[Session] | None = None
        self._sqlite_dedup = SqliteDedupIndex(
            merge_at=dedup_merge_at, flush_at=dedup_flush_at, flush_slices=dedup_flush_slices
        )

    def prepare(self, records: Sequence[LogRecord]) -> PreparedAppend:
        """On SQLite the records become their rows, read back as records only when asked
        (`SqliteRowRecords`): a validation worker's prepared batch then crosses to the server
        as the rows alone."""
        keys = [(r.tenant_id, r.source, r.event_id) for r in records]
        first = _first_occurrences(keys)
        hashes = {key: dedup_key(*key) for key in first}
        bind = self._session_factory.kw.get("bind")
        if isinstance(bind, Engine) and bind.dialect.name == "sqlite":
            rows = _sqlite_rows(records, keys, hashes)
            return PreparedAppend(SqliteRowRecords(rows), _Derived(keys, first, hashes, rows))
        return PreparedAppend(records, _Derived(keys, first, hashes, None))

    def append(
        self, records: Sequence[LogRecord] | PreparedAppend, *, session: Session
    ) -> AppendResult:
        result = AppendResult()
        prepared = records if isinstance(records, PreparedAppend) else self.prepare(records)
        derived = prepared.derived
        if not isinstance(derived, _Derived):  # prepared by another log
            prepared = self.prepare(prepared.records)
            derived = cast(_Derived, prepared.derived)
        records = prepared.records
        if not records:
            return result
        connection = session.connection()
        if connection.dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _APPEND_LOCK_KEY})
        first = derived.first
        stored = self._insert_new(records, derived, session=session)
        if len(stored) < len(first):  # rows were inserted: wake consumers after the commit
            self._notifier.mark_appended()
        if not stored and len(first) == len(records):  # all new: no content to compare
            result.appended.extend(range(len(records)))
            return result
        content_hash = derived.content_hash_of(records)
        for index, key in enumerate(derived.keys):
            reference = stored.get(key)
            if reference is None:
                if first[key] == index:
                    result.appended.append(index)
                    continue
                reference = content_hash(first[key])
            if reference == content_hash(index):
                result.duplicates.append(index)
            else:
                result.conflicts.append(index)
        return result

    def _insert_new(
        self, records: Sequence[LogRecord], derived: _Derived, *, session: Session
    ) -> dict[EventKey, str]:
        """Insert the first occurrence of each key not stored yet; the content hashes of the
        keys that were stored already."""
        first, hashes = derived.first, derived.hashes
        connection = session.connection()
        if connection.dialect.name == "postgresql":
            inserted = self._insert_postgresql(
                [records[i] for i in first.values()], hashes, connection=connection
            )
            if len(inserted) == len(first):
                return {}
            missed = {k: h for k, h in hashes.items() if k not in inserted}
            wanted = sorted(set(missed.values()))
            return stored_content_hashes("dedup_key", wanted, missed, connection=connection)
        stored = self._sqlite_dedup.stored(hashes, session=session)
        rows = derived.sqlite_rows
        if rows is None:  # prepared without knowing the database
            rows = _sqlite_rows(records, derived.keys, hashes)
        new = [rows[i] for key, i in first.items() if key not in stored]
        for start in range(0, len(new), _INSERT_CHUNK):
            chunk = new[start : start + _INSERT_CHUNK]
            # One statement per chunk through the driver: SQLAlchemy's per-row parameter
            # processing cost more than the database's own work at ingest rates. No
            # RETURNING: SQLite steps once per returned row, handing the GIL back and forth
            # with the threads validating the next batches.
            statement = connection.exec_driver_sql(
                self._insert_sql(len(chunk)), tuple(chain.from_iterable(chunk))
            )
            # one statement's rows take consecutive positions (AUTOINCREMENT, under the
            # write lock), the last one reported by the driver
            last = statement.lastrowid
            positions = range(last - len(chunk) + 1, last + 1)
            keys = [cast(int, row[_DEDUP_KEY]) for row in chunk]
            self._sqlite_dedup.appended(zip(positions, keys, strict=True), session=session)
        return stored

    def _insert_postgresql(
        self, records: Sequence[LogRecord], hashes: dict[EventKey, int], *, connection: Connection
    ) -> set[EventKey]:
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
                    "dedup_key": hashes[(r.tenant_id, r.source, r.event_id)],
                }
                for r in records
            ]
        )
        rows = connection.exec_driver_sql(_PG_INSERT, (batch.decode(),))
        return {(t, s, e) for t, s, e in rows.all()}

    def _insert_sql(self, rows: int) -> str:
        sql = self._insert_sql_cache.get(rows)
        if sql is None:
            row = "(" + ", ".join(["?"] * len(_INSERT_COLUMNS)) + ")"
            sql = f"INSERT INTO event_log ({', '.join(_INSERT_COLUMNS)}) VALUES " + ", ".join(
                [row] * rows
            )
            self._insert_sql_cache[rows] = sql
        return sql

    def _time_processor(self, dialect: Dialect) -> Callable[[datetime], object]:
        """The UTCDateTime column's own bind processing, so values are stored exactly as an
        ORM or Core insert would store them (PostgreSQL; SQLite rows use `_sqlite_utc_text`)."""
        processor = self._time_processors.get(dialect.name)
        if processor is None:
            column_type = cast(Table, EventLogEntry.__table__).c.event_time.type
            bind = column_type.dialect_impl(dialect).bind_processor(dialect)
            processor = bind if bind is not None else (lambda value: value)
            self._time_processors[dialect.name] = processor
        return processor

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
            # Driver rows, not ORM entities or typed SQLAlchemy rows: the pipeline reads every
            # event back, and the type processors (two datetimes per row) and the frozen
            # dataclasses' own constructors cost it more than the SQLite read itself.
            connection = session.connection()
            rows = connection.exec_driver_sql(_READ_SQL[connection.dialect.name], (position, limit))
            to_utc = _utc_from_text if connection.dialect.name == "sqlite" else _utc_from_driver
            times: dict[object, datetime] = {}  # a batch's rows share their recorded_at
            events: list[LoggedEvent] = []
            append = events.append
            for row in rows:
                recorded_at = times.get(row[7])
                if recorded_at is None:
                    recorded_at = times[row[7]] = to_utc(row[7])
                append(
                    _new_logged(
                        row[0],
                        new_log_record(
                            row[1],
                            row[2],
                            row[3],
                            row[4],
                            row[5],
                            to_utc(row[6]),
                            recorded_at,
                            row[8],
                            row[9],
                            row[10],
                            bool(row[11]),
                            row[12],
                        ),
                    )
                )
            return events

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

    def log_id(self) -> str:
        with self._reader()() as session:
            value = session.scalar(select(EventLogIdentity.id))
        if value is None:  # the migration that creates the table writes its row
            raise ConfigurationError("the event log has no identity: run `qm init`")
        return str(value)

    @staticmethod
    def _position(consumer: str, *, session: Session) -> int:
        value = session.scalar(
            select(ConsumerCursor.position).where(ConsumerCursor.name == consumer)
        )
        return int(value or 0)


_new_logged = fast_constructor(LoggedEvent)
_READ_SQL = {
    dialect: f"SELECT position, {', '.join(_COLUMNS)} FROM event_log WHERE position > {mark}"
    f" ORDER BY position LIMIT {mark}"
    for dialect, mark in (("sqlite", "?"), ("postgresql", "%s"))
}


@dataclass(frozen=True, slots=True)
class _Derived:
    """What the embedded log derives from a batch before its transaction."""

    keys: list[EventKey]  # per record
    first: dict[EventKey, int]  # each key's first record
    hashes: dict[EventKey, int]  # each key's dedup_key
    sqlite_rows: list[tuple[object, ...]] | None  # per record, when the log is on SQLite

    def __reduce__(self) -> tuple[object, ...]:
        # Pickled by a validation worker: on SQLite the rows hold the keys and hashes too, and
        # rebuilding those costs the server less than unpickling them.
        if self.sqlite_rows is not None:
            return (_derived_from_rows, (self.sqlite_rows,))
        return (_Derived, (self.keys, self.first, self.hashes, None))

    def content_hash_of(self, records: Sequence[LogRecord]) -> Callable[[int], str]:
        """Record `index`'s content hash, read from its row when there are rows (a record
        read back from a row costs it more)."""
        rows = self.sqlite_rows
        if rows is not None:
            return lambda index: cast(str, rows[index][_CONTENT_HASH])
        return lambda index: records[index].content_hash


def _first_occurrences(keys: Sequence[EventKey]) -> dict[EventKey, int]:
    """Each key's first index: the occurrence to store; later ones are compared with it, or
    with the stored event if there was one."""
    first: dict[EventKey, int] = {}
    for index, key in enumerate(keys):
        first.setdefault(key, index)
    return first


def _derived_from_rows(rows: list[tuple[object, ...]]) -> _Derived:
    keys = [cast(EventKey, row[:3]) for row in rows]
    first = _first_occurrences(keys)
    hashes = {key: cast(int, rows[index][_DEDUP_KEY]) for key, index in first.items()}
    return _Derived(keys, first, hashes, rows)


class SqliteRowRecords(Sequence[LogRecord]):
    """Records held as their SQLite rows (`_INSERT_COLUMNS`), each read back into a
    `LogRecord` when asked for. Times come back in UTC: the same instants."""

    __slots__ = ("rows",)

    def __init__(self, rows: list[tuple[object, ...]]) -> None:
        self.rows = rows

    def __reduce__(self) -> tuple[object, ...]:
        return (SqliteRowRecords, (self.rows,))

    def __len__(self) -> int:
        return len(self.rows)

    @overload
    def __getitem__(self, index: int) -> LogRecord: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[LogRecord]: ...
    def __getitem__(self, index: int | slice) -> LogRecord | Sequence[LogRecord]:
        if isinstance(index, slice):
            return SqliteRowRecords(self.rows[index])
        return _record_from_sqlite_row(self.rows[index])


def _record_from_sqlite_row(row: tuple[object, ...]) -> LogRecord:
    return new_log_record(
        *row[:5],
        _utc_from_text(row[5]),
        _utc_from_text(row[6]),
        *row[7:10],
        bool(row[10]),
        row[11],
    )


def _sqlite_rows(
    records: Sequence[LogRecord], keys: Sequence[EventKey], hashes: Mapping[EventKey, int]
) -> list[tuple[object, ...]]:
    """Each record's INSERT parameters (`_INSERT_COLUMNS`) as SQLite stores them."""
    rows: list[tuple[object, ...]] = []
    recorded_at: tuple[datetime | None, object] = (None, None)
    for r, key in zip(records, keys, strict=True):
        if r.recorded_at != recorded_at[0]:  # one receipt time per ingest batch
            recorded_at = (r.recorded_at, _sqlite_utc_text(r.recorded_at))
        rows.append(
            (
                r.tenant_id,
                r.source,
                r.event_id,
                r.type,
                r.subject,
                _sqlite_utc_text(r.event_time),
                recorded_at[1],
                r.content_hash,
                r.app_id,
                r.resource_id,
                r.late,
                r.payload,
                hashes[key],
            )
        )
    return rows


def _utc_from_text(value: object) -> datetime:
    """A time as SQLite holds it (naive UTC text, see `_sqlite_utc_text`)."""
    return datetime.fromisoformat(cast(str, value)).replace(tzinfo=UTC)


def _utc_from_driver(value: object) -> datetime:
    """A timestamptz as psycopg returns it (aware, in the session's zone)."""
    moment = cast(datetime, value)
    return moment if moment.tzinfo is UTC else moment.astimezone(UTC)


def _sqlite_utc_text(value: datetime) -> str:
    """What UTCDateTime + SQLAlchemy's SQLite DATETIME store (naive UTC text, always with
    microseconds), at a third of the cost; a test compares the two."""
    if value.tzinfo is UTC:  # validation's event times: drop the "+00:00" of the text
        return value.isoformat(" ", "microseconds")[:26]
    if value.tzinfo is None:
        raise ValueError("naive datetime given to a UTC column")
    return value.astimezone(UTC).replace(tzinfo=None).isoformat(" ", "microseconds")
