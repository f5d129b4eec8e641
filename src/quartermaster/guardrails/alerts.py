"""Alerts: raised once per dedup key, fanned out to the tenant's webhooks as deliveries."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Any

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import InvalidInputError
from quartermaster.guardrails.common import insert_once
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


def list_alerts(
    tenant_id: str,
    *,
    session: Session,
    kind: str | None = None,
    limit: int = 100,
    view: MemberView | None = None,
) -> list[Alert]:
    """Newest first; with a team-member's `view`, those about its team or its apps only
    (read in pages, as the scope is in the details)."""
    query = select(Alert).where(Alert.tenant_id == tenant_id)
    if kind is not None and kind not in ALERT_KINDS:
        raise InvalidInputError(
            f"kind {kind!r} is not one of: {', '.join(ALERT_KINDS)}", field="kind"
        )
    if kind is not None:
        query = query.where(Alert.kind == kind)
    query = query.order_by(Alert.created_at.desc(), Alert.id)
    if view is None:
        return list(session.scalars(query.limit(limit)))
    found: list[Alert] = []
    page, offset = max(limit, 200), 0
    while len(found) < limit:
        rows = list(session.scalars(query.offset(offset).limit(page)))
        for alert in rows:
            scope = alert_scope(alert.kind, alert_details(alert))
            if scope is not None and view.sees_scope(*scope):
                found.append(alert)
        if len(rows) < page:
            break
        offset += page
    return found[:limit]


def alert_details(alert: Alert) -> dict[str, Any]:
    details: dict[str, Any] = orjson.loads(alert.details)
    return details
