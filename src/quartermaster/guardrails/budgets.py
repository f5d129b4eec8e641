"""Budgets: create, change, list, delete; and the pure rule of which thresholds a spend has
crossed."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from quartermaster.billing.periods import month_containing, tenant_zone
from quartermaster.domain.currencies import ACTIVE_CURRENCY, CURRENCY_CODE, is_active_currency
from quartermaster.domain.money import (
    LINE_QUANTUM,
    AmountOutOfRangeError,
    check_amount,
    fixed_point,
    money_context,
    plain_text,
    quantize_to,
)
from quartermaster.domain.timeutil import Period, utc_now
from quartermaster.errors import ConflictError, InvalidInputError, NotFoundError
from quartermaster.guardrails import ending
from quartermaster.guardrails.common import ScopeKind, check_scope, record_action, require_scope
from quartermaster.guardrails.models import Budget, Enforcement
from quartermaster.guardrails.visibility import MemberView, scope_filter
from quartermaster.pricing.service import default_currency
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
    currency: str | None = None  # None: the default price book's


def amount_currency(currency: str | None, tenant_id: str, *, session: Session) -> str | None:
    """The currency a budget's or cap's amount is in: `currency` as given (an ISO 4217 code,
    else 422 on `currency`), or the default price book's (None while the tenant has none)."""
    if currency is None:
        return default_currency(tenant_id, session=session)
    if not CURRENCY_CODE.match(currency):
        raise InvalidInputError(
            f"currency {currency!r} is not a three-letter ISO 4217 code such as USD or EUR",
            field="currency",
        )
    if not is_active_currency(currency):  # no price book or platform cost can be in it
        raise InvalidInputError(
            f"currency {currency!r} is not {ACTIVE_CURRENCY.what}", field="currency"
        )
    return currency


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


def split_thresholds_tuple(stored: str) -> tuple[int, ...]:
    return tuple(split_thresholds(stored))


def period_label(period: str, span: Period, zone_name: str | None) -> str:
    """The calendar period a budget period is, in the tenant's time zone: `2026-12` for a
    month, `2026-12-04` for a day. Alerts are keyed by it, so a time-zone change (whose
    periods start at other instants) does not make the same month or day a new period."""
    local = span.start.astimezone(tenant_zone(zone_name))
    return local.strftime("%Y-%m" if period == BudgetPeriod.MONTH else "%Y-%m-%d")


def thresholds_of(budget: Budget) -> list[int]:
    return split_thresholds(budget.thresholds)


def hard_limit_of(amount: Decimal, hard_percent: int) -> Decimal:
    """The spend at which a budget's action applies, exactly and without trailing zeros, so
    that one limit is one key of its enforcements however the amount was written. Pure."""
    with money_context():
        return Decimal(plain_text(amount * hard_percent / 100))


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


def check_limit_amount(amount: Decimal, *, what: str) -> Decimal:
    """A budget's or default cap's `amount`: positive, below `MAX_AMOUNT` and with at most
    six decimal places (as the ledger keeps money), else 422 on `amount`. Stored without
    trailing zeros past the sixth place, so its text always fits the column."""
    if amount <= 0:
        raise InvalidInputError(f"amount {fixed_point(amount)} must be positive", field="amount")
    try:
        check_amount(amount, what=what)
    except AmountOutOfRangeError as error:
        raise InvalidInputError(str(error), field="amount") from None
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent < -6:
        rounded = quantize_to(amount, LINE_QUANTUM, what="amount")
        if rounded != amount:
            raise InvalidInputError(
                f"amount {fixed_point(amount)} has more than 6 decimal places (money is kept "
                "to 0.000001 of the currency unit)",
                field="amount",
            )
        return rounded
    return amount


def _check_limits(
    amount: Decimal, thresholds: tuple[int, ...], hard_percent: int, action: str, *, what: str
) -> tuple[Decimal, str]:
    """The amount as stored and the thresholds as stored ("50,80,100"), or 422 naming the
    field: a positive amount, known action, hard_percent 1-1000 and soft thresholds at or
    below it (one above would alert after the action already applied)."""
    stored = check_limit_amount(amount, what=what)
    if action not in {a.value for a in BudgetAction}:
        raise InvalidInputError(
            f"action {action!r} is not one of notify, throttle, halt", field="action"
        )
    if not 1 <= hard_percent <= 1000:
        raise InvalidInputError(
            f"hard_percent {hard_percent} is not between 1 and 1000", field="hard_percent"
        )
    text = parse_thresholds(thresholds)
    above = [t for t in split_thresholds(text) if t > hard_percent]
    if above:
        raise InvalidInputError(
            f"threshold {above[0]} is above hard_percent {hard_percent}: a soft threshold is "
            f"an alert before the hard limit (raise hard_percent to {max(above)} or drop it)",
            field="thresholds",
        )
    return stored, text


def create_budget(caller: AuthContext, spec: BudgetSpec, *, session: Session) -> Budget:
    name = validate_slug(spec.name, field="name")
    kind, scope = check_scope(spec.scope_kind, spec.scope, allowed=BUDGET_SCOPES)
    require_scope(caller.tenant_id, kind, scope, session=session)
    if spec.period not in {p.value for p in BudgetPeriod}:
        raise InvalidInputError(f"period {spec.period!r} is not month or day", field="period")
    amount, thresholds = _check_limits(
        spec.amount, spec.thresholds, spec.hard_percent, spec.action, what=f"budget {name!r}"
    )
    budget = Budget(
        tenant_id=caller.tenant_id,
        name=name,
        scope_kind=kind,
        scope=scope,
        period=spec.period,
        amount=amount,
        thresholds=thresholds,
        hard_percent=spec.hard_percent,
        action=spec.action,
        amount_currency=amount_currency(spec.currency, caller.tenant_id, session=session),
        created_by=caller.principal_name,
    )
    session.add(budget)
    try:
        session.commit()
    except IntegrityError:
        session.rollback()
        raise ConflictError(f"a budget named {name!r} exists", field="name") from None
    return budget


@dataclass(frozen=True, slots=True)
class BudgetChange:
    """What `PATCH /v1/budgets/{name}` changes; None: keep it."""

    amount: Decimal | None = None
    thresholds: tuple[int, ...] | None = None
    hard_percent: int | None = None
    action: str | None = None
    currency: str | None = None


def _limits_text(amount: Decimal, thresholds: str, hard_percent: int, action: str) -> str:
    return (
        f"amount {plain_text(amount)}, thresholds {thresholds.replace(',', '/')}%, "
        f"{action} at {hard_percent}%"
    )


def update_budget(
    caller: AuthContext, name: str, change: BudgetChange, *, session: Session
) -> Budget:
    """Change a budget's limits, keeping its identity: what fired this period stays fired
    (each threshold alerts once per period whatever the amount), and a throttle or halt in
    force stays in force (raising the amount does not lift it; `qm alerts lift` does). A
    changed action applies to that enforcement at once: another hard action replaces it,
    `notify` ends it. Recorded in the action log with the old and new limits."""
    budget = get_budget(caller.tenant_id, name, session=session)
    amount, thresholds = _check_limits(
        budget.amount if change.amount is None else change.amount,
        split_thresholds_tuple(budget.thresholds)
        if change.thresholds is None
        else change.thresholds,
        budget.hard_percent if change.hard_percent is None else change.hard_percent,
        budget.action if change.action is None else change.action,
        what=f"budget {name!r}",
    )
    hard_percent = budget.hard_percent if change.hard_percent is None else change.hard_percent
    action = budget.action if change.action is None else change.action
    currency = budget.amount_currency
    if change.currency is not None:
        currency = amount_currency(change.currency, caller.tenant_id, session=session)
    before = _limits_text(budget.amount, budget.thresholds, budget.hard_percent, budget.action)
    after = _limits_text(amount, thresholds, hard_percent, action)
    if currency != budget.amount_currency:
        before += f", currency {budget.amount_currency or 'of the default price book'}"
        after += f", currency {currency}"
    if before == after:
        return budget
    now = utc_now()
    note = ""
    if action != budget.action:
        rows = ending.in_force(caller.tenant_id, session=session, now=now, budget_id=budget.id)
        if action == BudgetAction.NOTIFY:
            ending.end(rows, by=caller.principal_name, now=now)
            note = f"; {ending.named(rows)}"
        else:
            for row in rows:
                row.action = action
                row.reason = f"{row.reason} (action changed to {action} by {caller.principal_name})"
            if rows:
                note = f"; now {action}: " + ", ".join(r.id for r in rows)
    budget.amount = amount
    budget.thresholds = thresholds
    budget.hard_percent = hard_percent
    budget.action = action
    budget.amount_currency = currency
    record_action(
        session,
        tenant_id=caller.tenant_id,
        action="update",
        scope_kind=budget.scope_kind,
        scope=budget.scope,
        subject=f"budget:{budget.name}",
        reason=f"budget {budget.name!r} changed by {caller.principal_name}: {before} -> {after}"
        f"{note}",
        at=now,
    )
    session.commit()
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


def delete_budget(caller: AuthContext, name: str, *, session: Session) -> list[Enforcement]:
    """Delete a budget. Its throttles and halts in force end now and stay as history
    (lifted by the caller); the action log says who deleted it and what that ended. The
    enforcements ended."""
    budget = get_budget(caller.tenant_id, name, session=session)
    now = utc_now()
    rows = ending.in_force(caller.tenant_id, session=session, now=now, budget_id=budget.id)
    ending.end(rows, by=caller.principal_name, now=now)
    limits = _limits_text(budget.amount, budget.thresholds, budget.hard_percent, budget.action)
    record_action(
        session,
        tenant_id=caller.tenant_id,
        action="delete",
        scope_kind=budget.scope_kind,
        scope=budget.scope,
        subject=f"budget:{budget.name}",
        reason=f"budget {budget.name!r} ({limits} per {budget.period}) deleted by "
        f"{caller.principal_name}; {ending.named(rows)}",
        at=now,
    )
    session.delete(budget)
    session.commit()
    return rows
