"""Who may do what to which secret path (pure).

Two kinds of requester reach the broker:
- principals with an API key (admin, team-member, finance, app), decided by role and by which
  team owns the path's scope;
- workloads with an identity token (`app:<app>` or `job:<job>`), decided by the tenant's
  path-based access rules (defaults: an app's and its jobs' tokens read `apps/<app>/*`).
"""

from __future__ import annotations

import enum
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from quartermaster.errors import InvalidInputError
from quartermaster.secrets.paths import SecretPath, pattern_matches
from quartermaster.tenancy.models import Role


class Action(enum.StrEnum):
    READ = "read"  # a value or a dynamic credential, always under a lease
    LIST = "list"  # metadata only
    WRITE = "write"  # new version, rotate, soft-delete, undelete
    DESTROY = "destroy"  # ciphertext gone for good
    CONFIGURE = "configure"  # engines and access rules


class RequesterKind(enum.StrEnum):
    PRINCIPAL = "principal"
    WORKLOAD = "workload"
    SYSTEM = "system"


@dataclass(frozen=True, slots=True)
class Requester:
    """Who is asking, as the broker sees it. `holder` keys the per-app lease quota."""

    tenant_id: str
    kind: RequesterKind
    actor: str  # in audit records: principal:<name>, app:<app>, job:<job>, system:<name>
    role: Role | None = None
    team_id: str | None = None
    team_slug: str | None = None
    app: str | None = None
    job: str | None = None
    principal_id: str | None = None
    token_id: str | None = None
    api_key_id: str | None = None  # the API key a principal called with (it mints tokens)
    minted_by: str | None = None  # a workload's: the API key that minted its identity token
    token_expires_at: datetime | None = None  # a workload's: when its identity token expires

    @property
    def holder(self) -> str:
        if self.app is not None:
            return f"app:{self.app}"
        if self.principal_id is not None:
            return f"principal:{self.principal_id}"
        return self.actor

    @property
    def key_id(self) -> str | None:
        """The API key behind the request: the one called with, or the one that minted the
        identity token called with. A lease obtained with it ends when it is revoked."""
        return self.minted_by if self.kind is RequesterKind.WORKLOAD else self.api_key_id

    @property
    def workload_detail(self) -> dict[str, str]:
        """What an audit record's detail needs to tell which workload acted: its app and its
        token's id (`jti`) for an identity token (the actor, `job:<job>`, names neither);
        nothing for other requesters, whose actor names them."""
        if self.kind is not RequesterKind.WORKLOAD:
            return {}
        detail = {"app": self.app} if self.app is not None else {}
        if self.token_id is not None:
            detail["token_id"] = self.token_id
        return detail

    @property
    def workload_role(self) -> str | None:
        if self.kind is not RequesterKind.WORKLOAD and self.role is not Role.APP:
            return None
        if self.job is not None:
            return f"job:{self.job}"
        return f"app:{self.app}"


@dataclass(frozen=True, slots=True)
class AccessRule:
    """`role` is `app:<app|*>` or `job:<job|*>`; `paths` may use {app}, {team}, {job}."""

    role: str
    paths: tuple[str, ...]


DEFAULT_RULES: tuple[AccessRule, ...] = (
    AccessRule(role="app:*", paths=("apps/{app}/*",)),
    AccessRule(role="job:*", paths=("apps/{app}/*",)),
)

_ROLE = re.compile(r"^(app|job):(\*|[a-z0-9][a-z0-9-]{0,62}|[A-Za-z0-9][A-Za-z0-9._-]{0,127})$")
_PLACEHOLDER = re.compile(r"\{([a-z]+)\}")
_KNOWN_PLACEHOLDERS = {"app", "team", "job"}


def validate_rules(rules: Sequence[AccessRule]) -> tuple[AccessRule, ...]:
    for index, rule in enumerate(rules):
        field = f"rules[{index}]"
        if not _ROLE.match(rule.role):
            raise InvalidInputError(
                f"{field}.role {rule.role!r} must be app:<app>, app:*, job:<job> or job:*",
                field=f"{field}.role",
            )
        if not rule.paths:
            raise InvalidInputError(f"{field}.paths is empty", field=f"{field}.paths")
        for p_index, pattern in enumerate(rule.paths):
            unknown = set(_PLACEHOLDER.findall(pattern)) - _KNOWN_PLACEHOLDERS
            if unknown:
                raise InvalidInputError(
                    f"{field}.paths[{p_index}] {pattern!r} uses unknown placeholder "
                    f"{sorted(unknown)[0]!r} (known: app, team, job)",
                    field=f"{field}.paths",
                )
            if not pattern.startswith(("apps/", "teams/")):
                raise InvalidInputError(
                    f"{field}.paths[{p_index}] {pattern!r} must start with apps/ or teams/",
                    field=f"{field}.paths",
                )
    return tuple(rules)


def _role_matches(rule_role: str, role: str) -> bool:
    rule_kind, _, rule_name = rule_role.partition(":")
    kind, _, name = role.partition(":")
    return rule_kind == kind and rule_name in ("*", name)


def _expand(pattern: str, requester: Requester) -> str | None:
    values = {"app": requester.app, "team": requester.team_slug, "job": requester.job}
    missing = [name for name in _PLACEHOLDER.findall(pattern) if values.get(name) is None]
    if missing:
        return None  # a rule about {team} cannot grant anything to a token without a team
    return _PLACEHOLDER.sub(lambda m: str(values[m.group(1)]), pattern)


def matching_rule(
    requester: Requester, path: str, rules: Sequence[AccessRule]
) -> tuple[AccessRule, str] | None:
    """The first rule (and its expanded pattern) that lets this workload read `path`."""
    role = requester.workload_role
    if role is None:
        return None
    for rule in rules:
        if not _role_matches(rule.role, role):
            continue
        for pattern in rule.paths:
            expanded = _expand(pattern, requester)
            if expanded is not None and pattern_matches(expanded, path):
                return rule, expanded
    return None


def principal_denial(
    requester: Requester,
    action: Action,
    target: SecretPath,
    *,
    scope_team_id: str | None,
    rules: Sequence[AccessRule],
) -> str | None:
    """None when allowed; otherwise why not (for the error and the audit record).

    `scope_team_id` is the id of the team owning the path's scope (the team itself for
    teams/<team>/, the app's team for apps/<app>/), None when the scope does not exist."""
    if requester.kind is RequesterKind.SYSTEM:
        return None
    if requester.kind is RequesterKind.WORKLOAD or requester.role is Role.APP:
        if action is not Action.READ:
            return f"{requester.actor} may only read secrets, not {action.value}"
        if matching_rule(requester, target.path, rules) is None:
            return (
                f"no access rule lets {requester.workload_role} read {target.path!r} "
                f"(see GET /v1/secrets/access-rules)"
            )
        return None
    if requester.role is Role.ADMIN:
        return None
    if requester.role is Role.TEAM_MEMBER:
        if action is Action.CONFIGURE:
            return "only an admin may configure engines and access rules"
        if scope_team_id is None or scope_team_id != requester.team_id:
            return f"{target.scope_prefix} does not belong to your team"
        return None
    role = requester.role.value if requester.role is not None else "unknown"
    return f"role {role!r} has no access to secrets"
