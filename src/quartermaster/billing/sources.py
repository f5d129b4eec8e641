"""The store-backed billing calculator: usage from the usage store, price books and owners
from the control plane.

A meter's quantity in a period follows its aggregation (sum, count, max, unique count,
latest). The period is read in parts cut at every price book version's effective_from, so
usage is priced by the version in force when it happened; for the non-additive aggregations
(max, unique count, latest) each part's statistic is billed in its part.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from itertools import pairwise

from sqlalchemy import select
from sqlalchemy.orm import Session, aliased

from quartermaster.billing.calculator import PeriodInputs, PricingContext
from quartermaster.billing.service import NOTHING_WAITING, Waiting, WaitingCounter
from quartermaster.catalog.models import App
from quartermaster.domain.timeutil import Period, ensure_utc, utc_now
from quartermaster.errors import ConflictError
from quartermaster.pricing.history import PriceBookHistory
from quartermaster.pricing.lines import OwnerDirectory, PlatformCostItem, UsageRow
from quartermaster.pricing.rating import fmt
from quartermaster.pricing.service import load_history, resolve_price_book_name
from quartermaster.runtime import Runtime
from quartermaster.tenancy.models import CostCenter, Team
from quartermaster.tenancy.service import DEFAULT_COST_CENTER_SLUG
from quartermaster.usage.meters import DEFAULT_METERS, Aggregation, MeterDefinition
from quartermaster.usage.snapshot import meter_definition, tenant_meters
from quartermaster.usage.store import UsageStore, UsageTotal, WaitingEvent

# How long an ingest may take between stamping recorded_at and committing to the event log.
DEFAULT_SETTLE = timedelta(seconds=5)
PIPELINE_CATCH_UP_SECONDS = 120.0


def pipeline_catch_up(runtime: Runtime) -> Callable[[], None]:
    """Drain the event log into the usage store before a document reads it."""

    def catch_up() -> None:
        from quartermaster.usage.pipeline import pipeline_worker

        try:
            pipeline_worker(runtime).drain(timeout_seconds=PIPELINE_CATCH_UP_SECONDS, settle=False)
        except TimeoutError:
            raise ConflictError(
                "the usage pipeline did not catch up with the event log within "
                f"{PIPELINE_CATCH_UP_SECONDS:.0f}s: run the billing again shortly"
            ) from None

    return catch_up


def pipeline_progress(runtime: Runtime) -> Callable[[], datetime]:
    """Up to when the runtime's usage store holds every recorded event (before the ingest
    settle): for documents that read the store as it stands, without draining the log."""

    def progress() -> datetime:
        from quartermaster.usage.pipeline import rated_until

        return rated_until(runtime.usage_store, runtime.event_log)

    return progress


def waiting_in(events: Iterable[WaitingEvent], period: Period) -> Waiting:
    """How many of the events waiting in the reconciliation window happened in `period`,
    and the latest of their deadlines (pure)."""
    deadlines = [e.deadline for e in events if period.contains(ensure_utc(e.event_time))]
    if not deadlines:
        return NOTHING_WAITING
    return Waiting(len(deadlines), ensure_utc(max(deadlines)))


def waiting_counter(store: UsageStore) -> WaitingCounter:
    """The events of a tenant's period waiting in the store's reconciliation window, as the
    pipeline last saw them."""

    def count(tenant_id: str, period: Period) -> Waiting:
        return waiting_in(store.waiting_events([tenant_id]), period)

    return count


def tenant_meter_definitions(tenant_id: str, *, session: Session) -> dict[str, MeterDefinition]:
    """The tenant's meters by name (the latest definition of each), or the defaults."""
    own = [meter_definition(m) for m in tenant_meters(tenant_id, session=session)]
    return {m.name: m for m in (own or DEFAULT_METERS)}


def plain(value: Decimal) -> Decimal:
    """The same number without the store's trailing zeros (5000.000000000000 -> 5000)."""
    return Decimal(fmt(value))


def quantity_of(total: UsageTotal, aggregation: Aggregation) -> Decimal | None:
    if aggregation is Aggregation.COUNT:
        return Decimal(total.event_count)
    if aggregation is Aggregation.UNIQUE_COUNT:
        return None if total.distinct_count is None else Decimal(total.distinct_count)
    value = {
        Aggregation.MAX: total.quantity_max,
        Aggregation.LATEST: total.latest_quantity,
    }.get(aggregation, total.quantity_sum)
    return None if value is None else plain(value)


def split_period(period: Period, cuts: Sequence[datetime]) -> list[Period]:
    bounds = sorted({period.start, period.end} | {c for c in cuts if period.contains(c)})
    return [Period(a, b) for a, b in pairwise(bounds)]


def owner_directory(tenant_id: str, *, session: Session) -> OwnerDirectory:
    center = aliased(CostCenter)
    teams = dict(
        session.execute(
            select(Team.slug, center.slug)
            .join(center, center.id == Team.cost_center_id)
            .where(Team.tenant_id == tenant_id)
        ).all()
    )
    team = aliased(Team)
    apps = {
        app_id: (center_slug, team_slug)
        for app_id, center_slug, team_slug in session.execute(
            select(App.app_id, center.slug, team.slug)
            .join(center, center.id == App.cost_center_id)
            .join(team, team.id == App.team_id)
            .where(App.tenant_id == tenant_id)
        )
    }
    return OwnerDirectory(teams=teams, apps=apps)


def default_cost_center(tenant_id: str, *, session: Session) -> str:
    slug = session.scalar(
        select(CostCenter.slug).where(
            CostCenter.tenant_id == tenant_id, CostCenter.is_default.is_(True)
        )
    )
    return slug or DEFAULT_COST_CENTER_SLUG


def app_lifecycles(tenant_id: str, *, session: Session) -> dict[str, str]:
    rows = session.execute(select(App.app_id, App.lifecycle).where(App.tenant_id == tenant_id))
    return dict(rows.all())


class StoreCalculator:
    """Reads the usage store (DuckDB in the embedded default) and the control plane.

    "As recorded now" means: up to `settle` ago, after `catch_up` (the pipeline draining the
    event log) has run. An event is in the log within moments of its recorded_at, so once
    the pipeline has caught up, the store holds everything recorded before the cutoff; the
    document's `as_of` then reproduces it exactly later. Without a catch-up, `progress`
    (`pipeline_progress`) says up to when the store is complete, and the cutoff is no later
    than that: a preview reading the store as it stands states the point its usage is
    complete up to, not "now" while events recorded before now are still in the log."""

    def __init__(
        self,
        store: UsageStore,
        *,
        clock: Callable[[], datetime] = utc_now,
        catch_up: Callable[[], None] | None = None,
        settle: timedelta = DEFAULT_SETTLE,
        progress: Callable[[], datetime] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.catch_up = catch_up
        self.settle = settle
        self.progress = progress

    def context(
        self, tenant_id: str, *, price_book: str | None, session: Session
    ) -> PricingContext:
        name = resolve_price_book_name(tenant_id, price_book, session=session)
        history: PriceBookHistory = load_history(tenant_id, name, session=session)
        meters = tenant_meter_definitions(tenant_id, session=session)
        return PricingContext(
            history=history,
            directory=owner_directory(tenant_id, session=session),
            units={name: meter.unit for name, meter in meters.items()},
            default_cost_center=default_cost_center(tenant_id, session=session),
        )

    def cutoff(self) -> datetime:
        moment = self.clock()
        if self.catch_up is not None:
            self.catch_up()
        if self.progress is not None:
            moment = min(moment, ensure_utc(self.progress()))
        return moment - self.settle

    def inputs(
        self,
        tenant_id: str,
        period: Period,
        *,
        as_of: datetime,
        cuts: Sequence[datetime] = (),
        session: Session,
    ) -> PeriodInputs:
        cutoff = ensure_utc(as_of)
        meters = tenant_meter_definitions(tenant_id, session=session)
        lifecycles = app_lifecycles(tenant_id, session=session)
        usage: list[UsageRow] = []
        costs: list[PlatformCostItem] = []
        for part in split_period(period, cuts):
            for total in self.store.quantities(tenant_id, part, as_of=cutoff):
                usage.extend(_usage_row(total, meters, lifecycles, part))
            costs.extend(
                PlatformCostItem(c.cost_type, plain(c.amount), c.currency, at=part.start)
                for c in self.store.platform_costs(tenant_id, part, as_of=cutoff)
            )
        return PeriodInputs(usage=tuple(usage), platform_costs=tuple(costs), as_of=cutoff)


def _usage_row(
    total: UsageTotal,
    meters: Mapping[str, MeterDefinition],
    lifecycles: Mapping[str, str],
    part: Period,
) -> list[UsageRow]:
    meter = meters.get(total.meter)
    aggregation = meter.aggregation if meter is not None else Aggregation.SUM
    quantity = quantity_of(total, aggregation)
    if quantity is None:
        raise ConflictError(
            f"meter {total.meter!r} ({aggregation.value}) of app {total.app or '-'!r} cannot be "
            f"recomputed for [{part.start.isoformat()}, {part.end.isoformat()}): its raw "
            "events are past the retention window",
            field="as_of",
        )
    # A quantity of 0 is kept: a subscription's fee is charged to every pool present in the
    # period's usage, even one whose quantity is 0 (billing.calculator.billable_usage).
    return [
        UsageRow(
            cost_center=total.cost_center,
            team=total.team,
            app=total.app,
            meter=total.meter,
            quantity=quantity,
            lifecycle=lifecycles.get(total.app, "persistent"),
            at=part.start,
        )
    ]
