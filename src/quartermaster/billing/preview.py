"""Month-to-date cost and a forecast to the end of the month, without creating a run.

The forecast is a run-rate projection of the *usage*, not of the money: every quantity and
platform cost of the month so far is multiplied by (length of the month ÷ time elapsed) and
the projected month is priced with the current price book, like a run would price it. So
free allowances, tiers, subscription fees and shared-cost allocation apply as they will at
the end of the month (a fee is not multiplied; an allowance is not used up early).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

from sqlalchemy.orm import Session

from quartermaster.billing.calculator import (
    BillingCalculator,
    price_inputs,
    scale_inputs,
    version_cuts,
)
from quartermaster.billing.lines import LineDraft
from quartermaster.billing.periods import month_containing, tenant_zone
from quartermaster.billing.service import (
    NOTHING_WAITING,
    Waiting,
    WaitingCounter,
    caller_team_slug,
    document_note,
    load_tenant,
)
from quartermaster.domain.money import money_context, money_sum
from quartermaster.domain.timeutil import Period, ensure_utc
from quartermaster.errors import PermissionDeniedError
from quartermaster.tenancy.service import AuthContext, require_team

FORECAST_METHOD = (
    "run-rate: month-to-date usage and platform costs x (month length / elapsed time), "
    "priced for the whole month with the current price book"
)
# Below this much elapsed time a run-rate says nothing: the forecast is the month so far.
MIN_ELAPSED = timedelta(hours=1)
ZERO = Decimal(0)
DAY_QUANTUM = Decimal("0.01")


@dataclass(frozen=True, slots=True)
class CostRow:
    cost_center: str
    team: str | None
    app: str | None
    month_to_date: Decimal
    forecast: Decimal


@dataclass(frozen=True, slots=True)
class Preview:
    period: Period  # the whole month
    as_of: datetime
    elapsed_days: Decimal
    total_days: Decimal
    currency: str
    price_book: str
    month_to_date: Decimal
    forecast: Decimal
    teams: list[CostRow]
    apps: list[CostRow]
    team: str | None  # the team the preview is limited to (a team-member's own, or ?team=)
    method: str = FORECAST_METHOD
    # The month's events still waiting in the reconciliation window (owner not known yet):
    # not in these figures, as not in a run of the month.
    waiting: Waiting = NOTHING_WAITING
    note: str | None = None  # what the month so far leaves out, as a run's document says it


def _days(span: timedelta) -> Decimal:
    return (Decimal(span.total_seconds()) / Decimal(86400)).quantize(
        DAY_QUANTUM, rounding=ROUND_HALF_EVEN
    )


TeamKey = tuple[str, str | None]  # cost center, team
AppKey = tuple[str, str | None, str]  # cost center, team, app


@money_context()
def sum_by_owner(
    *columns: Iterable[LineDraft],
) -> tuple[dict[TeamKey, list[Decimal]], dict[AppKey, list[Decimal]]]:
    """Each column's amounts per (cost center, team) and per (cost center, team, app), one
    figure per column. Lines charged to a team or cost center as a whole count for the team,
    not an app. Pure."""
    teams: dict[TeamKey, list[Decimal]] = {}
    apps: dict[AppKey, list[Decimal]] = {}
    for column, lines in enumerate(columns):
        for line in lines:
            team_key = (line.cost_center, line.team)
            teams.setdefault(team_key, [ZERO] * len(columns))[column] += line.amount
            if line.app is not None:
                app_key = (line.cost_center, line.team, line.app)
                apps.setdefault(app_key, [ZERO] * len(columns))[column] += line.amount
    return teams, apps


def summarize(
    month_to_date: Iterable[LineDraft], forecast: Iterable[LineDraft]
) -> tuple[list[CostRow], list[CostRow]]:
    """Cost per team and per app: so far and forecast, largest forecast first."""
    teams, apps = sum_by_owner(month_to_date, forecast)
    team_rows = [CostRow(cc, team, None, mtd, fc) for (cc, team), (mtd, fc) in teams.items()]
    app_rows = [CostRow(cc, team, app, mtd, fc) for (cc, team, app), (mtd, fc) in apps.items()]
    return sorted(team_rows, key=_largest_first), sorted(app_rows, key=_largest_first)


def _largest_first(row: CostRow) -> tuple[Decimal, str, str, str]:
    return (-row.forecast, row.cost_center, row.team or "", row.app or "")


def team_filter(caller: AuthContext, team: str | None, *, session: Session) -> str | None:
    """The team the preview is limited to: a team-member's own (naming another is refused,
    not quietly answered with its own); for admin and finance the one named, if any."""
    own = caller_team_slug(caller, session=session)
    if own is not None:
        if team not in (None, own):
            raise PermissionDeniedError(
                f"a team-member previews only its own team's costs ({own!r}), not {team!r}"
            )
        return own
    if team is None:
        return None
    return require_team(caller.tenant_id, team, field="team", session=session).slug


def preview(
    caller: AuthContext,
    *,
    calculator: BillingCalculator,
    session: Session,
    price_book: str | None = None,
    team: str | None = None,
    now: datetime | None = None,
    waiting: WaitingCounter | None = None,
) -> Preview:
    """The month so far and its forecast: the tenant's, or one `team`'s. A team-member's is
    its own team's; naming another team is a 403 (whether or not it exists).

    "So far" is up to the calculator's cutoff: the point the usage store is complete up to
    (a preview reads the store as it stands: `StoreCalculator.progress`), which the preview
    states as its `as_of`; the run-rate divides by the time elapsed up to it. `waiting`
    counts the month's events still waiting for their owner (not in the figures)."""
    as_of = calculator.cutoff()
    team = team_filter(caller, team, session=session)
    moment = ensure_utc(now) if now is not None else as_of
    zone = tenant_zone(load_tenant(caller.tenant_id, session=session).timezone)
    month = month_containing(moment, zone)
    elapsed = max(moment - month.start, timedelta(microseconds=1))
    context = calculator.context(caller.tenant_id, price_book=price_book, session=session)
    so_far = Period(month.start, month.start + elapsed)
    inputs = calculator.inputs(
        caller.tenant_id, so_far, as_of=as_of, cuts=version_cuts(context), session=session
    )
    current = price_inputs(context, so_far, inputs)
    if elapsed < MIN_ELAPSED:
        projected = current
    else:
        factor = Fraction(month.duration // timedelta(microseconds=1)) / Fraction(
            elapsed // timedelta(microseconds=1)
        )
        projected = price_inputs(context, month, scale_inputs(inputs, factor))
    mine = [line for line in current.lines if team is None or line.team == team]
    projected_mine = [line for line in projected.lines if team is None or line.team == team]
    teams, apps = summarize(mine, projected_mine)
    return Preview(
        period=month,
        as_of=inputs.as_of,
        elapsed_days=_days(elapsed),
        total_days=_days(month.duration),
        currency=current.currency,
        price_book=current.price_book,
        month_to_date=money_sum(line.amount for line in mine),
        forecast=money_sum(line.amount for line in projected_mine),
        teams=teams,
        apps=apps,
        team=team,
        waiting=waiting(caller.tenant_id, so_far) if waiting is not None else NOTHING_WAITING,
        note=document_note(current, team=team),
    )
