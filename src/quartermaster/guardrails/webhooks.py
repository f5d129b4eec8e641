"""Webhooks: where alerts go, how each body is signed, what it looks like, and the delivery
log and dead-letter list read back.

Signing (documented in docs/guardrails.md): the signature is HMAC-SHA256 with the webhook's
secret over `<timestamp>.<body>`, where `<timestamp>` is the `X-QM-Timestamp` header (Unix
seconds) and `<body>` the exact bytes sent; it is sent as `X-QM-Signature: v1=<hex>`. Binding
the timestamp lets a receiver refuse replays older than a few minutes.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import secrets
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import ConflictError, InvalidInputError, NotFoundError
from quartermaster.guardrails.alerts import Severity, alert_details
from quartermaster.guardrails.common import record_action
from quartermaster.guardrails.destinations import DestinationRefused, check_destination
from quartermaster.guardrails.models import Alert, Delivery, DeliveryAttempt, Webhook
from quartermaster.tenancy.service import AuthContext

SIGNATURE_HEADER = "X-QM-Signature"
TIMESTAMP_HEADER = "X-QM-Timestamp"
DELIVERY_HEADER = "X-QM-Delivery"
EVENT_HEADER = "X-QM-Alert-Kind"
SIGNATURE_VERSION = "v1"
DEFAULT_TOLERANCE_SECONDS = 300
MAX_BACKOFF_SECONDS = 3600.0
SEVERITY_ICON = {
    "info": ":information_source:",
    "warning": ":warning:",
    "critical": ":rotating_light:",
}


class WebhookFormat(enum.StrEnum):
    JSON = "json"
    SLACK = "slack"


class DeliveryStatus(enum.StrEnum):
    PENDING = "pending"
    DELIVERED = "delivered"
    DEAD = "dead"


# --- pure pieces ------------------------------------------------------------------------


def sign(secret: str, timestamp: int, body: bytes) -> str:
    """The `X-QM-Signature` value of `body` sent at `timestamp`."""
    message = str(timestamp).encode() + b"." + body
    digest = hmac.new(secret.encode(), message, hashlib.sha256).hexdigest()
    return f"{SIGNATURE_VERSION}={digest}"


def verify_signature(
    secret: str,
    *,
    timestamp: str,
    body: bytes,
    signature: str,
    now: float,
    tolerance_seconds: int = DEFAULT_TOLERANCE_SECONDS,
) -> bool:
    """What a receiver does: the timestamp is recent and the signature matches (in constant
    time). `now` is the receiver's clock in Unix seconds."""
    try:
        sent = int(timestamp)
    except ValueError:
        return False
    if abs(now - sent) > tolerance_seconds:
        return False
    return hmac.compare_digest(sign(secret, sent, body), signature)


def backoff_seconds(attempts: int, base: float, cap: float = MAX_BACKOFF_SECONDS) -> float:
    """Delay before the next try after `attempts` failed ones: base, 2·base, 4·base, … capped."""
    if attempts < 1:
        return 0.0
    return float(min(cap, base * 2 ** min(attempts - 1, 30)))


def alert_payload(alert: Alert, fmt: str) -> dict[str, Any]:
    """The body sent for `alert`: our JSON, or a Slack incoming-webhook message (text plus
    Block Kit blocks; Slack-compatible receivers such as Mattermost read `text`)."""
    details = alert_details(alert)
    created = alert.created_at.isoformat()
    if fmt == WebhookFormat.SLACK:
        icon = SEVERITY_ICON.get(alert.severity, "")
        return {
            "text": f"{icon} {alert.title}: {alert.message}".strip(),
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": alert.title[:150]}},
                {"type": "section", "text": {"type": "mrkdwn", "text": alert.message[:3000]}},
                {
                    "type": "context",
                    "elements": [
                        {
                            "type": "mrkdwn",
                            "text": f"*{alert.severity}* · {alert.kind} · {created} · {alert.id}",
                        }
                    ],
                },
            ],
        }
    return {
        "id": alert.id,
        "tenant_id": alert.tenant_id,
        "kind": alert.kind,
        "severity": alert.severity,
        "title": alert.title,
        "message": alert.message,
        "details": details,
        "created_at": created,
    }


def encode_payload(payload: dict[str, Any]) -> bytes:
    return orjson.dumps(payload, option=orjson.OPT_SORT_KEYS)


# --- webhooks ---------------------------------------------------------------------------


def _check_url(url: str, *, allow_private: bool) -> str:
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018 - raises ValueError on a port that is not a number
    except ValueError:
        raise InvalidInputError(f"url {url!r} is not a valid URL", field="url") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(f"url {url!r} is not an http(s) URL with a host", field="url")
    if len(url) > 2000:
        raise InvalidInputError("url is longer than 2000 characters", field="url")
    try:
        check_destination(url, allow_private=allow_private)
    except DestinationRefused as exc:
        raise InvalidInputError(str(exc), field="url") from None
    return url


def create_webhook(
    caller: AuthContext,
    url: str,
    *,
    fmt: str = WebhookFormat.JSON,
    min_severity: str = Severity.INFO,
    secret: str | None = None,
    allow_private: bool = False,
    session: Session,
) -> Webhook:
    """A new webhook; its signing secret is generated unless given (then at least 16 chars).
    A URL reaching a non-public address is refused unless `allow_private` (destinations.py)."""
    if fmt not in {f.value for f in WebhookFormat}:
        raise InvalidInputError(f"format {fmt!r} is not json or slack", field="format")
    if min_severity not in {s.value for s in Severity}:
        raise InvalidInputError(
            f"min_severity {min_severity!r} is not info, warning or critical",
            field="min_severity",
        )
    if secret is not None and not 16 <= len(secret) <= 128:
        raise InvalidInputError("secret must be 16 to 128 characters", field="secret")
    hook = Webhook(
        tenant_id=caller.tenant_id,
        url=_check_url(url, allow_private=allow_private),
        secret=secret or secrets.token_urlsafe(32),
        format=fmt,
        min_severity=min_severity,
    )
    session.add(hook)
    session.commit()
    return hook


def list_webhooks(tenant_id: str, *, session: Session) -> list[Webhook]:
    query = select(Webhook).where(Webhook.tenant_id == tenant_id).order_by(Webhook.created_at)
    return list(session.scalars(query))


def _webhook(tenant_id: str, webhook_id: str, *, session: Session) -> Webhook:
    hook = session.get(Webhook, webhook_id)
    if hook is None or hook.tenant_id != tenant_id:
        raise NotFoundError(f"no webhook {webhook_id!r}", field="webhook_id")
    return hook


def delete_webhook(tenant_id: str, webhook_id: str, *, session: Session) -> None:
    """Delete a webhook with its deliveries and their log."""
    hook = _webhook(tenant_id, webhook_id, session=session)
    deliveries = select(Delivery.id).where(Delivery.webhook_id == hook.id)
    for attempt in session.scalars(
        select(DeliveryAttempt).where(DeliveryAttempt.delivery_id.in_(deliveries))
    ):
        session.delete(attempt)
    for delivery in session.scalars(select(Delivery).where(Delivery.webhook_id == hook.id)):
        session.delete(delivery)
    session.delete(hook)
    session.commit()


# --- deliveries -------------------------------------------------------------------------


def list_deliveries(
    tenant_id: str,
    *,
    session: Session,
    status: str | None = None,
    webhook_id: str | None = None,
    limit: int = 100,
) -> list[Delivery]:
    """Deliveries newest first; `status="dead"` is the dead-letter list."""
    if status is not None and status not in {s.value for s in DeliveryStatus}:
        raise InvalidInputError(
            f"status {status!r} is not pending, delivered or dead", field="status"
        )
    query = select(Delivery).where(Delivery.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Delivery.status == status)
    if webhook_id is not None:
        query = query.where(Delivery.webhook_id == webhook_id)
    query = query.order_by(Delivery.created_at.desc(), Delivery.id).limit(limit)
    return list(session.scalars(query))


def get_delivery(tenant_id: str, delivery_id: str, *, session: Session) -> Delivery:
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or delivery.tenant_id != tenant_id:
        raise NotFoundError(f"no webhook delivery {delivery_id!r}", field="delivery_id")
    return delivery


def delivery_attempts(
    tenant_id: str, delivery_id: str, *, session: Session
) -> list[DeliveryAttempt]:
    """The delivery log of one delivery, first attempt first."""
    get_delivery(tenant_id, delivery_id, session=session)
    query = (
        select(DeliveryAttempt)
        .where(DeliveryAttempt.delivery_id == delivery_id)
        .order_by(DeliveryAttempt.attempt)
    )
    return list(session.scalars(query))


def retry_delivery(
    caller: AuthContext, delivery_id: str, *, session: Session, now: datetime | None = None
) -> Delivery:
    """Take a dead delivery off the dead-letter list: pending again, with a fresh set of
    attempts, due now. A pending or delivered one is a conflict (nothing to retry)."""
    delivery = get_delivery(caller.tenant_id, delivery_id, session=session)
    if delivery.status != DeliveryStatus.DEAD:
        raise ConflictError(
            f"delivery {delivery_id!r} is {delivery.status}, not dead: nothing to retry",
            field="delivery_id",
        )
    moment = now or utc_now()
    delivery.status = DeliveryStatus.PENDING
    delivery.attempts = 0
    delivery.next_attempt_at = moment
    delivery.finished_at = None
    record_action(
        session,
        tenant_id=caller.tenant_id,
        action="redeliver",
        scope_kind="tenant",
        scope="",
        subject=f"delivery:{delivery_id}",
        reason=f"{caller.principal_name} took the delivery off the dead-letter list",
        at=moment,
    )
    session.commit()
    return delivery
