"""Audit tables: the per-tenant hash-chained records, each chain's head, shipping cursors."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from quartermaster.domain.timeutil import utc_now
from quartermaster.storage.base import Base, BigIntPK, UTCDateTime


class AuditRecord(Base):
    """One audited operation. `id` is insertion order (appends are serialized per tenant, so
    it agrees with `seq` within a tenant unless someone reorders rows)."""

    __tablename__ = "audit_records"
    __table_args__ = (
        # A second writer that read a stale head fails here instead of forking the chain.
        UniqueConstraint("tenant_id", "seq"),
        Index("ix_audit_records_tenant_id_id", "tenant_id", "id"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(String(64))
    seq: Mapped[int] = mapped_column(BigInteger)
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    action: Mapped[str] = mapped_column(String(32))
    outcome: Mapped[str] = mapped_column(String(16))
    actor: Mapped[str] = mapped_column(String(300))
    path: Mapped[str | None] = mapped_column(String(512))
    lease_id: Mapped[str | None] = mapped_column(String(64))
    version: Mapped[int | None] = mapped_column(Integer)
    detail: Mapped[str] = mapped_column(Text)  # canonical JSON; secret values only as HMACs
    prev_hash: Mapped[str] = mapped_column(String(64))
    hash: Mapped[str] = mapped_column(String(64))


class AuditHead(Base):
    """The last record of each tenant's chain, updated with every append: verification uses it
    to notice records cut from the end."""

    __tablename__ = "audit_heads"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    hash: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class AuditSinkCursor(Base):
    """How far each tenant's chain has been shipped to a sink (by seq, which is commit order
    within a tenant)."""

    __tablename__ = "audit_sink_cursors"

    sink: Mapped[str] = mapped_column(String(64), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    seq: Mapped[int] = mapped_column(BigInteger)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
