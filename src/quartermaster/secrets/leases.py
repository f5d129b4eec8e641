"""Leases: every read of a secret value or credential is one. Issue (with the per-app quota),
renew (bounded by max_ttl), revoke, revoke under a prefix, and ending expired ones.

Revoking what is already revoked, expired or unknown succeeds: a caller cleaning up must never
be stuck on a lease that no longer matters. A dynamic lease whose role cannot be dropped right
now is still ended (it can no longer be renewed) and marked for the reaper to retry.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import cast

from sqlalchemy import ColumnElement, Table, func, insert, or_, select
from sqlalchemy.orm import Session

from quartermaster.audit.log import append_audit, lock_tenant_chain
from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
    RateLimitedError,
)
from quartermaster.secrets.access import Requester, RequesterKind
from quartermaster.secrets.context import SecretsContext
from quartermaster.secrets.engines import drop_lease_role, engine_conninfo
from quartermaster.secrets.guard import refuse, scope_team_id
from quartermaster.secrets.models import DynamicEngine, LeaseKind, LeaseState, SecretLease
from quartermaster.secrets.paths import normalize_prefix, parse_path
from quartermaster.secrets.postgres import EngineError, extend_role
from quartermaster.storage.base import new_id
from quartermaster.tenancy.models import Role

LEASES_TABLE = cast(Table, SecretLease.__table__)


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    id: str
    kind: str
    path: str
    version: int | None
    holder: str
    state: str
    issued_at: datetime
    expires_at: datetime
    max_expires_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    cleanup_pending: bool

    def ttl_seconds(self, now: datetime | None = None) -> int:
        if self.state == LeaseState.ENDED.value:
            return 0
        return max(0, math.floor((self.expires_at - (now or utc_now())).total_seconds()))

    @property
    def max_ttl_seconds(self) -> int:
        return math.floor((self.max_expires_at - self.issued_at).total_seconds())


def lease_info(lease: SecretLease) -> LeaseInfo:
    return LeaseInfo(
        id=lease.id,
        kind=lease.kind,
        path=lease.path,
        version=lease.version,
        holder=lease.holder,
        state=lease.state,
        issued_at=lease.issued_at,
        expires_at=lease.expires_at,
        max_expires_at=lease.max_expires_at,
        ended_at=lease.ended_at,
        end_reason=lease.end_reason,
        cleanup_pending=lease.cleanup_pending,
    )


def _live(now: datetime) -> list[ColumnElement[bool]]:
    return [SecretLease.state != LeaseState.ENDED.value, SecretLease.expires_at > now]


@dataclass(frozen=True, slots=True)
class LeaseTerms:
    """How long a new lease lives: the requested TTL (or the default), cut to max_ttl."""

    ttl_seconds: int
    max_ttl_seconds: int


def lease_terms(requested_ttl: int | None, *, default_ttl: int, max_ttl: int) -> LeaseTerms:
    if requested_ttl is not None and requested_ttl < 1:
        raise InvalidInputError("ttl_seconds must be at least 1", field="ttl_seconds")
    return LeaseTerms(min(requested_ttl or default_ttl, max_ttl), max_ttl)


def issue_lease(
    requester: Requester,
    *,
    kind: LeaseKind,
    path: str,
    version: int | None,
    terms: LeaseTerms,
    ctx: SecretsContext,
    session: Session,
    state: LeaseState = LeaseState.ACTIVE,
    lease_id: str | None = None,
    engine_id: str | None = None,
    role_name: str | None = None,
    sealed_value: bytes | None = None,
) -> LeaseInfo:
    """Add a lease inside the caller's transaction after checking the holder's quota. The
    tenant's audit lock is taken first, so concurrent issues cannot both slip under it."""
    lock_tenant_chain(requester.tenant_id, session=session)
    now = utc_now()
    quota = ctx.settings.secrets_max_leases_per_app
    live = session.scalar(
        select(func.count())
        .select_from(SecretLease)
        .where(SecretLease.tenant_id == requester.tenant_id, SecretLease.holder == requester.holder)
        .where(*_live(now))
    )
    if int(live or 0) >= quota:
        soonest = session.scalar(
            select(func.min(SecretLease.expires_at))
            .where(SecretLease.tenant_id == requester.tenant_id)
            .where(SecretLease.holder == requester.holder)
            .where(*_live(now))
        )
        wait = max(1.0, (soonest - now).total_seconds()) if soonest is not None else 1.0
        refuse(
            requester,
            RateLimitedError(
                f"{requester.holder} already holds {live} live leases, its quota "
                f"(secrets_max_leases_per_app = {quota}): revoke leases it no longer needs "
                "or let them expire",
                retry_after_seconds=wait,
            ),
            action="read",
            path=path,
            detail={"quota": quota, "live_leases": int(live or 0)},
            session=session,
        )
    values = {
        "id": lease_id or new_id(),
        "tenant_id": requester.tenant_id,
        "kind": kind.value,
        "path": path,
        "version": version,
        "holder": requester.holder,
        "actor": requester.actor,
        "state": state.value,
        "issued_at": now,
        "expires_at": now + timedelta(seconds=terms.ttl_seconds),
        "max_expires_at": now + timedelta(seconds=terms.max_ttl_seconds),
        "engine_id": engine_id,
        "role_name": role_name,
        "sealed_value": sealed_value,
        "cleanup_pending": False,
    }
    # A Core insert: one statement, none of the unit-of-work bookkeeping on the hot read path.
    session.execute(insert(LEASES_TABLE).values(**values))
    return LeaseInfo(
        id=str(values["id"]),
        kind=kind.value,
        path=path,
        version=version,
        holder=requester.holder,
        state=state.value,
        issued_at=now,
        expires_at=now + timedelta(seconds=terms.ttl_seconds),
        max_expires_at=now + timedelta(seconds=terms.max_ttl_seconds),
        ended_at=None,
        end_reason=None,
        cleanup_pending=False,
    )


def _load(tenant_id: str, lease_id: str, *, session: Session) -> SecretLease | None:
    return session.scalar(
        select(SecretLease)
        .where(SecretLease.tenant_id == tenant_id, SecretLease.id == lease_id)
        .execution_options(populate_existing=True)
    )


def _management_denial(requester: Requester, lease: SecretLease, *, session: Session) -> str | None:
    if requester.kind is RequesterKind.SYSTEM or requester.role is Role.ADMIN:
        return None
    if lease.holder == requester.holder:
        return None
    if requester.role is Role.TEAM_MEMBER and requester.team_id is not None:
        target = parse_path(lease.path)
        if scope_team_id(requester.tenant_id, target, session=session) == requester.team_id:
            return None
    return f"lease {lease.id} is held by {lease.holder}, not {requester.holder}"


def get_lease(requester: Requester, lease_id: str, *, session: Session) -> LeaseInfo:
    lease = _load(requester.tenant_id, lease_id, session=session)
    if lease is None or _management_denial(requester, lease, session=session) is not None:
        raise NotFoundError(f"lease {lease_id!r} not found", field="lease_id")
    return lease_info(lease)


def list_leases(
    requester: Requester,
    *,
    prefix: str = "",
    live_only: bool = True,
    limit: int = 500,
    session: Session,
) -> list[LeaseInfo]:
    prefix = normalize_prefix(prefix)
    query = select(SecretLease).where(SecretLease.tenant_id == requester.tenant_id)
    if prefix:
        query = query.where(_under(prefix))
    if live_only:
        query = query.where(*_live(utc_now()))
    if requester.role is not Role.ADMIN:
        query = query.where(SecretLease.holder == requester.holder)
    rows = session.scalars(query.order_by(SecretLease.issued_at).limit(limit))
    return [lease_info(row) for row in rows]


def _under(prefix: str) -> ColumnElement[bool]:
    if prefix.endswith("/"):
        return SecretLease.path.startswith(prefix, autoescape=True)
    return or_(
        SecretLease.path == prefix, SecretLease.path.startswith(prefix + "/", autoescape=True)
    )


def renew_lease(
    requester: Requester,
    lease_id: str,
    *,
    increment_seconds: int | None,
    ctx: SecretsContext,
    session: Session,
) -> LeaseInfo:
    if increment_seconds is not None and increment_seconds < 1:
        raise InvalidInputError("increment_seconds must be at least 1", field="increment_seconds")
    lock_tenant_chain(requester.tenant_id, session=session)
    lease = _load(requester.tenant_id, lease_id, session=session)
    if lease is None:
        refuse(
            requester,
            NotFoundError(f"lease {lease_id!r} not found", field="lease_id"),
            action="renew",
            lease_id=lease_id,
            outcome="not_found",
            session=session,
        )
    denial = _management_denial(requester, lease, session=session)
    if denial is not None:
        refuse(
            requester,
            PermissionDeniedError(f"may not renew: {denial}"),
            action="renew",
            path=lease.path,
            lease_id=lease_id,
            session=session,
        )
    now = utc_now()
    if lease.state == LeaseState.ENDED.value or lease.expires_at <= now:
        when = lease.ended_at or lease.expires_at
        why = lease.end_reason or "expired"
        refuse(
            requester,
            ConflictError(
                f"lease {lease_id} ended at {when.isoformat()} ({why}) and cannot be renewed: "
                "read the secret again for a new lease"
            ),
            action="renew",
            path=lease.path,
            lease_id=lease_id,
            session=session,
        )
    increment = increment_seconds or ctx.settings.secrets_lease_ttl_seconds
    new_expiry = min(now + timedelta(seconds=increment), lease.max_expires_at)
    if lease.kind == LeaseKind.POSTGRES.value and lease.role_name is not None:
        _extend_dynamic(lease, new_expiry, ctx=ctx, session=session)
    lease.expires_at = new_expiry
    append_audit(
        requester.tenant_id,
        action="renew",
        outcome="ok",
        actor=requester.actor,
        path=lease.path,
        lease_id=lease.id,
        version=lease.version,
        detail={"expires_at": new_expiry.isoformat(), "capped": new_expiry == lease.max_expires_at},
        session=session,
    )
    session.commit()
    return lease_info(lease)


def _extend_dynamic(
    lease: SecretLease, valid_until: datetime, *, ctx: SecretsContext, session: Session
) -> None:
    engine = session.get(DynamicEngine, lease.engine_id) if lease.engine_id else None
    role = lease.role_name
    if engine is None or role is None:
        raise ConflictError(f"the engine of lease {lease.id} is gone; the lease cannot be renewed")
    try:
        conninfo = engine_conninfo(engine, ctx=ctx, session=session)
        exists = ctx.postgres.run(
            conninfo, lambda c: extend_role(c, role=role, valid_until=valid_until)
        )
    except EngineError as exc:
        raise ConflictError(f"could not extend role of lease {lease.id}: {exc}") from None
    if not exists:
        raise ConflictError(f"the role of lease {lease.id} no longer exists in its database")


@dataclass(frozen=True, slots=True)
class RevokeResult:
    lease_id: str
    status: str  # revoked | already_ended | not_found
    cleanup_pending: bool = False


def end_lease(
    lease: SecretLease,
    *,
    reason: str,
    actor: str,
    ctx: SecretsContext,
    session: Session,
    action: str = "revoke",
) -> bool:
    """Mark a live lease ended (and drop a dynamic role) inside the caller's transaction, with
    its audit record. Returns whether the database-side cleanup is still pending."""
    now = utc_now()
    error = drop_lease_role(lease, ctx=ctx, session=session)
    lease.state = LeaseState.ENDED.value
    lease.ended_at = now
    lease.end_reason = reason
    lease.sealed_value = None  # the password is no longer needed once the lease is over
    lease.cleanup_pending = error is not None
    lease.cleanup_error = error
    detail: dict[str, object] = {"reason": reason}
    if error is not None:
        detail["cleanup_pending"] = error
    append_audit(
        lease.tenant_id,
        action=action,
        outcome="ok",
        actor=actor,
        path=lease.path,
        lease_id=lease.id,
        version=lease.version,
        detail=detail,
        session=session,
    )
    return error is not None


def revoke_lease(
    requester: Requester, lease_id: str, *, ctx: SecretsContext, session: Session
) -> RevokeResult:
    lock_tenant_chain(requester.tenant_id, session=session)
    lease = _load(requester.tenant_id, lease_id, session=session)
    if lease is None:
        append_audit(
            requester.tenant_id,
            action="revoke",
            outcome="ok",
            actor=requester.actor,
            lease_id=lease_id,
            detail={"status": "not_found"},
            session=session,
        )
        session.commit()
        return RevokeResult(lease_id, "not_found")
    denial = _management_denial(requester, lease, session=session)
    if denial is not None:
        refuse(
            requester,
            PermissionDeniedError(f"may not revoke: {denial}"),
            action="revoke",
            path=lease.path,
            lease_id=lease_id,
            session=session,
        )
    if lease.state == LeaseState.ENDED.value:
        append_audit(
            requester.tenant_id,
            action="revoke",
            outcome="ok",
            actor=requester.actor,
            path=lease.path,
            lease_id=lease_id,
            detail={"status": "already_ended"},
            session=session,
        )
        session.commit()
        return RevokeResult(lease_id, "already_ended", lease.cleanup_pending)
    pending = end_lease(lease, reason="revoked", actor=requester.actor, ctx=ctx, session=session)
    session.commit()
    return RevokeResult(lease_id, "revoked", pending)


@dataclass(frozen=True, slots=True)
class PrefixRevokeResult:
    prefix: str
    revoked: int
    cleanup_pending: int


def revoke_prefix(
    requester: Requester,
    raw_prefix: str,
    *,
    ctx: SecretsContext,
    session: Session,
    reason: str = "revoked",
    batch: int = 200,
) -> PrefixRevokeResult:
    prefix = normalize_prefix(raw_prefix)
    if not prefix:
        raise InvalidInputError("prefix is empty: name at least apps/ or teams/", field="prefix")
    _authorize_prefix(requester, prefix, session=session)
    revoked = pending = 0
    while True:
        lock_tenant_chain(requester.tenant_id, session=session)
        leases = session.scalars(
            select(SecretLease)
            .where(SecretLease.tenant_id == requester.tenant_id, _under(prefix))
            .where(SecretLease.state != LeaseState.ENDED.value)
            .order_by(SecretLease.issued_at)
            .limit(batch)
            .execution_options(populate_existing=True)
        ).all()
        if not leases:
            break
        for lease in leases:
            pending += end_lease(
                lease, reason=reason, actor=requester.actor, ctx=ctx, session=session
            )
            revoked += 1
        session.commit()
    session.commit()
    return PrefixRevokeResult(prefix=prefix, revoked=revoked, cleanup_pending=pending)


def _authorize_prefix(requester: Requester, prefix: str, *, session: Session) -> None:
    if requester.kind is RequesterKind.SYSTEM or requester.role is Role.ADMIN:
        return
    segments = prefix.rstrip("/").split("/")
    if requester.role is Role.TEAM_MEMBER and len(segments) >= 2 and requester.team_id:
        target = parse_path(f"{segments[0]}/{segments[1]}/x", field="prefix")
        if scope_team_id(requester.tenant_id, target, session=session) == requester.team_id:
            return
    refuse(
        requester,
        PermissionDeniedError(
            f"{requester.actor} may not revoke every lease under {prefix!r}: it reaches beyond "
            "what you own (admins may; team members within their team's apps and team paths)"
        ),
        action="revoke",
        path=prefix,
        session=session,
    )
