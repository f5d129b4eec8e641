"""Catalog tables: apps with dated ownership, signing keys, resources, resource leases."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import Boolean, ForeignKey, Index, LargeBinary, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from quartermaster.domain.timeutil import utc_now
from quartermaster.storage.base import Base, UTCDateTime, new_id


class Lifecycle(enum.StrEnum):
    EPHEMERAL = "ephemeral"
    PERSISTENT = "persistent"


class App(Base):
    __tablename__ = "apps"
    __table_args__ = (UniqueConstraint("tenant_id", "app_id"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    app_id: Mapped[str] = mapped_column(String(64))  # the stable slug users and events use
    title: Mapped[str] = mapped_column(String(200))
    owner: Mapped[str] = mapped_column(String(200))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"))
    cost_center_id: Mapped[str] = mapped_column(ForeignKey("cost_centers.id"))
    lifecycle: Mapped[str] = mapped_column(String(16), default=Lifecycle.PERSISTENT.value)
    environment: Mapped[str] = mapped_column(String(64), default="production")
    require_signatures: Mapped[bool] = mapped_column(Boolean, default=False)
    created_by: Mapped[str] = mapped_column(String(200))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class AppAssignment(Base):
    """Dated ownership: which team and cost center owned an app over [valid_from, valid_to)."""

    __tablename__ = "app_assignments"
    __table_args__ = (Index("ix_app_assignments_app_valid", "app_pk", "valid_from"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    app_pk: Mapped[str] = mapped_column(ForeignKey("apps.id"))
    team_id: Mapped[str] = mapped_column(ForeignKey("teams.id"))
    cost_center_id: Mapped[str] = mapped_column(ForeignKey("cost_centers.id"))
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_to: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SigningKeyStatus(enum.StrEnum):
    ACTIVE = "active"
    RETIRED = "retired"


class AppSigningKey(Base):
    """HMAC key of an app; the secret is sealed with the server key (AES-GCM), never plain."""

    __tablename__ = "app_signing_keys"

    id: Mapped[str] = mapped_column(String(32), primary_key=True)  # the key id events name
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    app_pk: Mapped[str] = mapped_column(ForeignKey("apps.id"), index=True)
    sealed_secret: Mapped[bytes] = mapped_column(LargeBinary)
    status: Mapped[str] = mapped_column(String(16), default=SigningKeyStatus.ACTIVE.value)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    retired_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class Resource(Base):
    """resource_id -> app over [valid_from, valid_to); kept after the resource is gone."""

    __tablename__ = "resources"
    __table_args__ = (Index("ix_resources_lookup", "tenant_id", "resource_id", "valid_from"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    resource_id: Mapped[str] = mapped_column(String(200))
    app_pk: Mapped[str] = mapped_column(ForeignKey("apps.id"))
    environment: Mapped[str | None] = mapped_column(String(64))
    valid_from: Mapped[datetime] = mapped_column(UTCDateTime())
    valid_to: Mapped[datetime | None] = mapped_column(UTCDateTime())
    lease_id: Mapped[str | None] = mapped_column(String(32))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class ResourceLease(Base):
    """A short-lived resource bound to its app by a signed lease token for its lifetime."""

    __tablename__ = "resource_leases"

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), index=True)
    resource_id: Mapped[str] = mapped_column(String(200))
    app_pk: Mapped[str] = mapped_column(ForeignKey("apps.id"))
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    revoked_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
