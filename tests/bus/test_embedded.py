from __future__ import annotations

import pickle
from dataclasses import replace
from datetime import UTC, datetime, timedelta, timezone

from sqlalchemy import select

from quartermaster.bus.embedded import EmbeddedEventLog
from quartermaster.bus.protocol import LogRecord, PreparedAppend
from quartermaster.runtime import Runtime


def _record(tenant: str, event_id: str, content_hash: str = "h1") -> LogRecord:
    now = datetime(2026, 11, 1, 12, tzinfo=UTC)
    return LogRecord(
        tenant_id=tenant,
        source="src",
        event_id=event_id,
        type="qm.invocation.usage",
        subject=None,
        event_time=now,
        recorded_at=now,
        content_hash=content_hash,
        app_id="a",
        resource_id=None,
        late=False,
        payload="{}",
    )


def test_append_is_idempotent_and_detects_conflicts(runtime: Runtime) -> None:
    log = EmbeddedEventLog(runtime.session_factory)
    with runtime.session_factory.begin() as session:
        first = log.append([_record("t-log", "1"), _record("t-log", "2")], session=session)
    assert first.appended == [0, 1]
    with runtime.session_factory.begin() as session:
        again = log.append(
            [
                _record("t-log", "1"),
                _record("t-log", "2", "other"),
                _record("t-log", "3"),
                _record("t-log", "3"),
            ],
            session=session,
        )
    assert again.duplicates == [0, 3]
    assert again.conflicts == [1]
    assert again.appended == [2]


def test_prepared_records_append_as_the_records_do(runtime: Runtime) -> None:
    """`prepare` (done before the write lock, or in a validation worker) changes nothing of
    what is stored; a batch prepared by another log (its derived data unknown here) is
    prepared again."""
    log = EmbeddedEventLog(runtime.session_factory)
    later = datetime(2026, 11, 1, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    records = [
        _record("t-prep", "1"),
        _record("t-prep", "1"),  # a duplicate inside the batch
        replace(_record("t-prep", "2"), event_time=later),
    ]
    start = log.head()
    with runtime.session_factory.begin() as session:
        prepared = log.append(log.prepare(records), session=session)
    with runtime.session_factory.begin() as session:
        foreign = log.append(
            PreparedAppend([*records[:1], _record("t-prep", "3")]), session=session
        )
    assert (prepared.appended, prepared.duplicates) == ([0, 2], [1])
    assert (foreign.appended, foreign.duplicates) == ([1], [0])
    read = [e.record for e in log.read_after(start, limit=100) if e.record.tenant_id == "t-prep"]
    assert [(r.event_id, r.event_time) for r in read] == [
        ("1", records[0].event_time),
        ("2", later),
        ("3", records[0].event_time),
    ]


def test_a_prepared_batch_pickled_appends_as_before(runtime: Runtime) -> None:
    """A validation worker pickles its prepared batch to the server (on SQLite as the rows
    alone): unpickled, it holds the same records and appends with the same outcome, a
    conflict and duplicates included."""
    log = EmbeddedEventLog(runtime.session_factory)
    later = datetime(2026, 11, 1, 12, 30, tzinfo=timezone(timedelta(hours=2)))
    with runtime.session_factory.begin() as session:
        log.append([_record("t-pickle", "0")], session=session)
    records = [
        replace(_record("t-pickle", "1", "h2"), event_time=later, subject="s", late=True),
        _record("t-pickle", "1"),  # same key, other content: a conflict within the batch
        _record("t-pickle", "0"),  # stored already, identical
        _record("t-pickle", "0", "other"),  # stored already, other content
    ]
    sent = pickle.loads(pickle.dumps(log.prepare(records)))
    assert list(sent.records) == records
    assert list(sent.records[1:3]) == records[1:3]
    with runtime.session_factory.begin() as session:
        result = log.append(sent, session=session)
    assert (result.appended, result.duplicates, result.conflicts) == ([0], [2], [1, 3])
    assert pickle.loads(pickle.dumps(records)) == records


def test_consumer_cursor_is_durable_and_monotonic(runtime: Runtime) -> None:
    log = EmbeddedEventLog(runtime.session_factory)
    consumer = f"test-{id(log)}"
    start = log.head()
    with runtime.session_factory.begin() as session:
        log.append([_record("t-cursor", str(i)) for i in range(5)], session=session)
    log.ack(consumer, start)
    batch = log.read(consumer, limit=3)
    assert [e.record.event_id for e in batch] == ["0", "1", "2"]
    log.ack(consumer, batch[-1].position)
    log.ack(consumer, start)  # never moves backwards
    rest = log.read(consumer, limit=10)
    assert [e.record.event_id for e in rest if e.record.tenant_id == "t-cursor"] == ["3", "4"]
    assert log.position(consumer) == batch[-1].position


def test_read_after_reads_from_any_position_without_a_cursor(runtime: Runtime) -> None:
    log = EmbeddedEventLog(runtime.session_factory)
    with runtime.session_factory.begin() as session:
        log.append([_record("t-after", str(i)) for i in range(5)], session=session)
    mine = [e for e in log.read_after(0, limit=10**9) if e.record.tenant_id == "t-after"]
    assert [e.record.event_id for e in mine] == ["0", "1", "2", "3", "4"]
    chunk = log.read_after(mine[1].position, limit=2)
    assert [e.position for e in chunk] == [mine[2].position, mine[3].position]
    assert log.read_after(log.head(), limit=10) == []


def test_on_append_fires_after_the_commit_only(runtime: Runtime) -> None:
    log = EmbeddedEventLog(runtime.session_factory)
    seen: list[int] = []
    unsubscribe = log.on_append(lambda: seen.append(log.head()))
    session = runtime.session_factory()
    log.append([_record("t-notify", "rolled-back")], session=session)
    session.rollback()
    session.close()
    assert seen == []
    with runtime.session_factory.begin() as session:
        session.execute(select(1))  # a commit without an append
    assert seen == []
    with runtime.session_factory() as session:
        log.append([_record("t-notify", "1")], session=session)
        assert seen == []  # not before the commit: a consumer would find nothing
        session.commit()
    # The callback ran after the commit, so the appended record was visible to it.
    assert len(seen) == 1
    assert [e.record.event_id for e in log.read_after(seen[0] - 1, limit=1)] == ["1"]
    unsubscribe()
    with runtime.session_factory.begin() as session:
        log.append([_record("t-notify", "2")], session=session)
    assert len(seen) == 1


def test_a_failing_subscriber_does_not_fail_the_append(runtime: Runtime) -> None:
    log = EmbeddedEventLog(runtime.session_factory)
    calls: list[str] = []

    def broken() -> None:
        calls.append("broken")
        raise RuntimeError("subscriber bug")

    log.on_append(broken)
    log.on_append(lambda: calls.append("next"))
    with runtime.session_factory.begin() as session:
        log.append([_record("t-broken", "1")], session=session)
    assert calls == ["broken", "next"]
    assert [e.record.event_id for e in log.read_after(log.head() - 1, limit=1)] == ["1"]


def test_a_record_reads_back_as_it_was_appended(runtime: Runtime) -> None:
    """Every field, in UTC, to the microsecond, whatever offset the event was given in."""
    log = EmbeddedEventLog(runtime.session_factory)
    paris = timezone(timedelta(hours=1))
    records = [
        LogRecord(
            tenant_id="t-roundtrip",
            source="app://x",
            event_id="1",
            type="qm.resource.usage",
            subject="pod/a",
            event_time=datetime(2026, 11, 1, 13, 0, 0, 123456, tzinfo=paris),
            recorded_at=datetime(2026, 11, 1, 12, 0, 1, 7, tzinfo=UTC),
            content_hash="h",
            app_id=None,
            resource_id="res-1",
            late=True,
            payload='{"data":{"cpu_seconds":1.5}}',
        ),
        _record("t-roundtrip", "2"),
    ]
    with runtime.session_factory.begin() as session:
        log.append(records, session=session)
    read = [e.record for e in log.read_after(0, limit=10**9) if e.record.tenant_id == "t-roundtrip"]
    assert read == records
    for record in read:
        assert type(record) is LogRecord
        assert record.event_time.tzinfo is UTC
        assert record.recorded_at.tzinfo is UTC
    assert read[0].event_time == datetime(2026, 11, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert read[0].late is True
    assert read[1].late is False
