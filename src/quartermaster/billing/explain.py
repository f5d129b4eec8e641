"""Explain a billing line: line -> its daily rollups -> its top raw events, with the
lifecycle markers (deploy, scale, delete) of the app's resources in the period.

Rollups are read as the usage store stood at the document's `as_of`, so they add up to what
the line billed. Raw events are listed with the time they became billable; those after the
document's `as_of` were not in it (an adjustment picks them up).
"""

from __future__ import annotations

import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.billing.lines import RESERVED_CAPACITY_ITEM
from quartermaster.billing.models import BillingDocument, BillingLine, CostType, DocumentType
from quartermaster.billing.service import caller_team_slug, get_document
from quartermaster.billing.sources import (
    plain,
    quantity_of,
    split_period,
    tenant_meter_definitions,
)
from quartermaster.domain.money import money_context, money_sum
from quartermaster.domain.timeutil import Period
from quartermaster.errors import InvalidInputError, NotFoundError
from quartermaster.storage.ids import ID_PREFIX, MIN_PREFIX, TOO_SHORT, unique_by_prefix
from quartermaster.tenancy.service import AuthContext
from quartermaster.usage.attribution import NO_OWNER
from quartermaster.usage.meters import Aggregation
from quartermaster.usage.store import LifecycleMarker, RawUsage, UsageStore

LINE_ID = re.compile(r"^[0-9a-f]{32}$")
TOP_EVENTS = 10
# Above this many raw rows for one app and meter, days come from the rollups instead.
RAW_ROW_LIMIT = 200_000
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class DailyAmount:
    """One day of the period (the first and last may be partial): a quantity of the line's
    meter, or an amount of a shared platform cost."""

    start: datetime
    end: datetime
    value: Decimal
    events: int


@dataclass(frozen=True, slots=True)
class Explanation:
    document: BillingDocument
    line: BillingLine
    subject: str
    counted_as_of: datetime  # rollups as recorded before this; events after it are late
    daily: list[DailyAmount]
    top_events: list[RawUsage]
    markers: list[LifecycleMarker]
    shared_costs: list[DailyAmount] = field(default_factory=list)
    late_after: datetime | None = None  # adjustments: events billable after this are why
    notes: list[str] = field(default_factory=list)

    @property
    def daily_total(self) -> Decimal:
        return money_sum(day.value for day in self.daily)


def find_line(caller: AuthContext, reference: str, *, session: Session) -> BillingLine:
    """A line by its id, a unique prefix of its id, or its audit key (the latest line issued
    with it)."""
    team = caller_team_slug(caller, session=session)
    if LINE_ID.match(reference):
        line = session.get(BillingLine, reference)
    elif ID_PREFIX.match(reference):
        query = select(BillingLine).where(BillingLine.tenant_id == caller.tenant_id)
        if team:
            query = query.where(BillingLine.team == team)
        line = unique_by_prefix(
            query, BillingLine.id, reference, what="billing line", field="line_id", session=session
        )
    elif TOO_SHORT.match(reference):
        raise InvalidInputError(
            f"billing line id prefix {reference!r} is too short: give {MIN_PREFIX} characters "
            "or more",
            field="line_id",
        )
    else:
        line = session.scalars(
            select(BillingLine)
            .join(BillingDocument, BillingDocument.id == BillingLine.document_id)
            .where(BillingLine.tenant_id == caller.tenant_id, BillingLine.audit_key == reference)
            .order_by(BillingDocument.created_at.desc())
        ).first()
    if line is None or line.tenant_id != caller.tenant_id or (team and line.team != team):
        raise NotFoundError(f"billing line {reference!r} not found", field="line_id")
    return line


def _days(period: Period) -> list[Period]:
    """The period cut at each UTC midnight (where the day rollups begin)."""
    midnight = period.start.replace(hour=0, minute=0, second=0, microsecond=0)
    cuts: list[datetime] = []
    cursor = midnight + timedelta(days=1)
    while cursor < period.end:
        cuts.append(cursor)
        cursor += timedelta(days=1)
    return split_period(period, cuts)


def _day_value(rows: list[RawUsage], aggregation: Aggregation) -> Decimal:
    if aggregation is Aggregation.COUNT:
        return Decimal(len(rows))
    if aggregation is Aggregation.MAX:
        return max(row.quantity for row in rows)
    if aggregation is Aggregation.LATEST:
        return max(rows, key=lambda row: (row.event_time, row.position)).quantity
    return money_sum(row.quantity for row in rows)  # a quantity has up to 38 digits


def events_app(line: BillingLine, cost_type: str) -> str | None:
    """The app whose raw events a line counts, as the usage store names it: the line's app,
    or "" for usage of no app (the default cost center's unattributed usage, or an
    environment override's), whose events the store keeps with app "" too; None for a line
    charged to a team or cost center as a whole (a reserved-capacity credit, a direct or
    unallocated platform cost), which no events of its own make up."""
    if line.app is not None:
        return line.app
    if line.meter is None or cost_type == CostType.PLATFORM.value:
        return None
    if line.item == RESERVED_CAPACITY_ITEM:
        return None
    return NO_OWNER


def daily_from_raw(
    store: UsageStore,
    line: BillingLine,
    period: Period,
    as_of: datetime,
    aggregation: Aggregation,
) -> tuple[list[DailyAmount], list[RawUsage]] | None:
    """Days of one app's meter from its raw rows, exactly as the store stood at `as_of`:
    one query for the app and meter instead of a tenant-wide one per day (usage of no app:
    its cost center's rows with app ""). None when the raw rows cannot answer (past the
    raw-retention horizon, too many rows, a unique count, or a line charged to a team or
    cost center as a whole)."""
    horizon = store.purged_before()
    app = events_app(line, line.adjusted_cost_type or line.cost_type)
    if app is None or line.meter is None or aggregation is Aggregation.UNIQUE_COUNT:
        return None
    if horizon is not None and horizon > period.start:
        return None
    rows = store.top_events(
        line.tenant_id,
        period,
        app=app,
        meter=line.meter,
        cost_center=line.cost_center,
        team=line.team or "",
        limit=RAW_ROW_LIMIT,
    )
    if len(rows) >= RAW_ROW_LIMIT:
        return None
    by_day: dict[datetime, list[RawUsage]] = defaultdict(list)
    for row in rows:
        if row.billable_at < as_of:
            by_day[row.event_time.replace(hour=0, minute=0, second=0, microsecond=0)].append(row)
    days: list[DailyAmount] = []
    for day in _days(period):
        counted = by_day.get(day.start.replace(hour=0, minute=0, second=0, microsecond=0), [])
        value = plain(_day_value(counted, aggregation)) if counted else ZERO
        days.append(DailyAmount(day.start, day.end, value, len(counted)))
    return days, rows[:TOP_EVENTS]


def purged_note(horizon: datetime | None, period: Period, *, kept: int) -> str | None:
    """Why the top raw events are missing, or may be missing some: raw rows that became
    billable before the retention boundary were purged (QM_RAW_RETENTION_DAYS); None when
    the boundary is not after the period's start. `kept`: the top events still found."""
    if horizon is None or horizon <= period.start:
        return None
    boundary = horizon.isoformat().replace("+00:00", "Z")
    if not kept:
        return (
            "top raw events: none kept, the raw events that became billable before the "
            f"retention boundary {boundary} were purged (QM_RAW_RETENTION_DAYS)"
        )
    return (
        "top raw events: only those kept, the raw events that became billable before the "
        f"retention boundary {boundary} were purged (QM_RAW_RETENTION_DAYS)"
    )


@money_context()
def daily_from_rollups(
    store: UsageStore, line: BillingLine, period: Period, aggregation: Aggregation
) -> list[DailyAmount]:
    """Days from the tenant's day rollups in one query (lines of no single app, or periods
    past the raw-retention window): as recorded now, not as of the document."""
    by_day: dict[datetime, tuple[Decimal, int]] = {}
    for daily in store.daily_totals(line.tenant_id, period):
        total = daily.total
        if total.meter != line.meter or total.cost_center != line.cost_center:
            continue
        if (line.team or "") != total.team or (line.app is not None and total.app != line.app):
            continue
        value, events = by_day.get(daily.day, (ZERO, 0))
        by_day[daily.day] = (
            value + (quantity_of(total, aggregation) or ZERO),
            events + total.event_count,
        )
    days: list[DailyAmount] = []
    for day in _days(period):
        value, events = by_day.get(
            day.start.replace(hour=0, minute=0, second=0, microsecond=0), (ZERO, 0)
        )
        days.append(DailyAmount(day.start, day.end, value, events))
    return days


def _daily_costs(
    store: UsageStore, tenant_id: str, cost_type: str, period: Period, as_of: datetime
) -> list[DailyAmount]:
    days: list[DailyAmount] = []
    for day in _days(period):
        costs = [
            c for c in store.platform_costs(tenant_id, day, as_of=as_of) if c.cost_type == cost_type
        ]
        days.append(
            DailyAmount(
                day.start,
                day.end,
                plain(money_sum(c.amount for c in costs)),
                sum(c.event_count for c in costs),
            )
        )
    return days


def _subject(line: BillingLine, cost_type: str) -> str:
    owner = f"cost center {line.cost_center}"
    if line.team:
        owner = f"team {line.team}, {owner}"
    if line.app:
        owner = f"app {line.app} ({owner})"
    if cost_type == CostType.PLATFORM.value:
        basis = f", allocated by {line.meter}" if line.meter else ""
        return f"share of platform cost {line.item} for {owner}{basis}"
    return f"{cost_type} of {line.meter or line.item} for {owner}"


def explain_line(
    caller: AuthContext, reference: str, *, store: UsageStore, session: Session
) -> Explanation:
    line = find_line(caller, reference, session=session)
    document = get_document(caller, line.document_id, session=session)
    period = Period(document.period_start, document.period_end)
    cost_type = line.adjusted_cost_type or line.cost_type
    notes: list[str] = []
    late_after = None
    if document.doc_type == DocumentType.ADJUSTMENT.value and document.corrects_id:
        earlier = session.scalars(
            select(BillingDocument.as_of).where(
                BillingDocument.tenant_id == caller.tenant_id,
                (BillingDocument.id == document.corrects_id)
                | (
                    (BillingDocument.corrects_id == document.corrects_id)
                    & (BillingDocument.sequence < document.sequence)
                ),
            )
        ).all()
        late_after = max(earlier) if earlier else None
        notes.append(f"adjustment: {line.reason}")
    meters = tenant_meter_definitions(caller.tenant_id, session=session)
    daily: list[DailyAmount] = []
    top: list[RawUsage] | None = None
    if line.meter is not None:
        definition = meters.get(line.meter)
        aggregation = definition.aggregation if definition else Aggregation.SUM
        from_raw = daily_from_raw(store, line, period, document.as_of, aggregation)
        if from_raw is not None:
            daily, top = from_raw
        else:
            daily = daily_from_rollups(store, line, period, aggregation)
            notes.append(
                "days from the rollups as recorded now (not as of the document): they may "
                "include usage recorded after it"
            )
        if not aggregation.summable:
            notes.append(f"{line.meter} is a {aggregation.value} meter: days do not add up")
    shared: list[DailyAmount] = []
    if cost_type == CostType.PLATFORM.value:
        shared = _daily_costs(store, caller.tenant_id, line.item, period, document.as_of)
        notes.append(f"allocation: {line.allocation_method}")
    markers: list[LifecycleMarker] = []
    app = events_app(line, cost_type)
    if app is not None:
        if line.app is not None:
            markers = store.lifecycle_markers(caller.tenant_id, period, app=line.app)
        else:
            notes.append(
                "usage of no app (unattributed, or an environment override's): its top raw "
                "events say which sources and resources sent it"
            )
        if line.meter is not None and top is None:
            top = store.top_events(
                caller.tenant_id,
                period,
                app=app,
                meter=line.meter,
                cost_center=line.cost_center,
                team=line.team or "",
                limit=TOP_EVENTS,
            )
        if line.meter is not None:
            purged = purged_note(store.purged_before(), period, kept=len(top or []))
            if purged is not None:
                notes.append(purged)
    else:
        notes.append("charged to a team or cost center as a whole: no single app's events")
    return Explanation(
        document=document,
        line=line,
        subject=_subject(line, cost_type),
        counted_as_of=document.as_of,
        daily=daily,
        top_events=top or [],
        markers=markers,
        shared_costs=shared,
        late_after=late_after,
        notes=notes,
    )
