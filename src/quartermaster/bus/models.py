"""Tables of the embedded event log."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Boolean, Index, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from quartermaster.domain.timeutil import utc_now
from quartermaster.storage.base import Base, BigIntPK, UTCDateTime


class EventLogEntry(Base):
    """One accepted event. (tenant_id, source, event_id) is unique: the appender, the only
    writer of this table, looks the batch's keys up through `dedup_key` and inserts only the
    new ones, holding the log's write lock (SQLite's write transaction, an advisory lock on
    PostgreSQL) from the lookup to the commit."""

    __tablename__ = "event_log"
    # On PostgreSQL one index besides the position: an 8-byte hash of the dedup key (a unique
    # index over the key's strings cost about twice the CPU per appended event). On SQLite the
    # hashes are indexed by `EventDedupEntry` instead (bus/sqlite_dedup.py): an index here
    # had each commit rewrite ~one WAL page per appended event once the log outgrew a few
    # thousand pages. Nothing reads the log by event time.
    __table_args__ = (Index("ix_event_log_dedup_key", "dedup_key").ddl_if(dialect="postgresql"),)

    position: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    source: Mapped[str] = mapped_column(String(500))
    event_id: Mapped[str] = mapped_column(String(200))
    type: Mapped[str] = mapped_column(String(200))
    subject: Mapped[str | None] = mapped_column(String(500))
    event_time: Mapped[datetime] = mapped_column(UTCDateTime())
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    content_hash: Mapped[str] = mapped_column(String(64))
    app_id: Mapped[str | None] = mapped_column(String(64))
    resource_id: Mapped[str | None] = mapped_column(String(200))
    late: Mapped[bool] = mapped_column(Boolean, default=False)
    payload: Mapped[str] = mapped_column(Text)  # the CloudEvent as received (canonical JSON)
    # bus.embedded.dedup_key(tenant_id, source, event_id): not unique (hashes may collide),
    # a lookup compares the full key.
    dedup_key: Mapped[int] = mapped_column(BigInteger)


class EventLogIdentity(Base):
    """One row: the id of this database's event log. A usage store records the id of the log
    it rates (`usage.pipeline.check_log_binding`), so that a store kept from another database
    is refused rather than skipping this log's first events as already rated."""

    __tablename__ = "event_log_identity"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class ConsumerCursor(Base):
    __tablename__ = "event_consumers"

    name: Mapped[str] = mapped_column(String(100), primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, default=0)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class EventDedupEntry(Base):
    """SQLite only: most of the log's dedup keys up to `EventDedupMark.merged_upto`, in key
    order, moved here key range by key range from `event_dedup_recent` (bus/sqlite_dedup.py).
    Empty on PostgreSQL."""

    __tablename__ = "event_dedup"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 (read by SQLAlchemy once)

    dedup_key: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, primary_key=True)


class EventDedupRecentEntry(Base):
    """SQLite only: the rest of the log's dedup keys up to `merged_upto`, in key order, merged
    in bulk from the log; the keys of the rows after `merged_upto` are held in memory by each
    appending process. Kept small so that a merge touches few pages. Empty on PostgreSQL."""

    __tablename__ = "event_dedup_recent"
    __table_args__ = {"sqlite_with_rowid": False}  # noqa: RUF012 (read by SQLAlchemy once)

    dedup_key: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    position: Mapped[int] = mapped_column(BigInteger, primary_key=True)


class EventDedupMark(Base):
    """SQLite only (one row): the last log position whose dedup key is in `event_dedup_recent`
    or `event_dedup` (`merged_upto`), the keys in `event_dedup_recent`, and while its keys are
    moving to `event_dedup`, the start of the next key range to move (`flush_next`)."""

    __tablename__ = "event_dedup_mark"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    merged_upto: Mapped[int] = mapped_column(BigInteger, default=0)
    recent_keys: Mapped[int] = mapped_column(BigInteger, default=0, server_default="0")
    flush_next: Mapped[int | None] = mapped_column(BigInteger)
