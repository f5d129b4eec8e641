"""Who may see and change which apps (pure): admin and finance see every app of their tenant,
a team-member only its own team's; admin and team-members register and change apps (a
team-member only for its own team), and only an admin moves an app to another owner."""

from __future__ import annotations

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
