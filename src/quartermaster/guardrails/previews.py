"""Preview invoices right after a high-cost hour, so no one waits for month end to learn of it.

An app's cost of an hour is what its month-to-date cost grew by over that hour: the month
priced up to now minus the month priced up to the hour's start (so tiers, allowances and fees
count as they will on the invoice, not as if each hour were a month of its own). When an app's
hour reaches the tenant's `high_cost_hour_amount` (a single expensive event does at once), the
evaluator makes a preview invoice for the app's owner scope — billing's month-to-date and
forecast (billing/preview.py) of the app, its team and the tenant — naming the meters and the
top events behind the hour, stores it, and raises a `high_cost_event` alert whose details link
it (webhooks carry it like any alert). One preview per app and hour.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from quartermaster.billing.calculator import BillingCalculator
from quartermaster.billing.lines import LineDraft
from quartermaster.billing.periods import month_containing, tenant_zone
from quartermaster.billing.preview import CostRow, Preview, preview
from quartermaster.billing.service import caller_team_slug
from quartermaster.domain.money import money_context, money_text, plain_text
from quartermaster.domain.timeutil import HOUR, Period, moment_text, utc_now
from quartermaster.errors import InvalidInputError, NotFoundError
from quartermaster.guardrails.alerts import Severity, raise_alert
from quartermaster.guardrails.common import ScopeKind, insert_once, record_action
from quartermaster.guardrails.models import CostPreview, GuardrailSettings
from quartermaster.guardrails.spend import BillingSpend, ScopeSpend
from quartermaster.guardrails.visibility import member_preview
from quartermaster.storage.base import new_id
from quartermaster.storage.ids import by_id_or_prefix
from quartermaster.tenancy.models import Role, Tenant
from quartermaster.tenancy.service import AuthContext
from quartermaster.usage.store import UsageStore

logger = logging.getLogger("quartermaster.guardrails.previews")
HIGH_COST_KIND = "high_cost_event"
ZERO = Decimal(0)
TOP_METERS = 3
TOP_EVENTS = 5


# --- the tenant's threshold -----------------------------------------------------------------


def get_guardrail_settings(tenant_id: str, *, session: Session) -> GuardrailSettings | None:
    return session.get(GuardrailSettings, tenant_id)


def set_high_cost_threshold(
    caller: AuthContext, amount: Decimal | None, *, session: Session
) -> GuardrailSettings:
    """The app-hour cost that makes a preview invoice; None turns previews off."""
    if amount is not None and amount <= 0:
        raise InvalidInputError(
            f"high_cost_hour_amount {amount} must be positive (or null: off)",
            field="high_cost_hour_amount",
        )
    row = session.get(GuardrailSettings, caller.tenant_id)
    if row is None:
        row = GuardrailSettings(tenant_id=caller.tenant_id)
        session.add(row)
    row.high_cost_hour_amount = amount
    row.updated_by = caller.principal_name
    row.updated_at = utc_now()
    session.commit()
    return row


def watching_tenants(*, session: Session) -> list[tuple[str, Decimal]]:
    """(tenant, threshold) of every tenant with previews after high-cost hours on."""
    rows = session.execute(
        select(GuardrailSettings.tenant_id, GuardrailSettings.high_cost_hour_amount).where(
            GuardrailSettings.high_cost_hour_amount.is_not(None)
        )
    )
    return [(str(t), Decimal(a)) for t, a in rows if a is not None]


# --- pure pieces ----------------------------------------------------------------------------


Owner = tuple[str, str | None]  # (cost center, team): whom billing charges an app's line to


@dataclass(frozen=True, slots=True)
class AppCost:
    """An app's cost (per meter too), and per owner: an app that changed team within the month
    has lines under each team it had (billing charges usage to the owner of its time).
    `team` and `cost_center` are the owner that carries most of `amount`."""

    app: str
    team: str | None
    cost_center: str
    amount: Decimal
    meters: dict[str, Decimal]
    owners: dict[Owner, Decimal] = field(default_factory=dict)


def _largest_owner(owners: dict[Owner, Decimal], fallback: Owner) -> Owner:
    if not owners:
        return fallback
    return max(owners, key=lambda owner: (owners[owner], owner[0], owner[1] or ""))


def app_costs(lines: Iterable[LineDraft]) -> dict[str, AppCost]:
    """Cost per app, per (app, meter) and per (app, owner). Pure."""
    totals: dict[str, AppCost] = {}
    for line in lines:
        if line.app is None:
            continue
        seen = totals.get(line.app)
        meters = dict(seen.meters) if seen else {}
        if line.meter is not None:
            meters[line.meter] = meters.get(line.meter, ZERO) + line.amount
        owners = dict(seen.owners) if seen else {}
        owner = (line.cost_center, line.team)
        owners[owner] = owners.get(owner, ZERO) + line.amount
        amount = (seen.amount if seen else ZERO) + line.amount
        center, team = _largest_owner(owners, owner)
        totals[line.app] = AppCost(line.app, team, center, amount, meters, owners)
    return totals


@money_context()
def hour_growth(now: dict[str, AppCost], before: dict[str, AppCost]) -> dict[str, AppCost]:
    """What each app's month-to-date grew by between two points (per meter and per owner
    too); the hour's owner is the one whose part grew most (an app moved to another team
    before the hour is its new team's, whatever its earlier team spent this month). Pure."""
    grown: dict[str, AppCost] = {}
    for app, cost in now.items():
        earlier = before.get(app)
        prior = earlier.meters if earlier else {}
        meters = {m: a - prior.get(m, ZERO) for m, a in cost.meters.items()}
        prior_owners = earlier.owners if earlier else {}
        owners = {o: a - prior_owners.get(o, ZERO) for o, a in cost.owners.items()}
        amount = cost.amount - (earlier.amount if earlier else ZERO)
        center, team = _largest_owner(owners, (cost.cost_center, cost.team))
        grown[app] = AppCost(app, team, center, amount, meters, owners)
    return grown


def hours_to_check(as_of: datetime, month: Period) -> list[Period]:
    """The hour holding `as_of` and the one before it (an event late in an hour is often
    priced only after the hour ends), clipped to the month. Pure."""
    start = max(as_of.replace(minute=0, second=0, microsecond=0), month.start)
    hours = [Period(start, min(start + HOUR, month.end))]
    if start > month.start:
        hours.append(Period(max(start - HOUR, month.start), start))
    return hours


# --- the scan -------------------------------------------------------------------------------


def _system_caller(tenant_id: str) -> AuthContext:
    return AuthContext(tenant_id, "guardrails", "guardrails", Role.FINANCE, None, None)


def _owned(row: CostRow, owner: Owner) -> bool:
    return (row.cost_center, row.team) == owner


def _row(row: CostRow | None) -> dict[str, str] | None:
    if row is None:
        return None
    return {"month_to_date": str(row.month_to_date), "forecast": str(row.forecast)}


@dataclass(frozen=True)
class _PricedUntil:
    """The month to date of each app up to the hour start it is kept under, as priced at
    `as_of`."""

    as_of: datetime
    costs: dict[str, AppCost]


class HighCostScanner:
    """Finds high-cost app-hours and makes their previews. Keeps each month-to-date priced up
    to an hour's start for as long as that hour is checked (it prices past hours only), until
    usage from before that start arrives late (`_forget_late`)."""

    # Between a row's processed_at stamp and its commit; as the anomaly scan allows.
    COMMIT_OVERLAP = timedelta(seconds=60)

    def __init__(self, calculator: BillingCalculator, store: UsageStore) -> None:
        self.calculator = calculator
        self.store = store
        self.spend = BillingSpend(calculator)
        self._upto: dict[tuple[str, datetime], _PricedUntil] = {}

    def _costs_until(
        self, tenant_id: str, month: Period, end: datetime, *, session: Session
    ) -> dict[str, AppCost]:
        if end <= month.start:
            return {}
        key = (tenant_id, end)
        if key not in self._upto:
            spent = self.spend.spend(tenant_id, Period(month.start, end), session=session)
            self._upto[key] = _PricedUntil(spent.as_of, app_costs(spent.lines))
        return self._upto[key].costs

    def _forget_late(self, tenant_id: str) -> None:
        """Drop each kept month-to-date that usage processed since it was priced falls
        before: an event of 11:59:50 rated after a pass at 12:00:03 had priced "up to 12:00"
        would otherwise count as the 12:00 hour's growth, and that hour's preview would name
        the wrong hour and miss its top event."""
        kept = [(end, priced.as_of) for (t, end), priced in self._upto.items() if t == tenant_id]
        if not kept:
            return
        since = min(as_of for _, as_of in kept) - self.COMMIT_OVERLAP
        touched = self.store.touched_hours(processed_since=since).get(tenant_id, {})
        for end, as_of in kept:
            if any(h < end and last >= as_of - self.COMMIT_OVERLAP for h, last in touched.items()):
                del self._upto[(tenant_id, end)]

    def forget_before(self, moment: datetime) -> None:
        for key in [k for k in self._upto if k[1] < moment]:
            del self._upto[key]

    def scan(
        self,
        tenant_id: str,
        threshold: Decimal,
        *,
        session: Session,
        now: datetime | None = None,
        reader: Session | None = None,
    ) -> list[str]:
        """Make the previews of the tenant's app-hours at or over `threshold`; their ids.
        With a `reader` (a read-only session) every read and all the pricing go through it,
        and `session` only writes the previews: on SQLite a write session holds the write
        lock from its first statement, and pricing the month to date takes about a second."""
        read = reader or session
        tenant = read.get(Tenant, tenant_id)
        zone = tenant_zone(tenant.timezone if tenant is not None else None)
        month = month_containing(now or self.calculator.cutoff(), zone)
        self._forget_late(tenant_id)
        current: ScopeSpend = self.spend.spend(tenant_id, month, session=read)
        latest = app_costs(current.lines)
        made: list[str] = []
        hours = hours_to_check(current.as_of, month)
        for hour in hours:
            before = self._costs_until(tenant_id, month, hour.start, session=read)
            if hour.end > current.as_of:  # the hour in progress: up to now
                after = latest
            else:
                after = self._costs_until(tenant_id, month, hour.end, session=read)
            for cost in hour_growth(after, before).values():
                if cost.amount < threshold:
                    continue
                preview_id = self._make(
                    tenant_id, cost, hour, threshold, current.currency, session=session, read=read
                )
                if preview_id is not None:
                    made.append(preview_id)
        self.forget_before(hours[-1].start)
        return made

    def _make(
        self,
        tenant_id: str,
        cost: AppCost,
        hour: Period,
        threshold: Decimal,
        currency: str,
        *,
        session: Session,
        read: Session,
    ) -> str | None:
        exists = read.scalar(
            select(CostPreview.id).where(
                CostPreview.tenant_id == tenant_id,
                CostPreview.app == cost.app,
                CostPreview.hour_start == hour.start,
            )
        )
        if exists is not None:
            return None
        priced = preview(_system_caller(tenant_id), calculator=self.calculator, session=read)
        body = self._body(tenant_id, cost, hour, threshold, currency, priced)
        preview_id = new_id()
        money = money_text(cost.amount, currency)
        top = body["top_event_ids"][0] if body["top_event_ids"] else None
        message = (
            f"app {cost.app!r} cost {money} in the hour from {moment_text(hour.start)} "
            f"(threshold {threshold} {currency}); month to date "
            f"{body['app']['month_to_date']} {currency}, forecast {body['app']['forecast']} "
            f"{currency}" + (f"; top event {top}" if top else "")
        )
        inserted = insert_once(
            session,
            CostPreview,
            {
                "id": preview_id,
                "tenant_id": tenant_id,
                "app": cost.app,
                "team": cost.team,
                "cost_center": cost.cost_center,
                "hour_start": hour.start,
                "hour_cost": cost.amount,
                "threshold": threshold,
                "currency": currency,
                "body": orjson.dumps(body).decode(),
                "alert_id": None,
                "created_at": utc_now(),
            },
            ("tenant_id", "app", "hour_start"),
        )
        if not inserted:
            session.rollback()
            return None
        alert_id = raise_alert(
            session,
            tenant_id=tenant_id,
            kind=HIGH_COST_KIND,
            severity=Severity.WARNING,
            dedup_key=f"high_cost:{cost.app}:{hour.start.isoformat()}",
            title=f"High-cost hour: app {cost.app} cost {money}",
            message=message,
            details={
                "preview_id": preview_id,
                "preview_url": f"/v1/cost-previews/{preview_id}",
                "app": cost.app,
                "team": cost.team,
                "hour_start": hour.start.isoformat(),
                "hour_cost": str(cost.amount),
                "threshold": str(threshold),
                "currency": currency,
                "top_event_ids": body["top_event_ids"],
            },
        )
        row = session.get(CostPreview, preview_id)
        if row is not None:
            row.alert_id = alert_id
        record_action(
            session,
            tenant_id=tenant_id,
            action="preview",
            scope_kind=ScopeKind.APP,
            scope=cost.app,
            subject=f"cost_preview:{preview_id}",
            reason=message,
        )
        session.commit()
        return preview_id

    def _body(
        self,
        tenant_id: str,
        cost: AppCost,
        hour: Period,
        threshold: Decimal,
        currency: str,
        priced: Preview,
    ) -> dict[str, Any]:
        # Billing's rows of the hour's owner: the app's and its team's month to date are
        # what a run charges to that team; the app's part under another owner this month
        # (before it moved) is listed beside it, not added to it or to this team.
        owner = (cost.cost_center, cost.team)
        app_row = next((r for r in priced.apps if _owned(r, owner) and r.app == cost.app), None)
        team_row = next((r for r in priced.teams if _owned(r, owner)), None)
        team_apps = [r for r in priced.apps if _owned(r, owner)][:10]
        elsewhere = [r for r in priced.apps if r.app == cost.app and not _owned(r, owner)]
        meters = sorted(cost.meters.items(), key=lambda item: (-item[1], item[0]))
        meter_rows: list[dict[str, Any]] = []
        top_ids: list[str] = []
        for meter, amount in meters[:TOP_METERS]:
            if amount <= 0:
                continue
            events = self.store.top_events(
                tenant_id, hour, app=cost.app, meter=meter, limit=TOP_EVENTS
            )
            rows = [
                {
                    "event_id": e.event_id,
                    "event_time": e.event_time.isoformat(),
                    "event_type": e.event_type,
                    "source": e.source,
                    "quantity": plain_text(e.quantity),
                }
                for e in events
            ]
            top_ids += [r["event_id"] for r in rows if r["event_id"] not in top_ids]
            meter_rows.append({"meter": meter, "hour_cost": str(amount), "top_events": rows})
        return {
            "app": {"name": cost.app, **(_row(app_row) or {"month_to_date": "0", "forecast": "0"})},
            "app_other_teams": [
                {"team": r.team, "cost_center": r.cost_center, **(_row(r) or {})} for r in elsewhere
            ],
            "team": {"name": cost.team, **(_row(team_row) or {})},
            "team_apps": [{"app": r.app, **(_row(r) or {})} for r in team_apps],
            "tenant": {
                "month_to_date": str(priced.month_to_date),
                "forecast": str(priced.forecast),
            },
            "cost_center": cost.cost_center,
            "hour_start": hour.start.isoformat(),
            "hour_end": hour.end.isoformat(),
            "hour_cost": str(cost.amount),
            "threshold": str(threshold),
            "currency": currency,
            "price_book": priced.price_book,
            "month_start": priced.period.start.isoformat(),
            "month_end": priced.period.end.isoformat(),
            "as_of": priced.as_of.isoformat(),
            "method": priced.method,
            "meters": meter_rows,
            "top_event_ids": top_ids,
        }


def scan_all(
    scanner: HighCostScanner,
    *,
    session_factory: sessionmaker[Session],
    now: datetime | None = None,
    read_session_factory: sessionmaker[Session] | None = None,
    on_failure: Callable[[str, Exception], None] | None = None,
) -> dict[str, list[str]]:
    """Every tenant with a threshold, and the previews made for each that was scanned; one
    tenant's failure (e.g. no price book) goes to `on_failure` (default: logged with its
    traceback) and does not stop the others. With `read_session_factory`, reads and pricing
    use read-only sessions (see scan)."""
    with (read_session_factory or session_factory)() as session:
        tenants = watching_tenants(session=session)
    made: dict[str, list[str]] = {}
    for tenant_id, threshold in tenants:
        with session_factory() as session, ExitStack() as stack:
            reader = stack.enter_context(read_session_factory()) if read_session_factory else None
            try:
                made[tenant_id] = scanner.scan(
                    tenant_id, threshold, session=session, now=now, reader=reader
                )
            except Exception as exc:  # one tenant's failure, expected or not, skips only it
                session.rollback()
                if on_failure is None:
                    logger.exception("high-cost scan of tenant %s failed", tenant_id)
                else:
                    on_failure(tenant_id, exc)
    return made


# --- reading previews ------------------------------------------------------------------------


def _visible(caller: AuthContext, *, session: Session) -> Any:
    query = select(CostPreview).where(CostPreview.tenant_id == caller.tenant_id)
    team = caller_team_slug(caller, session=session)
    return query if team is None else query.where(CostPreview.team == team)


def list_previews(
    caller: AuthContext, *, app: str | None = None, limit: int = 50, session: Session
) -> list[CostPreview]:
    """Newest first; a team-member sees its own team's only."""
    query = _visible(caller, session=session)
    if app is not None:
        query = query.where(CostPreview.app == app)
    query = query.order_by(CostPreview.created_at.desc(), CostPreview.id).limit(limit)
    return list(session.scalars(query))


def get_preview(caller: AuthContext, preview_id: str, *, session: Session) -> CostPreview:
    row: CostPreview | None = by_id_or_prefix(
        _visible(caller, session=session),
        CostPreview.id,
        preview_id,
        what="cost preview",
        field="preview_id",
        session=session,
    )
    if row is None:
        raise NotFoundError(f"no cost preview {preview_id!r}", field="preview_id")
    return row


def preview_body(row: CostPreview, *, reader: AuthContext | None = None) -> dict[str, Any]:
    """The stored preview; a team-member `reader` gets it without the tenant's totals."""
    body: dict[str, Any] = orjson.loads(row.body)
    if reader is not None and reader.role is Role.TEAM_MEMBER:
        return member_preview(body)
    return body
