"""Reconciliation counters: per tenant, hour of receipt, stage and reason."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import BigInteger, String
from sqlalchemy.orm import Mapped, mapped_column

from quartermaster.storage.base import Base, UTCDateTime


class ReconciliationCounter(Base):
    """Stages: received, accepted, duplicate, rejected (reason set), and the pipeline's own
    stages (attributed, waiting, unattributed, rated). Updated in the transaction of the work."""

    __tablename__ = "reconciliation_counters"

    tenant_id: Mapped[str] = mapped_column(String(64), primary_key=True)
    hour: Mapped[datetime] = mapped_column(UTCDateTime(), primary_key=True)
    stage: Mapped[str] = mapped_column(String(32), primary_key=True)
    reason: Mapped[str] = mapped_column(String(64), primary_key=True, default="")
    count: Mapped[int] = mapped_column(BigInteger, default=0)
