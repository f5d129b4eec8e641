"""The cost of any period, per team and app, priced as a run of it would be, without storing
a document: a week, a quarter, the days since a change. Runs bill calendar periods and only an
admin creates them; finance and team-members ask what a period cost (OpenCost's allocation
window, Lago's usage of a date range)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal

from sqlalchemy.orm import Session

from quartermaster.billing.calculator import BillingCalculator, Computed
from quartermaster.billing.lines import LineDraft
from quartermaster.billing.preview import sum_by_owner, team_filter
from quartermaster.billing.service import (
    NOTHING_WAITING,
    Waiting,
    WaitingCounter,
    compute_period,
    document_note,
)
from quartermaster.domain.money import money_sum
from quartermaster.domain.timeutil import Period
from quartermaster.tenancy.service import AuthContext


@dataclass(frozen=True, slots=True)
class CostAmount:
    cost_center: str
    team: str | None
    app: str | None  # None: the team's (or cost center's) whole cost
    amount: Decimal


@dataclass(frozen=True, slots=True)
class PeriodCosts:
    period: Period
    as_of: datetime  # usage recorded before it is in the figures
    currency: str
    price_book: str
    total: Decimal
    team: str | None  # the team the costs are limited to (a team-member's own, or ?team=)
    teams: list[CostAmount]  # largest first
    apps: list[CostAmount]
    waiting: Waiting = NOTHING_WAITING
    note: str | None = None  # what the figures leave out, as a run's document says it

    @property
    def complete(self) -> bool:
        """Whether every event of the period recorded so far is in the figures: the period
        has ended before `as_of` and none of its events waits for an owner."""
        return self.as_of >= self.period.end and self.waiting.events == 0


def period_costs(
    caller: AuthContext,
    period: Period,
    *,
    calculator: BillingCalculator,
    session: Session,
    price_book: str | None = None,
    team: str | None = None,
    waiting: WaitingCounter | None = None,
) -> PeriodCosts:
    """The period's cost as recorded now, per (cost center, team) and app: the lines a run of
    the period would have (`compute_period`), summed. A team-member's are its own team's;
    naming another team is a 403, an unknown one a 422 (as the preview)."""
    team = team_filter(caller, team, session=session)
    as_of = calculator.cutoff()
    computed: Computed = compute_period(
        caller.tenant_id,
        period,
        as_of=as_of,
        price_book=price_book,
        calculator=calculator,
        session=session,
    )
    mine = [line for line in computed.lines if team is None or line.team == team]
    teams, apps = by_owner(mine)
    return PeriodCosts(
        period=period,
        as_of=computed.as_of,
        currency=computed.currency,
        price_book=computed.price_book,
        total=money_sum(line.amount for line in mine),
        team=team,
        teams=teams,
        apps=apps,
        waiting=waiting(caller.tenant_id, period) if waiting is not None else NOTHING_WAITING,
        note=document_note(computed, team=team),
    )


def by_owner(lines: Iterable[LineDraft]) -> tuple[list[CostAmount], list[CostAmount]]:
    """The lines' cost per team and per app, largest first. Pure."""
    teams, apps = sum_by_owner(lines)
    team_rows = [CostAmount(cc, team, None, amount) for (cc, team), (amount,) in teams.items()]
    app_rows = [CostAmount(cc, team, app, amount) for (cc, team, app), (amount,) in apps.items()]
    return sorted(team_rows, key=_largest_first), sorted(app_rows, key=_largest_first)


def _largest_first(row: CostAmount) -> tuple[Decimal, str, str, str]:
    return (-row.amount, row.cost_center, row.team or "", row.app or "")
