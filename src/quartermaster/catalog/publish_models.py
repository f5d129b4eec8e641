"""Catalog publishing tables: app versions with their check results, and the search documents
(one per app with a published version; the full-text index beside it is kept in step)."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    Boolean,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    desc,
)
from sqlalchemy.orm import Mapped, mapped_column

from quartermaster.domain.timeutil import utc_now
from quartermaster.storage.base import Base, BigIntPK, UTCDateTime, new_id


class VersionState(enum.StrEnum):
    DRAFT = "draft"
    CHECKING = "checking"
    PENDING_APPROVAL = "pending_approval"
    PUBLISHED = "published"
    DEPRECATED = "deprecated"
    REJECTED = "rejected"  # blocked by a check, denied by a policy or by a reviewer
    QUARANTINED = "quarantined"


class AppVersion(Base):
    __tablename__ = "app_versions"
    __table_args__ = (
        UniqueConstraint("tenant_id", "app_pk", "version"),
        Index("ix_app_versions_app_state", "app_pk", "state"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    app_pk: Mapped[str] = mapped_column(ForeignKey("apps.id"))
    version: Mapped[str] = mapped_column(String(64))
    state: Mapped[str] = mapped_column(String(24), default=VersionState.DRAFT.value)
    manifest: Mapped[str] = mapped_column(Text)  # canonical JSON
    manifest_digest: Mapped[str] = mapped_column(String(64))
    package_digest: Mapped[str | None] = mapped_column(String(64))
    checks: Mapped[str] = mapped_column(Text, default="[]")  # JSON list of CheckResult
    decision: Mapped[str | None] = mapped_column(Text)  # JSON summary of the policy decision
    state_reason: Mapped[str | None] = mapped_column(Text)
    checked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    published_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class AppSearchTenant(Base):
    """A tenant's number in the SQLite full-text indexes, where a document's rowid is
    `ordinal << 32 | its id`: a tenant's documents are one rowid range, which FTS5 restricts a
    match to by seeking (search_index.fts_rowid_range), with no tenant term to match."""

    __tablename__ = "app_search_tenants"

    ordinal: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), unique=True)


class AppSearchDoc(Base):
    """What search ranks and shows for an app: its latest published manifest's text and
    facets, with the trust and usage signals. On SQLite its full-text rows have the rowid
    `AppSearchTenant.ordinal << 32 | id`."""

    __tablename__ = "app_search_docs"
    # A search without text reads the busiest documents (`ORDER BY invocations_30d DESC,
    # app_id`) from one of these, filtered by team, pricing model or neither: each holds the
    # order and every column that search ranks and counts facets by (migration 0019c).
    __table_args__ = (
        UniqueConstraint("tenant_id", "app_id"),
        *(
            Index(
                f"ix_app_search_docs_{name}",
                "tenant_id",
                *lead,
                desc("invocations_30d"),
                "app_id",
                "id",
                *rest,
                "behaviour",
                "trust_base",
                "scanned_epoch",
                "tags",
                "capabilities",
            )
            for name, lead, rest in (
                ("rank", (), ("team", "pricing_model")),
                ("team_rank", ("team",), ("pricing_model",)),
                ("pricing_rank", ("pricing_model",), ("team",)),
            )
        ),
    )

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True, autoincrement=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    app_pk: Mapped[str] = mapped_column(ForeignKey("apps.id"), index=True)
    app_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[str] = mapped_column(String(64))
    title: Mapped[str] = mapped_column(String(200))
    short_description: Mapped[str] = mapped_column(String(280))
    long_description: Mapped[str] = mapped_column(Text)
    tags: Mapped[str] = mapped_column(Text)  # JSON list
    team: Mapped[str] = mapped_column(String(64))
    capabilities: Mapped[str] = mapped_column(String(64))  # JSON list
    pricing_model: Mapped[str] = mapped_column(String(32))
    verified_owner: Mapped[bool] = mapped_column(Boolean, default=False)
    policy_pass: Mapped[bool] = mapped_column(Boolean, default=False)
    scanned_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    invocations_7d: Mapped[int] = mapped_column(Integer, default=0)
    invocations_30d: Mapped[int] = mapped_column(Integer, default=0)
    users_7d: Mapped[int] = mapped_column(Integer, default=0)
    users_30d: Mapped[int] = mapped_column(Integer, default=0)
    signals_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    # Precomputed score parts (search_index): behaviour from the signals, trust without the
    # scan's freshness (which moves with time), and the scan time as epoch seconds.
    behaviour: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    trust_base: Mapped[float] = mapped_column(Float, default=0.0, server_default="0")
    scanned_epoch: Mapped[float | None] = mapped_column(Float)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class AppSearchTag(Base):
    """One tag of a search document, with the document's browse order (`invocations_30d`,
    `app_id`): a tag filter is a range of ix_app_search_tags_rank, read in browse order, and
    a text match's tag is a primary-key lookup (migration 0021c). Kept in step with the
    document by search_index (sync_app writes a document's tags, set_signals their order)."""

    __tablename__ = "app_search_tags"
    __table_args__ = (
        Index(
            "ix_app_search_tags_rank",
            "tenant_id",
            "tag",
            desc("invocations_30d"),
            "app_id",
            "doc_id",
        ),
    )

    doc_id: Mapped[int] = mapped_column(
        BigIntPK, ForeignKey("app_search_docs.id"), primary_key=True, autoincrement=False
    )
    tag: Mapped[str] = mapped_column(String(40), primary_key=True)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    invocations_30d: Mapped[int] = mapped_column(Integer)
    app_id: Mapped[str] = mapped_column(String(64))
