"""The embedded event log: a table in the control-plane database (SQLite or PostgreSQL)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

from sqlalchemy import Table, func, insert, select, text
from sqlalchemy.orm import Session, sessionmaker

from quartermaster.bus.models import ConsumerCursor, EventLogEntry
from quartermaster.bus.protocol import AppendResult, LoggedEvent, LogRecord
from quartermaster.domain.timeutil import utc_now

# Held for the rest of the appending transaction on PostgreSQL, so positions become visible in
# the order they were assigned and a consumer can never skip past a slower commit.
_APPEND_LOCK_KEY = 0x716D_6C6F67  # "qmlog"
_LOOKUP_CHUNK = 900


class EmbeddedEventLog:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._session_factory = session_factory

    def append(self, records: Sequence[LogRecord], *, session: Session) -> AppendResult:
        result = AppendResult()
        if not records:
            return result
        if session.get_bind().dialect.name == "postgresql":
            session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _APPEND_LOCK_KEY})
        stored = self._stored_hashes(records, session=session)
        seen_in_batch: dict[tuple[str, str, str], str] = {}
        rows: list[dict[str, object]] = []
        for index, record in enumerate(records):
            key = (record.tenant_id, record.source, record.event_id)
            known = stored.get(key) or seen_in_batch.get(key)
            if known is None:
                seen_in_batch[key] = record.content_hash
                rows.append(_row(record))
                result.appended.append(index)
            elif known == record.content_hash:
                result.duplicates.append(index)
            else:
                result.conflicts.append(index)
        if rows:
            # Core executemany on the table: the ORM bulk path splits a batch into a statement
            # per run of rows with the same NULL columns, and asdict() deep-copies each field.
            session.execute(insert(cast(Table, EventLogEntry.__table__)), rows)
        return result

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
        with self._session_factory() as session:
            after = self._position(consumer, session=session)
            rows = session.scalars(
                select(EventLogEntry)
                .where(EventLogEntry.position > after)
                .order_by(EventLogEntry.position)
                .limit(limit)
            ).all()
            return [LoggedEvent(position=row.position, record=_to_record(row)) for row in rows]

    def ack(self, consumer: str, position: int) -> None:
        with self._session_factory.begin() as session:
            cursor = session.get(ConsumerCursor, consumer)
            if cursor is None:
                session.add(ConsumerCursor(name=consumer, position=position, updated_at=utc_now()))
            elif position > cursor.position:
                cursor.position = position
                cursor.updated_at = utc_now()

    def position(self, consumer: str) -> int:
        with self._session_factory() as session:
            return self._position(consumer, session=session)

    def head(self) -> int:
        with self._session_factory() as session:
            return int(
                session.scalar(select(func.coalesce(func.max(EventLogEntry.position), 0))) or 0
            )

    @staticmethod
    def _position(consumer: str, *, session: Session) -> int:
        value = session.scalar(
            select(ConsumerCursor.position).where(ConsumerCursor.name == consumer)
        )
        return int(value or 0)


def _row(record: LogRecord) -> dict[str, object]:
    return {
        "tenant_id": record.tenant_id,
        "source": record.source,
        "event_id": record.event_id,
        "type": record.type,
        "subject": record.subject,
        "event_time": record.event_time,
        "recorded_at": record.recorded_at,
        "content_hash": record.content_hash,
        "app_id": record.app_id,
        "resource_id": record.resource_id,
        "late": record.late,
        "payload": record.payload,
    }


def _to_record(row: EventLogEntry) -> LogRecord:
    return LogRecord(
        tenant_id=row.tenant_id,
        source=row.source,
        event_id=row.event_id,
        type=row.type,
        subject=row.subject,
        event_time=row.event_time,
        recorded_at=row.recorded_at,
        content_hash=row.content_hash,
        app_id=row.app_id,
        resource_id=row.resource_id,
        late=row.late,
        payload=row.payload,
    )
