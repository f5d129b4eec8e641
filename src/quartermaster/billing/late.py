"""Late usage: events of a finalized run's period that became billable after the last
document of the run (the run, or its latest adjustment) was computed, and back-dated price
changes: versions of the run's price book recorded since then that take effect before its
period ends. No bill holds either until an adjustment (`qm bill adjust RUN`) does; this is
how finance learns that one is due, instead of finding it at the next reproduce."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.billing.adjustments import plan_adjustment
from quartermaster.billing.calculator import BillingCalculator
from quartermaster.billing.models import BillingDocument, DocumentStatus, DocumentType
from quartermaster.domain.timeutil import Period
from quartermaster.pricing.models import PriceBookVersionRow
from quartermaster.tenancy.models import Role
from quartermaster.tenancy.service import AuthContext
from quartermaster.usage.store import LateArrivals, UsageStore


@dataclass(frozen=True, slots=True)
class LateUsage:
    run: BillingDocument
    latest: BillingDocument  # the run or its latest adjustment: the figures billed so far
    arrivals: LateArrivals
    # The adjustment `qm bill adjust` would issue now (not stored; with back-dated price
    # changes too, if any); None: the late events change no line (a free tier absorbs them).
    due: BillingDocument | None
    # Versions of the run's price book recorded after `latest`, in force before the period
    # ends: back-dated price changes (listed even without late usage when they move a line).
    price_versions: tuple[int, ...] = ()

    @property
    def adjustment_due(self) -> Decimal | None:
        return self.due.total if self.due is not None else None

    @property
    def adjustment_lines(self) -> int:
        return self.due.line_count if self.due is not None else 0

    @property
    def currency(self) -> str:
        return self.due.currency if self.due is not None else self.run.currency


def latest_documents(
    tenant_id: str | None, *, session: Session, ended_after: datetime | None = None
) -> list[tuple[BillingDocument, BillingDocument]]:
    """(finalized run, its latest document) of the tenant (None: every tenant), newest
    period first; with `ended_after`, only runs of periods that ended after it."""
    query = select(BillingDocument).where(
        BillingDocument.doc_type == DocumentType.RUN.value,
        BillingDocument.status == DocumentStatus.FINALIZED.value,
    )
    if tenant_id is not None:
        query = query.where(BillingDocument.tenant_id == tenant_id)
    if ended_after is not None:
        query = query.where(BillingDocument.period_end > ended_after)
    runs = list(
        session.scalars(
            query.order_by(
                BillingDocument.period_start.desc(), BillingDocument.kind, BillingDocument.id
            )
        )
    )
    if not runs:
        return []
    adjustments = session.scalars(
        select(BillingDocument).where(
            BillingDocument.corrects_id.in_([run.id for run in runs]),
            BillingDocument.doc_type == DocumentType.ADJUSTMENT.value,
        )
    )
    latest = {run.id: run for run in runs}
    for adjustment in adjustments:
        corrected = adjustment.corrects_id or ""
        if adjustment.as_of > latest[corrected].as_of:
            latest[corrected] = adjustment
    return [(run, latest[run.id]) for run in runs]


def late_usage(
    tenant_id: str | None,
    *,
    store: UsageStore,
    calculator: BillingCalculator,
    session: Session,
    ended_after: datetime | None = None,
) -> list[LateUsage]:
    """Finalized runs whose period has events billable at or after their latest document's
    `as_of`, or back-dated price changes recorded after it that move a line, with how many
    events, when they arrived, which versions and the adjustment due; newest period first.
    The adjustment is computed (read only) for those runs alone."""
    # The adjustments are computed as of the cutoff (a settle window ago): a version recorded
    # after it is in none of them, and is not named until it is.
    cutoff = calculator.cutoff()
    found = (
        late_usage_of(
            run,
            latest,
            store=store,
            calculator=calculator,
            session=session,
            price_versions=back_dated_versions(run, latest, until=cutoff, session=session),
            as_of=cutoff,
        )
        for run, latest in latest_documents(tenant_id, session=session, ended_after=ended_after)
    )
    return [item for item in found if item is not None]


def back_dated_versions(
    run: BillingDocument, latest: BillingDocument, *, until: datetime, session: Session
) -> tuple[int, ...]:
    """Versions of the run's price book recorded after `latest` was computed (and by `until`)
    that take effect before the run's period ends, oldest first. Whether they move a line is
    the adjustment's to say: one superseded before the period starts moves none."""
    return tuple(
        session.scalars(
            select(PriceBookVersionRow.version)
            .where(
                PriceBookVersionRow.tenant_id == run.tenant_id,
                PriceBookVersionRow.name == run.price_book,
                PriceBookVersionRow.effective_from < run.period_end,
                PriceBookVersionRow.recorded_at > latest.as_of,
                PriceBookVersionRow.recorded_at <= until,
            )
            .order_by(PriceBookVersionRow.version)
        )
    )


def late_usage_of(
    run: BillingDocument,
    latest: BillingDocument,
    *,
    store: UsageStore,
    calculator: BillingCalculator,
    session: Session,
    seen: LateArrivals | None = None,
    price_versions: tuple[int, ...] = (),
    as_of: datetime | None = None,
) -> LateUsage | None:
    """The run's late usage since `latest`, or its `price_versions` (back-dated price changes)
    when they move a line (None: neither), with the adjustment due as of `as_of` (None: the
    calculator's cutoff now); with `seen`, None when nothing arrived since those arrivals were
    seen (the adjustment due is not computed again)."""
    period = Period(run.period_start, run.period_end)
    cutoff = as_of if as_of is not None else calculator.cutoff()
    # Only what the adjustment computed as of the cutoff holds: an event of the last settle
    # window counted now would be due "no change", and seen, before it is priced.
    arrivals = store.late_arrivals(run.tenant_id, period, since=latest.as_of, until=cutoff)
    if arrivals == seen or not (arrivals.events or price_versions):
        return None
    reader = AuthContext(run.tenant_id, "billing", "billing", Role.FINANCE, None, None)
    plan = plan_adjustment(reader, run.id, as_of=cutoff, calculator=calculator, session=session)
    if plan is None and not arrivals.events:
        return None
    return LateUsage(
        run, latest, arrivals, plan.document if plan is not None else None, price_versions
    )
