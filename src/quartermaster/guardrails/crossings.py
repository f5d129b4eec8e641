"""What an evaluation pass may newly fire, computed apart from writing it.

A pass first computes, through a read-only session (or with no session at all), every alert
and enforcement its budgets and default caps call for (`Crossing`), and drops those already
recorded (`not_yet_fired`). Only what is left is written, by `fire_all`, in short write
transactions of a few crossings each: on SQLite a write session holds the database's only
write lock from its first statement to its commit, and a pass that compared thousands of
budgets inside one held every other writer of the server back for seconds.

Each crossing is written with insert-once on its unique key (the alert's dedup key, the
enforcement's (budget, period) or (cap, app, period)) inside the write transaction, so a
concurrent pass, or another server, that got there first makes it a no-op: an alert still
fires exactly once per threshold per period.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

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


def not_yet_fired(
    tenant_id: str, crossings: Sequence[Crossing], *, session: Session
) -> list[Crossing]:
    """The crossings not recorded yet (read with `session`, a read-only one in a pass): in
    the steady state, when every threshold crossed has fired, a pass writes nothing. What
    another pass records meanwhile is caught by the insert-once when writing."""
    keys = sorted({c.alert.dedup_key for c in crossings if c.alert is not None})
    raised: set[str] = set()
    for chunk in _chunks(keys):
        raised.update(
            session.scalars(
                select(Alert.dedup_key).where(
                    Alert.tenant_id == tenant_id, Alert.dedup_key.in_(chunk)
                )
            )
        )
    starts = sorted({c.enforcement["period_start"] for c in crossings if c.enforcement is not None})
    enforced: set[tuple[Any, ...]] = set()
    for chunk in _chunks(starts):
        rows = session.execute(
            select(
                Enforcement.budget_id,
                Enforcement.cap_id,
                Enforcement.scope,
                Enforcement.period_start,
            ).where(Enforcement.tenant_id == tenant_id, Enforcement.period_start.in_(chunk))
        )
        for row in rows:
            values = dict(row._mapping)
            enforced.add(_enforcement_key(values, ("budget_id", "period_start")))
            enforced.add(_enforcement_key(values, ("cap_id", "scope", "period_start")))
    left: list[Crossing] = []
    for crossing in crossings:
        if crossing.alert is not None and crossing.alert.dedup_key in raised:
            continue
        if crossing.enforcement is not None and (
            _enforcement_key(crossing.enforcement, crossing.unique) in enforced
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
