"""Price book versions per tenant (a stored version is never edited: changes are new
versions), and which book is each tenant's default."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import ForeignKey, Index, Integer, String, Text, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from quartermaster.storage.base import Base, BigIntPK, UTCDateTime


class PriceBookVersionRow(Base):
    __tablename__ = "price_book_versions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "name", "version"),
        Index("ix_price_book_versions_lookup", "tenant_id", "name", "effective_from"),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    currency: Mapped[str] = mapped_column(String(3))
    effective_from: Mapped[datetime] = mapped_column(UTCDateTime())
    # The canonical JSON of the validated document and its SHA-256 (idempotent re-uploads).
    document: Mapped[str] = mapped_column(Text)
    content_hash: Mapped[str] = mapped_column(String(64))
    # When it was stored (its creation time); effective_from < recorded_at is back-dated.
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(200))


class PriceBookDefault(Base):
    """The tenant's default price book: the one billing runs, previews and guardrails price
    with when no name is given. A tenant's first price book becomes it when loaded; later
    books change it only when chosen (`PUT /v1/price-books/default`)."""

    __tablename__ = "price_book_defaults"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    chosen_at: Mapped[datetime] = mapped_column(UTCDateTime())
    chosen_by: Mapped[str] = mapped_column(String(200))
