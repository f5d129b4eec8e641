"""Budget evaluation: spend per scope against every budget; each threshold of a period
fires once (the alert's unique dedup key), a hard crossing starts the budget's enforcement
once (the enforcement's unique (budget, period, hard limit)): a lift lasts the period unless
the budget's hard limit changes, after which the new limit is enforced. Run by
`GuardrailEvaluator` every `guardrails_interval_seconds`, so a crossing is seen within a
pipeline pass plus that interval.
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

from quartermaster.domain.money import money_context, money_text, plain_text
from quartermaster.domain.timeutil import Period, moment_text, utc_now
from quartermaster.errors import QMError
from quartermaster.guardrails.alerts import Severity
from quartermaster.guardrails.budgets import (
    ACTION_EFFECT,
    HARD,
    BudgetAction,
    BudgetPeriod,
    budget_period,
    crossed,
    hard_limit_of,
    period_label,
    thresholds_of,
)
from quartermaster.guardrails.caps import cap_crossings
from quartermaster.guardrails.crossings import (
    WRITE_BATCH,
    ActionDraft,
    AlertDraft,
    Crossing,
    fire_all,
    lifted_in,
    lifted_limits,
    not_yet_fired,
    rearmed,
)
from quartermaster.guardrails.models import Budget, DefaultCap
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
    return money_text(value, currency)


def evaluate_tenant(
    tenant_id: str,
    *,
    spend: SpendSource,
    session: Session,
    now: datetime | None = None,
    reader: Session | None = None,
    batch: int = WRITE_BATCH,
) -> Evaluation:
    """Evaluate every budget and default cap of the tenant now, and commit what newly
    crossed. The computing (budgets and caps read, periods priced, thresholds compared,
    what already fired looked up) goes through `reader` (a read-only session) when given,
    and `session` only writes what is new, in transactions of at most `batch` crossings,
    each re-checked by its unique key: on SQLite a write session holds the database's write
    lock from its first statement to its commit, and comparing 3,000 budgets inside one
    held every other writer back for seconds. Without a reader, the reads go through
    `session`, whose reading transaction is ended before the first write."""
    read = reader or session
    pending = plan_tenant(tenant_id, spend=spend, session=read, now=now)
    read.rollback()  # end the reading transaction (a write session's: release the lock)
    fired = fire_all(pending, session=session, batch=batch)
    return Evaluation(alerts=fired.alerts, enforcements=fired.enforcements)


def plan_tenant(
    tenant_id: str, *, spend: SpendSource, session: Session, now: datetime | None = None
) -> list[Crossing]:
    """What the tenant's budgets and caps call for now and has not fired yet (computed
    only, reading with `session`; nothing is written)."""
    moment = now or utc_now()
    tenant = session.get(Tenant, tenant_id)
    zone = tenant.timezone if tenant is not None else None
    query = select(Budget).where(Budget.tenant_id == tenant_id).order_by(Budget.name)
    budgets = list(session.scalars(query))
    by_period: dict[Period, ScopeSpend] = {}

    def spend_of(period: Period) -> ScopeSpend:
        if period not in by_period:
            by_period[period] = spend.spend(tenant_id, period, session=session)
        return by_period[period]

    lifts = lifted_limits(tenant_id, moment, session=session)
    found: list[Crossing] = []
    for budget in budgets:
        period = budget_period(budget.period, moment, zone)
        label = period_label(budget.period, period, zone)
        lifted = lifted_in(lifts.get((budget.id, "", budget.scope), []), period)
        found += budget_crossings(budget, period, spend_of(period), label=label, lifted=lifted)
    found += cap_crossings(tenant_id, moment, zone, spend_of=spend_of, lifts=lifts, session=session)
    return not_yet_fired(tenant_id, found, session=session)


def budget_crossings(
    budget: Budget,
    period: Period,
    spent: ScopeSpend,
    *,
    label: str | None = None,
    lifted: list[Decimal | None] | None = None,
) -> list[Crossing]:
    """The alerts (one per threshold reached, and the hard limit's) and the enforcement the
    budget's spend calls for in `period`, whose calendar name is `label` (`period_label`;
    None: its UTC start's). `lifted`: the hard limits of the period's enforcements lifted
    (None for one made before limits were recorded); at another limit the budget is
    enforced again, with an alert of its own. Pure."""
    label = label or period_label(budget.period, period, None)
    if budget.amount_currency not in (None, spent.currency):
        return [_not_compared(budget, period, spent, label)]
    amount = spent.of(budget.scope_kind, budget.scope)
    whose = _scope_label(budget.scope_kind, budget.scope)
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
    found: list[Crossing] = []
    for threshold in crossed(amount, budget.amount, thresholds_of(budget)):
        reason = (
            f"{whose} spent {spent_text} of its {_ADJECTIVE[budget.period]} budget "
            f"{budget.name!r} "
            f"({limit_text}): {threshold}% threshold crossed"
        )
        alert = AlertDraft(
            kind="budget_threshold",
            severity=Severity.WARNING if threshold >= 80 else Severity.INFO,
            dedup_key=f"budget:{budget.id}:{label}:{threshold}",
            aliases=(f"budget:{budget.id}:{stamp}:{threshold}",),
            title=f"Budget {budget.name}: {threshold}% reached",
            message=reason,
            details={**base, "threshold": threshold},
        )
        found.append(Crossing(budget.tenant_id, alert=alert, action=_notified(budget, reason)))
    with money_context():
        below_hard = amount * 100 < budget.amount * budget.hard_percent
    if below_hard:
        return found
    limit = hard_limit_of(budget.amount, budget.hard_percent)
    again = budget.action != BudgetAction.NOTIFY and rearmed(lifted or [], limit)
    hard = _hard_crossing(
        budget, period, whose, spent_text, limit_text, base, label, limit=limit, rearmed=again
    )
    return found + hard


def _not_compared(budget: Budget, period: Period, spent: ScopeSpend, label: str) -> Crossing:
    """The warning, once per period and currency, that a budget in one currency is not
    compared with spend priced in another: no threshold alerts, no enforcement (no
    conversion is made)."""
    limit_text = _money(budget.amount, budget.amount_currency or "")
    reason = (
        f"budget {budget.name!r} ({limit_text}) is not compared with "
        f"{_scope_label(budget.scope_kind, budget.scope)}'s spend, priced in {spent.currency} "
        f"by the default price book: update it in {spent.currency} (qm budget update "
        f"{budget.name} --amount … --currency {spent.currency})"
    )
    alert = AlertDraft(
        kind="budget_threshold",
        severity=Severity.WARNING,
        dedup_key=f"budget:{budget.id}:{label}:currency:{spent.currency}",
        title=f"Budget {budget.name}: not evaluated (in {budget.amount_currency}, spend in "
        f"{spent.currency})",
        message=reason,
        details={
            "budget": budget.name,
            "scope_kind": budget.scope_kind,
            "scope": budget.scope,
            "period_start": period.start.isoformat(),
            "period_end": period.end.isoformat(),
            "amount": str(budget.amount),
            "amount_currency": budget.amount_currency,
            "currency": spent.currency,
        },
    )
    return Crossing(budget.tenant_id, alert=alert, action=_notified(budget, reason))


def _notified(budget: Budget, reason: str) -> ActionDraft:
    """The action-log entry of an alert about the budget (`notify`, with why)."""
    return ActionDraft(
        action=BudgetAction.NOTIFY,
        scope_kind=budget.scope_kind,
        scope=budget.scope,
        subject=f"budget:{budget.name}",
        reason=reason,
    )


def _hard_crossing(
    budget: Budget,
    period: Period,
    label: str,
    spent_text: str,
    limit_text: str,
    base: dict[str, str],
    period_name: str,
    *,
    limit: Decimal,
    rearmed: bool,
) -> list[Crossing]:
    """The hard limit's alert and, unless the budget only notifies, its enforcement. Once a
    lifted enforcement's limit has changed (`rearmed`), the alert is keyed by the new limit:
    the period's first hard alert has fired already."""
    stamp = period.start.isoformat()
    verb = ACTION_EFFECT[BudgetAction(budget.action)]
    again = " again (the budget changed after the last one was lifted)" if rearmed else ""
    reason = (
        f"{label} spent {spent_text}, at or over {budget.hard_percent}% of budget "
        f"{budget.name!r} ({limit_text}) for the period from {moment_text(period.start)}: "
        f"{verb} until {moment_text(period.end)}{again}"
    )
    key = f"budget:{budget.id}:{period_name}:{HARD}"
    alert = AlertDraft(
        kind="budget_threshold",
        severity=Severity.CRITICAL,
        dedup_key=f"{key}:{plain_text(limit)}" if rearmed else key,
        aliases=() if rearmed else (f"budget:{budget.id}:{stamp}:{HARD}",),
        title=f"Budget {budget.name}: hard limit reached{' again' if rearmed else ''} "
        f"({budget.action})",
        message=reason,
        details={**base, "threshold": HARD, "action": budget.action, "hard_limit": str(limit)},
    )
    found = [Crossing(budget.tenant_id, alert=alert)]
    if budget.action == BudgetAction.NOTIFY:
        return found
    enforcement = {
        "id": new_id(),
        "tenant_id": budget.tenant_id,
        "budget_id": budget.id,
        "scope_kind": budget.scope_kind,
        "scope": budget.scope,
        "action": budget.action,
        "period_start": period.start,
        "ends_at": period.end,
        "hard_limit": limit,
        "reason": reason,
        "created_at": utc_now(),
    }
    action = ActionDraft(
        action=budget.action,
        scope_kind=budget.scope_kind,
        scope=budget.scope,
        subject=f"budget:{budget.name}",
        reason=reason,
    )
    enforce = Crossing(
        budget.tenant_id,
        enforcement=enforcement,
        unique=("budget_id", "period_start", "hard_limit"),
        action=action,
        label=budget.name,
    )
    return [*found, enforce]


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
