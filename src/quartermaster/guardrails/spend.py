"""Spend per scope, priced by billing's calculator (the same pricing an invoice uses).

`SpendSource` is the seam the budget evaluator reads; `BillingSpend` prices the period so
far from the usage store with the tenant's price book, and sums the lines per scope.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Protocol

from sqlalchemy.orm import Session

from quartermaster.billing.calculator import BillingCalculator, price_inputs, version_cuts
from quartermaster.billing.lines import LineDraft
from quartermaster.domain.money import money_context
from quartermaster.domain.timeutil import Period
from quartermaster.guardrails.common import ScopeKind

ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class ScopeSpend:
    """Spend of a period so far, per scope kind and name ("" for the tenant)."""

    as_of: datetime
    currency: str
    totals: dict[tuple[str, str], Decimal] = field(default_factory=dict)
    lines: tuple[LineDraft, ...] = ()

    def of(self, kind: str, scope: str) -> Decimal:
        return self.totals.get((kind, scope), ZERO)


@money_context()
def totals_by_scope(lines: Iterable[LineDraft]) -> dict[tuple[str, str], Decimal]:
    """Sum line amounts per tenant, cost center, team and app. Pure."""
    totals: dict[tuple[str, str], Decimal] = {}

    def add(key: tuple[str, str], amount: Decimal) -> None:
        totals[key] = totals.get(key, ZERO) + amount

    for line in lines:
        add((ScopeKind.TENANT, ""), line.amount)
        add((ScopeKind.COST_CENTER, line.cost_center), line.amount)
        if line.team is not None:
            add((ScopeKind.TEAM, line.team), line.amount)
        if line.app is not None:
            add((ScopeKind.APP, line.app), line.amount)
    return totals


class SpendSource(Protocol):
    def spend(self, tenant_id: str, period: Period, *, session: Session) -> ScopeSpend:
        """What the tenant's scopes have spent in `period` up to now."""
        ...


class BillingSpend:
    """Prices [period.start, cutoff) with billing's calculator and the tenant's price book."""

    def __init__(self, calculator: BillingCalculator) -> None:
        self.calculator = calculator

    def spend(self, tenant_id: str, period: Period, *, session: Session) -> ScopeSpend:
        as_of = self.calculator.cutoff()
        end = min(max(as_of, period.start), period.end)
        if end <= period.start:
            return ScopeSpend(as_of=as_of, currency="")
        so_far = Period(period.start, end)
        context = self.calculator.context(tenant_id, price_book=None, session=session)
        inputs = self.calculator.inputs(
            tenant_id, so_far, as_of=as_of, cuts=version_cuts(context), session=session
        )
        computed = price_inputs(context, so_far, inputs)
        return ScopeSpend(
            as_of=as_of,
            currency=computed.currency,
            totals=totals_by_scope(computed.lines),
            lines=computed.lines,
        )
