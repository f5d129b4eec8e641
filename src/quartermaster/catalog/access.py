"""Who may see and change which apps (pure): admin and finance see every app of their tenant,
a team-member only its own team's; admin and team-members register and change apps (a
team-member only for its own team), and only an admin decides who pays: moves an app to
another owner, or registers one on a cost center its team does not already pay with."""

from __future__ import annotations

from collections.abc import Sequence

from quartermaster.errors import PermissionDeniedError
from quartermaster.tenancy.models import Role
from quartermaster.tenancy.service import AuthContext

_WRITERS = frozenset({Role.ADMIN, Role.TEAM_MEMBER})
_READERS = frozenset({Role.ADMIN, Role.FINANCE, Role.TEAM_MEMBER})


def visible_team(caller: AuthContext) -> str | None:
    """The only team id whose apps the caller may see, or None for all of the tenant."""
    if caller.role is Role.TEAM_MEMBER:
        return caller.team_id or ""  # a team-member without a team sees nothing
    if caller.role not in _READERS:
        raise PermissionDeniedError(f"role {caller.role.value!r} may not read the catalog")
    return None


def ensure_may_read(caller: AuthContext, *, team_id: str, what: str) -> None:
    scope = visible_team(caller)
    if scope is not None and scope != team_id:
        raise PermissionDeniedError(
            f"role 'team-member' may only read its own team's apps and resources, not {what}"
        )


def ensure_may_write(caller: AuthContext, *, team_id: str, what: str) -> None:
    if caller.role not in _WRITERS:
        raise PermissionDeniedError(
            f"role {caller.role.value!r} may not change the catalog (needs admin or team-member)"
        )
    if caller.role is Role.TEAM_MEMBER and caller.team_id != team_id:
        raise PermissionDeniedError(
            f"role 'team-member' may only register and change its own team's apps and "
            f"resources, not {what}"
        )


def ensure_may_reassign(caller: AuthContext) -> None:
    if caller.role is not Role.ADMIN:
        raise PermissionDeniedError(
            f"role {caller.role.value!r} may not change an app's team or cost center "
            "(only admin may: it changes who pays)"
        )


def chooses_who_pays(caller: AuthContext) -> bool:
    """Whether the caller may put an app on any cost center of the tenant (admin)."""
    return caller.role is Role.ADMIN


def ensure_may_use_cost_center(
    caller: AuthContext, *, cost_center: str, team: str, allowed: Sequence[str]
) -> None:
    """A team-member registers apps only on a cost center its team already pays with (the
    team's default cost center, or one an app of the team is on: `allowed`): registering on
    another is deciding who pays, as moving an app is, and that is an admin's."""
    if chooses_who_pays(caller) or cost_center in allowed:
        return
    if allowed:
        may = f"team {team!r} may use: {', '.join(repr(slug) for slug in allowed)}"
    else:
        may = (
            f"team {team!r} has no default cost center and no apps yet (an admin registers "
            "its first app)"
        )
    raise PermissionDeniedError(
        f"role {caller.role.value!r} may not register an app on cost center {cost_center!r} "
        "(only admin may: it decides who pays); a team-member registers on its team's default "
        f"cost center or one its team's apps are on, and {may}",
        field="cost_center",
    )
