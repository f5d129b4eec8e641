"""What an evaluation pass may newly fire, computed apart from writing it.

A pass first computes, through a read-only session (or with no session at all), every alert
and enforcement its budgets and default caps call for (`Crossing`), and drops those already
recorded (`not_yet_fired`). Only what is left is written, by `fire_all`, in short write
transactions of a few crossings each: on SQLite a write session holds the database's only
write lock from its first statement to its commit, and a pass that compared thousands of
budgets inside one held every other writer of the server back for seconds.

Each crossing is written with insert-once on its unique key (the alert's dedup key, the
enforcement's (budget, period, hard limit) or (cap, app, period, hard limit)) inside the
write transaction, so a concurrent pass, or another server, that got there first makes it
a no-op: an alert still fires exactly once per threshold per period. A period is the
calendar month or day in the tenant's time zone: alert keys name it (`2026-12`), and an
enforcement whose period holds the middle of the new one counts as its own, so a time-zone
change (periods starting at other instants) re-fires nothing and re-starts no enforcement a
lift ended. A budget or capped app whose enforcement was lifted is enforced again only at
another hard limit (`_forestalls`, `rearmed`).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.domain.timeutil import Period
from quartermaster.guardrails.alerts import Severity, raise_alert
from quartermaster.guardrails.common import insert_once, record_action
from quartermaster.guardrails.models import Alert, Enforcement

# Crossings written per write transaction: each is an insert or two, so the write lock is
# held for milliseconds, and a first pass over thousands of budgets lets other writers in.
WRITE_BATCH = 50
# ...and at most this long (a busy database makes each insert slower).
MAX_HOLD_SECONDS = 0.1
# Keys per IN (...) when looking up what already fired (SQLite limits bound parameters).
_LOOKUP_CHUNK = 500


@dataclass(frozen=True, slots=True)
class AlertDraft:
    kind: str
    severity: Severity
    dedup_key: str
    title: str
    message: str
    details: dict[str, Any]
    # Keys the same alert was raised under before (a period's UTC start, before alerts were
    # keyed by the calendar period): one of them recorded means it fired.
    aliases: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class ActionDraft:
    action: str
    scope_kind: str
    scope: str
    subject: str
    reason: str


@dataclass(frozen=True, slots=True)
class Crossing:
    """One alert or one enforcement a pass calls for, and the action-log entry written with
    it when it is new. `label` names an enforcement in the pass's result."""

    tenant_id: str
    alert: AlertDraft | None = None
    enforcement: dict[str, Any] | None = None
    unique: tuple[str, ...] = ()
    action: ActionDraft | None = None
    label: str = ""


@dataclass
class Fired:
    alerts: list[str] = field(default_factory=list)  # dedup keys newly raised
    enforcements: list[str] = field(default_factory=list)  # labels newly enforced


def _chunks(values: Sequence[Any]) -> Iterable[Sequence[Any]]:
    for start in range(0, len(values), _LOOKUP_CHUNK):
        yield values[start : start + _LOOKUP_CHUNK]


def _enforcement_key(values: dict[str, Any], unique: tuple[str, ...]) -> tuple[Any, ...]:
    return tuple((name, values.get(name)) for name in unique)


def _period_midpoint(values: dict[str, Any]) -> Any:
    start, end = values["period_start"], values["ends_at"]
    return start + (end - start) / 2


# A lifted enforcement's owner: (budget id, cap id, scope), "" for the id it does not have.
LiftOwner = tuple[str, str, str]
Lift = tuple[datetime, datetime, Decimal | None]  # its period, and the hard limit lifted
# What decides whether a recorded enforcement keeps another from starting (`_forestalls`).
_OWNER_PERIOD_LIMIT = (
    Enforcement.budget_id,
    Enforcement.cap_id,
    Enforcement.scope,
    Enforcement.period_start,
    Enforcement.ends_at,
    Enforcement.hard_limit,
)


def lifted_limits(
    tenant_id: str, moment: datetime, *, session: Session
) -> dict[LiftOwner, list[Lift]]:
    """The tenant's lifted enforcements whose period has not ended at `moment`, by owner."""
    rows = session.execute(
        select(*_OWNER_PERIOD_LIMIT).where(
            Enforcement.tenant_id == tenant_id,
            Enforcement.lifted_at.is_not(None),
            Enforcement.ends_at > moment,
        )
    )
    found: dict[LiftOwner, list[Lift]] = {}
    for budget_id, cap_id, scope, start, end, limit in rows:
        owner = (budget_id or "", cap_id or "", scope)
        found.setdefault(owner, []).append((start, end, limit))
    return found


def lifted_in(lifts: Sequence[Lift], period: Period) -> list[Decimal | None]:
    """The hard limits lifted in `period` (a lift whose period holds its middle). Pure."""
    middle = period.start + (period.end - period.start) / 2
    return [limit for start, end, limit in lifts if start <= middle < end]


def rearmed(lifted: Sequence[Decimal | None], limit: Decimal) -> bool:
    """Whether an owner lifted this period is enforced again at `limit`: only at a limit
    none of its lifts had (a lift recorded without one lasts the period). Pure."""
    return bool(lifted) and None not in lifted and limit not in lifted


def _forestalls(row: dict[str, Any], values: dict[str, Any], unique: tuple[str, ...]) -> bool:
    """`row` (an enforcement recorded) keeps `values` from starting: the same budget (or cap
    and app), a period holding the middle of the new one (a time-zone change moves a
    period's start and end by hours, never its middle out of the same month or day), and
    either still in force or lifted at the same hard limit. A budget or app lifted at one
    limit is enforced again at another (the budget or cap was changed after the lift); a row
    made before limits were recorded keeps its lift for the period."""
    owner = [name for name in unique if name not in ("period_start", "hard_limit")]
    if any(row[name] != values.get(name) for name in owner):
        return False
    if not row["period_start"] <= _period_midpoint(values) < row["ends_at"]:
        return False
    if row["lifted_at"] is None or row["hard_limit"] is None:
        return True
    wanted = values.get("hard_limit")
    return wanted is None or wanted == row["hard_limit"]


def _recorded_enforcements(
    tenant_id: str, wanted: Sequence[Crossing], *, session: Session
) -> list[dict[str, Any]]:
    """The enforcements (lifted and ended ones too) of the budgets and caps of `wanted`
    whose periods overlap theirs."""
    drafts = [c.enforcement for c in wanted if c.enforcement is not None]
    if not drafts:
        return []
    budgets = sorted({d["budget_id"] for d in drafts if d.get("budget_id")})
    caps = sorted({d["cap_id"] for d in drafts if d.get("cap_id")})
    earliest = min(d["period_start"] for d in drafts)
    latest = max(d["ends_at"] for d in drafts)
    found: list[dict[str, Any]] = []
    for column, ids in ((Enforcement.budget_id, budgets), (Enforcement.cap_id, caps)):
        for chunk in _chunks(ids):
            rows = session.execute(
                select(*_OWNER_PERIOD_LIMIT, Enforcement.lifted_at).where(
                    Enforcement.tenant_id == tenant_id,
                    column.in_(chunk),
                    Enforcement.ends_at > earliest,
                    Enforcement.period_start < latest,
                )
            )
            found += [dict(row._mapping) for row in rows]
    return found


def not_yet_fired(
    tenant_id: str, crossings: Sequence[Crossing], *, session: Session
) -> list[Crossing]:
    """The crossings not recorded yet (read with `session`, a read-only one in a pass): in
    the steady state, when every threshold crossed has fired, a pass writes nothing. What
    another pass records meanwhile is caught by the insert-once when writing."""
    keys = sorted(
        {
            key
            for c in crossings
            if c.alert is not None
            for key in (c.alert.dedup_key, *c.alert.aliases)
        }
    )
    raised: set[str] = set()
    for chunk in _chunks(keys):
        raised.update(
            session.scalars(
                select(Alert.dedup_key).where(
                    Alert.tenant_id == tenant_id, Alert.dedup_key.in_(chunk)
                )
            )
        )
    enforced = _recorded_enforcements(tenant_id, crossings, session=session)
    left: list[Crossing] = []
    for crossing in crossings:
        if crossing.alert is not None and raised.intersection(
            (crossing.alert.dedup_key, *crossing.alert.aliases)
        ):
            continue
        if crossing.enforcement is not None and any(
            _forestalls(row, crossing.enforcement, crossing.unique) for row in enforced
        ):
            continue
        left.append(crossing)
    return left


def fire(crossing: Crossing, *, session: Session, fired: Fired) -> None:
    """Write one crossing in the caller's unit of work, unless its unique key exists."""
    if crossing.alert is not None:
        draft = crossing.alert
        new = raise_alert(
            session,
            tenant_id=crossing.tenant_id,
            kind=draft.kind,
            severity=draft.severity,
            dedup_key=draft.dedup_key,
            title=draft.title,
            message=draft.message,
            details=draft.details,
        )
        if new is None:
            return
        fired.alerts.append(draft.dedup_key)
    elif crossing.enforcement is not None:
        recorded = _recorded_enforcements(crossing.tenant_id, [crossing], session=session)
        if any(_forestalls(row, crossing.enforcement, crossing.unique) for row in recorded):
            return  # its period's enforcement exists (e.g. started before a time-zone change)
        if not insert_once(session, Enforcement, crossing.enforcement, crossing.unique):
            return
        fired.enforcements.append(crossing.label)
    if crossing.action is not None:
        entry = crossing.action
        record_action(
            session,
            tenant_id=crossing.tenant_id,
            action=entry.action,
            scope_kind=entry.scope_kind,
            scope=entry.scope,
            subject=entry.subject,
            reason=entry.reason,
        )


def fire_all(
    crossings: Sequence[Crossing],
    *,
    session: Session,
    batch: int = WRITE_BATCH,
    max_hold_seconds: float = MAX_HOLD_SECONDS,
    clock: Callable[[], float] = time.monotonic,
) -> Fired:
    """Write `crossings` with `session`, committing after `batch` of them or once the
    transaction has been open `max_hold_seconds`, whichever comes first: each write
    transaction is short, and what one commits stays committed if a later one fails."""
    fired = Fired()
    done, opened = 0, clock()
    for crossing in crossings:
        fire(crossing, session=session, fired=fired)
        done += 1
        if done >= batch or clock() - opened >= max_hold_seconds:
            session.commit()
            done, opened = 0, clock()
    session.commit()
    return fired
