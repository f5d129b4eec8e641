"""What a billing document is computed from, and the pure step that prices it.

A `BillingCalculator` reads a period's inputs (usage per owner and meter, shared platform
costs) as recorded up to a cutoff, and prices them with the tenant's price book as known
at that cutoff. The store-backed calculator (billing.sources) reads the usage store and
the control plane; tests may hand in plain rows. `price_inputs` is the pure core.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction
from typing import Protocol

from sqlalchemy.orm import Session

from quartermaster.billing.lines import LineDraft, build_lines
from quartermaster.domain.timeutil import Period
from quartermaster.pricing.book import CompiledBook, Owner
from quartermaster.pricing.document import SubscriptionRule
from quartermaster.pricing.engine import price_period
from quartermaster.pricing.history import NoVersionInForceError, PriceBookHistory
from quartermaster.pricing.lines import (
    LineKind,
    OwnerDirectory,
    PlatformCostItem,
    PricedLine,
    UnpricedCost,
    UnpricedUsage,
    UsageRow,
)
from quartermaster.pricing.rating import exact_context

# Forecast quantities are estimates: kept to 1e-9, far below any price's resolution.
FORECAST_QUANTUM = Decimal("1e-9")


@dataclass(frozen=True, slots=True)
class PeriodInputs:
    """Usage and platform costs of a period as recorded at or before `as_of`."""

    usage: tuple[UsageRow, ...]
    platform_costs: tuple[PlatformCostItem, ...]
    as_of: datetime


@dataclass(frozen=True, slots=True)
class PricingContext:
    """Control-plane facts pricing needs besides the usage: the price book history, who
    owns teams and apps (direct platform-cost targets), meter units, the default cost center."""

    history: PriceBookHistory
    directory: OwnerDirectory = field(default_factory=OwnerDirectory)
    units: Mapping[str, str] = field(default_factory=dict)
    default_cost_center: str = "default"


@dataclass(frozen=True, slots=True)
class Computed:
    lines: tuple[LineDraft, ...]
    currency: str
    price_book: str
    versions: tuple[int, ...]
    as_of: datetime
    unpriced: tuple[UnpricedUsage, ...] = ()
    # platform costs in another currency than the price book's: in no line, named in the note
    unpriced_costs: tuple[UnpricedCost, ...] = ()


class BillingCalculator(Protocol):
    def cutoff(self) -> datetime:
        """ "As recorded now": the moment before which everything recorded is in the usage
        store. It may wait for the pipeline to catch up, so call it before opening a unit of
        work (SQLite holds its write lock for a whole transaction)."""
        ...

    def inputs(
        self,
        tenant_id: str,
        period: Period,
        *,
        as_of: datetime,
        cuts: Sequence[datetime] = (),
        session: Session,
    ) -> PeriodInputs:
        """The period's inputs recorded before `as_of`. Usage is read in parts cut at
        `cuts` (price book changes) and dated at each part's start."""
        ...

    def context(
        self, tenant_id: str, *, price_book: str | None, session: Session
    ) -> PricingContext:
        """The tenant's price book (by name; None: its default one) and owner directory."""
        ...


def subscription_test(history: PriceBookHistory) -> _SubscriptionTest:
    return _SubscriptionTest(history)


class _SubscriptionTest:
    """Whether a usage line was priced by a subscription rule (in any version it used)."""

    def __init__(self, history: PriceBookHistory) -> None:
        self._books = {v.version: CompiledBook(v.document) for v in history.versions}

    def __call__(self, line: PricedLine) -> bool:
        if line.kind is not LineKind.USAGE or line.meter is None or line.team is None:
            return False
        owner = Owner(line.cost_center, line.team, line.app or "", line.lifecycle or "persistent")
        for version in line.versions:
            book = self._books.get(version)
            found = book.rule_for(line.meter, owner) if book is not None else None
            if found is not None and isinstance(found[1], SubscriptionRule):
                return True
        return False


def billable_usage(
    history: PriceBookHistory, period: Period, usage: Sequence[UsageRow], as_of: datetime
) -> tuple[UsageRow, ...]:
    """The usage rows worth pricing: every row with a quantity, and a row of quantity 0
    only where the version in force at its time prices its meter with a subscription (the
    fee is charged to every pool present in the period's usage, even one whose quantity is
    0: docs/pricing.md). A zero row of any other model would only add a 0.000000 line."""
    books: dict[int, CompiledBook] = {}
    kept: list[UsageRow] = []
    for row in usage:
        if row.quantity != 0:
            kept.append(row)
            continue
        try:
            version = history.version_at(row.at or period.start, as_of=as_of)
        except NoVersionInForceError:
            continue
        book = books.setdefault(version.version, CompiledBook(version.document))
        found = book.rule_for(row.meter, row.owner)
        if found is not None and isinstance(found[1], SubscriptionRule):
            kept.append(row)
    return tuple(kept)


def _noise(line: PricedLine) -> bool:
    """A usage line of no usage and no money: a member of a pool that others used."""
    return (
        line.kind is LineKind.USAGE
        and line.quantity == 0
        and line.gross_amount == 0
        and line.amount == 0
    )


def version_cuts(context: PricingContext) -> list[datetime]:
    """Where the price book changes: usage on either side may be priced differently."""
    return [version.effective_from for version in context.history.versions]


def price_inputs(context: PricingContext, period: Period, inputs: PeriodInputs) -> Computed:
    """Price one period's inputs with the price book as known at `inputs.as_of`."""
    result = price_period(
        context.history,
        period,
        billable_usage(context.history, period, inputs.usage, inputs.as_of),
        inputs.platform_costs,
        as_of=inputs.as_of,
        directory=context.directory,
        default_cost_center=context.default_cost_center,
    )
    result = replace(
        result,
        lines=tuple(line for line in result.lines if not _noise(line)),
        unpriced=tuple(u for u in result.unpriced if u.quantity != 0),
    )
    lines = build_lines(
        result, is_subscription=subscription_test(context.history), units=context.units
    )
    return Computed(
        lines=tuple(lines),
        currency=result.currency,
        price_book=result.price_book,
        versions=result.versions,
        as_of=inputs.as_of,
        unpriced=result.unpriced,
        unpriced_costs=result.unpriced_costs,
    )


def _scaled(value: Decimal, factor: Fraction) -> Decimal:
    with exact_context():
        exact = value * Decimal(factor.numerator) / Decimal(factor.denominator)
        return exact.quantize(FORECAST_QUANTUM, rounding=ROUND_HALF_EVEN)


def scale_inputs(inputs: PeriodInputs, factor: Fraction) -> PeriodInputs:
    """Every quantity and platform cost multiplied by `factor` (a run-rate projection)."""
    return replace(
        inputs,
        usage=tuple(replace(row, quantity=_scaled(row.quantity, factor)) for row in inputs.usage),
        platform_costs=tuple(
            replace(item, amount=_scaled(item.amount, factor)) for item in inputs.platform_costs
        ),
    )
