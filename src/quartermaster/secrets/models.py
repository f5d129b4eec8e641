"""Secrets tables. No column ever holds a secret in plaintext: values, dynamic passwords and
engine connections are sealed with the tenant's data key; data keys are wrapped by a root key
that is not in the database at all."""

from __future__ import annotations

import enum
from datetime import datetime

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from quartermaster.domain.timeutil import utc_now
from quartermaster.storage.base import Base, UTCDateTime, new_id


class DataKey(Base):
    """A tenant's data key, wrapped (AES-256-GCM) by the root key named in `root_key_id`."""

    __tablename__ = "secret_data_keys"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    root_key_id: Mapped[str] = mapped_column(String(64))
    wrapped_key: Mapped[bytes] = mapped_column(LargeBinary)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    rewrapped_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class SecretEntry(Base):
    """One KV path; its versions are SecretVersion rows."""

    __tablename__ = "secret_entries"
    __table_args__ = (UniqueConstraint("tenant_id", "path"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    path: Mapped[str] = mapped_column(String(512))
    current_version: Mapped[int] = mapped_column(Integer, default=0)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class SecretVersion(Base):
    """A version's ciphertext (nonce + AES-256-GCM, bound to tenant/path/version). Destroy
    clears `ciphertext` for good; `fingerprint` (keyed HMAC) stays so a leak is still
    recognised by `qm scan`."""

    __tablename__ = "secret_versions"
    __table_args__ = (
        UniqueConstraint("entry_id", "version"),
        Index("ix_secret_versions_tenant_fingerprint", "tenant_id", "fingerprint"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    entry_id: Mapped[str] = mapped_column(ForeignKey("secret_entries.id"))
    tenant_id: Mapped[str] = mapped_column(String(64))
    version: Mapped[int] = mapped_column(Integer)
    ciphertext: Mapped[bytes | None] = mapped_column(LargeBinary)
    fingerprint: Mapped[str] = mapped_column(String(64))
    size_bytes: Mapped[int] = mapped_column(Integer)
    created_by: Mapped[str] = mapped_column(String(300))
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    deleted_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    destroyed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())


class LeaseKind(enum.StrEnum):
    KV = "kv"
    POSTGRES = "postgres"


class LeaseState(enum.StrEnum):
    ISSUING = "issuing"  # dynamic credential being created; the reaper cleans up if stuck
    ACTIVE = "active"
    ENDED = "ended"


class SecretLease(Base):
    __tablename__ = "secret_leases"
    __table_args__ = (
        Index("ix_secret_leases_holder", "tenant_id", "holder", "state"),
        Index("ix_secret_leases_state_expiry", "state", "expires_at"),
        Index("ix_secret_leases_tenant_path", "tenant_id", "path"),
        Index("ix_secret_leases_key", "key_id", "state"),
    )

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    kind: Mapped[str] = mapped_column(String(16))
    path: Mapped[str] = mapped_column(String(512))
    version: Mapped[int | None] = mapped_column(Integer)
    holder: Mapped[str] = mapped_column(String(200))  # quota key: app:<app> or principal:<id>
    actor: Mapped[str] = mapped_column(String(300))
    # The API key it was obtained with, or the one that minted the identity token it was
    # obtained with: revoking or expiring that key ends the lease (NULL: bound to no key).
    key_id: Mapped[str | None] = mapped_column(String(32))
    state: Mapped[str] = mapped_column(String(16), default=LeaseState.ACTIVE.value)
    issued_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    max_expires_at: Mapped[datetime] = mapped_column(UTCDateTime())
    ended_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
    end_reason: Mapped[str | None] = mapped_column(String(32))
    # Dynamic credentials: the role to drop, its sealed password (kept only while the lease
    # lives, for redaction) and whether dropping it still has to be retried.
    engine_id: Mapped[str | None] = mapped_column(String(32))
    role_name: Mapped[str | None] = mapped_column(String(63))
    sealed_value: Mapped[bytes | None] = mapped_column(LargeBinary)
    cleanup_pending: Mapped[bool] = mapped_column(Boolean, default=False)
    cleanup_error: Mapped[str | None] = mapped_column(String(300))


class DynamicEngine(Base):
    """A dynamic-credential engine mounted at a path (e.g. apps/billing/db)."""

    __tablename__ = "secret_engines"
    __table_args__ = (UniqueConstraint("tenant_id", "path"),)

    id: Mapped[str] = mapped_column(String(32), primary_key=True, default=new_id)
    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"))
    path: Mapped[str] = mapped_column(String(512))
    kind: Mapped[str] = mapped_column(String(16), default=LeaseKind.POSTGRES.value)
    sealed_connection: Mapped[bytes | None] = mapped_column(LargeBinary)
    grants: Mapped[str] = mapped_column(Text)  # JSON list of grant specs
    default_ttl_seconds: Mapped[int] = mapped_column(Integer)
    max_ttl_seconds: Mapped[int] = mapped_column(Integer)
    created_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


class AccessRuleSet(Base):
    """A tenant's workload access rules (JSON); without a row the defaults apply."""

    __tablename__ = "secret_access_rules"

    tenant_id: Mapped[str] = mapped_column(ForeignKey("tenants.id"), primary_key=True)
    rules: Mapped[str] = mapped_column(Text)
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)
