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
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

import orjson
from cryptography.exceptions import InvalidTag
from sqlalchemy import or_, select
from sqlalchemy.orm import Session, sessionmaker

from quartermaster.catalog.sealing import seal, unseal
from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import ConflictError, InvalidInputError, NotFoundError
from quartermaster.guardrails.alerts import Severity, alert_details
from quartermaster.guardrails.common import record_action
from quartermaster.guardrails.destinations import DestinationRefused, check_destination, redact_url
from quartermaster.guardrails.models import Alert, Delivery, DeliveryAttempt, Webhook
from quartermaster.storage.base import new_id
from quartermaster.storage.paging import Page, position_of, read_page
from quartermaster.tenancy.service import AuthContext

SIGNATURE_HEADER = "X-QM-Signature"
TIMESTAMP_HEADER = "X-QM-Timestamp"
DELIVERY_HEADER = "X-QM-Delivery"
EVENT_HEADER = "X-QM-Alert-Kind"
SIGNATURE_VERSION = "v1"
# Sealing purposes (HKDF info) of a webhook's URL and signing secret.
URL_PURPOSE = b"qm-webhook-url-v1"
SECRET_PURPOSE = b"qm-webhook-secret-v1"
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


SLACK_ESCAPES = (("&", "&amp;"), ("<", "&lt;"), (">", "&gt;"))


def slack_mrkdwn(text: str, limit: int | None = None) -> str:
    """`text` for a Slack mrkdwn field: `&`, `<` and `>` escaped (Slack reads `<...>` as a
    link or mention), cut to `limit` characters without splitting an escape. Pure."""
    for char, entity in SLACK_ESCAPES:
        text = text.replace(char, entity)
    if limit is None or len(text) <= limit:
        return text
    cut = text[:limit]
    amp = cut.rfind("&")
    if amp != -1 and ";" not in cut[amp:]:
        cut = cut[:amp]  # an escape cut in half
    return cut


def alert_payload(alert: Alert, fmt: str) -> dict[str, Any]:
    """The body sent for `alert`: our JSON, or a Slack incoming-webhook message (text plus
    Block Kit blocks; Slack-compatible receivers such as Mattermost read `text`). Slack's
    mrkdwn fields (`text`, the section, the context) are escaped; the header is plain text."""
    details = alert_details(alert)
    created = alert.created_at.isoformat()
    if fmt == WebhookFormat.SLACK:
        icon = SEVERITY_ICON.get(alert.severity, "")
        context = f"*{alert.severity}* · {alert.kind} · {created} · {alert.id}"
        return {
            "text": f"{icon} {slack_mrkdwn(f'{alert.title}: {alert.message}')}".strip(),
            "blocks": [
                {"type": "header", "text": {"type": "plain_text", "text": alert.title[:150]}},
                {
                    "type": "section",
                    "text": {"type": "mrkdwn", "text": slack_mrkdwn(alert.message, 3000)},
                },
                {
                    "type": "context",
                    "elements": [{"type": "mrkdwn", "text": slack_mrkdwn(context)}],
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
        raise InvalidInputError(
            f"url {redact_url(url)!r} is not a valid URL", field="url"
        ) from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise InvalidInputError(
            f"url {redact_url(url)!r} is not an http(s) URL with a host", field="url"
        )
    if len(url) > 2000:
        raise InvalidInputError("url is longer than 2000 characters", field="url")
    try:
        check_destination(url, allow_private=allow_private)
    except DestinationRefused as exc:
        raise InvalidInputError(str(exc), field="url") from None
    return url


@dataclass(frozen=True, slots=True)
class OpenWebhook:
    """A webhook with its URL and secret unsealed (the row keeps them sealed)."""

    hook: Webhook
    url: str
    secret: str


def _seal(value: str, hook_id: str, purpose: bytes, server_key: bytes) -> bytes:
    return seal(value.encode(), server_key=server_key, purpose=purpose, context=hook_id.encode())


def open_secrets(
    hook_id: str,
    sealed_url: bytes | None,
    sealed_secret: bytes | None,
    plain: tuple[str | None, str | None],
    *,
    server_key: bytes,
) -> tuple[str, str]:
    """(url, secret) of a webhook row: unsealed, or the plaintext of a row made before
    the sealed columns and not sealed yet (the server seals those at start)."""
    url, secret = plain[0] or "", plain[1] or ""
    context = hook_id.encode()
    if sealed_url is not None:
        url = unseal(
            sealed_url, server_key=server_key, purpose=URL_PURPOSE, context=context
        ).decode()
    if sealed_secret is not None:
        raw = unseal(sealed_secret, server_key=server_key, purpose=SECRET_PURPOSE, context=context)
        secret = raw.decode()
    return url, secret


def open_webhook(hook: Webhook, *, server_key: bytes) -> OpenWebhook:
    url, secret = open_secrets(
        hook.id, hook.sealed_url, hook.sealed_secret, (hook.url, hook.secret), server_key=server_key
    )
    return OpenWebhook(hook, url, secret)


def create_webhook(
    caller: AuthContext,
    url: str,
    *,
    fmt: str = WebhookFormat.JSON,
    min_severity: str = Severity.INFO,
    secret: str | None = None,
    allow_private: bool = False,
    server_key: bytes,
    session: Session,
) -> OpenWebhook:
    """A new webhook; its signing secret is generated unless given (then at least 16 chars).
    A URL reaching a non-public address is refused unless `allow_private` (destinations.py).
    The URL and the secret are stored sealed with `server_key`."""
    if fmt not in {f.value for f in WebhookFormat}:
        raise InvalidInputError(f"format {fmt!r} is not json or slack", field="format")
    if min_severity not in {s.value for s in Severity}:
        raise InvalidInputError(
            f"min_severity {min_severity!r} is not info, warning or critical",
            field="min_severity",
        )
    if secret is not None and not 16 <= len(secret) <= 128:
        raise InvalidInputError("secret must be 16 to 128 characters", field="secret")
    checked = _check_url(url, allow_private=allow_private)
    signing = secret or secrets.token_urlsafe(32)
    hook_id = new_id()
    hook = Webhook(
        id=hook_id,
        tenant_id=caller.tenant_id,
        url="",
        secret="",
        sealed_url=_seal(checked, hook_id, URL_PURPOSE, server_key),
        sealed_secret=_seal(signing, hook_id, SECRET_PURPOSE, server_key),
        format=fmt,
        min_severity=min_severity,
    )
    session.add(hook)
    session.commit()
    return OpenWebhook(hook, checked, signing)


def list_webhooks(tenant_id: str, *, session: Session) -> list[Webhook]:
    query = select(Webhook).where(Webhook.tenant_id == tenant_id).order_by(Webhook.created_at)
    return list(session.scalars(query))


def get_webhook(
    tenant_id: str, webhook_id: str, *, server_key: bytes, session: Session
) -> OpenWebhook:
    """One webhook with its URL unsealed (admins only: the URL may be a credential)."""
    return open_webhook(_webhook(tenant_id, webhook_id, session=session), server_key=server_key)


def seal_plaintext_webhooks(*, server_key: bytes, session_factory: sessionmaker[Session]) -> int:
    """Seal the URL and secret of every webhook still holding them in plaintext (rows made
    before migration 0019g) and empty the plaintext columns; how many were sealed. Run at
    server start (a migration cannot read the server key); idempotent, one short write
    transaction per row, and safe to race (a row sealed meanwhile is left alone)."""
    with session_factory() as session:
        ids = list(
            session.scalars(
                select(Webhook.id).where(
                    or_(Webhook.sealed_url.is_(None), Webhook.sealed_secret.is_(None))
                )
            )
        )
    sealed = 0
    for hook_id in ids:
        with session_factory() as session:
            hook = session.get(Webhook, hook_id)
            if hook is None or (hook.sealed_url is not None and hook.sealed_secret is not None):
                continue
            if hook.sealed_url is None:
                hook.sealed_url = _seal(hook.url or "", hook_id, URL_PURPOSE, server_key)
            if hook.sealed_secret is None:
                hook.sealed_secret = _seal(hook.secret or "", hook_id, SECRET_PURPOSE, server_key)
            hook.url = ""
            hook.secret = ""
            session.commit()
            sealed += 1
    return sealed


def check_webhooks_open(server_key: bytes, *, session_factory: sessionmaker[Session]) -> bool:
    """Whether `server_key` opens this database's sealed webhooks (True when none is)."""
    with session_factory() as session:
        row = session.execute(
            select(Webhook.id, Webhook.sealed_secret)
            .where(Webhook.sealed_secret.is_not(None))
            .limit(1)
        ).first()
    if row is None:
        return True
    hook_id, sealed = row
    if sealed is None:
        return True
    try:
        unseal(sealed, server_key=server_key, purpose=SECRET_PURPOSE, context=hook_id.encode())
    except InvalidTag:
        return False
    return True


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


# Newest first; the id orders deliveries queued in the same instant.
DELIVERY_ORDER = ((Delivery.created_at, True), (Delivery.id, False))


def list_deliveries(
    tenant_id: str,
    *,
    session: Session,
    status: str | None = None,
    webhook_id: str | None = None,
    after: str | None = None,
    limit: int = 100,
) -> Page[Delivery]:
    """Deliveries newest first, from after the delivery `after` (a previous page's
    `next_after`); `status="dead"` is the dead-letter list."""
    if status is not None and status not in {s.value for s in DeliveryStatus}:
        raise InvalidInputError(
            f"status {status!r} is not pending, delivered or dead", field="status"
        )
    query = select(Delivery).where(Delivery.tenant_id == tenant_id)
    if status is not None:
        query = query.where(Delivery.status == status)
    if webhook_id is not None:
        query = query.where(Delivery.webhook_id == webhook_id)
    position = position_of(
        after,
        DELIVERY_ORDER,
        Delivery.tenant_id == tenant_id,
        Delivery.id == after,
        noun="webhook deliveries",
        session=session,
    )
    return read_page(
        query,
        order=DELIVERY_ORDER,
        position=position,
        limit=limit,
        cursor=lambda delivery: delivery.id,
        session=session,
    )


def get_delivery(tenant_id: str, delivery_id: str, *, session: Session) -> Delivery:
    delivery = session.get(Delivery, delivery_id)
    if delivery is None or delivery.tenant_id != tenant_id:
        raise NotFoundError(f"no webhook delivery {delivery_id!r}", field="delivery_id")
    return delivery


def delivery_attempts(
    tenant_id: str, delivery_id: str, *, session: Session
) -> list[DeliveryAttempt]:
    """The delivery log of one delivery, first attempt first (in the order they were made:
    numbers go on after a retry from the dead-letter list; rows logged before that was so
    repeat numbers, the order still tells them apart)."""
    get_delivery(tenant_id, delivery_id, session=session)
    query = (
        select(DeliveryAttempt)
        .where(DeliveryAttempt.delivery_id == delivery_id)
        .order_by(DeliveryAttempt.id)
    )
    return list(session.scalars(query))


def retry_delivery(
    caller: AuthContext, delivery_id: str, *, session: Session, now: datetime | None = None
) -> Delivery:
    """Take a dead delivery off the dead-letter list: pending again, with a fresh set of
    attempts (`attempts` counts this round; the delivery log numbers on from the earlier
    ones), due now. A pending or delivered one is a conflict (nothing to retry)."""
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
