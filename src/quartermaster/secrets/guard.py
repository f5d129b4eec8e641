"""Authorization and denials for broker operations: every refusal is audited, in a transaction
of its own, before the error reaches the caller."""

from __future__ import annotations

import json
from typing import Any, NoReturn

from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.audit.log import append_audit
from quartermaster.catalog.models import App
from quartermaster.errors import NotFoundError, PermissionDeniedError, QMError
from quartermaster.secrets.access import (
    DEFAULT_RULES,
    AccessRule,
    Action,
    Requester,
    RequesterKind,
    principal_denial,
    validate_rules,
)
from quartermaster.secrets.models import AccessRuleSet
from quartermaster.secrets.paths import SecretPath
from quartermaster.tenancy.models import Role, Team


def scope_team_id(tenant_id: str, target: SecretPath, *, session: Session) -> str | None:
    """The team owning the path's scope, or None when the app/team does not exist."""
    if target.scope_kind == "teams":
        return session.scalar(
            select(Team.id).where(Team.tenant_id == tenant_id, Team.slug == target.owner)
        )
    return session.scalar(
        select(App.team_id).where(App.tenant_id == tenant_id, App.app_id == target.owner)
    )


def team_scope_prefixes(requester: Requester, *, session: Session) -> list[str]:
    """The path prefixes a team member's team owns: `teams/<team>/` and `apps/<app>/` for each
    of its apps (empty without a team)."""
    if requester.team_id is None:
        return []
    team_slug = session.scalar(
        select(Team.slug).where(Team.tenant_id == requester.tenant_id, Team.id == requester.team_id)
    )
    app_ids = session.scalars(
        select(App.app_id)
        .where(App.tenant_id == requester.tenant_id, App.team_id == requester.team_id)
        .order_by(App.app_id)
    ).all()
    prefixes = [f"apps/{a}/" for a in app_ids]
    if team_slug is not None:
        prefixes.append(f"teams/{team_slug}/")
    return prefixes


def access_rules(tenant_id: str, *, session: Session) -> tuple[AccessRule, ...]:
    raw = session.scalar(select(AccessRuleSet.rules).where(AccessRuleSet.tenant_id == tenant_id))
    if raw is None:
        return DEFAULT_RULES
    return tuple(AccessRule(role=r["role"], paths=tuple(r["paths"])) for r in json.loads(raw))


def rules_to_json(rules: tuple[AccessRule, ...]) -> str:
    return json.dumps([{"role": r.role, "paths": list(r.paths)} for r in validate_rules(rules)])


def refuse(
    requester: Requester,
    error: QMError,
    *,
    action: str,
    path: str | None = None,
    lease_id: str | None = None,
    detail: dict[str, Any] | None = None,
    outcome: str = "denied",
    session: Session,
) -> NoReturn:
    """Discard the operation's uncommitted work, commit an audit record of the refusal, raise."""
    session.rollback()
    append_audit(
        requester.tenant_id,
        action=action,
        outcome=outcome,
        actor=requester.actor,
        path=path,
        lease_id=lease_id,
        detail={"reason": error.message, **requester.workload_detail, **(detail or {})},
        session=session,
    )
    session.commit()
    raise error


def authorize(
    requester: Requester, action: Action, target: SecretPath, *, session: Session
) -> None:
    """Raise (audited) unless the requester may do `action` on `target`."""
    team_id = None
    if requester.role is Role.TEAM_MEMBER:  # only they are decided by the owning team
        team_id = scope_team_id(requester.tenant_id, target, session=session)
    rules: tuple[AccessRule, ...] = ()
    if requester.kind is RequesterKind.WORKLOAD or requester.workload_role is not None:
        rules = access_rules(requester.tenant_id, session=session)
    reason = principal_denial(requester, action, target, scope_team_id=team_id, rules=rules)
    if reason is not None:
        refuse(
            requester,
            PermissionDeniedError(
                f"{requester.actor} may not {action.value} {target.path!r}: {reason}"
            ),
            action=action.value,
            path=target.path,
            session=session,
        )


def role_without_access(requester: Requester) -> str | None:
    """The name of the requester's role when that role may use nothing of the broker
    (finance), else None (admins, team members, app keys, workloads)."""
    if requester.kind is not RequesterKind.PRINCIPAL or requester.role in (
        Role.ADMIN,
        Role.TEAM_MEMBER,
        Role.APP,
    ):
        return None
    return requester.role.value if requester.role is not None else "unknown"


def route_denial(
    requester: Requester, may: frozenset[Role] | None, *, workloads: bool = True
) -> str | None:
    """Why the requester may not call a route at all, whatever path or body it sends; None
    when it may. `may` holds the roles the route is for (a workload identity token counts as
    an app key unless `workloads` is False), None for every role that uses the broker. What
    a role may do to which path is still the service's to decide."""
    role = role_without_access(requester)
    if role is not None:
        return f"role {role!r} has no access to secrets"
    if may is None or requester.kind is RequesterKind.SYSTEM:
        return None
    workload = requester.kind is RequesterKind.WORKLOAD
    held = Role.APP if workload else requester.role
    if held in may and (workloads or not workload):
        return None
    who = " or ".join(_ROLE_NAMES[r] for r in Role if r in may)
    caller = (
        "a workload identity token"
        if requester.kind is RequesterKind.WORKLOAD or held is None
        else f"role {held.value!r}"
    )
    return f"only {who} may, not {caller}"


_ROLE_NAMES = {
    Role.ADMIN: "an admin",
    Role.FINANCE: "finance",
    Role.TEAM_MEMBER: "a team member",
    Role.APP: "an app key",
}


def refuse_listing_without_access(
    requester: Requester, *, what: str, prefix: str, session: Session
) -> None:
    """Raise (audited) when the requester's role has no access to secrets at all (finance):
    listing is refused as reading is, instead of an empty list that reads as 'nothing there'."""
    role = role_without_access(requester)
    if role is None:
        return
    refuse(
        requester,
        PermissionDeniedError(
            f"{requester.actor} may not list {what}: role {role!r} has no access to secrets"
        ),
        action=Action.LIST.value,
        path=prefix or None,
        session=session,
    )


def require_scope(requester: Requester, target: SecretPath, *, session: Session) -> None:
    """Writes need the app or team of the path's scope to exist in the tenant."""
    if requester.kind is RequesterKind.SYSTEM:
        return
    if scope_team_id(requester.tenant_id, target, session=session) is None:
        noun = "app" if target.scope_kind == "apps" else "team"
        raise NotFoundError(
            f"no {noun} {target.owner!r} in this tenant: {target.path!r} must belong to an "
            f"existing {noun}",
            field="path",
        )
