"""Cost-anomaly scans: score the hours that received usage, per app and per team, and raise
one alert per spike (guardrails.anomaly has the pure scoring).

A scan reads the tenant's hourly cost per (team, app, meter) from the usage store, priced with
the tenant's rate card (guardrails.anomaly_rates), over the scored hours and the trailing
window before them. Every scope (app, team) with cost in a scored hour is judged on each of
its meters; an hour in progress as far as it has filled. An anomalous hour continues the run
of anomalous hours right before it, so its alert's dedup key is the run's first hour: a spike
alerts once, however many hours it lasts and however often it is re-scored. The alert names
the meters behind the spike (their share of the excess) and the top raw events on them, and
records when the spike's usage was ingested and when it was detected.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal
from operator import add
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.domain.money import fixed_point, money_context, plain_text, quantize_to
from quartermaster.domain.timeutil import HOUR, Period, floor_hour, moment_text, utc_now
from quartermaster.guardrails.alerts import Severity, raise_alert
from quartermaster.guardrails.anomaly import (
    AnomalyRule,
    ScopeVerdict,
    Series,
    incident_start,
    may_be_anomalous,
    score_scope,
)
from quartermaster.guardrails.anomaly_rates import tenant_rate_card
from quartermaster.guardrails.budgets import BudgetAction
from quartermaster.guardrails.common import ScopeKind, record_action
from quartermaster.guardrails.models import Alert
from quartermaster.usage.store import HourlyCostSeries, MeterRate, UsageStore

logger = logging.getLogger("quartermaster.guardrails")

TOP_EVENTS = 5
ANOMALY_KIND = "anomaly"
Scope = tuple[str, str]  # (scope kind, name)
_APP = ScopeKind.APP.value
_TEAM = ScopeKind.TEAM.value


@dataclass
class ScanResult:
    hours: int = 0  # hours scored
    alerts: list[str] = field(default_factory=list)  # dedup keys newly raised


@dataclass
class _Cell:
    cost: Decimal = Decimal(0)
    first_recorded: datetime | None = None
    last_recorded: datetime | None = None
    apps: dict[str, Decimal] = field(default_factory=dict)  # app -> cost (team scopes)


class _Grid:
    """Hourly series of every scope and meter over [start, start + hours), folded from the
    store's per (cost center, team, app, meter) series in the order `hourly_costs` lists its
    rows (so each hour's float sum is the same); the scopes active in the hour indexes in
    `detailed` (the scored hours), and each cell's details (exact cost, its apps, when it was
    ingested) read on demand from those hours' rows: an alert quotes a few."""

    def __init__(
        self, start: datetime, hours: int, detailed: Collection[int], read: HourlyCostSeries
    ) -> None:
        self.start = start
        self.hours = hours
        self.read = read
        self.costs: dict[Scope, dict[str, list[float]]] = {}
        self.events: dict[Scope, dict[str, list[int]]] = {}
        self.active: dict[int, set[Scope]] = {}
        self._series: dict[Scope, dict[str, Series]] = {}
        # (scope, meter)s with a negative cost somewhere (a credit): their baseline may be too
        self.negative: set[tuple[Scope, str]] = set()
        detailed = frozenset(detailed)
        for one in read.series:
            if not one.hours or not 0 <= one.hours[0] <= one.hours[-1] < hours:
                continue
            negative = min(one.costs) < 0
            active = detailed.intersection(one.hours)
            for scope in ((_APP, one.app), (_TEAM, one.team)):
                if not scope[1]:
                    continue
                costs = self.costs.setdefault(scope, {}).setdefault(one.meter, [0.0] * hours)
                counts = self.events.setdefault(scope, {}).setdefault(one.meter, [0] * hours)
                first, last = one.hours[0], one.hours[-1] + 1
                if last - first == len(one.hours):  # every hour of a stretch: add it in C
                    costs[first:last] = map(add, costs[first:last], one.costs)
                    counts[first:last] = map(add, counts[first:last], one.events)
                else:
                    for at, cost, count in zip(one.hours, one.costs, one.events, strict=True):
                        costs[at] += cost
                        counts[at] += count
                for at in active:
                    self.active.setdefault(at, set()).add(scope)
                if negative:
                    self.negative.add((scope, one.meter))

    def index(self, hour: datetime) -> int:
        return int((hour - self.start) / HOUR)

    def series(self, scope: Scope) -> dict[str, Series]:
        found = self._series.get(scope)
        if found is None:
            found = self._series[scope] = {
                m: Series(c, self.events[scope][m]) for m, c in self.costs[scope].items()
            }
        return found

    def non_negative(self, scope: Scope) -> set[str]:
        """The scope's meters with no negative hourly cost."""
        return {m for m in self.costs[scope] if (scope, m) not in self.negative}

    def cell(self, scope: Scope, meter: str, at: int) -> _Cell:
        """The exact cost of a scored hour's cell, by app, and when its usage was ingested."""
        kind, name = scope
        rows = self.read.detail_rows(
            hour=self.start + at * HOUR,
            meter=meter,
            app=name if kind == _APP else None,
            team=name if kind == _TEAM else None,
        )
        cell = _Cell()
        for row in rows:
            cell.cost += row.cost
            cell.apps[row.app] = cell.apps.get(row.app, Decimal(0)) + row.cost
            cell.first_recorded = _earliest(cell.first_recorded, row.first_recorded_at)
            cell.last_recorded = _latest(cell.last_recorded, row.last_recorded_at)
        return cell


def _earliest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else min(a, b)


def _latest(a: datetime | None, b: datetime | None) -> datetime | None:
    return b if a is None else a if b is None else max(a, b)


EARLIEST_HOUR = datetime.min.replace(tzinfo=UTC)


def hours_before(hour: datetime, count: int) -> datetime:
    """`count` hours before `hour`, or the earliest representable hour (an event may carry a
    time in year 1: its baseline window starts there instead of overflowing)."""
    if hour - EARLIEST_HOUR < count * HOUR:
        return EARLIEST_HOUR
    return hour - count * HOUR


_QUOTED = Decimal("0.0001")


def _money(value: Decimal | float) -> str:
    """A cost as an alert quotes it, to 1e-4, in full: the 28-digit default context failed
    the tenant's scan for an hour of 10^24 (quantize), and str() wrote 1E+24."""
    return fixed_point(
        quantize_to(Decimal(repr(value)) if isinstance(value, float) else value, _QUOTED)
    )


def scan_tenant(
    tenant_id: str,
    hours: Iterable[datetime],
    *,
    store: UsageStore,
    session: Session,
    now: datetime | None = None,
    rule: AnomalyRule | None = None,
    reader: Session | None = None,
) -> ScanResult:
    """Score `hours` (any moments; their UTC hours) of the tenant and commit new alerts.
    With a `reader` (a read-only session), the rate card (the price book and every app of
    the tenant) is read through it, so `session` takes the write lock only to write."""
    rule = rule or AnomalyRule()
    moment = now or utc_now()
    scored = sorted({floor_hour(h) for h in hours if floor_hour(h) <= moment})
    result = ScanResult()
    if not scored:
        return result
    card_reader = reader or session
    rates = tenant_rate_card(tenant_id, scored[-1], session=card_reader)
    # End that read before the long scoring: on SQLite a write transaction holds the write
    # lock, and ingestion and the pipeline must not wait for a scan.
    card_reader.rollback()
    if not rates:
        return result
    start = hours_before(scored[0], rule.window_hours)
    span = int((scored[-1] - start) / HOUR) + 1
    read = store.hourly_cost_series(
        tenant_id, Period(start, start + span * HOUR), rates=rates, detailed=scored
    )
    grid = _Grid(start, span, {int((hour - start) / HOUR) for hour in scored}, read)
    rate_of = {(r.app, r.meter): r for r in rates}
    found: list[tuple[Scope, datetime, int, ScopeVerdict]] = []
    for hour in scored:
        at = grid.index(hour)
        fraction = min(1.0, max((moment - hour) / HOUR, 1 / 60))
        for scope in sorted(grid.active.get(at, ())):
            series = grid.series(scope)
            # Score the meters that may be anomalous first: the rest change the verdict's
            # expected cost, not whether it is anomalous, and most scope-hours stop here.
            candidates = may_be_anomalous(series, at, grid.non_negative(scope), rule)
            if not score_scope(candidates, at, fraction=fraction, rule=rule).anomalous:
                continue
            verdict = score_scope(series, at, fraction=fraction, rule=rule)
            if verdict.anomalous:
                found.append((scope, hour, incident_start(series, at, rule=rule), verdict))
        result.hours += 1
    # One short write transaction per alert, after the scoring, for the same reason.
    for scope, hour, first, verdict in found:
        key = _raise(
            tenant_id, scope, hour, first, verdict, grid, rate_of, store=store, session=session
        )
        session.commit()
        if key is not None:
            result.alerts.append(key)
    return result


def _raise(
    tenant_id: str,
    scope: Scope,
    hour: datetime,
    first: int,
    verdict: ScopeVerdict,
    grid: _Grid,
    rate_of: dict[tuple[str, str], MeterRate],
    *,
    store: UsageStore,
    session: Session,
) -> str | None:
    kind, name = scope
    since = grid.start + first * HOUR
    key = f"anomaly:{kind}:{name}:{since.isoformat()}"
    exists = session.scalar(
        select(Alert.id).where(Alert.tenant_id == tenant_id, Alert.dedup_key == key)
    )
    if exists is not None:  # the run already alerted: skip the top-events read
        return None
    at = grid.index(hour)
    excess = verdict.excess or 1.0
    meters: list[dict[str, Any]] = []
    first_ingested: datetime | None = None
    last_ingested: datetime | None = None
    for item in verdict.meters:
        cell = grid.cell(scope, item.meter, at)
        first_ingested = _earliest(first_ingested, cell.first_recorded)
        last_ingested = _latest(last_ingested, cell.last_recorded)
        meters.append(
            {
                "meter": item.meter,
                "cost": _money(cell.cost),
                "baseline": _money(item.score.baseline),
                "expected_so_far": _money(item.score.expected),
                "ratio": round(item.score.ratio, 1) if item.score.ratio is not None else None,
                "share_of_excess": round(item.score.excess / excess, 3),
            }
        )
    top = _top_events(tenant_id, scope, hour, verdict, grid, rate_of, store=store)
    detected = utc_now()
    label = f"{kind} {name}"
    names = ", ".join(f"{m['meter']} {m['share_of_excess']:.0%}" for m in meters)
    ratio = verdict.value / verdict.expected if verdict.expected > 0 else None
    times = f"{ratio:.1f}x " if ratio is not None else ""
    # "so far" only while the hour runs: a backfill scan judges hours long over.
    so_far = " so far" if detected < hour + HOUR else ""
    message = (
        f"{label} cost {_money(verdict.value)} in the hour from {moment_text(hour)}{so_far}, "
        f"{times}its usual {_money(verdict.expected)}; behind it: {names}"
    )
    details: dict[str, Any] = {
        "scope_kind": kind,
        "scope": name,
        "hour": hour.isoformat(),
        "since": since.isoformat(),
        "cost": _money(verdict.value),
        "expected": _money(verdict.expected),
        "excess": _money(verdict.excess),
        "meters": meters,
        "top_events": top,
        "first_ingested_at": first_ingested.isoformat() if first_ingested else None,
        "last_ingested_at": last_ingested.isoformat() if last_ingested else None,
        "detected_at": detected.isoformat(),
        "seconds_to_detect": (
            round((detected - first_ingested).total_seconds(), 1) if first_ingested else None
        ),
    }
    alert_id = raise_alert(
        session,
        tenant_id=tenant_id,
        kind=ANOMALY_KIND,
        severity=Severity.WARNING,
        dedup_key=key,
        title=f"Cost anomaly: {label} at {hour:%Y-%m-%d %H:00} UTC",
        message=message,
        details=details,
        at=detected,
    )
    if alert_id is None:
        return None
    record_action(
        session,
        tenant_id=tenant_id,
        action=BudgetAction.NOTIFY,
        scope_kind=kind,
        scope=name,
        subject=f"anomaly:{hour.isoformat()}",
        reason=message,
    )
    return key


@money_context()
def _top_events(
    tenant_id: str,
    scope: Scope,
    hour: datetime,
    verdict: ScopeVerdict,
    grid: _Grid,
    rate_of: dict[tuple[str, str], MeterRate],
    *,
    store: UsageStore,
) -> list[dict[str, Any]]:
    """The costliest raw events of the hour on the anomalous meters (for a team, of the app
    that cost the most on each)."""
    at = grid.index(hour)
    found: list[dict[str, Any]] = []
    for item in verdict.meters[:3]:
        cell = grid.cell(scope, item.meter, at)
        if not cell.apps:
            continue
        app = max(cell.apps, key=lambda a: cell.apps[a])
        rate = rate_of.get((app, item.meter)) or rate_of.get(("", item.meter))
        if rate is None:
            continue
        team = scope[1] if scope[0] == ScopeKind.TEAM.value else None
        rows = store.top_events(
            tenant_id, Period(hour, hour + HOUR), app=app, meter=item.meter, team=team, limit=10
        )
        for row in rows:
            cost = rate.rate if rate.per_event else row.quantity * rate.rate
            found.append(
                {
                    "event_id": row.event_id,
                    "app": row.app,
                    "meter": row.meter,
                    "resource_id": row.resource_id,
                    "quantity": plain_text(row.quantity),
                    "cost": _money(cost),
                    "event_time": row.event_time.isoformat(),
                    "recorded_at": row.recorded_at.isoformat(),
                }
            )
    found.sort(key=lambda e: (-Decimal(e["cost"]), e["event_id"]))
    return found[:TOP_EVENTS]


def scan_period(
    tenant_id: str,
    period: Period,
    *,
    store: UsageStore,
    session: Session,
    rule: AnomalyRule | None = None,
) -> ScanResult:
    """Every hour of `period` (a backfill: `qm alerts scan --since`)."""
    hours: list[datetime] = []
    hour = floor_hour(period.start)
    while hour < period.end:
        hours.append(hour)
        hour += HOUR
    return scan_tenant(tenant_id, hours, store=store, session=session, rule=rule)
