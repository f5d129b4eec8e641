"""Enforcement in force, and the gate ingest and decisions pass through.

The gate answers, per request and without a database round trip on the hot path: is any of
the caller's scopes throttled (429 with Retry-After) or halted, and is a rate limit exceeded.
Ingest also asks it about the apps its events name, whatever key sends them: the events of an
app under a throttle (of the app, its team or its cost center) or over its app rate limit are
refused alone (`refuse_apps`). It caches each tenant's enforcements, the apps its throttles
bind, rate-limit rules and admission policies for `ttl` seconds, so a new throttle (or policy)
takes effect within that time.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased, sessionmaker

from quartermaster.catalog.models import App
from quartermaster.domain.timeutil import moment_text, utc_now
from quartermaster.errors import InvalidInputError, NotFoundError, RateLimitedError
from quartermaster.guardrails.admission import AdmissionPolicy, admission_policies
from quartermaster.guardrails.budgets import BudgetAction
from quartermaster.guardrails.common import ScopeKind, record_action
from quartermaster.guardrails.models import Enforcement, RateLimitRule
from quartermaster.guardrails.ratelimit import RateLimiter
from quartermaster.guardrails.visibility import (
    NOT_SHOWN,
    Figures,
    MemberView,
    scope_filter,
    scope_label,
)
from quartermaster.storage.ids import by_id_or_prefix
from quartermaster.tenancy.models import CostCenter, Team
from quartermaster.tenancy.service import AuthContext

Scope = tuple[str, str]
# Why the events of one app in an ingest request are refused (metering's reject reasons).
THROTTLED = "throttled"
RATE_LIMITED = "rate_limited"


@dataclass(frozen=True, slots=True)
class ActiveEnforcement:
    id: str
    scope_kind: str
    scope: str
    action: str
    ends_at: datetime
    reason: str


def active_enforcements(
    tenant_id: str, *, session: Session, now: datetime | None = None
) -> list[ActiveEnforcement]:
    moment = now or utc_now()
    rows = session.scalars(
        select(Enforcement).where(
            Enforcement.tenant_id == tenant_id,
            Enforcement.lifted_at.is_(None),
            Enforcement.ends_at > moment,
        )
    )
    return [
        ActiveEnforcement(r.id, r.scope_kind, r.scope, r.action, r.ends_at, r.reason) for r in rows
    ]


def throttle_retry_seconds(throttle: ActiveEnforcement, now: datetime | None = None) -> float:
    """A throttle's Retry-After: the seconds until it ends (its period's end). Nothing ends
    it sooner but a lift (raising the budget does not lift it), which takes effect within the
    gate's cache time; a client told to come back then need not poll before."""
    return max(1.0, (throttle.ends_at - (now or utc_now())).total_seconds())


@dataclass(frozen=True, slots=True)
class AppRefusal:
    """Why the events of one app in an ingest request are refused (`THROTTLED` or
    `RATE_LIMITED`) and what the rejection says; the request's other events are kept."""

    reason: str
    message: str


def list_enforcements(
    tenant_id: str, *, session: Session, view: MemberView | None = None
) -> list[Enforcement]:
    """Newest first; with a team-member's `view`, on its team and its apps only."""
    query = select(Enforcement).where(Enforcement.tenant_id == tenant_id)
    if view is not None:
        query = query.where(scope_filter(view, Enforcement.scope_kind, Enforcement.scope))
    return list(session.scalars(query.order_by(Enforcement.created_at.desc())))


def lift_enforcement(caller: AuthContext, enforcement_id: str, *, session: Session) -> Enforcement:
    """End a throttle or halt early (e.g. the budget was raised); recorded with who lifted it."""
    row = by_id_or_prefix(
        select(Enforcement).where(Enforcement.tenant_id == caller.tenant_id),
        Enforcement.id,
        enforcement_id,
        what="enforcement",
        field="enforcement_id",
        session=session,
    )
    if row is None:
        raise NotFoundError(f"no enforcement {enforcement_id!r}", field="enforcement_id")
    if row.lifted_at is None:
        row.lifted_at = utc_now()
        row.lifted_by = caller.principal_name
        record_action(
            session,
            tenant_id=row.tenant_id,
            action="lift",
            scope_kind=row.scope_kind,
            scope=row.scope,
            subject=f"enforcement:{row.id}",
            reason=f"{row.action} lifted by {caller.principal_name} before {row.ends_at}",
        )
        session.commit()
    return row


def scopes_of(
    tenant_id: str, *, app: str | None, team: str | None, session: Session
) -> list[Scope]:
    """The scopes a piece of work belongs to: the tenant, the app, its team and the team's (or
    app's) cost center. Unknown app or team: NotFoundError naming it."""
    scopes: list[Scope] = [(ScopeKind.TENANT, "")]
    center = aliased(CostCenter)
    if app is not None:
        owner = aliased(Team)
        row = session.execute(
            select(owner.slug, center.slug)
            .select_from(App)
            .join(owner, owner.id == App.team_id)
            .join(center, center.id == App.cost_center_id)
            .where(App.tenant_id == tenant_id, App.app_id == app)
        ).first()
        if row is None:
            raise NotFoundError(f"no app {app!r} in this tenant", field="app")
        scopes.append((ScopeKind.APP, app))
        if team is not None and team != row[0]:
            # The work is the app's: charging it to another team would bill that team and
            # let a team-member act for an app that is not its team's.
            raise InvalidInputError(
                f"app {app!r} belongs to team {row[0]!r}, not {team!r}: leave team out, or "
                "name the app's team",
                field="team",
            )
        team = row[0]
        scopes.append((ScopeKind.COST_CENTER, row[1]))
    if team is not None:
        center_row = session.execute(
            select(center.slug)
            .select_from(Team)
            .outerjoin(center, center.id == Team.cost_center_id)
            .where(Team.tenant_id == tenant_id, Team.slug == team)
        ).first()
        if center_row is None:
            raise NotFoundError(f"no team {team!r} in this tenant", field="team")
        scopes.append((ScopeKind.TEAM, team))
        if center_row[0] is not None and (ScopeKind.COST_CENTER, center_row[0]) not in scopes:
            scopes.append((ScopeKind.COST_CENTER, center_row[0]))
    return scopes


@dataclass(frozen=True, slots=True)
class _TenantRules:
    loaded_at: float
    enforcements: tuple[ActiveEnforcement, ...]
    rate_limits: tuple[tuple[str, str, float, int], ...]  # kind, scope, rate, burst
    team_slugs: dict[str, str]  # team id -> slug
    admission: tuple[AdmissionPolicy, ...] = ()
    # app id -> the throttles on the app, its team or its cost center(s), ingest refusing
    # the app's events whoever sends them; empty without such throttles.
    app_throttles: dict[str, tuple[ActiveEnforcement, ...]] = field(default_factory=dict)


class GuardrailGate:
    def __init__(
        self,
        session_factory: sessionmaker[Session],
        limiter: RateLimiter,
        *,
        ttl: float = 2.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._session_factory = session_factory
        self.limiter = limiter
        self._ttl = ttl
        self._clock = clock
        self._rules: dict[str, _TenantRules] = {}
        self._lock = threading.Lock()

    def close(self) -> None:
        """The rate limiter's client (Redis); the runtime closes its gate."""
        self.limiter.close()

    def invalidate(self, tenant_id: str | None = None) -> None:
        with self._lock:
            if tenant_id is None:
                self._rules.clear()
            else:
                self._rules.pop(tenant_id, None)

    def _load(self, tenant_id: str, session: Session | None = None) -> _TenantRules:
        """Cached rules; read with the caller's `session` when it has one open (SQLite lets
        one transaction write at a time: a second session here would wait for the first)."""
        now = self._clock()
        with self._lock:
            cached = self._rules.get(tenant_id)
        if cached is not None and now - cached.loaded_at < self._ttl:
            return cached
        if session is None:
            with self._session_factory() as own:
                rules = self._read(tenant_id, now, own)
        else:
            rules = self._read(tenant_id, now, session)
        with self._lock:
            self._rules[tenant_id] = rules
        return rules

    def _read(self, tenant_id: str, now: float, session: Session) -> _TenantRules:
        enforcements = tuple(active_enforcements(tenant_id, session=session))
        limits = tuple(
            (r.scope_kind, r.scope, float(r.rate), r.burst)
            for r in session.scalars(
                select(RateLimitRule).where(RateLimitRule.tenant_id == tenant_id)
            )
        )
        rows = session.execute(select(Team.id, Team.slug).where(Team.tenant_id == tenant_id))
        teams: dict[str, str] = {str(row[0]): str(row[1]) for row in rows}
        admission = tuple(admission_policies(tenant_id, session=session))
        app_throttles = _app_throttles(tenant_id, enforcements, session=session)
        return _TenantRules(now, enforcements, limits, teams, admission, app_throttles)

    def admission_policies(
        self, tenant_id: str, *, session: Session | None = None
    ) -> tuple[AdmissionPolicy, ...]:
        """The tenant's admission policies (Rego), as cached with its other rules."""
        return self._load(tenant_id, session).admission

    def caller_scopes(self, caller: AuthContext) -> list[Scope]:
        """The scopes an API key acts for: the tenant, its team, its app."""
        rules = self._load(caller.tenant_id)
        scopes: list[Scope] = [(ScopeKind.TENANT, "")]
        if caller.team_id is not None and caller.team_id in rules.team_slugs:
            scopes.append((ScopeKind.TEAM, rules.team_slugs[caller.team_id]))
        if caller.app_slug is not None:
            scopes.append((ScopeKind.APP, caller.app_slug))
        return scopes

    def enforcement_on(
        self,
        tenant_id: str,
        scopes: Iterable[Scope],
        action: str,
        *,
        session: Session | None = None,
    ) -> ActiveEnforcement | None:
        wanted = set(scopes)
        now = utc_now()
        for item in self._load(tenant_id, session).enforcements:
            in_scope = (item.scope_kind, item.scope) in wanted
            if item.action == action and in_scope and item.ends_at > now:
                return item
        return None

    def check(
        self,
        caller: AuthContext,
        scopes: Iterable[Scope],
        *,
        what: str,
        session: Session | None = None,
        view: MemberView | None = None,
    ) -> None:
        """Raise RateLimitedError (429, Retry-After) when a scope is throttled or a rate limit
        of the tenant, the app or the calling user is exceeded. A throttle's spend is told as
        the caller (a team-member: its `view`) may read it."""
        scope_list = list(scopes)
        throttle = self.enforcement_on(
            caller.tenant_id, scope_list, BudgetAction.THROTTLE, session=session
        )
        if throttle is not None:
            label = throttle.scope or "the tenant"
            whose = scope_label(throttle.scope_kind, throttle.scope)
            told = Figures(
                (throttle.scope_kind, throttle.scope),
                f"{what} for {label} is throttled by a budget: {throttle.reason}",
                f"{what} is throttled by a budget of {whose} until "
                f"{moment_text(throttle.ends_at)} ({NOT_SHOWN})",
            )
            raise RateLimitedError(
                told.for_caller(caller, view),
                retry_after_seconds=throttle_retry_seconds(throttle),
            )
        self._rate_limit(caller, scope_list, what=what, session=session)

    def binds_apps(self, tenant_id: str) -> bool:
        """Whether ingest must look at the apps its events name: a throttle binds an app (by
        the app, its team or its cost center) or an app rate limit exists. False in the
        common case, so ingest then reads no event's app."""
        rules = self._load(tenant_id)
        return bool(rules.app_throttles) or any(r[0] == ScopeKind.APP for r in rules.rate_limits)

    def refuse_apps(
        self, caller: AuthContext, apps: Iterable[str], *, what: str = "ingest"
    ) -> dict[str, AppRefusal]:
        """The apps among `apps` (those a request's valid events name) whose events are
        refused, whoever the caller: a throttle on the app, its team or its cost center, or
        the app's rate limit (charged once per app and request; the caller's own app was
        charged before the body, `check`). From the cache: no database read per event."""
        rules = self._load(caller.tenant_id)
        now = utc_now()
        refused: dict[str, AppRefusal] = {}
        app_limits = [r for r in rules.rate_limits if r[0] == ScopeKind.APP]
        for app in sorted(set(apps)):
            throttle = next((t for t in rules.app_throttles.get(app, ()) if t.ends_at > now), None)
            if throttle is not None:
                refused[app] = AppRefusal(THROTTLED, _throttled_events(caller, app, throttle))
                continue
            if app == caller.app_slug:
                continue
            for _kind, scope, rate, burst in app_limits:
                if scope not in ("*", app):
                    continue
                key = f"{caller.tenant_id}:app:{app}"
                decision = self.limiter.acquire(key, rate=rate, burst=burst)
                if not decision.allowed:
                    refused[app] = AppRefusal(
                        RATE_LIMITED,
                        f"{what}: rate limit of app {app!r} exceeded ({_rate(rate)}/s, burst "
                        f"{burst}): its events in this request are not counted; send them "
                        f"again in {decision.retry_after:.2f}s",
                    )
                    break
        return refused

    def _rate_limit(
        self, caller: AuthContext, scopes: list[Scope], *, what: str, session: Session | None
    ) -> None:
        rules = self._load(caller.tenant_id, session).rate_limits
        if not rules:
            return
        apps = [scope for kind, scope in scopes if kind == ScopeKind.APP]
        for kind, scope, rate, burst in rules:
            subjects: list[str]
            if kind == "tenant":
                subjects = [""]
            elif kind == "app":
                subjects = [a for a in apps if scope in ("*", a)]
            else:
                subjects = [caller.principal_id] if scope in ("*", caller.principal_id) else []
            for subject in subjects:
                key = f"{caller.tenant_id}:{kind}:{subject}"
                decision = self.limiter.acquire(key, rate=rate, burst=burst)
                if not decision.allowed:
                    label = {"tenant": "the tenant", "app": f"app {subject!r}"}.get(
                        kind, f"user {caller.principal_name!r}"
                    )
                    raise RateLimitedError(
                        f"{what}: rate limit of {label} exceeded ({_rate(rate)}/s, burst "
                        f"{burst}); retry in {decision.retry_after:.2f}s",
                        retry_after_seconds=decision.retry_after,
                    )


def _throttled_events(caller: AuthContext, app: str, throttle: ActiveEnforcement) -> str:
    whose = scope_label(throttle.scope_kind, throttle.scope)
    until = moment_text(throttle.ends_at)
    after = f"not counted; send them again after {until} or once the throttle is lifted"
    told = Figures(
        (throttle.scope_kind, throttle.scope),
        f"events of app {app!r} are refused: {whose} is throttled by a budget: "
        f"{throttle.reason}; {after}",
        f"events of app {app!r} are refused: {whose} is throttled by a budget until {until} "
        f"({NOT_SHOWN}); {after}",
    )
    return told.for_caller(caller, None)


def _app_throttles(
    tenant_id: str, enforcements: Iterable[ActiveEnforcement], *, session: Session
) -> dict[str, tuple[ActiveEnforcement, ...]]:
    """app id -> the throttles binding its events: on the app, on its team, or on its cost
    center or its team's (as `scopes_of` counts them). Reads the apps only when a team or
    cost-center throttle is in force."""
    throttles = [e for e in enforcements if e.action == BudgetAction.THROTTLE]
    found: dict[str, list[ActiveEnforcement]] = {}
    for item in throttles:
        if item.scope_kind == ScopeKind.APP:
            found.setdefault(item.scope, []).append(item)
    teams = {e.scope for e in throttles if e.scope_kind == ScopeKind.TEAM}
    centers = {e.scope for e in throttles if e.scope_kind == ScopeKind.COST_CENTER}
    if teams or centers:
        owner = aliased(Team)
        app_center = aliased(CostCenter)
        team_center = aliased(CostCenter)
        rows = session.execute(
            select(App.app_id, owner.slug, app_center.slug, team_center.slug)
            .select_from(App)
            .join(owner, owner.id == App.team_id)
            .join(app_center, app_center.id == App.cost_center_id)
            .outerjoin(team_center, team_center.id == owner.cost_center_id)
            .where(
                App.tenant_id == tenant_id,
                owner.slug.in_(sorted(teams))
                | app_center.slug.in_(sorted(centers))
                | team_center.slug.in_(sorted(centers)),
            )
        )
        for app_id, team, center, team_center_slug in rows:
            bound = {(ScopeKind.TEAM, team), (ScopeKind.COST_CENTER, center)}
            if team_center_slug is not None:
                bound.add((ScopeKind.COST_CENTER, team_center_slug))
            for item in throttles:
                if item.scope_kind != ScopeKind.APP and (item.scope_kind, item.scope) in bound:
                    found.setdefault(app_id, []).append(item)
    return {app: tuple(items) for app, items in found.items()}


def _rate(value: float) -> str:
    return format(Decimal(str(value)).normalize(), "f")
