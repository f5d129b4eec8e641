"""Control-plane tables of the usage feature: meters, environment overrides and replay
requests."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from quartermaster.domain.timeutil import utc_now
from quartermaster.storage.base import Base, BigIntPK, UTCDateTime, new_id


class Meter(Base):
    """A tenant's meter. Meters are immutable: they rate events that became billable after
    `created_at`, so a replay rates each event as it was rated the first time."""

    __tablename__ = "meters"
    __table_args__ = (UniqueConstraint("tenant_id", "name"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    event_type: Mapped[str] = mapped_column(String(200))
    value: Mapped[str] = mapped_column(String(64))
    aggregation: Mapped[str] = mapped_column(String(16))
    unit: Mapped[str] = mapped_column(String(32))
    filter_field: Mapped[str | None] = mapped_column(String(64))
    filter_value: Mapped[str | None] = mapped_column(String(200))
    description: Mapped[str] = mapped_column(String(500), default="")
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class EnvironmentOverride(Base):
    """Usage in `environment` that no app or resource claims goes to `cost_center_id`
    (e.g. staging -> a sandbox cost center). Counts for events recorded after `created_at`
    (or waiting for their metadata then)."""

    __tablename__ = "environment_overrides"
    __table_args__ = (UniqueConstraint("tenant_id", "environment"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    environment: Mapped[str] = mapped_column(String(64))
    cost_center_id: Mapped[str] = mapped_column(ForeignKey("cost_centers.id"))
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class ReplayRequest(Base):
    """A `qm pipeline replay` asked of one server, for every server of the database: each
    server's pipeline replays the requests after the last one its usage store applied
    (`usage.pipeline.PipelineWorker`), so that servers sharing the database rebuild the same
    usage. Ids only grow; a store records the highest it applied."""

    __tablename__ = "usage_replay_requests"

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str | None] = mapped_column(String(64))  # None: every tenant
    requested_by: Mapped[str] = mapped_column(String(200))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
