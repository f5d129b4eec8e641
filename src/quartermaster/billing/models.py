"""Billing documents (runs and their adjustment documents) and their lines: the ledger.

A finalized document and its lines are immutable. The services refuse to change them and
the database refuses too (triggers created by migration 0006): corrections are new
adjustment documents that name the run they correct.
"""

from __future__ import annotations

import enum
from datetime import datetime
from decimal import Decimal

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from quartermaster.domain.timeutil import utc_now
from quartermaster.storage.base import Base, DecimalText, UTCDateTime, new_id


class DocumentType(enum.StrEnum):
    RUN = "run"  # the bill of a period
    ADJUSTMENT = "adjustment"  # corrections to a finalized run


class RunKind(enum.StrEnum):
    INVOICE = "invoice"
    CHARGEBACK = "chargeback"


class DocumentStatus(enum.StrEnum):
    DRAFT = "draft"
    FINALIZED = "finalized"


class CostType(enum.StrEnum):
    USAGE = "usage"
    PLATFORM = "platform"  # a share of a shared platform cost
    SUBSCRIPTION = "subscription"
    DISCOUNT = "discount"  # negative: a percentage discount or a reserved-capacity credit
    ADJUSTMENT = "adjustment"  # a correction line of an adjustment document


class BillingDocument(Base):
    __tablename__ = "billing_documents"
    __table_args__ = (
        # One run per (kind, period); adjustments are numbered per run.
        UniqueConstraint("tenant_id", "doc_key"),
        Index("ix_billing_documents_period", "tenant_id", "period_start"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    doc_type: Mapped[str] = mapped_column(String(16))
    doc_key: Mapped[str] = mapped_column(String(200))
    kind: Mapped[str] = mapped_column(String(16))
    corrects_id: Mapped[str | None] = mapped_column(ForeignKey("billing_documents.id"))
    sequence: Mapped[int] = mapped_column(Integer, default=0)
    period_start: Mapped[datetime] = mapped_column(UTCDateTime())
    period_end: Mapped[datetime] = mapped_column(UTCDateTime())
    timezone: Mapped[str] = mapped_column(String(64), default="UTC")
    status: Mapped[str] = mapped_column(String(16), default=DocumentStatus.DRAFT.value)
    # Usage recorded at or before `as_of` and price book versions recorded by then: what
    # the document was computed from, so it can be recomputed exactly as issued.
    as_of: Mapped[datetime] = mapped_column(UTCDateTime())
    price_book: Mapped[str] = mapped_column(String(64))
    price_book_versions: Mapped[str] = mapped_column(String(200))
    currency: Mapped[str] = mapped_column(String(3))
    total: Mapped[Decimal] = mapped_column(DecimalText())
    line_count: Mapped[int] = mapped_column(Integer, default=0)
    note: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    created_by: Mapped[str] = mapped_column(String(200))
    finalized_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    finalized_by: Mapped[str | None] = mapped_column(String(200))


class BillingLine(Base):
    __tablename__ = "billing_lines"
    __table_args__ = (
        UniqueConstraint("document_id", "line_key"),
        Index("ix_billing_lines_document", "document_id", "position"),
        Index("ix_billing_lines_audit_key", "tenant_id", "audit_key"),
    )

    # Derived from the document and the line key, so a recomputed draft keeps its line ids.
    id: Mapped[str] = mapped_column(String(32), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    document_id: Mapped[str] = mapped_column(ForeignKey("billing_documents.id"))
    position: Mapped[int] = mapped_column(Integer)
    # Identifies "the same line" across recomputations (adjustments diff per line key).
    line_key: Mapped[str] = mapped_column(String(400))
    parent_key: Mapped[str | None] = mapped_column(String(400))  # a discount's usage line
    cost_type: Mapped[str] = mapped_column(String(16))
    item: Mapped[str] = mapped_column(String(100))  # the meter or platform cost charged
    meter: Mapped[str | None] = mapped_column(String(64))
    unit: Mapped[str | None] = mapped_column(String(32))
    cost_center: Mapped[str] = mapped_column(String(64))
    team: Mapped[str | None] = mapped_column(String(64))
    app: Mapped[str | None] = mapped_column(String(64))
    lifecycle: Mapped[str | None] = mapped_column(String(16))
    quantity: Mapped[Decimal] = mapped_column(DecimalText())
    unit_price: Mapped[Decimal | None] = mapped_column(DecimalText())
    amount: Mapped[Decimal] = mapped_column(DecimalText())
    currency: Mapped[str] = mapped_column(String(3))
    pricing_rule: Mapped[str] = mapped_column(Text)
    allocation_method: Mapped[str] = mapped_column(Text)
    price_book_versions: Mapped[str] = mapped_column(String(64))
    audit_key: Mapped[str] = mapped_column(String(400))
    # Adjustment lines: what they correct and why.
    adjusted_cost_type: Mapped[str | None] = mapped_column(String(16))
    corrects_line_id: Mapped[str | None] = mapped_column(String(32))
    previous_quantity: Mapped[Decimal | None] = mapped_column(DecimalText())
    previous_amount: Mapped[Decimal | None] = mapped_column(DecimalText())
    reason: Mapped[str | None] = mapped_column(Text)
