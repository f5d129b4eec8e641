"""Principals and API keys as the caller may manage them.

An admin manages every principal and key of its tenant. A team-member manages the app
principals (role `app`) of its own team's apps, and their keys: it creates such principals,
issues, lists and revokes their keys, so the team's running app holds a credential of its own
instead of a person's key. Keys a team-member issues expire within
`TEAM_MEMBER_KEY_MAX_LIFETIME` (that long when it names no expiry). Every change is recorded
in the tenant's audit chain (`create-principal`, `issue-key`, `revoke-key`), and so is every
refusal of a team-member (outcome `denied`), before the 403 is raised."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NoReturn

from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.domain.timeutil import moment_text, utc_now
from quartermaster.errors import PermissionDeniedError
from quartermaster.tenancy import service
from quartermaster.tenancy.models import Principal, PrincipalKind, Role, Team
from quartermaster.tenancy.service import (
    ApiKeyView,
    AuthContext,
    IssuedKey,
    PrincipalView,
)

# The longest a key issued by a team-member lives, and its lifetime when none is asked for.
TEAM_MEMBER_KEY_MAX_LIFETIME = timedelta(days=90)
_MAX_DAYS = TEAM_MEMBER_KEY_MAX_LIFETIME.days

_RULE = "a team-member manages only app principals (role 'app') of its own team's apps"


def actor_of(caller: AuthContext) -> str:
    return f"principal:{caller.principal_name}"


def _team_scope(caller: AuthContext) -> str | None:
    """The team whose apps' app principals the caller manages, or None for all (admin)."""
    if caller.role is Role.ADMIN:
        return None
    if caller.role is Role.TEAM_MEMBER:
        return caller.team_id or ""  # a team-member without a team manages nothing
    raise PermissionDeniedError(
        f"role {caller.role.value!r} may not manage principals or API keys "
        "(needs one of: admin, team-member)"
    )


def _reader_scope(caller: AuthContext) -> str | None:
    """Which principals and keys the caller lists: all (admin, finance) or a team's apps'."""
    if caller.role is Role.FINANCE:
        return None
    return _team_scope(caller)


def _refuse(
    caller: AuthContext,
    message: str,
    *,
    action: str,
    field: str | None = None,
    detail: dict[str, Any],
    session: Session,
) -> NoReturn:
    """Discard the request's work, commit a `denied` record naming the reason, raise 403."""
    from quartermaster.audit.log import append_audit  # audit builds on tenancy

    session.rollback()
    append_audit(
        caller.tenant_id,
        action=action,
        outcome="denied",
        actor=actor_of(caller),
        detail={"reason": message, **detail},
        session=session,
    )
    session.commit()
    raise PermissionDeniedError(message, field=field)


def _team_slug(caller: AuthContext, *, session: Session) -> str:
    slug = session.scalar(select(Team.slug).where(Team.id == caller.team_id))
    return slug or "(none)"


def _app_team_id(tenant_id: str, app_id: str, *, session: Session) -> str | None:
    """The team that owns app `app_id` now, or None when the tenant has no such app."""
    from quartermaster.catalog.models import App  # catalog builds on tenancy, not the reverse

    return session.scalar(
        select(App.team_id).where(App.tenant_id == tenant_id, App.app_id == app_id)
    )


def create_principal(
    caller: AuthContext,
    name: str,
    *,
    role: Role,
    kind: PrincipalKind,
    team: str | None,
    app_id: str | None,
    session: Session,
) -> PrincipalView:
    """A principal created by `caller`: an admin any; a team-member only an app principal of
    one of its own team's apps (403 naming the rule otherwise, audited)."""
    scope = _team_scope(caller)
    if scope is not None:
        detail = {"principal": name, "role": role.value, "app_id": app_id}
        if role is not Role.APP:
            _refuse(
                caller,
                f"role 'team-member' may not create a principal of role {role.value!r}: "
                f"{_RULE} (an admin creates the others)",
                action="create-principal",
                field="role",
                detail=detail,
                session=session,
            )
        owner = _app_team_id(caller.tenant_id, app_id, session=session) if app_id else None
        if owner is not None and owner != scope:
            _refuse(
                caller,
                f"role 'team-member' may not create a principal for app {app_id!r}: it belongs "
                f"to another team than {_team_slug(caller, session=session)!r}, and {_RULE}",
                action="create-principal",
                field="app_id",
                detail=detail,
                session=session,
            )
    return service.register_principal(
        caller.tenant_id,
        name,
        role=role,
        kind=kind,
        team=team,
        app_id=app_id,
        actor=actor_of(caller),
        session=session,
    )


def list_principals(caller: AuthContext, *, session: Session) -> list[PrincipalView]:
    """Admin and finance: every principal of the tenant; a team-member: its team's apps' app
    principals only."""
    return service.list_principals(
        caller.tenant_id, apps_of_team=_reader_scope(caller), session=session
    )


def _managed_by(principal: Principal, scope: str, *, session: Session) -> str | None:
    """Why a team-member of team `scope` may not manage `principal`'s keys ("is not ...",
    said of the principal), or None."""
    if principal.role != Role.APP.value or principal.app_slug is None:
        return "is not an app principal (role 'app')"
    owner = _app_team_id(principal.tenant_id, principal.app_slug, session=session)
    if owner != scope:
        return f"is the app principal of app {principal.app_slug!r}, which belongs to another team"
    return None


def issue_key(
    caller: AuthContext,
    principal_id: str,
    *,
    expires_at: datetime | None,
    session: Session,
) -> IssuedKey:
    """A key of the principal with this id or name, issued by `caller`. A team-member issues
    keys only of its team's apps' app principals, expiring within
    `TEAM_MEMBER_KEY_MAX_LIFETIME` (that long when `expires_at` is None)."""
    scope = _team_scope(caller)
    principal = service.find_principal(caller.tenant_id, principal_id, session=session)
    if scope is not None:
        detail: dict[str, Any] = {
            "principal": principal.name,
            "principal_id": principal.id,
            "expires_at": None if expires_at is None else expires_at.isoformat(),
        }
        why = _managed_by(principal, scope, session=session)
        if why is not None:
            _refuse(
                caller,
                f"role 'team-member' may not issue a key for principal {principal.name!r}: "
                f"it {why}, and {_RULE}",
                action="issue-key",
                field="principal_id",
                detail=detail,
                session=session,
            )
        latest = utc_now() + TEAM_MEMBER_KEY_MAX_LIFETIME
        if expires_at is None:
            expires_at = latest
        elif expires_at > latest:
            _refuse(
                caller,
                f"role 'team-member' may issue keys expiring within {_MAX_DAYS} days (by "
                f"{moment_text(latest)}), not at {moment_text(expires_at)}: an admin issues "
                "longer-lived keys",
                action="issue-key",
                field="expires_at",
                detail=detail,
                session=session,
            )
    return service.issue_api_key(
        principal, expires_at=expires_at, actor=actor_of(caller), session=session
    )


def list_keys(caller: AuthContext, *, session: Session) -> list[ApiKeyView]:
    """Admin and finance: every key of the tenant; a team-member: the keys of its team's apps'
    app principals only."""
    return service.list_api_keys(
        caller.tenant_id, apps_of_team=_reader_scope(caller), session=session
    )


def revoke_key(caller: AuthContext, key_id: str, *, session: Session) -> ApiKeyView:
    """Revoke a key now: an admin any (but the last admin key), a team-member only a key of
    its team's apps' app principals."""
    scope = _team_scope(caller)
    if scope is not None:
        _key, principal = service.find_api_key(caller.tenant_id, key_id, session=session)
        why = _managed_by(principal, scope, session=session)
        if why is not None:
            _refuse(
                caller,
                f"role 'team-member' may not revoke API key {key_id}: its principal "
                f"{principal.name!r} {why}, and {_RULE}",
                action="revoke-key",
                field="key_id",
                detail={"key_id": key_id, "principal": principal.name},
                session=session,
            )
    return service.revoke_api_key(caller.tenant_id, key_id, actor=actor_of(caller), session=session)
