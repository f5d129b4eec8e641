"""Default hard caps: a per-tenant limit every ephemeral app, or every app outside
production, gets without anyone writing a budget for it.

A cap applies to each matching app that has no app budget of its own (an app budget is the
deliberate choice and wins). Evaluated by the budget evaluator on the same spend, and enforced
the same way as a budget's hard limit: a critical alert, an enforcement (throttle or halt) on
the app until the period ends or someone lifts it, and an action-log entry saying why. Each
(cap, app, period) fires once: the enforcement's unique (cap, scope, period) and the alert's
dedup key decide, whichever evaluator gets there first. An app matching both caps (an
ephemeral preview outside production) is held to each.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.catalog.models import App, Lifecycle
from quartermaster.domain.money import money_text, plain_text
from quartermaster.domain.timeutil import Period, moment_text, utc_now
from quartermaster.errors import InvalidInputError, NotFoundError
from quartermaster.guardrails import ending
from quartermaster.guardrails.alerts import Severity
from quartermaster.guardrails.budgets import (
    ACTION_EFFECT,
    BudgetAction,
    BudgetPeriod,
    amount_currency,
    budget_period,
    check_limit_amount,
    hard_limit_of,
    period_label,
)
from quartermaster.guardrails.common import ScopeKind, record_action
from quartermaster.guardrails.crossings import (
    ActionDraft,
    AlertDraft,
    Crossing,
    Lift,
    LiftOwner,
    lifted_in,
    rearmed,
)
from quartermaster.guardrails.models import Budget, DefaultCap
from quartermaster.guardrails.spend import ScopeSpend
from quartermaster.storage.base import new_id
from quartermaster.tenancy.service import AuthContext

PRODUCTION = "production"
CAP_ACTIONS = (BudgetAction.THROTTLE, BudgetAction.HALT)


class CapTarget(enum.StrEnum):
    EPHEMERAL = "ephemeral"  # apps with lifecycle ephemeral
    NON_PRODUCTION = "non_production"  # apps whose environment is not production


TARGET_LABEL = {
    CapTarget.EPHEMERAL: "ephemeral apps",
    CapTarget.NON_PRODUCTION: "non-production apps",
}


@dataclass(frozen=True, slots=True)
class CapSpec:
    applies_to: str
    amount: Decimal
    period: str = BudgetPeriod.MONTH
    action: str = BudgetAction.HALT
    currency: str | None = None  # None: the default price book's


def _check_target(applies_to: str) -> None:
    if applies_to not in {t.value for t in CapTarget}:
        targets = ", ".join(t.value for t in CapTarget)
        raise InvalidInputError(
            f"applies_to {applies_to!r} is not one of: {targets}", field="applies_to"
        )


def set_default_cap(caller: AuthContext, spec: CapSpec, *, session: Session) -> DefaultCap:
    """Create or change the tenant's cap for one kind of app."""
    _check_target(spec.applies_to)
    amount = check_limit_amount(spec.amount, what=f"default cap for {spec.applies_to!r}")
    if spec.period not in {p.value for p in BudgetPeriod}:
        raise InvalidInputError(f"period {spec.period!r} is not month or day", field="period")
    if spec.action not in {a.value for a in CAP_ACTIONS}:
        raise InvalidInputError(
            f"action {spec.action!r} is not throttle or halt (a cap is hard)", field="action"
        )
    currency = amount_currency(spec.currency, caller.tenant_id, session=session)
    row = session.scalar(
        select(DefaultCap).where(
            DefaultCap.tenant_id == caller.tenant_id, DefaultCap.applies_to == spec.applies_to
        )
    )
    if row is None:
        row = DefaultCap(tenant_id=caller.tenant_id, applies_to=spec.applies_to)
        session.add(row)
    row.amount = amount
    row.amount_currency = currency
    row.period = spec.period
    row.action = spec.action
    row.created_by = caller.principal_name
    row.created_at = utc_now()
    session.commit()
    return row


def list_default_caps(tenant_id: str, *, session: Session) -> list[DefaultCap]:
    query = select(DefaultCap).where(DefaultCap.tenant_id == tenant_id)
    return list(session.scalars(query.order_by(DefaultCap.applies_to)))


def delete_default_cap(caller: AuthContext, applies_to: str, *, session: Session) -> None:
    """Remove a cap. The throttles and halts it started end now and stay as history (lifted
    by the caller); the action log says who deleted it and what that ended."""
    _check_target(applies_to)
    row = session.scalar(
        select(DefaultCap).where(
            DefaultCap.tenant_id == caller.tenant_id, DefaultCap.applies_to == applies_to
        )
    )
    if row is None:
        raise NotFoundError(f"no default cap for {applies_to!r}", field="applies_to")
    now = utc_now()
    ended = ending.in_force(caller.tenant_id, session=session, now=now, cap_id=row.id)
    ending.end(ended, by=caller.principal_name, now=now)
    record_action(
        session,
        tenant_id=caller.tenant_id,
        action="delete",
        scope_kind=ScopeKind.TENANT,
        scope="",
        subject=f"default_cap:{applies_to}",
        reason=f"default cap for {TARGET_LABEL[CapTarget(applies_to)]} ({plain_text(row.amount)} "
        f"per {row.period}, {row.action}) deleted by {caller.principal_name}; "
        f"{ending.named(ended)}",
        at=now,
    )
    session.delete(row)
    session.commit()


def capped_apps(tenant_id: str, applies_to: str, *, session: Session) -> list[str]:
    """The apps a cap holds: of its kind, and without an app budget of their own."""
    kind = (
        App.lifecycle == Lifecycle.EPHEMERAL.value
        if applies_to == CapTarget.EPHEMERAL
        else App.environment != PRODUCTION
    )
    budgeted = select(Budget.scope).where(
        Budget.tenant_id == tenant_id, Budget.scope_kind == ScopeKind.APP
    )
    query = select(App.app_id).where(App.tenant_id == tenant_id, kind, App.app_id.not_in(budgeted))
    return list(session.scalars(query.order_by(App.app_id)))


def _money(value: Decimal, currency: str) -> str:
    return money_text(value, currency)


def cap_crossings(
    tenant_id: str,
    moment: datetime,
    zone: str | None,
    *,
    spend_of: Callable[[Period], ScopeSpend],
    session: Session,
    lifts: Mapping[LiftOwner, Sequence[Lift]],
) -> list[Crossing]:
    """What the tenant's caps call for now: for every capped app at or over its cap, a
    critical alert and an enforcement (computed only; the evaluator writes what is new).
    `lifts`: the lifted enforcements (`crossings.lifted_limits`): an app lifted at another
    amount is capped again. `session` only reads (a read-only one in a pass)."""
    found: list[Crossing] = []
    for cap in list_default_caps(tenant_id, session=session):
        apps = capped_apps(tenant_id, cap.applies_to, session=session)
        if not apps:
            continue  # nothing to price
        period = budget_period(cap.period, moment, zone)
        spent = spend_of(period)
        name = period_label(cap.period, period, zone)
        if cap.amount_currency not in (None, spent.currency):
            found.append(_cap_not_compared(cap, period, name, spent.currency))
            continue
        limit = hard_limit_of(cap.amount, 100)
        for app in apps:
            amount = spent.of(ScopeKind.APP, app)
            if amount < cap.amount:
                continue
            lifted = lifted_in(lifts.get(("", cap.id, app), []), period)
            again = rearmed(lifted, limit)
            found += _enforce(cap, app, period, name, amount, spent.currency, limit, again)
    return found


def _cap_not_compared(cap: DefaultCap, period: Period, name: str, currency: str) -> Crossing:
    """The warning, once per period and currency, that a cap in one currency is not compared
    with spend priced in another (no conversion is made)."""
    label = TARGET_LABEL[CapTarget(cap.applies_to)]
    reason = (
        f"the default cap for {label} ({_money(cap.amount, cap.amount_currency or '')}) is not "
        f"compared with this {cap.period}'s spend, priced in {currency} by the default price "
        f"book: set the cap again in {currency} (qm budget default-cap set)"
    )
    return Crossing(
        cap.tenant_id,
        alert=AlertDraft(
            kind="default_cap",
            severity=Severity.WARNING,
            dedup_key=f"cap:{cap.id}:{name}:currency:{currency}",
            title=f"Default cap for {label}: not evaluated (in {cap.amount_currency}, spend "
            f"in {currency})",
            message=reason,
            details={
                "applies_to": cap.applies_to,
                "period_start": period.start.isoformat(),
                "period_end": period.end.isoformat(),
                "amount": str(cap.amount),
                "amount_currency": cap.amount_currency,
                "currency": currency,
            },
        ),
    )


def _enforce(
    cap: DefaultCap,
    app: str,
    period: Period,
    name: str,
    amount: Decimal,
    currency: str,
    limit: Decimal,
    rearmed: bool,
) -> list[Crossing]:
    """The app's critical alert and enforcement; once a lifted enforcement's amount has
    changed (`rearmed`), the alert is keyed by the new amount."""
    stamp = period.start.isoformat()
    label = TARGET_LABEL[CapTarget(cap.applies_to)]
    verb = ACTION_EFFECT[BudgetAction(cap.action)]
    again = " again (the cap changed after the last one was lifted)" if rearmed else ""
    reason = (
        f"app {app!r} spent {_money(amount, currency)} this {cap.period}, at or over the "
        f"tenant's default hard cap for {label} ({_money(cap.amount, currency)}; the app has "
        f"no budget of its own): {verb} until {moment_text(period.end)}{again}"
    )
    key = f"cap:{cap.id}:{app}:{name}"
    alert = AlertDraft(
        kind="default_cap",
        severity=Severity.CRITICAL,
        dedup_key=f"{key}:{plain_text(limit)}" if rearmed else key,
        aliases=() if rearmed else (f"cap:{cap.id}:{app}:{stamp}",),
        title=f"App {app}: default cap for {label} reached{' again' if rearmed else ''} "
        f"({cap.action})",
        message=reason,
        details={
            "app": app,
            "applies_to": cap.applies_to,
            "period_start": stamp,
            "period_end": period.end.isoformat(),
            "spend": str(amount),
            "amount": str(cap.amount),
            "currency": currency,
            "action": cap.action,
        },
    )
    enforcement = {
        "id": new_id(),
        "tenant_id": cap.tenant_id,
        "budget_id": None,
        "cap_id": cap.id,
        "scope_kind": ScopeKind.APP.value,
        "scope": app,
        "action": cap.action,
        "period_start": period.start,
        "ends_at": period.end,
        "hard_limit": limit,
        "reason": reason,
        "created_at": utc_now(),
    }
    action = ActionDraft(
        action=cap.action,
        scope_kind=ScopeKind.APP,
        scope=app,
        subject=f"default_cap:{cap.applies_to}",
        reason=reason,
    )
    return [
        Crossing(cap.tenant_id, alert=alert),
        Crossing(
            cap.tenant_id,
            enforcement=enforcement,
            unique=("cap_id", "scope", "period_start", "hard_limit"),
            action=action,
            label=f"default-cap:{cap.applies_to}:{app}",
        ),
    ]
