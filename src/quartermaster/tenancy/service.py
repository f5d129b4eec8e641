"""Tenancy services. Functions take `session` keyword-only and commit their unit of work."""

from __future__ import annotations

import enum
import hashlib
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import ColumnElement, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from quartermaster.domain.display_text import display_text_problem
from quartermaster.domain.events import DIRECTORY_SLUG_PATTERN
from quartermaster.domain.timeutil import moment_text, utc_now
from quartermaster.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    NotFoundError,
)
from quartermaster.tenancy.keys import generate_key, hash_secret, secret_matches, split_token
from quartermaster.tenancy.models import (
    ApiKey,
    CostCenter,
    Principal,
    PrincipalKind,
    Role,
    Team,
    Tenant,
)

SLUG_PATTERN = re.compile(DIRECTORY_SLUG_PATTERN)
# What a principal's id looks like (storage.base.new_id: a UUID4's 32 lowercase hex digits).
# Keys are issued to a principal named by its id or its name, so no name may have this shape:
# a name equal to another principal's id would get that principal the key.
PRINCIPAL_ID_SHAPE = re.compile(r"[0-9a-f]{32}")
DEFAULT_COST_CENTER_SLUG = "default"
# The audit records' actor for what the command line does on the server's host, without an
# API key (`qm tenant create`'s first admin); other actors are principal:<name>, app:<app>,
# job:<job> and system:<service>.
CLI_ACTOR = "system:cli"


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


def check_display_name(value: str, *, field: str, what: str) -> None:
    """422 on `field` when `value` (`what`, e.g. "a team's name") holds a character that
    changes how a `qm` table shows the text around it: a control character (a newline starts
    what reads as a second row, e.g. one named `admin`) or a bidirectional override or isolate
    (U+202E reverses what follows it, so one name reads as another), as an app's title."""
    problem = display_text_problem(value, field=field, what=what)
    if problem is not None:
        raise InvalidInputError(problem, field=field)


def validate_principal_name(name: str) -> str:
    """A principal's name as it may be stored: shown in tables (check_display_name) and never
    shaped like a principal's id, which would make `qm key create NAME` ambiguous."""
    check_display_name(name, field="name", what="a principal's name")
    if PRINCIPAL_ID_SHAPE.fullmatch(name):
        raise InvalidInputError(
            f"name {name!r} has the shape of a principal id (32 lowercase hex digits): keys are "
            "issued to a principal by id or name, so such a name could stand for another "
            "principal's id; choose a name that is not 32 hex digits",
            field="name",
        )
    return name


def validate_timezone(name: str) -> str:
    """An IANA zone name, or 422 naming it (the check billing applies when it uses the zone)."""
    from quartermaster.billing.periods import tenant_zone  # billing builds on tenancy

    tenant_zone(name)
    return name


def create_tenant(
    tenant_id: str, *, name: str | None = None, timezone: str = "UTC", session: Session
) -> Tenant:
    """A tenant with its default cost center."""
    tenant = _add_tenant(tenant_id, name=name, timezone=timezone, session=session)
    session.commit()
    return tenant


def _add_tenant(tenant_id: str, *, name: str | None, timezone: str, session: Session) -> Tenant:
    validate_slug(tenant_id, field="tenant_id")
    validate_timezone(timezone)
    if session.get(Tenant, tenant_id) is not None:
        raise ConflictError(f"tenant {tenant_id!r} already exists", field="tenant_id")
    tenant = Tenant(
        id=tenant_id,
        name=_clean_name(name or None, fallback=tenant_id, field="name", what="a tenant's name"),
        timezone=timezone,
        created_at=utc_now(),
    )
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
    session.flush()
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
    actor: str | None = None,
    session: Session,
) -> Principal:
    """A principal; with `actor` (who asked, e.g. `principal:ann@acme.com`) its creation is
    recorded in the tenant's audit chain in the same transaction."""
    principal = _add_principal(
        tenant_id,
        name,
        role=role,
        kind=kind,
        team_id=team_id,
        app_slug=app_slug,
        actor=actor,
        session=session,
    )
    session.commit()
    return principal


def _add_principal(
    tenant_id: str,
    name: str,
    *,
    role: Role,
    kind: PrincipalKind,
    team_id: str | None,
    app_slug: str | None,
    actor: str | None,
    session: Session,
) -> Principal:
    if role is Role.TEAM_MEMBER and team_id is None:
        raise InvalidInputError("a team-member principal needs a team", field="team")
    if role is Role.APP and app_slug is None:
        raise InvalidInputError("an app principal needs an app", field="app_id")
    # Here, not only in the API's register_principal: `qm tenant create` and `qm tenant
    # admin-key --name` create admins by name too.
    validate_principal_name(name)
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
    if actor is not None:
        session.flush()  # the principal's id, for the record
        _audit_key_change(
            tenant_id,
            action="create-principal",
            actor=actor,
            detail={
                "principal": name,
                "principal_id": principal.id,
                "role": role.value,
                "app_id": app_slug,
            },
            session=session,
        )
    session.flush()
    return principal


def _audit_key_change(
    tenant_id: str, *, action: str, actor: str, detail: dict[str, Any], session: Session
) -> None:
    """One `ok` record of a principal or API key change, flushed with the change."""
    from quartermaster.audit.log import append_audit  # audit builds on tenancy

    append_audit(
        tenant_id, action=action, outcome="ok", actor=actor, detail=detail, session=session
    )


def issue_api_key(
    principal: Principal,
    *,
    expires_at: datetime | None = None,
    actor: str | None = None,
    session: Session,
) -> IssuedKey:
    """A new key of `principal` (the token is in the result only); with `actor`, recorded in
    the tenant's audit chain (`issue-key`) in the same transaction, never the token."""
    issued = _add_api_key(principal, expires_at=expires_at, actor=actor, session=session)
    session.commit()
    return issued


def _add_api_key(
    principal: Principal, *, expires_at: datetime | None, actor: str | None, session: Session
) -> IssuedKey:
    if expires_at is not None and expires_at <= utc_now():
        raise InvalidInputError("expires_at is in the past", field="expires_at")
    if expires_at is not None:
        # In UTC, as the key is stored and listed: the answer echoed the caller's offset
        # (`+01:00`), so `qm key create` printed another form than `qm key list`.
        expires_at = expires_at.astimezone(UTC)
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
    if actor is not None:
        _audit_key_change(
            principal.tenant_id,
            action="issue-key",
            actor=actor,
            detail={
                "key_id": new.key_id,
                "principal": principal.name,
                "principal_id": principal.id,
                "role": principal.role,
                "app_id": principal.app_slug,
                "expires_at": None if expires_at is None else expires_at.isoformat(),
            },
            session=session,
        )
    session.flush()
    return IssuedKey(
        key_id=new.key_id, token=new.token, principal_id=principal.id, expires_at=expires_at
    )


@dataclass(frozen=True, slots=True)
class VerifiedKey:
    """A key that passed every check, with what a cache of it must re-check (its expiry)."""

    context: AuthContext
    key_id: str
    expires_at: datetime | None


def verify_api_key(token: str, *, session: Session) -> VerifiedKey:
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
        raise AuthenticationError(f"API key {key_id} expired at {moment_text(key.expires_at)}")
    context = AuthContext(
        tenant_id=principal.tenant_id,
        principal_id=principal.id,
        principal_name=principal.name,
        role=Role(principal.role),
        team_id=principal.team_id,
        app_slug=principal.app_slug,
    )
    return VerifiedKey(context=context, key_id=key_id, expires_at=key.expires_at)


def authenticate(token: str, *, session: Session) -> AuthContext:
    return verify_api_key(token, session=session).context


@dataclass(frozen=True, slots=True)
class KeyState:
    """What a workload identity token's check needs of the API key that minted it."""

    key_id: str
    tenant_id: str
    revoked_at: datetime | None
    expires_at: datetime | None


def api_key_state(key_id: str, *, session: Session) -> KeyState | None:
    """One primary-key read: the key's tenant, revocation and expiry (None: no such key)."""
    row = session.execute(
        select(ApiKey.tenant_id, ApiKey.revoked_at, ApiKey.expires_at).where(ApiKey.id == key_id)
    ).first()
    if row is None:
        return None
    return KeyState(key_id=key_id, tenant_id=row[0], revoked_at=row[1], expires_at=row[2])


def minting_key_refusal(
    key_id: str, state: KeyState | None, *, tenant_id: str, now: datetime
) -> str | None:
    """Why a token minted by API key `key_id` (for `tenant_id`) may no longer be used, or None:
    the key was revoked, has expired, or is not (or no longer) a key of that tenant."""
    if state is None or state.tenant_id != tenant_id:
        return f"identity token was minted by API key {key_id}, which no longer exists"
    if state.revoked_at is not None:
        return (
            f"identity token was minted by API key {key_id}, which was revoked at "
            f"{moment_text(state.revoked_at)}"
        )
    if state.expires_at is not None and state.expires_at <= now:
        return (
            f"identity token was minted by API key {key_id}, which expired at "
            f"{moment_text(state.expires_at)}"
        )
    return None


def bootstrap_tenant(
    tenant_id: str,
    *,
    name: str | None = None,
    timezone: str = "UTC",
    admin_name: str = "admin",
    actor: str | None = None,
    session: Session,
) -> IssuedKey:
    """Create a tenant and its first admin, returning the admin's key (shown once). With
    `actor` (`qm tenant create` passes CLI_ACTOR) the admin's creation and its key are the
    first records of the tenant's audit chain (`create-principal`, `issue-key`, never the
    token), as every later principal and key change is. One transaction: a crash leaves
    either no tenant or a tenant whose admin key was printed, never a tenant without one."""
    _add_tenant(tenant_id, name=name, timezone=timezone, session=session)
    admin = _add_principal(
        tenant_id,
        admin_name,
        role=Role.ADMIN,
        kind=PrincipalKind.USER,
        team_id=None,
        app_slug=None,
        actor=actor,
        session=session,
    )
    issued = _add_api_key(admin, expires_at=None, actor=actor, session=session)
    session.commit()
    return issued


def issue_recovery_admin_key(
    tenant_id: str, *, admin_name: str = "admin", actor: str, session: Session
) -> IssuedKey:
    """Break glass for an operator with the database: a new key for the tenant's admin
    principal `admin_name`, created as an admin if the tenant has none of that name (every
    admin key lost, revoked or expired). Recorded in the tenant's audit chain like any key."""
    if session.get(Tenant, tenant_id) is None:
        raise NotFoundError(f"tenant {tenant_id!r} does not exist", field="tenant_id")
    admin = session.scalar(
        select(Principal).where(Principal.tenant_id == tenant_id, Principal.name == admin_name)
    )
    if admin is None:
        admin = _add_principal(
            tenant_id,
            admin_name,
            role=Role.ADMIN,
            kind=PrincipalKind.USER,
            team_id=None,
            app_slug=None,
            actor=actor,
            session=session,
        )
    elif admin.role != Role.ADMIN.value:
        raise ConflictError(
            f"principal {admin_name!r} has role {admin.role}, not admin: name another (--name)",
            field="name",
        )
    issued = _add_api_key(admin, expires_at=None, actor=actor, session=session)
    session.commit()
    return issued


# --- directory: tenant, cost centers, teams --------------------------------------------------


@dataclass(frozen=True, slots=True)
class TenantView:
    tenant_id: str
    name: str
    timezone: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class TeamView:
    slug: str
    name: str
    cost_center: str | None  # slug of the team's default cost center
    created_at: datetime


def _clean_name(value: str | None, *, fallback: str, field: str, what: str) -> str:
    """A display name (`what`, e.g. "a team's name"): stripped, 1-200 characters, and free of
    characters that spoof a table (check_display_name)."""
    name = (value if value is not None else fallback).strip()
    if not name or len(name) > 200:
        raise InvalidInputError(f"{field} must be 1-200 characters", field=field)
    check_display_name(name, field=field, what=what)
    return name


def _commit_unique(session: Session, message: str, *, field: str) -> None:
    """Commit; a unique-constraint race (another request created the same slug) is a 409."""
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ConflictError(message, field=field) from None


def get_tenant(tenant_id: str, *, session: Session) -> TenantView:
    tenant = session.get(Tenant, tenant_id)
    if tenant is None:
        raise NotFoundError(f"tenant {tenant_id!r} not found", field="tenant_id")
    return TenantView(
        tenant_id=tenant.id,
        name=tenant.name,
        timezone=tenant.timezone,
        created_at=tenant.created_at,
    )


def set_tenant_timezone(
    tenant_id: str, timezone: str, *, actor: str, session: Session
) -> TenantView:
    """Change the tenant's time zone (an IANA name), recorded in its audit chain. Periods
    computed from now on use it; finalized invoices and ledger entries keep theirs."""
    from quartermaster.audit.log import append_audit

    validate_timezone(timezone)
    tenant = session.get(Tenant, tenant_id, populate_existing=True)
    if tenant is None:
        raise NotFoundError(f"tenant {tenant_id!r} not found", field="tenant_id")
    previous = tenant.timezone
    tenant.timezone = timezone
    append_audit(
        tenant_id,
        action="configure",
        outcome="ok",
        actor=actor,
        detail={"tenant_timezone": {"from": previous, "to": timezone}},
        session=session,
    )
    session.commit()
    return get_tenant(tenant_id, session=session)


def find_cost_center(tenant_id: str, slug: str, *, session: Session) -> CostCenter | None:
    return session.scalar(
        select(CostCenter).where(CostCenter.tenant_id == tenant_id, CostCenter.slug == slug)
    )


def find_team(tenant_id: str, slug: str, *, session: Session) -> Team | None:
    return session.scalar(select(Team).where(Team.tenant_id == tenant_id, Team.slug == slug))


def require_cost_center(tenant_id: str, slug: str, *, field: str, session: Session) -> CostCenter:
    """A cost center named in a request body: unknown is bad input (422), naming it."""
    found = find_cost_center(tenant_id, slug, session=session)
    if found is None:
        raise InvalidInputError(f"unknown cost center {slug!r}", field=field)
    return found


def require_team(tenant_id: str, slug: str, *, field: str, session: Session) -> Team:
    """A team named in a request body: unknown is bad input (422), naming it."""
    found = find_team(tenant_id, slug, session=session)
    if found is None:
        raise InvalidInputError(f"unknown team {slug!r}", field=field)
    return found


def create_cost_center(
    tenant_id: str, slug: str, *, name: str | None = None, session: Session
) -> CostCenter:
    validate_slug(slug, field="slug")
    if find_cost_center(tenant_id, slug, session=session) is not None:
        raise ConflictError(f"cost center {slug!r} already exists", field="slug")
    cost_center = CostCenter(
        tenant_id=tenant_id,
        slug=slug,
        name=_clean_name(name, fallback=slug, field="name", what="a cost center's name"),
        is_default=False,
        created_at=utc_now(),
    )
    session.add(cost_center)
    _commit_unique(session, f"cost center {slug!r} already exists", field="slug")
    return cost_center


def list_cost_centers(tenant_id: str, *, session: Session) -> list[CostCenter]:
    return list(
        session.scalars(
            select(CostCenter).where(CostCenter.tenant_id == tenant_id).order_by(CostCenter.slug)
        )
    )


def get_cost_center(tenant_id: str, slug: str, *, session: Session) -> CostCenter:
    found = find_cost_center(tenant_id, slug, session=session)
    if found is None:
        raise NotFoundError(f"cost center {slug!r} not found", field="slug")
    return found


def _team_views(tenant_id: str, session: Session, *, slug: str | None = None) -> list[TeamView]:
    query = (
        select(Team, CostCenter.slug)
        .outerjoin(CostCenter, CostCenter.id == Team.cost_center_id)
        .where(Team.tenant_id == tenant_id)
        .order_by(Team.slug)
    )
    if slug is not None:
        query = query.where(Team.slug == slug)
    return [
        TeamView(slug=team.slug, name=team.name, cost_center=cc_slug, created_at=team.created_at)
        for team, cc_slug in session.execute(query)
    ]


def create_team(
    tenant_id: str,
    slug: str,
    *,
    name: str | None = None,
    cost_center: str | None = None,
    session: Session,
) -> TeamView:
    """A team; `cost_center` (a slug) is the default for apps the team registers."""
    validate_slug(slug, field="slug")
    if find_team(tenant_id, slug, session=session) is not None:
        raise ConflictError(f"team {slug!r} already exists", field="slug")
    cc = (
        require_cost_center(tenant_id, cost_center, field="cost_center", session=session)
        if cost_center is not None
        else None
    )
    team = Team(
        tenant_id=tenant_id,
        slug=slug,
        name=_clean_name(name, fallback=slug, field="name", what="a team's name"),
        cost_center_id=cc.id if cc is not None else None,
        created_at=utc_now(),
    )
    session.add(team)
    _commit_unique(session, f"team {slug!r} already exists", field="slug")
    return TeamView(
        slug=team.slug,
        name=team.name,
        cost_center=cc.slug if cc is not None else None,
        created_at=team.created_at,
    )


def list_teams(tenant_id: str, *, session: Session) -> list[TeamView]:
    return _team_views(tenant_id, session)


def get_team(tenant_id: str, slug: str, *, session: Session) -> TeamView:
    found = _team_views(tenant_id, session, slug=slug)
    if not found:
        raise NotFoundError(f"team {slug!r} not found", field="slug")
    return found[0]


# --- principals and API keys -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PrincipalView:
    id: str
    name: str
    kind: str
    role: str
    team: str | None
    app_id: str | None
    created_at: datetime


class KeyStatus(enum.StrEnum):
    ACTIVE = "active"
    EXPIRED = "expired"
    REVOKED = "revoked"


@dataclass(frozen=True, slots=True)
class ApiKeyView:
    key_id: str
    principal_id: str
    principal_name: str
    status: KeyStatus
    created_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None


def key_status(
    *, revoked_at: datetime | None, expires_at: datetime | None, now: datetime
) -> KeyStatus:
    if revoked_at is not None:
        return KeyStatus.REVOKED
    if expires_at is not None and expires_at <= now:
        return KeyStatus.EXPIRED
    return KeyStatus.ACTIVE


def team_app_principals(tenant_id: str, team_id: str) -> ColumnElement[bool]:
    """The condition on `Principal` of the app principals (role `app`) of the apps team
    `team_id` owns now: those a team-member of it manages."""
    from quartermaster.catalog.models import App  # catalog builds on tenancy, not the reverse

    team_apps = select(App.app_id).where(App.tenant_id == tenant_id, App.team_id == team_id)
    return (Principal.role == Role.APP.value) & Principal.app_slug.in_(team_apps)


def _principal_views(
    tenant_id: str,
    session: Session,
    *,
    principal_id: str | None = None,
    apps_of_team: str | None = None,
) -> list[PrincipalView]:
    query = (
        select(Principal, Team.slug)
        .outerjoin(Team, Team.id == Principal.team_id)
        .where(Principal.tenant_id == tenant_id)
        .order_by(Principal.name)
    )
    if principal_id is not None:
        query = query.where(Principal.id == principal_id)
    if apps_of_team is not None:
        query = query.where(team_app_principals(tenant_id, apps_of_team))
    return [
        PrincipalView(
            id=p.id,
            name=p.name,
            kind=p.kind,
            role=p.role,
            team=team_slug,
            app_id=p.app_slug,
            created_at=p.created_at,
        )
        for p, team_slug in session.execute(query)
    ]


def register_principal(
    tenant_id: str,
    name: str,
    *,
    role: Role,
    kind: PrincipalKind = PrincipalKind.USER,
    team: str | None = None,
    app_id: str | None = None,
    actor: str | None = None,
    session: Session,
) -> PrincipalView:
    """A user or service account. team-member needs a team (slug), app needs an app_id; each
    only applies to its role, so a stray one is refused rather than silently ignored."""
    from quartermaster.catalog.models import App  # catalog builds on tenancy, not the reverse

    name = _clean_name(name, fallback="", field="name", what="a principal's name")
    if team is not None and role is not Role.TEAM_MEMBER:
        raise InvalidInputError(
            f"team applies only to role 'team-member', not {role.value!r}", field="team"
        )
    if app_id is not None and role is not Role.APP:
        raise InvalidInputError(
            f"app_id applies only to role 'app', not {role.value!r}", field="app_id"
        )
    team_row = require_team(tenant_id, team, field="team", session=session) if team else None
    if app_id is not None:
        exists = session.scalar(
            select(App.id).where(App.tenant_id == tenant_id, App.app_id == app_id)
        )
        if exists is None:
            raise InvalidInputError(f"unknown app {app_id!r}", field="app_id")
    try:
        principal = create_principal(
            tenant_id,
            name,
            role=role,
            kind=kind,
            team_id=team_row.id if team_row is not None else None,
            app_slug=app_id,
            actor=actor,
            session=session,
        )
    except IntegrityError:  # a concurrent request created the same name first
        session.rollback()
        raise ConflictError(f"principal {name!r} already exists", field="name") from None
    return _principal_views(tenant_id, session, principal_id=principal.id)[0]


def list_principals(
    tenant_id: str, *, apps_of_team: str | None = None, session: Session
) -> list[PrincipalView]:
    """The tenant's principals; with `apps_of_team` (a team id) only the app principals of
    that team's apps."""
    return _principal_views(tenant_id, session, apps_of_team=apps_of_team)


def find_principal(tenant_id: str, principal_id: str, *, session: Session) -> Principal:
    """The principal with this id or this name (names are unique within a tenant, and the one
    people remember); 404 naming it when neither. No name may be shaped like an id
    (validate_principal_name), but one stored before that rule can equal another principal's
    id: then the value is refused (409) rather than resolved to either, since a key issued to
    the wrong one hands its rights (an admin's, never expiring) to whoever asked for the other."""
    found = list(
        session.scalars(
            select(Principal).where(
                Principal.tenant_id == tenant_id,
                (Principal.id == principal_id) | (Principal.name == principal_id),
            )
        )
    )
    if not found:
        raise NotFoundError(f"principal {principal_id!r} not found", field="principal_id")
    if len(found) > 1:
        by_id = next(p for p in found if p.id == principal_id)
        by_name = next(p for p in found if p.id != principal_id)
        raise ConflictError(
            f"principal {principal_id!r} is ambiguous: it is the id of principal "
            f"{by_id.name!r} and the name of principal {by_name.id} (a name given before names "
            "shaped like an id were refused); name the one you mean unambiguously: "
            f"{by_id.name!r} by its name, the other by its id {by_name.id}",
            field="principal_id",
        )
    return found[0]


def issue_key_for(
    tenant_id: str,
    principal_id: str,
    *,
    expires_at: datetime | None = None,
    actor: str | None = None,
    session: Session,
) -> IssuedKey:
    """A key for the principal with this id or name (`find_principal`)."""
    principal = find_principal(tenant_id, principal_id, session=session)
    return issue_api_key(principal, expires_at=expires_at, actor=actor, session=session)


def _key_views(
    tenant_id: str,
    session: Session,
    *,
    key_id: str | None = None,
    apps_of_team: str | None = None,
) -> list[ApiKeyView]:
    query = (
        select(ApiKey, Principal.name)
        .join(Principal, Principal.id == ApiKey.principal_id)
        .where(ApiKey.tenant_id == tenant_id)
        .order_by(ApiKey.created_at, ApiKey.id)
    )
    if key_id is not None:
        query = query.where(ApiKey.id == key_id)
    if apps_of_team is not None:
        query = query.where(team_app_principals(tenant_id, apps_of_team))
    now = utc_now()
    return [
        ApiKeyView(
            key_id=key.id,
            principal_id=key.principal_id,
            principal_name=principal_name,
            status=key_status(revoked_at=key.revoked_at, expires_at=key.expires_at, now=now),
            created_at=key.created_at,
            expires_at=key.expires_at,
            revoked_at=key.revoked_at,
        )
        for key, principal_name in session.execute(query)
    ]


def list_api_keys(
    tenant_id: str, *, apps_of_team: str | None = None, session: Session
) -> list[ApiKeyView]:
    """Every key of the tenant, with its status; never a secret or its hash. With
    `apps_of_team` (a team id) only the keys of that team's apps' app principals."""
    return _key_views(tenant_id, session, apps_of_team=apps_of_team)


def find_api_key(tenant_id: str, key_id: str, *, session: Session) -> tuple[ApiKey, Principal]:
    """The tenant's key with this id and its principal; 404 naming it when there is none."""
    row = session.execute(
        select(ApiKey, Principal)
        .join(Principal, Principal.id == ApiKey.principal_id)
        .where(ApiKey.tenant_id == tenant_id, ApiKey.id == key_id)
        # As stored now, not as an earlier read of this session left it: revoke_api_key reads
        # the key again once it holds the tenant's admin-key lock (a revocation meanwhile).
        .execution_options(populate_existing=True)
    ).first()
    if row is None:
        raise NotFoundError(f"API key {key_id!r} not found", field="key_id")
    return row[0], row[1]


def revoke_api_key(
    tenant_id: str, key_id: str, *, actor: str | None = None, session: Session
) -> ApiKeyView:
    """Revoke now; revoking an already revoked key keeps its first revocation time. With
    `actor`, a revocation is recorded in the tenant's audit chain (`revoke-key`)."""
    # Before the key is read, not only before the last-admin-key check: the check and the
    # revocation must see every revocation committed before them, or two admins revoking each
    # other's key at once both pass the check and lock the tenant out.
    lock_tenant_admin_keys(tenant_id, session=session)
    key, principal = find_api_key(tenant_id, key_id, session=session)
    if key.revoked_at is None:
        now = utc_now()
        if _is_last_admin_key(key, now, session=session):
            raise ConflictError(
                f"API key {key_id} is the tenant's last active admin key: revoking it would lock "
                "every administrator out; issue another admin key first, then revoke this one",
                field="key_id",
            )
        key.revoked_at = now
        if actor is not None:
            _audit_key_change(
                tenant_id,
                action="revoke-key",
                actor=actor,
                detail={
                    "key_id": key.id,
                    "principal": principal.name,
                    "principal_id": principal.id,
                    "role": principal.role,
                    "app_id": principal.app_slug,
                },
                session=session,
            )
    session.commit()
    return _key_views(tenant_id, session, key_id=key_id)[0]


def lock_tenant_admin_keys(tenant_id: str, *, session: Session) -> None:
    """Serialize what can leave a tenant without a usable admin key (a revocation checked by
    `_is_last_admin_key`) until the transaction ends, so that each such check sees the ones
    committed before it. PostgreSQL: a transaction-level advisory lock per tenant (a lock on
    the tenant's row would also hold back every insert referencing the tenant). SQLite: every
    writing transaction already starts with BEGIN IMMEDIATE (storage/engine.py), which takes
    the database's write lock before the first read."""
    if session.get_bind().dialect.name == "postgresql":
        digest = hashlib.sha256(f"qm-admin-keys:{tenant_id}".encode()).digest()
        key = int.from_bytes(digest[:8], "big", signed=True)
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": key})


def _is_last_admin_key(key: ApiKey, now: datetime, *, session: Session) -> bool:
    """Whether `key` is an admin's and no other admin key of its tenant is usable at `now`."""
    role = session.scalar(select(Principal.role).where(Principal.id == key.principal_id))
    if role != Role.ADMIN:
        return False
    others = session.scalar(
        select(ApiKey.id)
        .join(Principal, Principal.id == ApiKey.principal_id)
        .where(
            ApiKey.tenant_id == key.tenant_id,
            ApiKey.id != key.id,
            Principal.role == Role.ADMIN,
            ApiKey.revoked_at.is_(None),
            (ApiKey.expires_at.is_(None)) | (ApiKey.expires_at > now),
        )
        .limit(1)
    )
    return others is None
