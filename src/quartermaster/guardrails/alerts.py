"""Alerts: raised once per dedup key, fanned out to the tenant's webhooks as deliveries."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import Select, and_, or_, select
from sqlalchemy.orm import Session

from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import InvalidInputError
from quartermaster.guardrails.common import ScopeKind, insert_once
from quartermaster.guardrails.models import Alert, Delivery, Webhook
from quartermaster.guardrails.visibility import MemberView, alert_scope
from quartermaster.storage.base import new_id

# The kinds of alert the guardrails raise (budgets, default caps, the anomaly detector,
# high-cost previews).
ALERT_KINDS = ("budget_threshold", "default_cap", "anomaly", "high_cost_event")


class Severity(enum.StrEnum):
    INFO = "info"
    WARNING = "warning"
    CRITICAL = "critical"


SEVERITY_RANK = {Severity.INFO: 0, Severity.WARNING: 1, Severity.CRITICAL: 2}


def raise_alert(
    session: Session,
    *,
    tenant_id: str,
    kind: str,
    severity: Severity,
    dedup_key: str,
    title: str,
    message: str,
    details: dict[str, Any],
    at: datetime | None = None,
) -> str | None:
    """Insert the alert unless its dedup key exists (in the caller's unit of work) and queue
    one delivery per matching webhook; returns the new alert's id, None if it existed."""
    alert_id = new_id()
    moment = at or utc_now()
    inserted = insert_once(
        session,
        Alert,
        {
            "id": alert_id,
            "tenant_id": tenant_id,
            "kind": kind,
            "severity": severity.value,
            "dedup_key": dedup_key,
            "title": title,
            "message": message,
            "details": orjson.dumps(details, default=str).decode(),
            "created_at": moment,
        },
        ("tenant_id", "dedup_key"),
    )
    if not inserted:
        return None
    hooks = session.scalars(select(Webhook).where(Webhook.tenant_id == tenant_id))
    for hook in hooks:
        if SEVERITY_RANK[severity] >= SEVERITY_RANK[Severity(hook.min_severity)]:
            session.add(
                Delivery(
                    tenant_id=tenant_id,
                    webhook_id=hook.id,
                    alert_id=alert_id,
                    next_attempt_at=moment,
                    created_at=moment,
                )
            )
    return alert_id


@dataclass(frozen=True)
class AlertPage:
    """A page of alerts, newest first, and the cursor of the next (None: this is the last)."""

    alerts: list[Alert]
    next_after: str | None


def parse_alert_scope(text: str) -> tuple[str, str]:
    """`team:web`, `app:x`, `cost_center:cc` or `tenant` as (kind, scope), the way an alert
    names what it is about (`alert_scope`). Pure."""
    kind, _, scope = text.partition(":")
    kinds = [k.value for k in ScopeKind]
    if kind not in kinds or (kind == ScopeKind.TENANT) != (scope == ""):
        raise InvalidInputError(
            f"scope {text!r} is not KIND:NAME (e.g. team:web, app:where2eat) or tenant; "
            f"KIND is one of: {', '.join(kinds)}",
            field="scope",
        )
    return kind, scope


def list_alerts(
    tenant_id: str,
    *,
    session: Session,
    kind: str | None = None,
    scope: tuple[str, str] | None = None,
    after: str | None = None,
    limit: int = 100,
    view: MemberView | None = None,
) -> AlertPage:
    """Newest first, from after the alert `after` (a previous page's `next_after`); only
    those about `scope`, and with a team-member's `view` those about its team or its apps
    (read in batches, as the scope is in the details)."""
    if kind is not None and kind not in ALERT_KINDS:
        raise InvalidInputError(
            f"kind {kind!r} is not one of: {', '.join(ALERT_KINDS)}", field="kind"
        )
    query = select(Alert).where(Alert.tenant_id == tenant_id)
    if kind is not None:
        query = query.where(Alert.kind == kind)
    query = query.order_by(Alert.created_at.desc(), Alert.id)
    cursor = _cursor(tenant_id, after, session=session)

    def wanted(alert: Alert) -> bool:
        about = alert_scope(alert.kind, alert_details(alert))
        if scope is not None and about != scope:
            return False
        return view is None or (about is not None and view.sees_scope(*about))

    found: list[Alert] = []
    batch = limit + 1 if view is None and scope is None else max(limit + 1, 500)
    while len(found) <= limit:
        rows = list(session.scalars(_after(query, cursor).limit(batch)))
        found.extend(alert for alert in rows if wanted(alert))
        if len(rows) < batch:
            break
        cursor = (rows[-1].created_at, rows[-1].id)
    more = len(found) > limit
    return AlertPage(found[:limit], found[limit - 1].id if more else None)


def _cursor(tenant_id: str, after: str | None, *, session: Session) -> tuple[datetime, str] | None:
    """The position of the alert `after` (None: from the newest); an id that is not one of
    the tenant's alerts is a 422 naming `after`."""
    if after is None:
        return None
    row = session.execute(
        select(Alert.created_at, Alert.id).where(Alert.tenant_id == tenant_id, Alert.id == after)
    ).first()
    if row is None:
        raise InvalidInputError(
            f"after {after!r} is not one of this tenant's alerts: pass the X-Next-After of "
            "the previous page",
            field="after",
        )
    return row[0], row[1]


def _after(query: Select[Alert], cursor: tuple[datetime, str] | None) -> Select[Alert]:
    """Rows past `cursor` in the newest-first (created_at desc, id) order."""
    if cursor is None:
        return query
    at, alert_id = cursor
    return query.where(
        or_(Alert.created_at < at, and_(Alert.created_at == at, Alert.id > alert_id))
    )


def alert_details(alert: Alert) -> dict[str, Any]:
    details: dict[str, Any] = orjson.loads(alert.details)
    return details
