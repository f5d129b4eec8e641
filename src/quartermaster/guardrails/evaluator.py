"""Budget evaluation: spend per scope against every budget; each threshold of a period
fires once (the alert's unique dedup key), a hard crossing starts the budget's enforcement
once (the enforcement's unique (budget, period)). Run by `GuardrailEvaluator` every
`guardrails_interval_seconds`, so a crossing is seen within a pipeline pass plus that interval.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from quartermaster.domain.timeutil import Period, moment_text, utc_now
from quartermaster.errors import QMError
from quartermaster.guardrails.alerts import Severity, raise_alert
from quartermaster.guardrails.budgets import (
    ACTION_EFFECT,
    HARD,
    BudgetAction,
    BudgetPeriod,
    budget_period,
    crossed,
    thresholds_of,
)
from quartermaster.guardrails.caps import cap_periods, evaluate_caps
from quartermaster.guardrails.common import insert_once, record_action
from quartermaster.guardrails.models import Budget, DefaultCap, Enforcement
from quartermaster.guardrails.spend import ScopeSpend, SpendSource
from quartermaster.storage.base import new_id
from quartermaster.tenancy.models import Tenant

logger = logging.getLogger("quartermaster.guardrails")

# "dayly" was written from the period's name
_ADJECTIVE: dict[str, str] = {BudgetPeriod.MONTH: "monthly", BudgetPeriod.DAY: "daily"}


@dataclass
class Evaluation:
    """What one pass did for one tenant."""

    alerts: list[str] = field(default_factory=list)  # dedup keys newly raised
    # budget names (and default-cap:<kind>:<app>) newly enforced
    enforcements: list[str] = field(default_factory=list)


def _scope_label(kind: str, scope: str) -> str:
    return "the tenant" if not scope else f"{kind.replace('_', ' ')} {scope!r}"


def _money(value: Decimal, currency: str) -> str:
    return f"{value.quantize(Decimal('0.01'))} {currency}".strip()


def evaluate_tenant(
    tenant_id: str,
    *,
    spend: SpendSource,
    session: Session,
    now: datetime | None = None,
    reader: Session | None = None,
) -> Evaluation:
    """Evaluate every budget of the tenant now and commit what newly crossed. With a
    `reader` (a read-only session), the budgets are read and their periods priced through
    it before `session` is used at all: on SQLite a write session holds the database's
    write lock from its first statement, and pricing a month to date takes about a second
    at a few hundred apps, which ingestion and the pipeline would spend waiting."""
    moment = now or utc_now()
    read = reader or session
    tenant = read.get(Tenant, tenant_id)
    zone = tenant.timezone if tenant is not None else None
    budgets = list(read.scalars(select(Budget).where(Budget.tenant_id == tenant_id)))
    result = Evaluation()
    by_period: dict[Period, ScopeSpend] = {}

    def spend_of(period: Period) -> ScopeSpend:
        if period not in by_period:
            by_period[period] = spend.spend(tenant_id, period, session=read)
        return by_period[period]

    if reader is not None:
        for period in {budget_period(b.period, moment, zone) for b in budgets} | set(
            cap_periods(tenant_id, moment, zone, session=reader)
        ):
            spend_of(period)
    for budget in budgets:
        period = budget_period(budget.period, moment, zone)
        _evaluate_budget(budget, period, spend_of(period), session=session, result=result)
    capped = evaluate_caps(tenant_id, moment, zone, spend_of=spend_of, session=session)
    result.alerts += capped.alerts
    result.enforcements += capped.enforcements
    session.commit()
    return result


def _evaluate_budget(
    budget: Budget, period: Period, spent: ScopeSpend, *, session: Session, result: Evaluation
) -> None:
    amount = spent.of(budget.scope_kind, budget.scope)
    label = _scope_label(budget.scope_kind, budget.scope)
    stamp = period.start.isoformat()
    limit_text = _money(budget.amount, spent.currency)
    spent_text = _money(amount, spent.currency)
    base = {
        "budget": budget.name,
        "scope_kind": budget.scope_kind,
        "scope": budget.scope,
        "period_start": stamp,
        "period_end": period.end.isoformat(),
        "spend": str(amount),
        "amount": str(budget.amount),
        "currency": spent.currency,
        "as_of": spent.as_of.isoformat(),
    }
    for threshold in crossed(amount, budget.amount, thresholds_of(budget)):
        key = f"budget:{budget.id}:{stamp}:{threshold}"
        reason = (
            f"{label} spent {spent_text} of its {_ADJECTIVE[budget.period]} budget "
            f"{budget.name!r} "
            f"({limit_text}): {threshold}% threshold crossed"
        )
        severity = Severity.WARNING if threshold >= 80 else Severity.INFO
        alert_id = raise_alert(
            session,
            tenant_id=budget.tenant_id,
            kind="budget_threshold",
            severity=severity,
            dedup_key=key,
            title=f"Budget {budget.name}: {threshold}% reached",
            message=reason,
            details={**base, "threshold": threshold},
        )
        if alert_id is not None:
            result.alerts.append(key)
            record_action(
                session,
                tenant_id=budget.tenant_id,
                action=BudgetAction.NOTIFY,
                scope_kind=budget.scope_kind,
                scope=budget.scope,
                subject=f"budget:{budget.name}",
                reason=reason,
            )
    if amount * 100 < budget.amount * budget.hard_percent:
        return
    _hard_crossing(budget, period, amount, label, spent_text, limit_text, base, session, result)


def _hard_crossing(
    budget: Budget,
    period: Period,
    amount: Decimal,
    label: str,
    spent_text: str,
    limit_text: str,
    base: dict[str, str],
    session: Session,
    result: Evaluation,
) -> None:
    stamp = period.start.isoformat()
    verb = ACTION_EFFECT[BudgetAction(budget.action)]
    reason = (
        f"{label} spent {spent_text}, at or over {budget.hard_percent}% of budget "
        f"{budget.name!r} ({limit_text}) for the period from {moment_text(period.start)}: "
        f"{verb} until {moment_text(period.end)}"
    )
    key = f"budget:{budget.id}:{stamp}:{HARD}"
    alert_id = raise_alert(
        session,
        tenant_id=budget.tenant_id,
        kind="budget_threshold",
        severity=Severity.CRITICAL,
        dedup_key=key,
        title=f"Budget {budget.name}: hard limit reached ({budget.action})",
        message=reason,
        details={**base, "threshold": HARD, "action": budget.action},
    )
    if alert_id is not None:
        result.alerts.append(key)
    if budget.action == BudgetAction.NOTIFY:
        return
    inserted = insert_once(
        session,
        Enforcement,
        {
            "id": new_id(),
            "tenant_id": budget.tenant_id,
            "budget_id": budget.id,
            "scope_kind": budget.scope_kind,
            "scope": budget.scope,
            "action": budget.action,
            "period_start": period.start,
            "ends_at": period.end,
            "reason": reason,
            "created_at": utc_now(),
        },
        ("budget_id", "period_start"),
    )
    if inserted:
        result.enforcements.append(budget.name)
        record_action(
            session,
            tenant_id=budget.tenant_id,
            action=budget.action,
            scope_kind=budget.scope_kind,
            scope=budget.scope,
            subject=f"budget:{budget.name}",
            reason=reason,
        )


def tenants_with_budgets(*, session: Session) -> list[str]:
    """Tenants with a budget or a default cap: the ones an evaluation pass visits."""
    budgeted = select(Budget.tenant_id)
    capped = select(DefaultCap.tenant_id)
    return sorted(set(session.scalars(budgeted.union(capped))))


def evaluate_all(
    *,
    spend: SpendSource,
    session_factory: sessionmaker[Session],
    now: datetime | None = None,
    read_session_factory: sessionmaker[Session] | None = None,
    on_failure: Callable[[str, QMError], None],
) -> dict[str, Evaluation]:
    """Every tenant with a budget; one tenant's failure (e.g. no price book yet) goes to
    `on_failure` and does not stop the others. With
    `read_session_factory`, each tenant's spend is priced in a read-only session before its
    write session starts (see evaluate_tenant)."""
    results: dict[str, Evaluation] = {}
    readers = read_session_factory or session_factory
    with readers() as session:
        tenant_ids = tenants_with_budgets(session=session)
    for tenant_id in tenant_ids:
        with session_factory() as session, ExitStack() as stack:
            reader = stack.enter_context(read_session_factory()) if read_session_factory else None
            try:
                results[tenant_id] = evaluate_tenant(
                    tenant_id, spend=spend, session=session, now=now, reader=reader
                )
            except QMError as exc:
                session.rollback()
                on_failure(tenant_id, exc)
            except Exception:  # unexpected: logged with its traceback, the others go on
                session.rollback()
                logger.exception("budget evaluation of tenant %s failed", tenant_id)
    return results
