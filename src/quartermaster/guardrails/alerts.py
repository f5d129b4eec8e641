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
from quartermaster.guardrails.common import ScopeKind, insert_once
from quartermaster.guardrails.models import Alert, Delivery, Webhook
from quartermaster.guardrails.visibility import MemberView, alert_scope, scope_filter
from quartermaster.storage.base import new_id
from quartermaster.storage.paging import Page, position_of, read_page

# Newest first; the id orders alerts raised in the same instant.
ALERT_ORDER = ((Alert.created_at, True), (Alert.id, False))

# The kinds of alert the guardrails raise (budgets, default caps, the anomaly detector,
# high-cost previews, usage arriving for a finalized run).
ALERT_KINDS = ("budget_threshold", "default_cap", "anomaly", "high_cost_event", "late_usage")


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
    about = alert_scope(kind, details)
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
            "scope_kind": about[0] if about is not None else None,
            "scope": about[1] if about is not None else None,
            "created_at": moment,
        },
        ("tenant_id", "dedup_key"),
    )
    if not inserted:
        return None
    hooks = session.scalars(select(Webhook).where(Webhook.tenant_id == tenant_id))
    # Queued at the real time: alerts raised in one pass share `moment`, and a webhook's
    # deliveries go out in the order of (alert time, queue time) (notifier.py).
    queued = utc_now()
    for hook in hooks:
        if SEVERITY_RANK[severity] >= SEVERITY_RANK[Severity(hook.min_severity)]:
            session.add(
                Delivery(
                    tenant_id=tenant_id,
                    webhook_id=hook.id,
                    alert_id=alert_id,
                    next_attempt_at=moment,
                    created_at=queued,
                )
            )
    return alert_id


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
) -> Page[Alert]:
    """Newest first, from after the alert `after` (a previous page's `next_after`); only
    those about `scope`, and with a team-member's `view` those about its team or its apps."""
    if kind is not None and kind not in ALERT_KINDS:
        raise InvalidInputError(
            f"kind {kind!r} is not one of: {', '.join(ALERT_KINDS)}", field="kind"
        )
    query = select(Alert).where(Alert.tenant_id == tenant_id)
    if kind is not None:
        query = query.where(Alert.kind == kind)
    if scope is not None:
        query = query.where(Alert.scope_kind == scope[0], Alert.scope == scope[1])
    if view is not None:
        query = query.where(scope_filter(view, Alert.scope_kind, Alert.scope))
    position = position_of(
        after,
        ALERT_ORDER,
        Alert.tenant_id == tenant_id,
        Alert.id == after,
        noun="alerts",
        session=session,
    )
    return read_page(
        query,
        order=ALERT_ORDER,
        position=position,
        limit=limit,
        cursor=lambda alert: alert.id,
        session=session,
    )


def alert_details(alert: Alert) -> dict[str, Any]:
    details: dict[str, Any] = orjson.loads(alert.details)
    return details
