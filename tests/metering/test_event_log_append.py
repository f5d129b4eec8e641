"""The embedded event log's append as ingestion uses it: a dedup-key lookup, then multi-row
INSERTs through the driver that must store rows exactly as the ORM would; repeats classified."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st
from sqlalchemy import Table, select, text
from sqlalchemy.dialects import sqlite

from quartermaster.bus import embedded
from quartermaster.bus.models import EventLogEntry
from quartermaster.bus.protocol import LogRecord
from quartermaster.runtime import Runtime


def record(tenant: str, event_id: str, *, content: str = "h", **overrides: object) -> LogRecord:
    moment = datetime(2026, 11, 1, 12, 0, 0, 0, tzinfo=UTC)
    values: dict[str, object] = {
        "tenant_id": tenant,
        "source": "src",
        "event_id": event_id,
        "type": "qm.invocation.usage",
        "subject": None,
        "event_time": moment,
        "recorded_at": moment + timedelta(minutes=1),
        "content_hash": content,
        "app_id": "a",
        "resource_id": None,
        "late": False,
        "payload": "{}",
    }
    values.update(overrides)
    return LogRecord(**values)  # type: ignore[arg-type]


def test_insert_columns_are_the_tables_columns() -> None:
    table = EventLogEntry.__table__
    assert isinstance(table, Table)
    assert set(embedded._INSERT_COLUMNS) == {c.name for c in table.columns} - {"position"}


def test_rows_are_stored_as_the_orm_stores_them(runtime: Runtime) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    odd = datetime(2026, 11, 1, 12, 0, 0, 0, tzinfo=UTC)  # zero microseconds
    offset = datetime(2026, 11, 1, 14, 30, 0, 5, tzinfo=UTC)
    with runtime.session_factory.begin() as session:
        runtime.event_log.append(
            [
                record(tenant, "via-append", event_time=odd, late=True, subject="s"),
                record(tenant, "via-append-2", event_time=offset),
            ],
            session=session,
        )
        orm_twin = record(tenant, "via-orm", event_time=odd, late=True, subject="s")
        session.add(
            EventLogEntry(
                **{f: getattr(orm_twin, f) for f in embedded._COLUMNS},
                dedup_key=embedded.dedup_key(tenant, "src", "via-orm"),
            )
        )
    with runtime.session_factory() as session:
        raw = session.execute(
            text(
                "SELECT event_id, event_time, recorded_at, late FROM event_log "
                "WHERE tenant_id = :t ORDER BY position"
            ),
            {"t": tenant},
        ).all()
        by_id = {row[0]: tuple(row[1:]) for row in raw}
        assert by_id["via-append"] == by_id["via-orm"]  # identical storage, also on SQLite
        # range predicates on the column see appended rows at their exact instants
        hits = session.scalars(
            select(EventLogEntry.event_id).where(
                EventLogEntry.tenant_id == tenant,
                EventLogEntry.event_time >= odd,
                EventLogEntry.event_time < offset,
            )
        ).all()
        assert sorted(hits) == ["via-append", "via-orm"]
        loaded = session.scalars(
            select(EventLogEntry).where(EventLogEntry.event_id == "via-append-2")
        ).one()
        assert loaded.event_time == offset
        assert loaded.late is False


def test_repeats_in_the_batch_and_against_the_log(runtime: Runtime) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    with runtime.session_factory.begin() as session:
        runtime.event_log.append([record(tenant, "stored", content="A")], session=session)
    batch = [
        record(tenant, "stored", content="A"),  # duplicate of the log
        record(tenant, "stored", content="B"),  # conflict with the log
        record(tenant, "new", content="N"),  # appended
        record(tenant, "new", content="N"),  # duplicate of an earlier one in the batch
        record(tenant, "new", content="M"),  # conflict with an earlier one in the batch
        record(tenant, "other-source", content="X", source="src-2"),  # another stream
    ]
    with runtime.session_factory.begin() as session:
        result = runtime.event_log.append(batch, session=session)
    assert result.appended == [2, 5]
    assert result.duplicates == [0, 3]
    assert result.conflicts == [1, 4]


def test_large_batches_are_split_into_statements_and_keep_their_order(runtime: Runtime) -> None:
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    ids = [f"e{i:05d}" for i in range(embedded._INSERT_CHUNK * 2 + 7)]
    with runtime.session_factory.begin() as session:
        result = runtime.event_log.append([record(tenant, i) for i in ids], session=session)
    assert result.appended == list(range(len(ids)))
    with runtime.session_factory() as session:
        stored = session.scalars(
            select(EventLogEntry.event_id)
            .where(EventLogEntry.tenant_id == tenant)
            .order_by(EventLogEntry.position)
        ).all()
    assert stored == ids


IN_LA = timezone(-timedelta(hours=8))


@given(
    st.datetimes(
        min_value=datetime(1000, 1, 2),
        max_value=datetime(9999, 12, 30),
        timezones=st.sampled_from(
            [UTC, timezone(timedelta(hours=5, minutes=30)), timezone(-timedelta(hours=8))]
        ),
    )
)
def test_fast_sqlite_time_text_is_what_sqlalchemy_writes(moment: datetime) -> None:
    dialect = sqlite.dialect()
    table = EventLogEntry.__table__
    assert isinstance(table, Table)
    processor = table.c.event_time.type.dialect_impl(dialect).bind_processor(dialect)
    assert processor is not None
    assert embedded._sqlite_utc_text(moment) == processor(moment)


def test_keys_sharing_a_dedup_hash_are_told_apart(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two different events whose keys hash alike (a 64-bit collision) are both stored; each
    one's repeat is still a duplicate of itself."""
    monkeypatch.setattr(embedded, "dedup_key", lambda *key: 42)
    tenant = f"t-{uuid.uuid4().hex[:8]}"
    with runtime.session_factory.begin() as session:
        first = runtime.event_log.append([record(tenant, "a", content="A")], session=session)
    with runtime.session_factory.begin() as session:
        second = runtime.event_log.append(
            [
                record(tenant, "b", content="B"),
                record(tenant, "a", content="A"),
                record(tenant, "a", content="Z"),
            ],
            session=session,
        )
    assert first.appended == [0]
    assert (second.appended, second.duplicates, second.conflicts) == ([0], [1], [2])
    with runtime.session_factory() as session:
        stored = session.scalars(
            select(EventLogEntry.event_id).where(EventLogEntry.tenant_id == tenant)
        ).all()
    assert sorted(stored) == ["a", "b"]
