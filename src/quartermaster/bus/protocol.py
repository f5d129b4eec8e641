"""The event log seam. Backends: the embedded log (tables in the control-plane database) now;
NATS JetStream later (stream + durable consumer; dedup by message id plus a claim table)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from sqlalchemy.orm import Session

from quartermaster.domain.frozen import fast_constructor


@dataclass(frozen=True, slots=True)
class LogRecord:
    """An accepted, validated event ready to append. `payload` is its canonical JSON text."""

    tenant_id: str
    source: str
    event_id: str
    type: str
    subject: str | None
    event_time: datetime
    recorded_at: datetime
    content_hash: str
    app_id: str | None
    resource_id: str | None
    late: bool
    payload: str

    def __reduce__(self) -> tuple[object, ...]:
        # Validation workers send records to the server: the frozen dataclass's default pickle
        # state (restored through object.__setattr__) loaded at ~30 us per record.
        return (
            _log_record_from_fields,
            (
                self.tenant_id,
                self.source,
                self.event_id,
                self.type,
                self.subject,
                self.event_time,
                self.recorded_at,
                self.content_hash,
                self.app_id,
                self.resource_id,
                self.late,
                self.payload,
            ),
        )


# `LogRecord(...)` from its fields in order, for the per-event paths (validation, reading the
# log back): the frozen dataclass's own __init__ was a third of either (domain/frozen.py).
new_log_record = fast_constructor(LogRecord)


def _log_record_from_fields(*fields: object) -> LogRecord:
    """Unpickling a `LogRecord` (pickle names a module-level function; the builder has none)."""
    return new_log_record(*fields)


@dataclass(frozen=True, slots=True)
class LoggedEvent:
    """A record as read back from the log, with its position (monotonic per log)."""

    position: int
    record: LogRecord


@dataclass(frozen=True, slots=True)
class PreparedAppend:
    """Records and what a backend derives from them without a transaction (their keys, rows
    encoded for its database). `EventLog.prepare` builds it before the caller queues for the
    log's write lock, so that the time under the lock is the database's own."""

    records: Sequence[LogRecord]
    derived: object = None  # the backend's own


@dataclass(slots=True)
class AppendResult:
    """Indexes into the appended sequence: stored now, already stored identically, or
    already stored with other content under the same (source, id)."""

    appended: list[int] = field(default_factory=list)
    duplicates: list[int] = field(default_factory=list)
    conflicts: list[int] = field(default_factory=list)


class EventLog(Protocol):
    def prepare(self, records: Sequence[LogRecord]) -> PreparedAppend:
        """The records with what `append` derives from them outside any transaction (pure,
        thread-safe)."""
        ...

    def append(
        self, records: Sequence[LogRecord] | PreparedAppend, *, session: Session
    ) -> AppendResult:
        """Append idempotently on (tenant_id, source, event_id) inside the caller's
        transaction: the records are durable once that transaction commits. Prepared records
        (`prepare`) skip the work already done."""
        ...

    def read(self, consumer: str, *, limit: int) -> list[LoggedEvent]:
        """The next records after the consumer's acknowledged position, in log order."""
        ...

    def read_after(self, position: int, *, limit: int) -> list[LoggedEvent]:
        """At most `limit` records with a position above `position`, in log order: a
        consumer reads several chunks before it acknowledges the last one."""
        ...

    def on_append(self, callback: Callable[[], None]) -> Callable[[], None]:
        """Call `callback` (quickly: it runs in the appending thread) after each transaction
        of this process that appended records has committed; returns the unsubscribe
        function. Appends from other processes are only seen by reading."""
        ...

    def ack(self, consumer: str, position: int) -> None:
        """Durably move the consumer's cursor to `position` (never backwards)."""
        ...

    def position(self, consumer: str) -> int:
        """The consumer's acknowledged position (0 before its first ack)."""
        ...

    def head(self) -> int:
        """The position of the newest record (0 when empty)."""
        ...

    def log_id(self) -> str:
        """The id of this log, the same for every process that reads it: a usage store
        records the id of the log it rates."""
        ...
