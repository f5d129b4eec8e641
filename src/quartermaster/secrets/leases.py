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

from sqlalchemy import ColumnElement, Table, and_, func, insert, or_, select
from sqlalchemy.orm import Session

from quartermaster.audit.log import append_audit, lock_tenant_chain
from quartermaster.domain.timeutil import moment_text, utc_now
from quartermaster.errors import (
    ConflictError,
    InvalidInputError,
    NotFoundError,
    RateLimitedError,
    ServiceUnavailableError,
)
from quartermaster.secrets.access import Requester, RequesterKind
from quartermaster.secrets.context import SecretsContext
from quartermaster.secrets.engines import engine_conninfo
from quartermaster.secrets.guard import (
    refuse,
    refuse_listing_without_access,
    scope_team_id,
    team_scope_prefixes,
)
from quartermaster.secrets.models import DynamicEngine, LeaseKind, LeaseState, SecretLease
from quartermaster.secrets.paths import normalize_prefix, parse_path
from quartermaster.secrets.postgres import EngineError, EngineUnreachableError, extend_role
from quartermaster.storage.base import new_id
from quartermaster.storage.ids import by_id_or_prefix
from quartermaster.storage.paging import Page, position_of, read_page
from quartermaster.tenancy.models import Role

LEASES_TABLE = cast(Table, SecretLease.__table__)


@dataclass(frozen=True, slots=True)
class LeaseInfo:
    id: str
    kind: str
    path: str
    version: int | None
    holder: str  # the quota key: app:<app> or principal:<id>
    holder_name: str  # as errors and audit records name it: principal:<name>, app:<app>
    state: str
    issued_at: datetime
    expires_at: datetime
    max_expires_at: datetime
    ended_at: datetime | None
    end_reason: str | None
    cleanup_pending: bool
    # Why the dynamic role is not dropped yet (while cleanup_pending), e.g. that its login
    # was disabled but the drop was refused.
    cleanup_error: str | None = None
    key_id: str | None = None  # the API key it ends with (None: issued before keys bound)

    def ttl_seconds(self, now: datetime | None = None) -> int:
        """Seconds left, rounded up: a lease granted for 900 s reads 900 when handed out (the
        microseconds since issue made it 899), and one with a fraction of a second left is
        not reported as gone."""
        if self.state == LeaseState.ENDED.value:
            return 0
        return max(0, math.ceil((self.expires_at - (now or utc_now())).total_seconds()))

    @property
    def max_ttl_seconds(self) -> int:
        # Rounded up as `ttl_seconds` is: bounded by an identity token's whole-second expiry,
        # both end at the same moment, and a max_ttl below the ttl would read as a bug.
        return math.ceil((self.max_expires_at - self.issued_at).total_seconds())


def holder_name(holder: str, actor: str) -> str:
    """A principal holder (`principal:<id>`) by the name its issue was audited under
    (`principal:<name>`); an app holder is its name already."""
    return actor if holder.startswith("principal:") else holder


def lease_info(lease: SecretLease) -> LeaseInfo:
    return LeaseInfo(
        id=lease.id,
        kind=lease.kind,
        path=lease.path,
        version=lease.version,
        holder=lease.holder,
        holder_name=holder_name(lease.holder, lease.actor),
        state=lease.state,
        issued_at=lease.issued_at,
        expires_at=lease.expires_at,
        max_expires_at=lease.max_expires_at,
        ended_at=lease.ended_at,
        end_reason=lease.end_reason,
        cleanup_pending=lease.cleanup_pending,
        cleanup_error=lease.cleanup_error if lease.cleanup_pending else None,
        key_id=lease.key_id,
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
    expires_at = now + timedelta(seconds=terms.ttl_seconds)
    max_expires_at = now + timedelta(seconds=terms.max_ttl_seconds)
    if requester.token_expires_at is not None:
        # As Vault's: a lease lives no longer than the identity token it was obtained with.
        expires_at = min(expires_at, requester.token_expires_at)
        max_expires_at = min(max_expires_at, requester.token_expires_at)
    values = {
        "id": lease_id or new_id(),
        "tenant_id": requester.tenant_id,
        "kind": kind.value,
        "path": path,
        "version": version,
        "holder": requester.holder,
        "actor": requester.actor,
        "key_id": requester.key_id,
        "state": state.value,
        "issued_at": now,
        "expires_at": expires_at,
        "max_expires_at": max_expires_at,
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
        holder_name=holder_name(requester.holder, requester.actor),
        state=state.value,
        issued_at=now,
        expires_at=expires_at,
        max_expires_at=max_expires_at,
        ended_at=None,
        end_reason=None,
        cleanup_pending=False,
        key_id=requester.key_id,
    )


def load_lease(tenant_id: str, lease_id: str, *, session: Session) -> SecretLease | None:
    return session.scalar(
        select(SecretLease)
        .where(SecretLease.tenant_id == tenant_id, SecretLease.id == lease_id)
        .execution_options(populate_existing=True)
    )


def management_denial(requester: Requester, lease: SecretLease, *, session: Session) -> str | None:
    if requester.kind is RequesterKind.SYSTEM or requester.role is Role.ADMIN:
        return None
    if lease.holder == requester.holder:
        return None
    if requester.role is Role.TEAM_MEMBER and requester.team_id is not None:
        target = parse_path(lease.path)
        if scope_team_id(requester.tenant_id, target, session=session) == requester.team_id:
            return None
    held_by = holder_name(lease.holder, lease.actor)
    asking = holder_name(requester.holder, requester.actor)
    return f"lease {lease.id} is held by {held_by}, not {asking}"


def resolve_lease_id(requester: Requester, given: str, *, session: Session) -> str:
    """The id of the lease `given` names: itself, or (8 to 31 hex characters, as `qm` prints
    ids) the one lease it begins among those the requester may manage; `given` unchanged when
    none does, which the caller answers as an unknown lease. Another holder's leases take no
    part, so an ambiguity tells nothing of them."""
    query = select(SecretLease).where(SecretLease.tenant_id == requester.tenant_id)
    if requester.kind is not RequesterKind.SYSTEM and requester.role is not Role.ADMIN:
        query = query.where(or_(*_manageable(requester, session=session)))
    found = by_id_or_prefix(
        query, SecretLease.id, given, what="lease", field="lease_id", session=session
    )
    return given if found is None else found.id


def get_lease(requester: Requester, lease_id: str, *, session: Session) -> LeaseInfo:
    lease_id = resolve_lease_id(requester, lease_id, session=session)
    lease = load_lease(requester.tenant_id, lease_id, session=session)
    if lease is None or management_denial(requester, lease, session=session) is not None:
        raise NotFoundError(f"lease {lease_id!r} not found", field="lease_id")
    return lease_info(lease)


# Oldest first; the id breaks ties in time, so pages follow one total order.
_LEASE_ORDER = ((SecretLease.issued_at, False), (SecretLease.id, False))


def list_leases(
    requester: Requester,
    *,
    prefix: str = "",
    holder: str = "",
    live_only: bool = True,
    limit: int = 500,
    session: Session,
) -> list[LeaseInfo]:
    return page_leases(
        requester,
        prefix=prefix,
        holder=holder,
        live_only=live_only,
        limit=limit,
        session=session,
    ).rows


def page_leases(
    requester: Requester,
    *,
    prefix: str = "",
    holder: str = "",
    key_id: str = "",
    live_only: bool = True,
    after: str | None = None,
    limit: int = 500,
    session: Session,
) -> Page[LeaseInfo]:
    """A page of the leases the requester may manage, oldest first, after the lease `after`
    (the previous page's `next_after`). `holder` keeps the leases of one holder, named as
    `holder` or `holder_name` are (`app:<app>`, `principal:<id>`, `principal:<name>`);
    `key_id` those bound to one API key (obtained with it or with a token it minted)."""
    prefix = normalize_prefix(prefix)
    refuse_listing_without_access(requester, what="leases", prefix=prefix, session=session)
    tenant = SecretLease.tenant_id == requester.tenant_id
    query = select(SecretLease).where(tenant)
    if prefix:
        query = query.where(under_prefix_clause(prefix))
    if holder:
        query = query.where(held_by_clause(holder))
    if key_id:
        query = query.where(SecretLease.key_id == key_id)
    if live_only:
        query = query.where(*_live(utc_now()))
    if requester.kind is not RequesterKind.SYSTEM and requester.role is not Role.ADMIN:
        query = query.where(or_(*_manageable(requester, session=session)))
    position = position_of(
        after, _LEASE_ORDER, tenant, SecretLease.id == after, noun="leases", session=session
    )
    page = read_page(
        query,
        order=_LEASE_ORDER,
        position=position,
        limit=limit,
        cursor=lambda lease: lease.id,
        session=session,
    )
    return Page([lease_info(row) for row in page.rows], page.next_after)


def _manageable(requester: Requester, *, session: Session) -> list[ColumnElement[bool]]:
    """What a non-admin may list: the leases it holds and, for a team member, every lease on
    its team's paths (its apps' workload leases among them), the same leases
    `management_denial` lets it renew and revoke."""
    visible: list[ColumnElement[bool]] = [SecretLease.holder == requester.holder]
    if requester.role is Role.TEAM_MEMBER:
        visible.extend(
            SecretLease.path.startswith(prefix, autoescape=True)
            for prefix in team_scope_prefixes(requester, session=session)
        )
    return visible


def held_by_clause(holder: str) -> ColumnElement[bool]:
    """Leases of a holder by its quota key, or a principal's by the name its reads were
    audited under (`principal:<name>`, the lease's actor)."""
    return or_(
        SecretLease.holder == holder,
        and_(SecretLease.holder.startswith("principal:"), SecretLease.actor == holder),
    )


def under_prefix_clause(prefix: str) -> ColumnElement[bool]:
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
    """Extend a live lease to now + increment, never past issue + max_ttl. A dynamic role's
    VALID UNTIL is moved first, outside the control-plane transaction."""
    if increment_seconds is not None and increment_seconds < 1:
        raise InvalidInputError("increment_seconds must be at least 1", field="increment_seconds")
    increment = increment_seconds or ctx.settings.secrets_lease_ttl_seconds
    lease_id = resolve_lease_id(requester, lease_id, session=session)
    lease = load_lease(requester.tenant_id, lease_id, session=session)
    if (
        lease is not None
        and lease.kind == LeaseKind.POSTGRES.value
        and _renewable(lease) is None
        and management_denial(requester, lease, session=session) is None
    ):
        valid_until = renewed_expiry(utc_now(), increment, _renewal_cap(requester, lease))
        _extend_dynamic(lease, valid_until, ctx=ctx, session=session)
    lock_tenant_chain(requester.tenant_id, session=session)
    lease = load_lease(requester.tenant_id, lease_id, session=session)
    if lease is None:
        refuse(
            requester,
            NotFoundError(f"lease {lease_id!r} not found", field="lease_id"),
            action="renew",
            lease_id=lease_id,
            outcome="not_found",
            session=session,
        )
    denial = management_denial(requester, lease, session=session)
    if denial is not None:
        # Answered as an unknown lease (like a read of it): a 403 naming the holder had told
        # anyone that the lease exists and whose it is. The audit record keeps why.
        refuse(
            requester,
            NotFoundError(f"lease {lease_id!r} not found", field="lease_id"),
            action="renew",
            path=lease.path,
            lease_id=lease_id,
            detail={"reason": f"may not renew: {denial}"},
            session=session,
        )
    ended = _renewable(lease)
    if ended is not None:
        refuse(
            requester, ended, action="renew", path=lease.path, lease_id=lease_id, session=session
        )
    cap = _renewal_cap(requester, lease)
    new_expiry = renewed_expiry(utc_now(), increment, cap)
    lease.expires_at = new_expiry
    append_audit(
        requester.tenant_id,
        action="renew",
        outcome="ok",
        actor=requester.actor,
        path=lease.path,
        lease_id=lease.id,
        version=lease.version,
        detail={
            "expires_at": new_expiry.isoformat(),
            "capped": new_expiry == cap,
            **requester.workload_detail,
        },
        session=session,
    )
    session.commit()
    return lease_info(lease)


def _renewal_cap(requester: Requester, lease: SecretLease) -> datetime:
    """The latest a renewal may move the lease to: its max expiry, and for an identity token
    no later than the token lives."""
    if requester.token_expires_at is None:
        return lease.max_expires_at
    return min(lease.max_expires_at, requester.token_expires_at)


def renewed_expiry(now: datetime, increment_seconds: int, max_expires_at: datetime) -> datetime:
    """now + increment, capped at the lease's max expiry. The cap is applied before the
    sum: an increment of any size (a timedelta or a datetime cannot hold every int) is the cap,
    never an OverflowError."""
    if increment_seconds >= (max_expires_at - now).total_seconds():
        return max_expires_at
    return now + timedelta(seconds=increment_seconds)


def _renewable(lease: SecretLease) -> ConflictError | None:
    if lease.state != LeaseState.ENDED.value and lease.expires_at > utc_now():
        return None
    when = lease.ended_at or lease.expires_at
    why = lease.end_reason or "expired"
    return ConflictError(
        f"lease {lease.id} ended at {moment_text(when)} ({why}) and cannot be renewed: "
        "read the secret again for a new lease"
    )


def _extend_dynamic(
    lease: SecretLease, valid_until: datetime, *, ctx: SecretsContext, session: Session
) -> None:
    engine = session.get(DynamicEngine, lease.engine_id) if lease.engine_id else None
    role = lease.role_name
    if engine is None or role is None:
        raise ConflictError(f"the engine of lease {lease.id} is gone; the lease cannot be renewed")
    conninfo = engine_conninfo(engine, ctx=ctx, session=session)
    session.rollback()  # no control-plane transaction (or SQLite lock) while the target works
    try:
        exists = ctx.postgres.run(
            conninfo, lambda c: extend_role(c, role=role, valid_until=valid_until)
        )
    except EngineUnreachableError as exc:
        raise ServiceUnavailableError(
            f"could not extend the role of lease {lease.id}: its database cannot be reached: {exc}"
        ) from None
    except EngineError as exc:
        raise ConflictError(f"could not extend the role of lease {lease.id}: {exc}") from None
    if not exists:
        raise ConflictError(f"the role of lease {lease.id} no longer exists in its database")
