"""Quotas (ResourceQuota semantics) and limit ranges (LimitRange semantics) per namespace
(the tenant, or one team), and the reservations that hold quota from admission to release.

Admission charges every matching quota with one conditional UPDATE each
(`used = used + n WHERE used + n <= hard`), in quota-id order, in one transaction: the
database re-checks the condition on the row it locks, so racing admissions can never take
more than `hard` on SQLite or PostgreSQL; the first quota without room rolls all back.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import Select, and_, false, func, select, update
from sqlalchemy.orm import Session

from quartermaster.domain.timeutil import moment_text, utc_now
from quartermaster.errors import ConflictError, InvalidInputError, NotFoundError
from quartermaster.guardrails.common import (
    ScopeKind,
    check_scope,
    record_action,
    require_scope,
)
from quartermaster.guardrails.models import LimitRange, Quota, Reservation
from quartermaster.guardrails.quantities import (
    LIMIT_RESOURCES,
    RESOURCES,
    format_quantity,
    parse_quantity,
)
from quartermaster.guardrails.visibility import NOT_SHOWN, Figures, MemberView, scope_filter
from quartermaster.storage.base import Base
from quartermaster.storage.ids import by_id_or_prefix
from quartermaster.tenancy.models import Role, Team
from quartermaster.tenancy.service import AuthContext

QUOTA_SCOPES = (ScopeKind.TENANT, ScopeKind.TEAM)
DEFAULT_RUNTIME_SECONDS = 3600
DEFAULT_CONCURRENCY = 1
Namespace = tuple[str, str]


def _namespace_label(kind: str, scope: str) -> str:
    return "tenant" if kind == ScopeKind.TENANT else f"team {scope!r}"


def _check_resource(resource: str, allowed: tuple[str, ...]) -> str:
    if resource not in allowed:
        raise InvalidInputError(
            f"resource {resource!r} is not one of: {', '.join(allowed)}", field="resource"
        )
    return resource


def _reservation_amounts(res: Reservation) -> dict[str, int]:
    return {
        "cpu": res.cpu,
        "memory": res.memory,
        "gpu": res.gpu,
        "concurrency": res.concurrency,
        "jobs": 1,
    }


def _held(tenant_id: str, kind: str, scope: str, resource: str, *, session: Session) -> int:
    """What active reservations of the namespace hold of `resource` (a new quota's start)."""
    column = {
        "cpu": Reservation.cpu,
        "memory": Reservation.memory,
        "gpu": Reservation.gpu,
        "concurrency": Reservation.concurrency,
    }.get(resource)
    measure = func.count() if column is None else func.coalesce(func.sum(column), 0)
    query = select(measure).where(
        Reservation.tenant_id == tenant_id, Reservation.status == "active"
    )
    if kind == ScopeKind.TEAM:
        query = query.where(Reservation.team == scope)
    return int(session.scalar(query) or 0)


def set_quota(
    caller: AuthContext, kind: str, scope: str | None, resource: str, hard: str, *, session: Session
) -> Quota:
    """Create or change a quota. A new quota starts from what active work already holds."""
    kind, name = check_scope(kind, scope, allowed=QUOTA_SCOPES)
    require_scope(caller.tenant_id, kind, name, session=session)
    _check_resource(resource, RESOURCES)
    amount = parse_quantity(resource, hard, field="hard")
    quota = session.scalar(
        select(Quota).where(
            Quota.tenant_id == caller.tenant_id,
            Quota.scope_kind == kind,
            Quota.scope == name,
            Quota.resource == resource,
        )
    )
    if quota is None:
        used = _held(caller.tenant_id, kind, name, resource, session=session)
        quota = Quota(
            tenant_id=caller.tenant_id,
            scope_kind=kind,
            scope=name,
            resource=resource,
            hard=amount,
            used=used,
        )
        session.add(quota)
    else:
        quota.hard = amount
        quota.updated_at = utc_now()
    session.commit()
    return quota


def list_quotas(tenant_id: str, *, session: Session, view: MemberView | None = None) -> list[Quota]:
    """With a team-member's `view`, its team's only (a tenant quota's use is the tenant's)."""
    query = select(Quota).where(Quota.tenant_id == tenant_id)
    if view is not None:
        query = query.where(scope_filter(view, Quota.scope_kind, Quota.scope))
    return list(session.scalars(query.order_by(Quota.scope_kind, Quota.scope, Quota.resource)))


def delete_quota(caller: AuthContext, quota_id: str, *, session: Session) -> None:
    """Delete a quota of the caller's tenant (404 for another tenant's or an unknown one):
    its namespace's requests are no longer counted against it; work it admitted keeps its
    reservation. The action log gets a `delete` entry naming it, its hard limit, what was
    in use and who deleted it."""
    quota = session.get(Quota, quota_id)
    if quota is None or quota.tenant_id != caller.tenant_id:
        raise NotFoundError(f"no quota {quota_id!r}", field="quota_id")
    record_action(
        session,
        tenant_id=caller.tenant_id,
        action="delete",
        scope_kind=quota.scope_kind,
        scope=quota.scope,
        subject=f"quota:{quota.id}",
        reason=f"quota of {_namespace_label(quota.scope_kind, quota.scope)} ({quota.resource}: "
        f"hard {format_quantity(quota.resource, quota.hard)}, "
        f"in use {format_quantity(quota.resource, quota.used)}) "
        f"deleted by {caller.principal_name}",
    )
    session.delete(quota)
    session.commit()


def set_limit_range(
    caller: AuthContext,
    kind: str,
    scope: str | None,
    resource: str,
    *,
    default_request: str | None,
    max_value: str | None,
    session: Session,
) -> LimitRange:
    kind, name = check_scope(kind, scope, allowed=QUOTA_SCOPES)
    require_scope(caller.tenant_id, kind, name, session=session)
    _check_resource(resource, LIMIT_RESOURCES)
    default = None if default_request is None else parse_quantity(resource, default_request)
    most = None if max_value is None else parse_quantity(resource, max_value, field="max")
    if default is None and most is None:
        raise InvalidInputError("give default_request, max or both", field="max")
    if default is not None and most is not None and default > most:
        raise InvalidInputError(
            f"default_request {default_request} is over max {max_value}", field="default_request"
        )
    row = session.scalar(
        select(LimitRange).where(
            LimitRange.tenant_id == caller.tenant_id,
            LimitRange.scope_kind == kind,
            LimitRange.scope == name,
            LimitRange.resource == resource,
        )
    )
    if row is None:
        row = LimitRange(tenant_id=caller.tenant_id, scope_kind=kind, scope=name, resource=resource)
        session.add(row)
    row.default_request = default
    row.max = most
    session.commit()
    return row


def list_limit_ranges(
    tenant_id: str, *, session: Session, view: MemberView | None = None
) -> list[LimitRange]:
    """With a team-member's `view`, the tenant-wide ones and its team's."""
    query = select(LimitRange).where(LimitRange.tenant_id == tenant_id)
    if view is not None:
        query = query.where(scope_filter(view, LimitRange.scope_kind, LimitRange.scope, rules=True))
    return list(session.scalars(query.order_by(LimitRange.scope_kind, LimitRange.scope)))


def delete_limit_range(caller: AuthContext, limit_range_id: str, *, session: Session) -> None:
    """Delete a limit range of the caller's tenant (404 for another tenant's or an unknown
    one): requests of its namespace no longer get its default or max (the tenant's range,
    or the built-in default, applies). The action log gets a `delete` entry naming it, its
    values and who deleted it."""
    row = session.get(LimitRange, limit_range_id)
    if row is None or row.tenant_id != caller.tenant_id:
        raise NotFoundError(f"no limit range {limit_range_id!r}", field="limit_range_id")
    values = ", ".join(
        f"{name} {'none' if value is None else format_quantity(row.resource, value)}"
        for name, value in (("default", row.default_request), ("max", row.max))
    )
    record_action(
        session,
        tenant_id=caller.tenant_id,
        action="delete",
        scope_kind=row.scope_kind,
        scope=row.scope,
        subject=f"limit_range:{row.id}",
        reason=f"limit range of {_namespace_label(row.scope_kind, row.scope)} "
        f"({row.resource}: {values}) deleted by {caller.principal_name}",
    )
    session.delete(row)
    session.commit()


def _namespaces(team: str | None) -> list[Namespace]:
    spaces: list[Namespace] = [(ScopeKind.TENANT, "")]
    if team is not None:
        spaces.append((ScopeKind.TEAM, team))
    return spaces


def apply_limit_ranges(
    tenant_id: str,
    team: str | None,
    requested: Mapping[str, int | None],
    *,
    session: Session,
) -> tuple[dict[str, int], list[str]]:
    """The request with defaults filled in (the team's, else the tenant's, else built-in),
    and a reason for each value over a max of the tenant's or the team's limit range."""
    spaces = _namespaces(team)
    rows = [
        r
        for r in list_limit_ranges(tenant_id, session=session)
        if (r.scope_kind, r.scope) in spaces
    ]
    rows.sort(key=lambda r: r.scope_kind != ScopeKind.TEAM)  # team defaults win
    builtin = {"runtime": DEFAULT_RUNTIME_SECONDS, "concurrency": DEFAULT_CONCURRENCY}
    effective: dict[str, int] = {}
    for resource in LIMIT_RESOURCES:
        value = requested.get(resource)
        if value is None:
            defaults = [r.default_request for r in rows if r.resource == resource]
            value = next((d for d in defaults if d is not None), None)
            if value is None:
                # As Kubernetes takes a LimitRange's max for its missing default: a built-in
                # default over a range's max would deny every request that names none.
                maxes = [r.max for r in rows if r.resource == resource and r.max is not None]
                value = min([builtin.get(resource, 0), *maxes])
        effective[resource] = value
    reasons = []
    for row in rows:
        if row.max is not None and effective[row.resource] > row.max:
            reasons.append(
                f"limit range of {_namespace_label(row.scope_kind, row.scope)}: {row.resource} "
                f"{format_quantity(row.resource, effective[row.resource])} is over the max "
                f"{format_quantity(row.resource, row.max)} per request"
            )
    return effective, reasons


@dataclass(frozen=True, slots=True)
class Admission:
    reservation: Reservation | None
    reasons: list[Figures]  # each quota short


def _charges(
    tenant_id: str, team: str | None, amounts: Mapping[str, int], *, session: Session
) -> list[tuple[Quota, int]]:
    spaces = _namespaces(team)
    quotas = [
        q
        for q in session.scalars(select(Quota).where(Quota.tenant_id == tenant_id))
        if (q.scope_kind, q.scope) in spaces
    ]
    return sorted(
        ((q, amounts.get(q.resource, 0)) for q in quotas if amounts.get(q.resource, 0) > 0),
        key=lambda pair: pair[0].id,
    )


def _over_quota_reasons(
    tenant_id: str, team: str | None, amounts: Mapping[str, int], *, session: Session
) -> list[Figures]:
    """Each quota short, with its use and limit (a tenant quota's use is every team's work:
    `Figures.brief` leaves it out)."""
    reasons = []
    for quota, amount in _charges(tenant_id, team, amounts, session=session):
        if quota.used + amount > quota.hard:
            resource = quota.resource
            head = (
                f"quota {resource} of {_namespace_label(quota.scope_kind, quota.scope)}: "
                f"requested {format_quantity(resource, amount)}"
            )
            reasons.append(
                Figures(
                    (quota.scope_kind, quota.scope),
                    f"{head}, used {format_quantity(resource, quota.used)} of limit "
                    f"{format_quantity(resource, quota.hard)}",
                    f"{head}, more than it has left ({NOT_SHOWN})",
                )
            )
    return reasons


def reserve(
    caller: AuthContext,
    *,
    team: str | None,
    app: str | None,
    effective: Mapping[str, int],
    essential: bool,
    session: Session,
    now: datetime | None = None,
    log: Sequence[Base] = (),
) -> Admission:
    """Charge the quotas and record the reservation, or refuse naming each quota short.
    `log` rows (e.g. the policy decisions) are committed with the reservation."""
    moment = now or utc_now()
    amounts = {**{k: v for k, v in effective.items() if k != "runtime"}, "jobs": 1}
    charges = _charges(caller.tenant_id, team, amounts, session=session)
    session.rollback()  # the reads above: release the snapshot before the writes
    charged = []
    for quota, amount in charges:
        result = session.execute(
            update(Quota)
            .where(and_(Quota.id == quota.id, Quota.used + amount <= Quota.hard))
            .values(used=Quota.used + amount, updated_at=moment)
            .execution_options(synchronize_session=False)
        )
        if result.rowcount != 1:  # type: ignore[attr-defined]
            session.rollback()
            reasons = _over_quota_reasons(caller.tenant_id, team, amounts, session=session)
            session.rollback()
            short = Figures(None, f"quota {quota.resource} has no room left")
            return Admission(None, reasons or [short])
        charged.append(f"{quota.id}:{amount}")
    reservation = Reservation(
        tenant_id=caller.tenant_id,
        team=team,
        app=app,
        cpu=amounts.get("cpu", 0),
        memory=amounts.get("memory", 0),
        gpu=amounts.get("gpu", 0),
        concurrency=amounts.get("concurrency", 0),
        runtime_seconds=effective["runtime"],
        essential=essential,
        quota_ids=",".join(charged),
        created_by=caller.principal_name,
        created_at=moment,
        expires_at=moment + timedelta(seconds=effective["runtime"]),
    )
    session.add(reservation)
    session.add_all(log)
    session.commit()
    return Admission(reservation, [])


def _give_back(reservation: Reservation, *, session: Session) -> None:
    for part in filter(None, reservation.quota_ids.split(",")):
        quota_id, amount = part.rsplit(":", 1)
        session.execute(
            update(Quota)
            .where(Quota.id == quota_id)
            .values(used=Quota.used - int(amount))
            .execution_options(synchronize_session=False)
        )


def _finish(
    reservation_id: str, tenant_id: str, status: str, *, session: Session, moment: datetime
) -> bool:
    """Move an active reservation to `status` and give back its quota, exactly once."""
    result = session.execute(
        update(Reservation)
        .where(
            Reservation.id == reservation_id,
            Reservation.tenant_id == tenant_id,
            Reservation.status == "active",
        )
        .values(status=status, released_at=moment)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        return False
    reservation = session.get(Reservation, reservation_id)
    assert reservation is not None
    session.refresh(reservation)
    _give_back(reservation, session=session)
    return True


def _visible_reservations(caller: AuthContext, *, session: Session) -> Select[Reservation]:
    """The rule of decide(), for reading and releasing: an app key its own app's decisions,
    a team-member its own team's, admin every one of the tenant's."""
    query = select(Reservation).where(Reservation.tenant_id == caller.tenant_id)
    if caller.role is Role.APP:
        own = caller.app_slug
        return query.where(Reservation.app == own if own is not None else false())
    if caller.role is Role.TEAM_MEMBER:
        team = session.get(Team, caller.team_id) if caller.team_id else None
        own = team.slug if team is not None and team.tenant_id == caller.tenant_id else None
        return query.where(Reservation.team == own if own is not None else false())
    return query


def get_reservation(caller: AuthContext, reservation_id: str, *, session: Session) -> Reservation:
    """One decision the caller may see, by id or a unique prefix of 8 or more (looked up
    among the ones it may see only, so an ambiguous prefix says nothing of other teams');
    another tenant's, team's or app's is a 404 like a missing one (not revealed)."""
    reservation = by_id_or_prefix(
        _visible_reservations(caller, session=session),
        Reservation.id,
        reservation_id,
        what="decision",
        field="decision_id",
        session=session,
    )
    if reservation is None:
        raise NotFoundError(f"no decision {reservation_id!r}", field="decision_id")
    return reservation


def release(caller: AuthContext, reservation_id: str, *, session: Session) -> Reservation:
    """Work finished: give its quota back. Idempotent (a second release changes nothing)."""
    found = get_reservation(caller, reservation_id, session=session).id
    session.rollback()
    _finish(found, caller.tenant_id, "released", session=session, moment=utc_now())
    session.commit()
    return get_reservation(caller, found, session=session)


def renewal_seconds(
    caller: AuthContext,
    found: Reservation,
    runtime: str | int | None,
    *,
    session: Session,
    now: datetime | None = None,
    team: str | None = None,
) -> int:
    """The runtime in seconds a decision (`get_reservation`) is renewed for (default: the
    runtime it was admitted with). Only active work before its expiry (409 after, or once
    released); `runtime` is at least 1 s and within the runtime max of the tenant's and the
    team's limit ranges (422 on `runtime`): `team`'s, else the team the work was admitted
    for."""
    moment = now or utc_now()
    if found.status != "active" or found.expires_at <= moment:
        state = found.status if found.status != "active" else "expired"
        raise ConflictError(
            f"decision {found.id} is {state} (since "
            f"{moment_text(found.released_at or found.expires_at)}): only active work is "
            "renewed before it expires; ask for a new decision",
            field="decision_id",
        )
    seconds = found.runtime_seconds if runtime is None else parse_quantity("runtime", runtime)
    spaces = _namespaces(team if team is not None else found.team)
    for row in list_limit_ranges(caller.tenant_id, session=session):
        if (
            row.resource != "runtime"
            or row.max is None
            or (row.scope_kind, row.scope) not in spaces
        ):
            continue
        if seconds > row.max:
            raise InvalidInputError(
                f"limit range of {_namespace_label(row.scope_kind, row.scope)}: runtime "
                f"{format_quantity('runtime', seconds)} is over the max "
                f"{format_quantity('runtime', row.max)} per request",
                field="runtime",
            )
    return seconds


def renew(
    caller: AuthContext,
    reservation_id: str,
    seconds: int,
    *,
    session: Session,
    now: datetime | None = None,
    log: Sequence[Base] = (),
) -> Reservation:
    """Work still running (checked by `renewal_seconds`): it expires `seconds` from now, keeping
    its quota; `log` (the renewal's policy decisions) commits with it. 409 when the decision
    ended meanwhile."""
    moment = now or utc_now()
    session.rollback()
    result = session.execute(
        update(Reservation)
        .where(
            Reservation.id == reservation_id,
            Reservation.tenant_id == caller.tenant_id,
            Reservation.status == "active",
            Reservation.expires_at > moment,
        )
        .values(expires_at=moment + timedelta(seconds=seconds))
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        raise ConflictError(
            f"decision {reservation_id} ended while being renewed; ask for a new decision",
            field="decision_id",
        )
    session.add_all(log)
    session.commit()
    return get_reservation(caller, reservation_id, session=session)


def expire_reservations(
    *,
    session: Session,
    now: datetime | None = None,
    limit: int = 500,
    reader: Session | None = None,
) -> int:
    """Release work that outlived its runtime (never released by its runner). With a
    `reader` (a read-only session) the due ones are found through it, so a pass with none
    due takes no write lock; each is released in its own short write transaction."""
    moment = now or utc_now()
    read = reader or session
    due = read.execute(
        select(Reservation.id, Reservation.tenant_id, Reservation.team, Reservation.app)
        .where(Reservation.status == "active", Reservation.expires_at <= moment)
        .limit(limit)
    ).all()
    read.rollback()
    expired = 0
    for reservation_id, tenant_id, team, app in due:
        if _finish(reservation_id, tenant_id, "expired", session=session, moment=moment):
            expired += 1
            record_action(
                session,
                tenant_id=tenant_id,
                action="expire",
                scope_kind=ScopeKind.APP if app else ScopeKind.TEAM if team else ScopeKind.TENANT,
                scope=app or team or "",
                subject=f"decision:{reservation_id}",
                reason="reservation outlived its runtime without a release: quota given back",
            )
        session.commit()
    return expired
