"""Resources (resource_id -> app over [valid_from, valid_to)) and resource leases.

A resource_id is bound to at most one app at any instant, so its events are attributable
without ambiguity; bindings are kept after the resource is gone. A lease binds a short-lived
resource to its app for [issued_at, expires_at) and hands out a signed token naming both."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy import Select, select, text
from sqlalchemy.orm import Session

from quartermaster.catalog.access import ensure_may_read, ensure_may_write, visible_team
from quartermaster.catalog.lease_tokens import LeaseClaims, issue_token
from quartermaster.catalog.models import App, Resource, ResourceLease
from quartermaster.catalog.service import find_app, validate_environment
from quartermaster.domain.timeutil import Period, duration_text, moment_text, utc_now
from quartermaster.errors import ConflictError, InvalidInputError, NotFoundError
from quartermaster.tenancy.service import AuthContext

MAX_LEASE_TTL_SECONDS = 7 * 24 * 3600


@dataclass(frozen=True, slots=True)
class ResourceSpan:
    """`resource_id` belonged to `app_id` over [valid_from, valid_to)."""

    resource_id: str
    app_id: str
    environment: str | None
    valid_from: datetime
    valid_to: datetime | None
    lease_id: str | None


@dataclass(frozen=True, slots=True)
class IssuedLease:
    """As returned once at creation: the token is what the resource presents."""

    lease_id: str
    resource_id: str
    app_id: str
    token: str
    issued_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class LeaseView:
    lease_id: str
    resource_id: str
    app_id: str
    issued_at: datetime
    expires_at: datetime
    ended_at: datetime  # when the binding ends: at revocation, else at expiry


# --- pure rules ------------------------------------------------------------------------------


def overlaps(
    a_from: datetime, a_to: datetime | None, b_from: datetime, b_to: datetime | None
) -> bool:
    """Do half-open intervals [a_from, a_to) and [b_from, b_to) share an instant? None is an
    open end."""
    return (b_to is None or a_from < b_to) and (a_to is None or b_from < a_to)


def first_overlap(
    valid_from: datetime, valid_to: datetime | None, existing: Iterable[ResourceSpan]
) -> ResourceSpan | None:
    for span in existing:
        if overlaps(valid_from, valid_to, span.valid_from, span.valid_to):
            return span
    return None


def format_interval(start: datetime, end: datetime | None) -> str:
    return f"[{moment_text(start)}, {moment_text(end) if end is not None else 'open'})"


# --- queries ---------------------------------------------------------------------------------


def _span_query(tenant_id: str) -> Select[Resource, str]:
    return (
        select(Resource, App.app_id)
        .join(App, App.id == Resource.app_pk)
        .where(Resource.tenant_id == tenant_id)
        .order_by(Resource.resource_id, Resource.valid_from)
    )


def _span(resource: Resource, app_id: str) -> ResourceSpan:
    return ResourceSpan(
        resource_id=resource.resource_id,
        app_id=app_id,
        environment=resource.environment,
        valid_from=resource.valid_from,
        valid_to=resource.valid_to,
        lease_id=resource.lease_id,
    )


def list_resources(
    caller: AuthContext,
    *,
    resource_id: str | None = None,
    app_id: str | None = None,
    session: Session,
) -> list[ResourceSpan]:
    query = _span_query(caller.tenant_id)
    scope = visible_team(caller)
    if scope is not None:
        query = query.where(App.team_id == scope)
    if resource_id is not None:
        query = query.where(Resource.resource_id == resource_id)
    if app_id is not None:
        query = query.where(App.app_id == app_id)
    return [_span(*row) for row in session.execute(query)]


def resource_owner_at(
    tenant_id: str, resource_id: str, at: datetime, *, session: Session
) -> str | None:
    """The app slug the resource belonged to at `at`, or None."""
    query = (
        select(App.app_id)
        .join(Resource, Resource.app_pk == App.id)
        .where(
            Resource.tenant_id == tenant_id,
            Resource.resource_id == resource_id,
            Resource.valid_from <= at,
        )
        .where((Resource.valid_to.is_(None)) | (Resource.valid_to > at))
    )
    return session.scalars(query).first()


def bindings_of_resources(
    tenant_id: str, resource_ids: Iterable[str], *, session: Session
) -> list[ResourceSpan]:
    """Every binding, past and future, of the given resource ids (ingestion's lookup for the
    events naming only their resource)."""
    query = _span_query(tenant_id).where(Resource.resource_id.in_(sorted(resource_ids)))
    return [_span(*row) for row in session.execute(query)]


def resource_bindings_for_tenant(
    tenant_id: str, *, period: Period | None = None, session: Session
) -> list[ResourceSpan]:
    """Every binding of the tenant (those overlapping `period` if given), for bulk joins."""
    query = _span_query(tenant_id)
    if period is not None:
        query = query.where(Resource.valid_from < period.end).where(
            (Resource.valid_to.is_(None)) | (Resource.valid_to > period.start)
        )
    return [_span(*row) for row in session.execute(query)]


# --- writes ----------------------------------------------------------------------------------


def _clean_resource_id(value: str) -> str:
    resource_id = value.strip()
    if not resource_id or len(resource_id) > 200:
        raise InvalidInputError("resource_id must be 1-200 characters", field="resource_id")
    return resource_id


def _app_for_write(caller: AuthContext, app_id: str, session: Session) -> App:
    """An app named in a request body: unknown is bad input (422), naming it."""
    app = find_app(caller.tenant_id, app_id, session=session)
    if app is None:
        raise InvalidInputError(f"unknown app {app_id!r}", field="app_id")
    ensure_may_write(caller, team_id=app.team_id, what=f"app {app_id!r}")
    return app


def _serialize_on_resource(session: Session, tenant_id: str, resource_id: str) -> None:
    """Check-then-insert of an interval must not race: on PostgreSQL, take a transaction-scoped
    advisory lock per (tenant, resource_id). SQLite's BEGIN IMMEDIATE already serializes."""
    if session.get_bind().dialect.name != "postgresql":
        return
    digest = hashlib.sha256(f"{tenant_id}\0{resource_id}".encode()).digest()
    lock_key = int.from_bytes(digest[:8], "big", signed=True)
    session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": lock_key})


def _refuse_overlap(
    session: Session,
    caller: AuthContext,
    resource_id: str,
    valid_from: datetime,
    valid_to: datetime | None,
) -> None:
    _serialize_on_resource(session, caller.tenant_id, resource_id)
    query = (
        select(Resource, App.app_id, App.team_id)
        .join(App, App.id == Resource.app_pk)
        .where(Resource.tenant_id == caller.tenant_id, Resource.resource_id == resource_id)
        .order_by(Resource.valid_from)
    )
    rows = session.execute(query).all()
    clash = first_overlap(valid_from, valid_to, [_span(r, app_id) for r, app_id, _ in rows])
    if clash is None:
        return
    team_of = {app_id: team_id for _, app_id, team_id in rows}
    if not _may_see_team(caller, team_of[clash.app_id]):
        # Still refused (a resource is bound to one app at a time), but a team-member may
        # not read another team's bindings (list_resources hides them): no app, no times.
        raise ConflictError(
            f"resource {resource_id!r} is bound to an app of another team over an "
            "overlapping interval",
            field="valid_from",
        )
    raise ConflictError(
        f"resource {resource_id!r} is already bound to app {clash.app_id!r} over "
        f"{format_interval(clash.valid_from, clash.valid_to)}, which overlaps "
        f"{format_interval(valid_from, valid_to)}",
        field="valid_from",
    )


def _may_see_team(caller: AuthContext, team_id: str) -> bool:
    """Whether the caller may read the apps (and bindings, leases) of team `team_id`."""
    scope = visible_team(caller)
    return scope is None or scope == team_id


def register_resource(
    caller: AuthContext,
    resource_id: str,
    app_id: str,
    *,
    valid_from: datetime | None = None,
    valid_to: datetime | None = None,
    environment: str | None = None,
    session: Session,
) -> ResourceSpan:
    """Bind `resource_id` to an app over [valid_from (default now), valid_to (default open))."""
    resource_id = _clean_resource_id(resource_id)
    app = _app_for_write(caller, app_id, session)
    start = valid_from or utc_now().replace(microsecond=0)  # whole seconds, as leases
    if valid_to is not None and valid_to <= start:
        raise InvalidInputError(
            f"valid_to {moment_text(valid_to)} is not after valid_from {moment_text(start)}",
            field="valid_to",
        )
    env = validate_environment(environment) if environment is not None else app.environment
    _refuse_overlap(session, caller, resource_id, start, valid_to)
    resource = Resource(
        tenant_id=caller.tenant_id,
        resource_id=resource_id,
        app_pk=app.id,
        environment=env,
        valid_from=start,
        valid_to=valid_to,
        lease_id=None,
        created_at=utc_now(),
    )
    session.add(resource)
    session.commit()
    return _span(resource, app.app_id)


def whole_second_up(moment: datetime) -> datetime:
    """`moment` rounded up to a whole second (never before it): an end computed from the
    server's clock, said as the API, `qm resource list` and messages all say moments."""
    whole = moment.replace(microsecond=0)
    return whole if whole == moment else whole + timedelta(seconds=1)


def earliest_end(now: datetime, max_future_skew: timedelta) -> datetime:
    """The soonest a binding may end: ingest accepts events stamped up to `max_future_skew`
    ahead of now and rates them at once under the binding in force then, so an earlier end
    would make a replay attribute them elsewhere (or to nothing)."""
    return whole_second_up(now + max_future_skew)


def end_binding(
    caller: AuthContext,
    resource_id: str,
    *,
    at: datetime | None = None,
    max_future_skew: timedelta,
    session: Session,
) -> ResourceSpan:
    """End the binding of `resource_id` in force at `at` at `at` (default: now +
    `max_future_skew`, rounded up to a whole second; an earlier `at` is refused): the
    resource can then be bound to another app from `at` (`register_resource`), or stay
    unbound. A lease's binding is ended with its lease (`end_lease`)."""
    resource_id = _clean_resource_id(resource_id)
    soonest = earliest_end(utc_now(), max_future_skew)
    end = soonest if at is None else at.astimezone(UTC)  # said in UTC, as the CLI says moments
    if end < soonest:
        raise InvalidInputError(
            f"at {moment_text(end)} is before {moment_text(soonest)}, the server's now plus "
            f"{duration_text(max_future_skew)}: events stamped up to that far ahead are already "
            "accepted and rated under the binding, so it ends no sooner (omit at to end it then)",
            field="at",
        )
    _serialize_on_resource(session, caller.tenant_id, resource_id)
    query = (
        _span_query(caller.tenant_id)
        .where(Resource.resource_id == resource_id, Resource.valid_from < end)
        .where((Resource.valid_to.is_(None)) | (Resource.valid_to > end))
    )
    found = session.execute(query).first()
    starting = session.execute(
        _span_query(caller.tenant_id).where(
            Resource.resource_id == resource_id, Resource.valid_from == end
        )
    ).first()
    if found is None and starting is not None:
        # Another team's binding is refused as one in force would be (403), before the 422
        # would name its app and start to a team-member who may not read them.
        starting_app = session.get(App, starting[0].app_pk)
        if starting_app is not None:
            ensure_may_write(caller, team_id=starting_app.team_id, what=f"resource {resource_id!r}")
        raise InvalidInputError(
            f"resource {resource_id!r}'s binding to app {starting[1]!r} starts at "
            f"{moment_text(end)}: ending it then would leave it no time; end it after its start",
            field="at",
        )
    if found is None:
        raise NotFoundError(
            f"resource {resource_id!r} has no binding in force at {moment_text(end)}",
            field="resource_id",
        )
    resource, app_id = found
    app = session.get(App, resource.app_pk)
    if app is not None:
        # Names the resource the caller gave, not the app: a team-member refused here may not
        # read which app of another team holds it.
        ensure_may_write(caller, team_id=app.team_id, what=f"resource {resource_id!r}")
    if resource.lease_id is not None:
        raise ConflictError(
            f"resource {resource_id!r} is bound to app {app_id!r} by lease {resource.lease_id}"
            f": end the lease instead (qm resource end-lease {resource.lease_id})",
            field="resource_id",
        )
    resource.valid_to = end
    session.commit()
    return _span(resource, app_id)


def open_lease(
    caller: AuthContext,
    resource_id: str,
    app_id: str,
    *,
    ttl_seconds: int,
    environment: str | None = None,
    issued_at: datetime | None = None,
    server_key: bytes,
    session: Session,
) -> IssuedLease:
    """Lease `resource_id` to the app for `ttl_seconds` from `issued_at` (default now; an
    earlier start records a lease of a resource that ran while its events were buffered, or
    of a replayed history). The binding is recorded as a Resource row over [issued_at,
    expires_at), so its events stay attributable after the resource is gone. Times are whole
    seconds, as the token carries them."""
    if not 1 <= ttl_seconds <= MAX_LEASE_TTL_SECONDS:
        raise InvalidInputError(
            f"ttl_seconds must be between 1 and {MAX_LEASE_TTL_SECONDS} (7 days), "
            f"got {ttl_seconds}",
            field="ttl_seconds",
        )
    resource_id = _clean_resource_id(resource_id)
    app = _app_for_write(caller, app_id, session)
    env = validate_environment(environment) if environment is not None else app.environment
    now = utc_now()
    # Compared before either is cut to whole seconds: a moment a few milliseconds ago is not
    # in the future because now's fraction was cut.
    if issued_at is not None and issued_at > now:
        raise InvalidInputError(
            f"issued_at {moment_text(issued_at)} is in the future: a lease starts now or earlier",
            field="issued_at",
        )
    issued_at = (now if issued_at is None else issued_at.astimezone(UTC)).replace(microsecond=0)
    expires_at = issued_at + timedelta(seconds=ttl_seconds)
    _refuse_overlap(session, caller, resource_id, issued_at, expires_at)
    lease = ResourceLease(
        tenant_id=caller.tenant_id,
        resource_id=resource_id,
        app_pk=app.id,
        issued_at=issued_at,
        expires_at=expires_at,
    )
    session.add(lease)
    session.flush()
    session.add(
        Resource(
            tenant_id=caller.tenant_id,
            resource_id=resource_id,
            app_pk=app.id,
            environment=env,
            valid_from=issued_at,
            valid_to=expires_at,
            lease_id=lease.id,
            created_at=utc_now(),
        )
    )
    token = issue_token(
        LeaseClaims(
            lease_id=lease.id,
            tenant_id=caller.tenant_id,
            resource_id=resource_id,
            app_id=app.app_id,
            issued_at=issued_at,
            expires_at=expires_at,
        ),
        server_key=server_key,
    )
    session.commit()
    return IssuedLease(
        lease_id=lease.id,
        resource_id=resource_id,
        app_id=app.app_id,
        token=token,
        issued_at=issued_at,
        expires_at=expires_at,
    )


def _lease_view(lease: ResourceLease, app: App) -> LeaseView:
    return LeaseView(
        lease_id=lease.id,
        resource_id=lease.resource_id,
        app_id=app.app_id,
        issued_at=lease.issued_at,
        expires_at=lease.expires_at,
        ended_at=lease.revoked_at or lease.expires_at,
    )


def end_lease(
    caller: AuthContext, lease_id: str, *, max_future_skew: timedelta, session: Session
) -> LeaseView:
    """Revoke a lease now (events stamped from now on are refused), and end its binding at
    now + `max_future_skew` rounded up to a whole second (or at its expiry, if sooner):
    events stamped up to that far ahead may already be accepted and rated under it. Another
    app may bind the resource from then. Ending an ended or expired lease changes nothing
    (idempotent)."""
    row = session.execute(
        select(ResourceLease, App)
        .join(App, App.id == ResourceLease.app_pk)
        .where(ResourceLease.tenant_id == caller.tenant_id, ResourceLease.id == lease_id)
        .with_for_update(of=ResourceLease)
    ).first()
    if row is None:
        raise NotFoundError(f"resource lease {lease_id!r} not found", field="lease_id")
    lease, app = row
    # The lease, not its app: a team-member refused here may not read another team's apps.
    ensure_may_write(caller, team_id=app.team_id, what=f"resource lease {lease_id!r}")
    now = utc_now()
    if lease.revoked_at is None and now < lease.expires_at:
        lease.revoked_at = now
        binding = session.scalars(
            select(Resource).where(
                Resource.tenant_id == caller.tenant_id, Resource.lease_id == lease.id
            )
        ).one()
        binding.valid_to = min(earliest_end(now, max_future_skew), lease.expires_at)
    session.commit()
    return _lease_view(lease, app)


def get_lease(caller: AuthContext, lease_id: str, *, session: Session) -> LeaseView:
    row = session.execute(
        select(ResourceLease, App)
        .join(App, App.id == ResourceLease.app_pk)
        .where(ResourceLease.tenant_id == caller.tenant_id, ResourceLease.id == lease_id)
    ).first()
    if row is None:
        raise NotFoundError(f"resource lease {lease_id!r} not found", field="lease_id")
    lease, app = row
    ensure_may_read(caller, team_id=app.team_id, what=f"resource lease {lease_id!r}")
    return _lease_view(lease, app)
