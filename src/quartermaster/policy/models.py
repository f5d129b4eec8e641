"""Policy tables: Rego policies per tenant (versioned), the decision log, approval requests and
exceptions with an expiry."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import Mapped, mapped_column

from quartermaster.domain.timeutil import utc_now
from quartermaster.storage.base import Base, UTCDateTime, new_id


class PolicyMode(enum.StrEnum):
    ENFORCE = "enforce"
    AUDIT = "audit"  # evaluated and logged, never blocks


class Policy(Base):
    __tablename__ = "policies"
    __table_args__ = (UniqueConstraint("tenant_id", "name", "version"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    name: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    package: Mapped[str] = mapped_column(String(200))  # the Rego package queried
    source: Mapped[str] = mapped_column(Text)
    source_digest: Mapped[str] = mapped_column(String(64))
    mode: Mapped[str] = mapped_column(String(16), default=PolicyMode.ENFORCE.value)
    enabled: Mapped[bool] = mapped_column(Boolean, default=True)
    # An upload stored disabled, to enable later: it waits beside the versions in force
    # instead of switching them off (a disabled version that is no draft turns the policy off).
    draft: Mapped[bool] = mapped_column(Boolean, default=False, server_default=false())
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class PolicyDecision(Base):
    """One policy's verdict on one input: kept for audit, never changed."""

    __tablename__ = "policy_decisions"
    __table_args__ = (Index("ix_policy_decisions_lookup", "tenant_id", "decided_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    point: Mapped[str] = mapped_column(String(32))  # admission point: publish, ...
    subject: Mapped[str] = mapped_column(String(200))  # e.g. app_id@version
    app_version_id: Mapped[str | None] = mapped_column(String(32))
    policy_name: Mapped[str] = mapped_column(String(64))
    policy_version: Mapped[int] = mapped_column(Integer)
    mode: Mapped[str] = mapped_column(String(16))
    input_digest: Mapped[str] = mapped_column(String(64))
    result: Mapped[str] = mapped_column(String(24))  # allow | deny | require_approval | error
    reasons: Mapped[str] = mapped_column(Text)  # JSON list
    enforced: Mapped[bool] = mapped_column(Boolean)
    decided_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    # Who caused it: the publisher, the reviewer whose approval re-ran it, the decision API's
    # caller (None on decisions logged before these were kept).
    caller_id: Mapped[str | None] = mapped_column(String(32))
    caller_name: Mapped[str | None] = mapped_column(String(200))
    # An admission decision that was allowed: its decision id (GET /v1/decisions/{id}).
    decision_id: Mapped[str | None] = mapped_column(String(32))


class ApprovalStatus(enum.StrEnum):
    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"  # nobody decided before expires_at


class Approval(Base):
    __tablename__ = "approvals"
    __table_args__ = (Index("ix_approvals_status", "tenant_id", "status"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    app_version_id: Mapped[str] = mapped_column(ForeignKey("app_versions.id"), index=True)
    subject: Mapped[str] = mapped_column(String(200))
    reasons: Mapped[str] = mapped_column(Text)  # JSON list: why approval is needed
    status: Mapped[str] = mapped_column(String(16), default=ApprovalStatus.PENDING.value)
    requested_by: Mapped[str] = mapped_column(String(200))
    requested_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())  # undecided by then: lapsed
    reviewer: Mapped[str | None] = mapped_column(String(200))
    comment: Mapped[str | None] = mapped_column(Text)
    decided_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class PolicyException(Base):
    """A time-limited waiver a policy can see (`input.exceptions`), e.g. GPU use for one team
    for two weeks. It lapses by itself: only exceptions not yet expired reach the input."""

    __tablename__ = "policy_exceptions"
    __table_args__ = (Index("ix_policy_exceptions_lookup", "tenant_id", "key", "expires_at"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    key: Mapped[str] = mapped_column(String(64))  # what is waived, e.g. "gpu"
    team: Mapped[str | None] = mapped_column(String(64))  # for a team's apps ...
    app_id: Mapped[str | None] = mapped_column(String(64))  # ... or one app
    reason: Mapped[str] = mapped_column(Text)
    granted_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    revoked_by: Mapped[str | None] = mapped_column(String(200))
