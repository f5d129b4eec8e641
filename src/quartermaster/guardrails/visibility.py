"""What a team-member reads of the guardrails: its own team's and its team's apps' budgets,
enforcements, quotas, actions and alerts (their amounts are that team's spend), and of the
rules without spend (limit ranges, rate limits) also the tenant-wide ones that apply to its
work. Tenant-wide and cost-center budgets, quotas, enforcements and alerts carry tenant or
multi-team totals, so a team-member does not see them. Admin and finance see everything of
their tenant (no view: None).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import ColumnElement, and_, false, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from quartermaster.billing.service import caller_team_slug
from quartermaster.guardrails.common import ScopeKind
from quartermaster.tenancy.models import Role
from quartermaster.tenancy.service import AuthContext

USER_SCOPE = "user"
EACH = "*"


@dataclass(frozen=True, slots=True)
class MemberView:
    """A team-member's reach: its team's slug, its team's app slugs, its principal id."""

    team: str
    apps: frozenset[str]
    principal_id: str

    def sees_scope(self, kind: str, scope: str | None) -> bool:
        """A scope whose spend is this team's: the team itself or one of its apps. Pure."""
        if kind == ScopeKind.TEAM:
            return scope == self.team
        if kind == ScopeKind.APP:
            return scope in self.apps
        return False

    def sees_rule(self, kind: str, scope: str | None) -> bool:
        """A rule (no spend in it) that applies to this team's work: also tenant-wide ones,
        every-app (`*`) and every-user ones, and its own principal's. Pure."""
        if kind == ScopeKind.TENANT:
            return True
        if kind == ScopeKind.APP and scope == EACH:
            return True
        if kind == USER_SCOPE:
            return scope in (EACH, self.principal_id)
        return self.sees_scope(kind, scope)


def member_view(caller: AuthContext, *, session: Session) -> MemberView | None:
    """The caller's view if it is a team-member (403 without a team), else None."""
    from quartermaster.catalog.models import App

    team = caller_team_slug(caller, session=session)
    if team is None:
        return None
    apps = session.scalars(
        select(App.app_id).where(App.tenant_id == caller.tenant_id, App.team_id == caller.team_id)
    )
    return MemberView(team, frozenset(apps), caller.principal_id)


def scope_filter(
    view: MemberView,
    kind: InstrumentedAttribute[str] | InstrumentedAttribute[str | None],
    scope: InstrumentedAttribute[str] | InstrumentedAttribute[str | None],
    *,
    rules: bool = False,
) -> ColumnElement[bool]:
    """`sees_scope` (or with `rules`, `sees_rule`) as a SQL condition on two columns."""
    clauses: list[ColumnElement[bool]] = [
        and_(kind == ScopeKind.TEAM.value, scope == view.team),
        and_(kind == ScopeKind.APP.value, scope.in_(sorted(view.apps))) if view.apps else false(),
    ]
    if rules:
        clauses += [
            kind == ScopeKind.TENANT.value,
            and_(kind == ScopeKind.APP.value, scope == EACH),
            and_(kind == USER_SCOPE, scope.in_([EACH, view.principal_id])),
        ]
    return or_(*clauses)


def alert_scope(kind: str, details: Mapping[str, Any]) -> tuple[str, str] | None:
    """The scope an alert is about, from its details: a budget's or anomaly's scope, a
    default cap's app, a high-cost hour's team (as its preview is). Pure."""
    if "scope_kind" in details:
        return str(details["scope_kind"]), str(details.get("scope") or "")
    if kind == "high_cost_event" and details.get("team"):
        return ScopeKind.TEAM.value, str(details["team"])
    if details.get("app"):
        return ScopeKind.APP.value, str(details["app"])
    return None


# What of a preview body is not the preview's team's: the tenant's totals, and the app's
# month to date under the teams it had before it moved to this one.
NOT_THE_TEAMS = frozenset({"tenant", "app_other_teams"})


def member_preview(body: Mapping[str, Any]) -> dict[str, Any]:
    """A preview body as a team-member reads it: its team's figures only (no tenant totals,
    no other team's part of the app's month). Pure."""
    return {key: value for key, value in body.items() if key not in NOT_THE_TEAMS}


# Scope kinds whose amounts are one team's: its own, or one of its apps'. A tenant's or a cost
# center's add up other teams' spend (and a tenant quota's use, other teams' work).
TEAM_OWNED = frozenset({ScopeKind.TEAM.value, ScopeKind.APP.value})
# Who reads every amount of the tenant.
WHOLE_VIEW = frozenset({Role.ADMIN, Role.FINANCE})
# What a reason without its amounts says instead.
NOT_SHOWN = "its amounts are shown to admin and finance keys"


def scope_label(kind: str, scope: str) -> str:
    """`the tenant`, `cost center 'rnd'`, `team 'web'`, `app 'shop'`. Pure."""
    if kind == ScopeKind.TENANT:
        return "the tenant"
    return f"{kind.replace('_', ' ')} {scope!r}"


@dataclass(frozen=True, slots=True)
class Figures:
    """A reason about a rule on one scope (`about`: kind, scope; None: it quotes no amounts):
    `full` quotes the scope's amounts (a budget's spend, a quota's use), `brief` names the
    rule and the scope only."""

    about: tuple[str, str] | None
    full: str
    brief: str = ""

    def for_caller(self, caller: AuthContext, view: MemberView | None) -> str:
        """As told to `caller` about its own work: admin and finance read every amount, a
        team-member (`view`) its team's and its apps', an app key its app's."""
        if self.about is None or caller.role in WHOLE_VIEW:
            return self.full
        kind, scope = self.about
        if view is not None:
            return self.full if view.sees_scope(kind, scope) else self.brief
        if caller.role is Role.APP:
            return self.full if (kind, scope) == (ScopeKind.APP, caller.app_slug) else self.brief
        return self.full if kind in TEAM_OWNED else self.brief

    def for_log(self, scope_kind: str) -> str:
        """As logged on an action about a scope of `scope_kind`: a team-member reads the
        actions on its team and apps, so those quote no tenant-wide or cost-center amount."""
        if self.about is None or self.about[0] in TEAM_OWNED or scope_kind not in TEAM_OWNED:
            return self.full
        return self.brief
