from __future__ import annotations

from datetime import UTC, datetime

from quartermaster.bus.embedded import EmbeddedEventLog
from quartermaster.bus.protocol import LogRecord
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
