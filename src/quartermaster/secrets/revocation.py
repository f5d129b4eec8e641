"""Ending leases: revoke one, revoke every lease under a prefix, and the shared step that marks
a lease ended with its audit record.

Revoking what is already revoked, expired or unknown succeeds: a caller cleaning up must never
be stuck on a lease that no longer matters. Dynamic roles are dropped *before* the control-plane
transaction, holding no lock, so an unreachable database cannot stall the broker; a lease whose
role could not be dropped is still ended (it can no longer be renewed) and marked
`cleanup_pending` for the reaper to retry.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.audit.log import append_audit, lock_tenant_chain
from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import InvalidInputError, PermissionDeniedError
from quartermaster.secrets.access import Requester, RequesterKind
from quartermaster.secrets.context import SecretsContext
from quartermaster.secrets.engines import drop_roles, role_targets
from quartermaster.secrets.guard import refuse, scope_team_id
from quartermaster.secrets.leases import (
    load_lease,
    management_denial,
    resolve_lease_id,
    under_prefix_clause,
)
from quartermaster.secrets.models import LeaseKind, LeaseState, SecretLease
from quartermaster.secrets.paths import normalize_prefix, parse_path
from quartermaster.tenancy.models import Role

NOT_ATTEMPTED = "role drop not attempted yet"


@dataclass(frozen=True, slots=True)
class RevokeResult:
    lease_id: str
    status: str  # revoked | already_ended | not_found
    cleanup_pending: bool = False


@dataclass(frozen=True, slots=True)
class PrefixRevokeResult:
    prefix: str
    revoked: int
    cleanup_pending: int


def end_lease(
    lease: SecretLease,
    *,
    reason: str,
    actor: str,
    drops: Mapping[str, str | None],
    session: Session,
    action: str = "revoke",
    actor_detail: Mapping[str, str] | None = None,
) -> bool:
    """Mark a live lease ended, with its audit record, in the caller's transaction (which
    holds the tenant's lock). `drops` has the outcome of dropping dynamic roles beforehand
    (lease id -> None when dropped); returns whether the role drop is still pending.
    `actor_detail`: what tells a workload actor apart (`Requester.workload_detail`)."""
    error: str | None = None
    if lease.kind == LeaseKind.POSTGRES.value and lease.role_name is not None:
        error = drops.get(lease.id, NOT_ATTEMPTED)
    lease.state = LeaseState.ENDED.value
    lease.ended_at = utc_now()
    lease.end_reason = reason
    lease.sealed_value = None  # the password is no longer needed once the lease is over
    lease.cleanup_pending = error is not None
    lease.cleanup_error = error
    detail: dict[str, object] = {"reason": reason, **(actor_detail or {})}
    if lease.role_name is not None:
        detail["role"] = lease.role_name
        detail["role_dropped"] = error is None
        if error is not None:
            detail["cleanup_error"] = error
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


def _drop_first(
    leases: list[SecretLease], *, ctx: SecretsContext, session: Session
) -> dict[str, str | None]:
    """Read what the role drops need, end the read transaction, then drop."""
    targets = role_targets(leases, ctx=ctx, session=session)
    session.rollback()  # releases the read (on SQLite every transaction holds the write lock)
    return drop_roles(targets, ctx=ctx) if targets else {}


def revoke_lease(
    requester: Requester, lease_id: str, *, ctx: SecretsContext, session: Session
) -> RevokeResult:
    """`lease_id` may be a unique prefix of 8 or more characters of a lease the requester may
    manage (as `qm` prints ids); the result names the whole id."""
    lease_id = resolve_lease_id(requester, lease_id, session=session)
    lease = load_lease(requester.tenant_id, lease_id, session=session)
    drops: dict[str, str | None] = {}
    if (
        lease is not None
        and lease.state != LeaseState.ENDED.value
        and management_denial(requester, lease, session=session) is None
    ):
        drops = _drop_first([lease], ctx=ctx, session=session)
    lock_tenant_chain(requester.tenant_id, session=session)
    lease = load_lease(requester.tenant_id, lease_id, session=session)
    if lease is None:
        append_audit(
            requester.tenant_id,
            action="revoke",
            outcome="ok",
            actor=requester.actor,
            lease_id=lease_id,
            detail={"status": "not_found", **requester.workload_detail},
            session=session,
        )
        session.commit()
        return RevokeResult(lease_id, "not_found")
    denial = management_denial(requester, lease, session=session)
    if denial is not None:
        # Answered as an unknown lease is (200, not_found), nothing ended: a 403 naming the
        # holder had told anyone that the lease exists and whose it is. The record says why.
        session.rollback()
        append_audit(
            requester.tenant_id,
            action="revoke",
            outcome="denied",
            actor=requester.actor,
            path=lease.path,
            lease_id=lease_id,
            detail={"reason": f"may not revoke: {denial}", **requester.workload_detail},
            session=session,
        )
        session.commit()
        return RevokeResult(lease_id, "not_found")
    if lease.state == LeaseState.ENDED.value:
        append_audit(
            requester.tenant_id,
            action="revoke",
            outcome="ok",
            actor=requester.actor,
            path=lease.path,
            lease_id=lease_id,
            detail={"status": "already_ended", **requester.workload_detail},
            session=session,
        )
        session.commit()
        return RevokeResult(lease_id, "already_ended", lease.cleanup_pending)
    pending = end_lease(
        lease,
        reason="revoked",
        actor=requester.actor,
        drops=drops,
        session=session,
        actor_detail=requester.workload_detail,
    )
    session.commit()
    return RevokeResult(lease_id, "revoked", pending)


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
        live = _live_under(requester.tenant_id, prefix, batch, session=session)
        if not live:
            break
        drops = _drop_first(live, ctx=ctx, session=session)
        lock_tenant_chain(requester.tenant_id, session=session)
        # Leases issued since the read are ended too; their roles go to the reaper.
        for lease in _live_under(requester.tenant_id, prefix, batch, session=session):
            pending += end_lease(
                lease,
                reason=reason,
                actor=requester.actor,
                drops=drops,
                session=session,
                actor_detail=requester.workload_detail,
            )
            revoked += 1
        session.commit()
    session.commit()
    return PrefixRevokeResult(prefix=prefix, revoked=revoked, cleanup_pending=pending)


def _live_under(tenant_id: str, prefix: str, batch: int, *, session: Session) -> list[SecretLease]:
    return list(
        session.scalars(
            select(SecretLease)
            .where(SecretLease.tenant_id == tenant_id, under_prefix_clause(prefix))
            .where(SecretLease.state != LeaseState.ENDED.value)
            .order_by(SecretLease.issued_at)
            .limit(batch)
            .execution_options(populate_existing=True)
        )
    )


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
