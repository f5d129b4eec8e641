"""The tenant's apps as a list: filtered, searched and paged by app id, so that a catalog of
thousands is read a page at a time with its total beside it."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from quartermaster.catalog.access import visible_team
from quartermaster.catalog.models import App, Lifecycle
from quartermaster.catalog.service import AppView, app_query, view_of
from quartermaster.storage.engine import unicode_lower
from quartermaster.tenancy.models import CostCenter, Team
from quartermaster.tenancy.service import AuthContext, require_cost_center, require_team


@dataclass(frozen=True, slots=True)
class AppFilter:
    team: str | None = None
    cost_center: str | None = None
    lifecycle: Lifecycle | None = None
    search: str | None = None  # in the app id, title or owner, in any (ASCII) case


@dataclass(frozen=True, slots=True)
class AppPage:
    apps: list[AppView]
    next_after: str | None  # the app id to pass as `after` for the next page; None: the last
    total: int  # every app the filter matches, on every page


def _conditions(
    caller: AuthContext, wanted: AppFilter, *, dialect: str
) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [App.tenant_id == caller.tenant_id]
    scope = visible_team(caller)
    if scope is not None:
        conditions.append(App.team_id == scope)
    if wanted.team is not None:
        conditions.append(Team.slug == wanted.team)
    if wanted.cost_center is not None:
        conditions.append(CostCenter.slug == wanted.cost_center)
    if wanted.lifecycle is not None:
        conditions.append(App.lifecycle == wanted.lifecycle.value)
    if wanted.search:
        # autoescape: a `%` or `_` in the text is itself, not a wildcard.
        wanted_text = wanted.search.lower()
        conditions.append(
            or_(
                *(
                    unicode_lower(column, dialect=dialect).contains(wanted_text, autoescape=True)
                    for column in (App.app_id, App.title, App.owner)
                )
            )
        )
    return conditions


def list_apps(
    caller: AuthContext,
    wanted: AppFilter,
    *,
    after: str | None = None,
    limit: int | None = None,
    session: Session,
) -> AppPage:
    """The apps the caller sees that `wanted` matches, by app id: those after the app id
    `after` (an app deleted since still marks the place), at most `limit` (None: all). A
    team-member sees its own team's only. A team or cost center the tenant lacks is a 422
    naming it: a typo must not read as an empty team."""
    if wanted.team is not None:
        require_team(caller.tenant_id, wanted.team, field="team", session=session)
    if wanted.cost_center is not None:
        require_cost_center(
            caller.tenant_id, wanted.cost_center, field="cost_center", session=session
        )
    conditions = _conditions(caller, wanted, dialect=session.get_bind().dialect.name)
    query = app_query(caller.tenant_id).where(*conditions)
    if after is not None:
        query = query.where(App.app_id > after)
    if limit is not None:
        query = query.limit(limit + 1)
    rows = [view_of(*row) for row in session.execute(query)]
    more = limit is not None and len(rows) > limit
    shown = rows[:limit] if limit is not None else rows
    if after is None and not more:
        total = len(shown)
    else:
        total = (
            session.scalar(
                select(func.count())
                .select_from(App)
                .join(Team, Team.id == App.team_id)
                .join(CostCenter, CostCenter.id == App.cost_center_id)
                .where(*conditions)
            )
            or 0
        )
    return AppPage(shown, shown[-1].app_id if more else None, total)
