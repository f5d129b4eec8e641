"""Tenancy services. Functions take `session` keyword-only and commit their unit of work."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import AuthenticationError, ConflictError, InvalidInputError
from quartermaster.tenancy.keys import generate_key, hash_secret, secret_matches, split_token
from quartermaster.tenancy.models import (
    ApiKey,
    CostCenter,
    Principal,
    PrincipalKind,
    Role,
    Tenant,
)

SLUG_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")
DEFAULT_COST_CENTER_SLUG = "default"


@dataclass(frozen=True, slots=True)
class AuthContext:
    """Who is calling: every query is scoped by `tenant_id`."""

    tenant_id: str
    principal_id: str
    principal_name: str
    role: Role
    team_id: str | None
    app_slug: str | None


@dataclass(frozen=True, slots=True)
class IssuedKey:
    """A key as shown once, at creation."""

    key_id: str
    token: str
    principal_id: str
    expires_at: datetime | None


def validate_slug(value: str, *, field: str) -> str:
    if not SLUG_PATTERN.match(value):
        raise InvalidInputError(
            f"{field} {value!r} must be 1-63 characters of a-z, 0-9 and '-', "
            "starting with a letter or digit",
            field=field,
        )
    return value


def create_tenant(
    tenant_id: str, *, name: str | None = None, timezone: str = "UTC", session: Session
) -> Tenant:
    """A tenant with its default cost center."""
    validate_slug(tenant_id, field="tenant_id")
    if session.get(Tenant, tenant_id) is not None:
        raise ConflictError(f"tenant {tenant_id!r} already exists", field="tenant_id")
    tenant = Tenant(id=tenant_id, name=name or tenant_id, timezone=timezone, created_at=utc_now())
    session.add(tenant)
    session.flush()
    session.add(
        CostCenter(
            tenant_id=tenant_id,
            slug=DEFAULT_COST_CENTER_SLUG,
            name="Default (unattributed)",
            is_default=True,
        )
    )
    session.commit()
    return tenant


def list_tenants(*, session: Session) -> list[Tenant]:
    return list(session.scalars(select(Tenant).order_by(Tenant.id)))


def create_principal(
    tenant_id: str,
    name: str,
    *,
    role: Role,
    kind: PrincipalKind = PrincipalKind.USER,
    team_id: str | None = None,
    app_slug: str | None = None,
    session: Session,
) -> Principal:
    if role is Role.TEAM_MEMBER and team_id is None:
        raise InvalidInputError("a team-member principal needs a team", field="team")
    if role is Role.APP and app_slug is None:
        raise InvalidInputError("an app principal needs an app", field="app_id")
    exists = session.scalar(
        select(Principal.id).where(Principal.tenant_id == tenant_id, Principal.name == name)
    )
    if exists is not None:
        raise ConflictError(f"principal {name!r} already exists", field="name")
    principal = Principal(
        tenant_id=tenant_id,
        name=name,
        kind=kind.value,
        role=role.value,
        team_id=team_id,
        app_slug=app_slug,
        created_at=utc_now(),
    )
    session.add(principal)
    session.commit()
    return principal


def issue_api_key(
    principal: Principal, *, expires_at: datetime | None = None, session: Session
) -> IssuedKey:
    if expires_at is not None and expires_at <= utc_now():
        raise InvalidInputError("expires_at is in the past", field="expires_at")
    new = generate_key()
    session.add(
        ApiKey(
            id=new.key_id,
            tenant_id=principal.tenant_id,
            principal_id=principal.id,
            secret_hash=hash_secret(new.secret),
            created_at=utc_now(),
            expires_at=expires_at,
        )
    )
    session.commit()
    return IssuedKey(
        key_id=new.key_id, token=new.token, principal_id=principal.id, expires_at=expires_at
    )


def authenticate(token: str, *, session: Session) -> AuthContext:
    parts = split_token(token)
    if parts is None:
        raise AuthenticationError("malformed API key: expected qm_<id>_<secret>")
    key_id, secret = parts
    row = session.execute(
        select(ApiKey, Principal)
        .join(Principal, Principal.id == ApiKey.principal_id)
        .where(ApiKey.id == key_id)
    ).first()
    if row is None or not secret_matches(secret, row[0].secret_hash):
        raise AuthenticationError("unknown API key")
    key, principal = row
    if key.revoked_at is not None:
        raise AuthenticationError(f"API key {key_id} was revoked")
    if key.expires_at is not None and key.expires_at <= utc_now():
        raise AuthenticationError(f"API key {key_id} expired at {key.expires_at.isoformat()}")
    return AuthContext(
        tenant_id=principal.tenant_id,
        principal_id=principal.id,
        principal_name=principal.name,
        role=Role(principal.role),
        team_id=principal.team_id,
        app_slug=principal.app_slug,
    )


def bootstrap_tenant(
    tenant_id: str, *, name: str | None = None, admin_name: str = "admin", session: Session
) -> IssuedKey:
    """Create a tenant and its first admin, returning the admin's key (shown once)."""
    create_tenant(tenant_id, name=name, session=session)
    admin = create_principal(
        tenant_id, admin_name, role=Role.ADMIN, kind=PrincipalKind.USER, session=session
    )
    return issue_api_key(admin, session=session)
