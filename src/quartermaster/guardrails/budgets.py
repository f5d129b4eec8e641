"""Budgets: create, list, delete; and the pure rule of which thresholds a spend has crossed."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from quartermaster.billing.periods import month_containing, tenant_zone
from quartermaster.domain.money import AmountOutOfRangeError, check_amount, money_context
from quartermaster.domain.timeutil import Period
from quartermaster.errors import ConflictError, InvalidInputError, NotFoundError
from quartermaster.guardrails.common import ScopeKind, check_scope, require_scope
from quartermaster.guardrails.models import Budget
from quartermaster.guardrails.visibility import MemberView, scope_filter
from quartermaster.tenancy.service import AuthContext, validate_slug

BUDGET_SCOPES = (ScopeKind.TENANT, ScopeKind.COST_CENTER, ScopeKind.TEAM, ScopeKind.APP)
HARD = "hard"


class BudgetPeriod(enum.StrEnum):
    MONTH = "month"
    DAY = "day"


class BudgetAction(enum.StrEnum):
    NOTIFY = "notify"
    THROTTLE = "throttle"
    HALT = "halt"


# What each action does once its hard limit is reached, as alerts and decisions word it.
ACTION_EFFECT = {
    BudgetAction.NOTIFY: "notify only",
    BudgetAction.THROTTLE: "ingest and decision calls throttled (429)",
    BudgetAction.HALT: "new non-essential work refused",
}


@dataclass(frozen=True, slots=True)
class BudgetSpec:
    name: str
    scope_kind: str
    scope: str | None
    amount: Decimal
    period: str = BudgetPeriod.MONTH
    thresholds: tuple[int, ...] = (50, 80, 100)
    hard_percent: int = 100
    action: str = BudgetAction.NOTIFY


def parse_thresholds(values: tuple[int, ...]) -> str:
    if not values:
        raise InvalidInputError("give at least one threshold percentage", field="thresholds")
    for value in values:
        if not 1 <= value <= 1000:
            raise InvalidInputError(
                f"threshold {value} is not a percentage between 1 and 1000", field="thresholds"
            )
    return ",".join(str(v) for v in sorted(set(values)))


def split_thresholds(stored: str) -> list[int]:
    """The percentages a budget row keeps as "50,80,100"."""
    return [int(part) for part in stored.split(",") if part]


def thresholds_of(budget: Budget) -> list[int]:
    return split_thresholds(budget.thresholds)


def crossed(spend: Decimal, amount: Decimal, thresholds: list[int]) -> list[int]:
    """The thresholds (percent of `amount`) that `spend` has reached. Pure."""
    with money_context():  # exact products: the default context rounds past 28 digits
        return [t for t in thresholds if spend * 100 >= amount * t]


def budget_period(period: str, moment: datetime, zone_name: str | None) -> Period:
    """The budget period containing `moment`, in the tenant's time zone."""
    zone = tenant_zone(zone_name)
    if period == BudgetPeriod.MONTH:
        return month_containing(moment, zone)
    local = moment.astimezone(zone)
    start = local.replace(hour=0, minute=0, second=0, microsecond=0)
    end = start + timedelta(days=1)  # wall-clock arithmetic: the next local midnight
    return Period(start.astimezone(moment.tzinfo), end.astimezone(moment.tzinfo))


def create_budget(caller: AuthContext, spec: BudgetSpec, *, session: Session) -> Budget:
    name = validate_slug(spec.name, field="name")
    kind, scope = check_scope(spec.scope_kind, spec.scope, allowed=BUDGET_SCOPES)
    require_scope(caller.tenant_id, kind, scope, session=session)
    if spec.amount <= 0:
        raise InvalidInputError(f"amount {spec.amount} must be positive", field="amount")
    try:
        check_amount(spec.amount, what=f"budget {name!r}")
    except AmountOutOfRangeError as error:
        raise InvalidInputError(str(error), field="amount") from None
    if spec.period not in {p.value for p in BudgetPeriod}:
        raise InvalidInputError(f"period {spec.period!r} is not month or day", field="period")
    if spec.action not in {a.value for a in BudgetAction}:
        raise InvalidInputError(
            f"action {spec.action!r} is not one of notify, throttle, halt", field="action"
        )
    if not 1 <= spec.hard_percent <= 1000:
        raise InvalidInputError(
            f"hard_percent {spec.hard_percent} is not between 1 and 1000", field="hard_percent"
        )
    budget = Budget(
        tenant_id=caller.tenant_id,
        name=name,
        scope_kind=kind,
        scope=scope,
        period=spec.period,
        amount=spec.amount,
        thresholds=parse_thresholds(spec.thresholds),
        hard_percent=spec.hard_percent,
        action=spec.action,
        created_by=caller.principal_name,
    )
    session.add(budget)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ConflictError(f"a budget named {name!r} exists", field="name") from None
    return budget


def list_budgets(
    tenant_id: str, *, session: Session, view: MemberView | None = None
) -> list[Budget]:
    """The tenant's budgets; with a team-member's `view`, its team's and its apps' only."""
    query = select(Budget).where(Budget.tenant_id == tenant_id).order_by(Budget.name)
    if view is not None:
        query = query.where(scope_filter(view, Budget.scope_kind, Budget.scope))
    return list(session.scalars(query))


def get_budget(tenant_id: str, name: str, *, session: Session) -> Budget:
    budget = session.scalar(
        select(Budget).where(Budget.tenant_id == tenant_id, Budget.name == name)
    )
    if budget is None:
        raise NotFoundError(f"no budget named {name!r}", field="name")
    return budget


def delete_budget(tenant_id: str, name: str, *, session: Session) -> None:
    session.delete(get_budget(tenant_id, name, session=session))
    session.commit()
