"""App registration, dated ownership and signing keys. Services take `session` keyword-only
and commit their unit of work; every query is scoped to the caller's tenant.

Ownership is dated: each change of team or cost center closes the current AppAssignment at
`effective_at` and opens a new one, so billing charges each owner for its own part of a period
(`app_owner_at`, `assignments_for_tenant`)."""

from __future__ import annotations

import re
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from sqlalchemy import Select, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, aliased

from quartermaster.catalog import search_index
from quartermaster.catalog.access import (
    chooses_who_pays,
    ensure_may_read,
    ensure_may_reassign,
    ensure_may_use_cost_center,
    ensure_may_write,
)
from quartermaster.catalog.models import (
    App,
    AppAssignment,
    AppSigningKey,
    Lifecycle,
    SigningKeyStatus,
)
from quartermaster.catalog.signing_keys import (
    NewSigningKey,
    create_signing_key,
    retire_signing_key,
)
from quartermaster.domain.display_text import display_text_problem
from quartermaster.domain.events import SLUG_PATTERN
from quartermaster.domain.timeutil import Period, moment_text, utc_now
from quartermaster.errors import ConflictError, InvalidInputError, NotFoundError
from quartermaster.tenancy.models import CostCenter, Team
from quartermaster.tenancy.service import (
    AuthContext,
    require_cost_center,
    require_team,
    validate_slug,
)

_ENVIRONMENT = re.compile(SLUG_PATTERN)
# Fixed routes under /v1/apps/: an app of that name could never be addressed by URL.
RESERVED_APP_IDS = frozenset({"search", "validate", "manifest-schema"})


@dataclass(frozen=True, slots=True)
class AppView:
    app_id: str
    title: str
    owner: str
    team: str
    cost_center: str
    lifecycle: Lifecycle
    environment: str
    require_signatures: bool
    created_by: str
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True, slots=True)
class OwnershipSpan:
    """Team and cost center (slugs) that owned `app_id` over [valid_from, valid_to)."""

    app_id: str
    team: str
    cost_center: str
    valid_from: datetime
    valid_to: datetime | None


@dataclass(frozen=True, slots=True)
class AppDetail:
    app: AppView
    ownership: list[OwnershipSpan]
    # After a back-dated change of team or cost center: the usage already rated stays with
    # the earlier owner until a replay (docs/usage.md, "Determinism").
    rated_usage_note: str | None = None


@dataclass(frozen=True, slots=True)
class AppRegistration:
    """A registration request; owner, team and cost center may be missing, and are refused
    then with a message naming the missing field (the cost center falls back to the team's
    default cost center)."""

    app_id: str
    owner: str | None
    team: str | None
    cost_center: str | None = None
    title: str | None = None
    lifecycle: Lifecycle = Lifecycle.PERSISTENT
    environment: str = "production"
    require_signatures: bool = False
    owned_since: datetime | None = None  # back-dates the first ownership span (default now)


@dataclass(frozen=True, slots=True)
class AppChanges:
    """None leaves a field as it is. `effective_at` dates a change of team or cost center."""

    title: str | None = None
    owner: str | None = None
    lifecycle: Lifecycle | None = None
    environment: str | None = None
    require_signatures: bool | None = None
    team: str | None = None
    cost_center: str | None = None
    effective_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class SigningKeyView:
    key_id: str
    app_id: str
    status: SigningKeyStatus
    created_at: datetime
    retired_at: datetime | None


# --- pure rules ------------------------------------------------------------------------------


_NEEDS = "every app needs an owner, a team and a cost center"


def _required_text(
    value: str | None, *, field: str, max_length: int = 200, why: str = _NEEDS
) -> str:
    text = (value or "").strip()
    if not text:
        raise InvalidInputError(f"{field} is missing: {why}", field=field)
    if len(text) > max_length:
        raise InvalidInputError(
            f"{field} has {len(text)} characters; at most {max_length} are accepted",
            field=field,
        )
    problem = display_text_problem(text, field=field)
    if problem is not None:
        raise InvalidInputError(problem, field=field)
    return text


def validate_environment(value: str) -> str:
    """An app's, resource's or override's environment: a slug, as an event's
    `data.environment` is, so that every name given here can match the events that carry it."""
    if not _ENVIRONMENT.match(value):
        raise InvalidInputError(
            f"environment {value!r} must be a slug, as an event's data.environment is: "
            "1-64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit",
            field="environment",
        )
    return value


def plan_ownership_change(
    *, current_from: datetime, effective_at: datetime, now: datetime
) -> Literal["replace", "split"]:
    """How a dated change of owner applies to the open assignment that began at
    `current_from`: split it at `effective_at`, or replace it when both start together (an
    empty [t, t) span would be noise). Backdating before the open assignment would rewrite
    history already closed, and a future date would make the current owner wrong today."""
    if effective_at < current_from:
        raise InvalidInputError(
            f"effective_at {moment_text(effective_at)} is earlier than the current ownership, "
            f"which began at {moment_text(current_from)}",
            field="effective_at",
        )
    if effective_at > now:
        raise InvalidInputError(
            f"effective_at {moment_text(effective_at)} is in the future; ownership changes "
            "take effect now or at a past instant",
            field="effective_at",
        )
    return "replace" if effective_at == current_from else "split"


# --- queries ---------------------------------------------------------------------------------


def app_query(tenant_id: str) -> Select[App, str, str]:
    """Each app of the tenant with its team's and cost center's slugs, by app id."""
    return (
        select(App, Team.slug, CostCenter.slug)
        .join(Team, Team.id == App.team_id)
        .join(CostCenter, CostCenter.id == App.cost_center_id)
        .where(App.tenant_id == tenant_id)
        .order_by(App.app_id)
    )


def view_of(app: App, team_slug: str, cost_center_slug: str) -> AppView:
    return AppView(
        app_id=app.app_id,
        title=app.title,
        owner=app.owner,
        team=team_slug,
        cost_center=cost_center_slug,
        lifecycle=Lifecycle(app.lifecycle),
        environment=app.environment,
        require_signatures=app.require_signatures,
        created_by=app.created_by,
        created_at=app.created_at,
        updated_at=app.updated_at,
    )


def _app_view(tenant_id: str, app_id: str, session: Session) -> AppView:
    row = session.execute(app_query(tenant_id).where(App.app_id == app_id)).one()
    return view_of(*row)


def find_app(tenant_id: str, app_id: str, *, session: Session, lock: bool = False) -> App | None:
    query = select(App).where(App.tenant_id == tenant_id, App.app_id == app_id)
    return session.scalar(query.with_for_update() if lock else query)


def load_app(tenant_id: str, app_id: str, *, session: Session, lock: bool = False) -> App:
    """An app named in the URL: unknown is 404."""
    app = find_app(tenant_id, app_id, session=session, lock=lock)
    if app is None:
        raise NotFoundError(f"app {app_id!r} not found", field="app_id")
    return app


def _ownership(
    tenant_id: str, *, app_pk: str | None = None
) -> Select[str, str, str, datetime, datetime | None]:
    team, cost_center = aliased(Team), aliased(CostCenter)
    query = (
        select(
            App.app_id,
            team.slug,
            cost_center.slug,
            AppAssignment.valid_from,
            AppAssignment.valid_to,
        )
        .join(App, App.id == AppAssignment.app_pk)
        .join(team, team.id == AppAssignment.team_id)
        .join(cost_center, cost_center.id == AppAssignment.cost_center_id)
        .where(AppAssignment.tenant_id == tenant_id)
        .order_by(App.app_id, AppAssignment.valid_from)
    )
    return query if app_pk is None else query.where(AppAssignment.app_pk == app_pk)


def get_app(caller: AuthContext, app_id: str, *, session: Session) -> AppDetail:
    app = load_app(caller.tenant_id, app_id, session=session)
    ensure_may_read(caller, team_id=app.team_id, what=f"app {app_id!r}")
    spans = [
        OwnershipSpan(*row) for row in session.execute(_ownership(caller.tenant_id, app_pk=app.id))
    ]
    return AppDetail(app=_app_view(caller.tenant_id, app_id, session), ownership=spans)


def app_owner_at(
    tenant_id: str, app_id: str, at: datetime, *, session: Session
) -> tuple[str, str] | None:
    """(team slug, cost center slug) that owned the app at `at`, or None (unknown app, or
    before its registration)."""
    query = (
        _ownership(tenant_id)
        .where(App.app_id == app_id, AppAssignment.valid_from <= at)
        .where((AppAssignment.valid_to.is_(None)) | (AppAssignment.valid_to > at))
    )
    row = session.execute(query).first()
    return None if row is None else (row[1], row[2])


def assignments_for_tenant(
    tenant_id: str, *, period: Period | None = None, session: Session
) -> list[OwnershipSpan]:
    """Every ownership span of the tenant's apps (those overlapping `period` if given), ordered
    by app and start, for joining usage to owners in bulk."""
    query = _ownership(tenant_id)
    if period is not None:
        query = query.where(AppAssignment.valid_from < period.end).where(
            (AppAssignment.valid_to.is_(None)) | (AppAssignment.valid_to > period.start)
        )
    return [OwnershipSpan(*row) for row in session.execute(query)]


def team_cost_centers(tenant_id: str, team: Team, *, session: Session) -> list[str]:
    """Slugs of the cost centers a team already pays with, as an admin decided: its default
    cost center and those its apps are on now (sorted)."""
    ids = set(
        session.scalars(
            select(App.cost_center_id).where(App.tenant_id == tenant_id, App.team_id == team.id)
        )
    )
    if team.cost_center_id is not None:
        ids.add(team.cost_center_id)
    if not ids:
        return []
    slugs = session.scalars(
        select(CostCenter.slug).where(CostCenter.tenant_id == tenant_id, CostCenter.id.in_(ids))
    )
    return sorted(slugs)


# --- writes ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckedRegistration:
    """A registration whose every field and reference is in order, resolved to rows."""

    app_id: str
    owner: str
    team: Team
    cost_center: CostCenter
    environment: str
    title: str
    now: datetime
    owned_since: datetime


def check_registration(
    caller: AuthContext, registration: AppRegistration, *, session: Session
) -> CheckedRegistration:
    """Everything `register_app` checks, storing nothing: it raises what registering would
    (also the dry run of publishing an app's first version, `POST /v1/apps/validate`)."""
    tenant_id = caller.tenant_id
    app_id = validate_slug(registration.app_id, field="app_id")
    if app_id in RESERVED_APP_IDS:
        raise InvalidInputError(
            f"app_id {app_id!r} is reserved: /v1/apps/{app_id} is an API route", field="app_id"
        )
    owner = _required_text(registration.owner, field="owner")
    team_slug = _required_text(registration.team, field="team", max_length=64)
    team = require_team(tenant_id, team_slug, field="team", session=session)
    ensure_may_write(caller, team_id=team.id, what=f"team {team_slug!r}")
    if registration.cost_center is not None and registration.cost_center.strip():
        cost_center = require_cost_center(
            tenant_id, registration.cost_center.strip(), field="cost_center", session=session
        )
    elif team.cost_center_id is not None:
        cost_center = session.get_one(CostCenter, team.cost_center_id)
    else:
        raise InvalidInputError(
            f"cost_center is missing and team {team_slug!r} has no default cost center: {_NEEDS}",
            field="cost_center",
        )
    if not chooses_who_pays(caller):
        ensure_may_use_cost_center(
            caller,
            cost_center=cost_center.slug,
            team=team_slug,
            allowed=team_cost_centers(tenant_id, team, session=session),
        )
    environment = validate_environment(registration.environment)
    title = app_id
    if registration.title is not None and registration.title.strip():
        title = _required_text(registration.title, field="title")
    if find_app(tenant_id, app_id, session=session) is not None:
        raise ConflictError(f"app {app_id!r} already exists", field="app_id")
    now = utc_now()
    owned_since = registration.owned_since or now
    if owned_since > now:
        raise InvalidInputError(
            f"owned_since {moment_text(owned_since)} is in the future: ownership is recorded "
            "from now or an earlier moment",
            field="owned_since",
        )
    return CheckedRegistration(
        app_id, owner, team, cost_center, environment, title, now, owned_since
    )


def register_app(
    caller: AuthContext, registration: AppRegistration, *, session: Session
) -> AppView:
    """Register an app and open its first ownership span [owned_since (default now), open).
    Back-dating is for apps that already ran before they were registered (an inventory being
    imported, a replayed history): their earlier usage then has an owner to be charged to."""
    checked = check_registration(caller, registration, session=session)
    team, cost_center = checked.team, checked.cost_center
    app = App(
        tenant_id=caller.tenant_id,
        app_id=checked.app_id,
        title=checked.title,
        owner=checked.owner,
        team_id=team.id,
        cost_center_id=cost_center.id,
        lifecycle=registration.lifecycle.value,
        environment=checked.environment,
        require_signatures=registration.require_signatures,
        created_by=caller.principal_name,
        created_at=checked.now,
        updated_at=checked.now,
    )
    session.add(app)
    session.flush()
    session.add(
        AppAssignment(
            tenant_id=caller.tenant_id,
            app_pk=app.id,
            team_id=team.id,
            cost_center_id=cost_center.id,
            valid_from=checked.owned_since,
            valid_to=None,
        )
    )
    try:
        session.commit()
    except IntegrityError:  # a concurrent registration of the same app_id won
        session.rollback()
        raise ConflictError(f"app {checked.app_id!r} already exists", field="app_id") from None
    return view_of(app, team.slug, cost_center.slug)


def update_app(
    caller: AuthContext, app_id: str, changes: AppChanges, *, session: Session
) -> AppDetail:
    tenant_id = caller.tenant_id
    app = load_app(tenant_id, app_id, session=session, lock=True)
    ensure_may_write(caller, team_id=app.team_id, what=f"app {app_id!r}")
    if changes.title is not None:
        app.title = _required_text(changes.title, field="title", why="a title may not be blank")
    if changes.owner is not None:
        app.owner = _required_text(changes.owner, field="owner")
    if changes.lifecycle is not None:
        app.lifecycle = changes.lifecycle.value
    if changes.environment is not None:
        app.environment = validate_environment(changes.environment)
    if changes.require_signatures is not None:
        app.require_signatures = changes.require_signatures
    note = _change_ownership(caller, app, changes, session)
    app.updated_at = utc_now()
    session.flush()
    # Title, owner and team are part of the app's search document: re-index in this
    # transaction, so search never shows the old name after a rename.
    search_index.sync_app(tenant_id, app.id, session=session)
    session.commit()
    return replace(get_app(caller, app_id, session=session), rated_usage_note=note)


def rated_usage_note(app_id: str, since: datetime, team: str, cost_center: str) -> str:
    """What a back-dated move leaves as it was (pure): the pipeline attributed the usage it
    already rated with the owner it knew then."""
    return (
        f"usage of app {app_id!r} since {moment_text(since)} that was already rated stays with "
        f"team {team!r} (cost center {cost_center!r}) until `qm pipeline replay` "
        "(POST /v1/pipeline/replay) rates it again; usage rated from now on goes to the new "
        "owner (docs/usage.md, Determinism). A replay over finalized billing documents needs "
        "--force and may change what reproduces them: adjust them after"
    )


def _change_ownership(
    caller: AuthContext, app: App, changes: AppChanges, session: Session
) -> str | None:
    """Apply a change of team or cost center; for a back-dated one, what it leaves as it was
    (`rated_usage_note`)."""
    team_id, cost_center_id = app.team_id, app.cost_center_id
    if changes.team is not None:
        team_id = require_team(caller.tenant_id, changes.team, field="team", session=session).id
    if changes.cost_center is not None:
        cost_center_id = require_cost_center(
            caller.tenant_id, changes.cost_center, field="cost_center", session=session
        ).id
    if (team_id, cost_center_id) == (app.team_id, app.cost_center_id):
        if changes.effective_at is not None:
            raise InvalidInputError(
                "effective_at dates a change of team or cost_center, and neither changes",
                field="effective_at",
            )
        return None
    ensure_may_reassign(caller)
    current = session.scalars(
        select(AppAssignment)
        .where(AppAssignment.app_pk == app.id, AppAssignment.valid_to.is_(None))
        .with_for_update()
    ).one()
    now = utc_now()
    effective_at = changes.effective_at or now
    if (
        plan_ownership_change(current_from=current.valid_from, effective_at=effective_at, now=now)
        == "replace"
    ):
        current.team_id, current.cost_center_id = team_id, cost_center_id
    else:
        current.valid_to = effective_at
        session.add(
            AppAssignment(
                tenant_id=app.tenant_id,
                app_pk=app.id,
                team_id=team_id,
                cost_center_id=cost_center_id,
                valid_from=effective_at,
                valid_to=None,
            )
        )
    old_team, old_center = (
        session.get(Team, app.team_id),
        session.get(CostCenter, app.cost_center_id),
    )
    app.team_id, app.cost_center_id = team_id, cost_center_id
    if effective_at >= now or old_team is None or old_center is None:
        return None
    return rated_usage_note(app.app_id, effective_at, old_team.slug, old_center.slug)


# --- signing keys ----------------------------------------------------------------------------


def _signing_key_view(key: AppSigningKey, app_id: str) -> SigningKeyView:
    return SigningKeyView(
        key_id=key.id,
        app_id=app_id,
        status=SigningKeyStatus(key.status),
        created_at=key.created_at,
        retired_at=key.retired_at,
    )


def add_signing_key(
    caller: AuthContext, app_id: str, *, server_key: bytes, session: Session
) -> NewSigningKey:
    """A new HMAC key (secret returned once). The app row is locked so that two concurrent
    requests cannot both pass the two-active-keys limit."""
    app = load_app(caller.tenant_id, app_id, session=session, lock=True)
    ensure_may_write(caller, team_id=app.team_id, what=f"app {app_id!r}")
    return create_signing_key(app, server_key=server_key, session=session)


def list_signing_keys(
    caller: AuthContext, app_id: str, *, session: Session
) -> list[SigningKeyView]:
    app = load_app(caller.tenant_id, app_id, session=session)
    ensure_may_read(caller, team_id=app.team_id, what=f"app {app_id!r}")
    keys = session.scalars(
        select(AppSigningKey)
        .where(AppSigningKey.tenant_id == caller.tenant_id, AppSigningKey.app_pk == app.id)
        .order_by(AppSigningKey.created_at, AppSigningKey.id)
    )
    return [_signing_key_view(key, app_id) for key in keys]


def retire_app_signing_key(
    caller: AuthContext, app_id: str, key_id: str, *, session: Session
) -> SigningKeyView:
    app = load_app(caller.tenant_id, app_id, session=session)
    ensure_may_write(caller, team_id=app.team_id, what=f"app {app_id!r}")
    key = session.scalar(
        select(AppSigningKey).where(
            AppSigningKey.tenant_id == caller.tenant_id,
            AppSigningKey.app_pk == app.id,
            AppSigningKey.id == key_id,
        )
    )
    if key is None:
        raise NotFoundError(f"signing key {key_id!r} not found for app {app_id!r}", field="key_id")
    retire_signing_key(caller.tenant_id, key_id, session=session)
    session.refresh(key)
    return _signing_key_view(key, app_id)
