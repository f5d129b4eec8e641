"""Where each budget stands now: its period's spend so far, as the evaluator prices it, and
what percent of the amount that is (`GET /v1/budgets?spend=true`, `qm budget list`)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Decimal

from sqlalchemy.orm import Session

from quartermaster.domain.timeutil import Period, utc_now
from quartermaster.guardrails.budgets import budget_period
from quartermaster.guardrails.models import Budget
from quartermaster.guardrails.spend import ScopeSpend, SpendSource
from quartermaster.tenancy.models import Tenant

PERCENT = Decimal("0.1")


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    spend: Decimal
    percent: Decimal | None  # of the amount, to 0.1; None: spend in another currency
    currency: str
    period_start: datetime
    period_end: datetime
    as_of: datetime


def percent_of(spend: Decimal, amount: Decimal) -> Decimal:
    """`spend` as a percentage of `amount`, to one decimal place. Pure."""
    return (spend * 100 / amount).quantize(PERCENT, rounding=ROUND_HALF_EVEN)


def budget_statuses(
    tenant_id: str,
    budgets: Sequence[Budget],
    *,
    spend: SpendSource,
    session: Session,
    now: datetime | None = None,
) -> dict[str, BudgetStatus]:
    """budget id -> where it stands now; each period priced once (a pricing failure, e.g. no
    price book yet, raises as the evaluator's does)."""
    moment = now or utc_now()
    tenant = session.get(Tenant, tenant_id)
    zone = tenant.timezone if tenant is not None else None
    priced: dict[Period, ScopeSpend] = {}
    found: dict[str, BudgetStatus] = {}
    for budget in budgets:
        period = budget_period(budget.period, moment, zone)
        if period not in priced:
            priced[period] = spend.spend(tenant_id, period, session=session)
        spent = priced[period]
        amount = spent.of(budget.scope_kind, budget.scope)
        compared = budget.amount_currency in (None, spent.currency)
        found[budget.id] = BudgetStatus(
            amount,
            percent_of(amount, budget.amount) if compared else None,
            spent.currency,
            period.start,
            period.end,
            spent.as_of,
        )
    return found
