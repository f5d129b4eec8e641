"""Sending webhook deliveries: claim what is due, POST the signed body, log the attempt, then
mark it delivered, schedule the next try (exponential backoff) or dead-letter it.

A delivery is claimed with one conditional UPDATE (still pending, same attempt count): the
attempt count goes up and `next_attempt_at` moves past the request timeout, so another
notifier (another process) skips it while it is in flight, and a notifier that dies mid-send
leaves it to be retried after that lease. Delivery is at least once; receivers deduplicate on
the `X-QM-Delivery` id, which is the same on every attempt.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import and_, select, update
from sqlalchemy.orm import Session, sessionmaker

from quartermaster.background import BackgroundService
from quartermaster.domain.timeutil import utc_now
from quartermaster.guardrails.common import record_action
from quartermaster.guardrails.destinations import DestinationRefused, check_destination
from quartermaster.guardrails.models import Alert, Delivery, DeliveryAttempt, Webhook
from quartermaster.guardrails.webhooks import (
    DELIVERY_HEADER,
    EVENT_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    DeliveryStatus,
    alert_payload,
    backoff_seconds,
    encode_payload,
    open_secrets,
    seal_plaintext_webhooks,
    sign,
)
from quartermaster.runtime import Runtime

logger = logging.getLogger("quartermaster.guardrails.webhooks")
BATCH = 50
LEASE_MARGIN = timedelta(seconds=30)
ERROR_TEXT_LIMIT = 500


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    max_attempts: int = 6
    backoff_seconds: float = 2.0
    timeout_seconds: float = 5.0
    allow_private: bool = False  # QM_WEBHOOK_ALLOW_PRIVATE: see destinations.py


@dataclass(frozen=True, slots=True)
class _Job:
    delivery_id: str
    tenant_id: str
    attempt: int
    url: str
    secret: str
    body: bytes
    kind: str


@dataclass
class PassResult:
    delivered: int = 0
    retried: int = 0
    dead: int = 0

    @property
    def attempted(self) -> int:
        return self.delivered + self.retried + self.dead


def _claim(
    session: Session, policy: DeliveryPolicy, now: datetime, limit: int, *, server_key: bytes
) -> list[_Job]:
    due = session.execute(
        select(Delivery.id, Delivery.attempts)
        .where(Delivery.status == DeliveryStatus.PENDING, Delivery.next_attempt_at <= now)
        .order_by(Delivery.next_attempt_at, Delivery.id)
        .limit(limit)
    ).all()
    session.rollback()
    lease_until = now + timedelta(seconds=policy.timeout_seconds) + LEASE_MARGIN
    jobs: list[_Job] = []
    for delivery_id, attempts in due:
        claimed = session.execute(
            update(Delivery)
            .where(
                and_(
                    Delivery.id == delivery_id,
                    Delivery.status == DeliveryStatus.PENDING,
                    Delivery.attempts == attempts,
                )
            )
            .values(attempts=attempts + 1, next_attempt_at=lease_until)
            .execution_options(synchronize_session=False)
        )
        session.commit()
        if claimed.rowcount != 1:  # type: ignore[attr-defined]
            continue  # another notifier took it
        row = session.execute(
            select(
                Delivery.tenant_id,
                Webhook.id,
                Webhook.url,
                Webhook.secret,
                Webhook.sealed_url,
                Webhook.sealed_secret,
                Webhook.format,
                Alert,
            )
            .join(Webhook, Webhook.id == Delivery.webhook_id)
            .join(Alert, Alert.id == Delivery.alert_id)
            .where(Delivery.id == delivery_id)
        ).first()
        if row is None:  # deleted with its webhook meanwhile
            continue
        tenant_id, hook_id, plain_url, plain_secret, sealed_url, sealed_secret, fmt, alert = row
        url, secret = open_secrets(
            hook_id, sealed_url, sealed_secret, (plain_url, plain_secret), server_key=server_key
        )
        body = encode_payload(alert_payload(alert, fmt))
        jobs.append(_Job(delivery_id, tenant_id, attempts + 1, url, secret, body, alert.kind))
    session.rollback()
    return jobs


def _send(
    client: httpx.Client, job: _Job, clock: Callable[[], float], *, allow_private: bool
) -> tuple[int | None, str | None, int]:
    """One POST: (status code, error text, milliseconds). Never raises for the receiver's
    faults; the error names what went wrong without echoing headers (the signature). The
    destination is checked again first: its name may resolve elsewhere than at creation."""
    try:
        check_destination(job.url, allow_private=allow_private)
    except DestinationRefused as exc:
        return None, f"refused: {exc}"[:ERROR_TEXT_LIMIT], 0
    timestamp = int(clock())
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(job.secret, timestamp, job.body),
        TIMESTAMP_HEADER: str(timestamp),
        DELIVERY_HEADER: job.delivery_id,
        EVENT_HEADER: job.kind,
        "User-Agent": "Quartermaster-Webhooks/1",
    }
    started = time.perf_counter()
    try:
        response = client.post(job.url, content=job.body, headers=headers)
    except httpx.HTTPError as exc:
        took = int((time.perf_counter() - started) * 1000)
        return None, f"{type(exc).__name__}: {exc}"[:ERROR_TEXT_LIMIT], took
    took = int((time.perf_counter() - started) * 1000)
    if 200 <= response.status_code < 300:
        return response.status_code, None, took
    snippet = response.text[:200].replace("\n", " ")
    return response.status_code, f"HTTP {response.status_code}: {snippet}"[:ERROR_TEXT_LIMIT], took


def _record(
    session: Session,
    job: _Job,
    outcome: tuple[int | None, str | None, int],
    *,
    policy: DeliveryPolicy,
    now: datetime,
    result: PassResult,
) -> None:
    status_code, error, took = outcome
    session.add(
        DeliveryAttempt(
            tenant_id=job.tenant_id,
            delivery_id=job.delivery_id,
            attempt=job.attempt,
            at=now,
            status_code=status_code,
            error=error,
            duration_ms=took,
        )
    )
    values: dict[str, object]
    if error is None:
        values = {"status": DeliveryStatus.DELIVERED, "finished_at": now, "last_error": None}
        result.delivered += 1
    elif job.attempt >= policy.max_attempts:
        values = {"status": DeliveryStatus.DEAD, "finished_at": now, "last_error": error}
        result.dead += 1
        record_action(
            session,
            tenant_id=job.tenant_id,
            action="dead_letter",
            scope_kind="tenant",
            scope="",
            subject=f"delivery:{job.delivery_id}",
            reason=f"webhook delivery failed {job.attempt} times, last: {error}",
            at=now,
        )
    else:
        delay = backoff_seconds(job.attempt, policy.backoff_seconds)
        values = {"next_attempt_at": now + timedelta(seconds=delay), "last_error": error}
        result.retried += 1
    session.execute(
        update(Delivery)
        .where(Delivery.id == job.delivery_id, Delivery.attempts == job.attempt)
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    session.commit()


def deliver_due(
    session_factory: sessionmaker[Session],
    client: httpx.Client,
    *,
    policy: DeliveryPolicy,
    now: Callable[[], datetime] = utc_now,
    clock: Callable[[], float] = time.time,
    limit: int = BATCH,
    server_key: bytes,
) -> PassResult:
    """Send every delivery due now (up to `limit`); each outcome is committed as it lands.
    Each webhook's URL and secret are unsealed with `server_key` for its send."""
    result = PassResult()
    with session_factory() as session:
        jobs = _claim(session, policy, now(), limit, server_key=server_key)
    for job in jobs:
        outcome = _send(client, job, clock, allow_private=policy.allow_private)
        with session_factory() as session:
            _record(session, job, outcome, policy=policy, now=now(), result=result)
    return result


class WebhookNotifier(BackgroundService):
    """Delivers alerts to webhooks beside the API (`qm serve`), polling every second."""

    name = "webhooks"

    def __init__(
        self,
        runtime: Runtime,
        *,
        policy: DeliveryPolicy | None = None,
        interval_seconds: float = 1.0,
    ) -> None:
        settings = runtime.settings
        super().__init__(interval_seconds=interval_seconds, enabled=settings.guardrails_enabled)
        self.runtime = runtime
        self.policy = policy or DeliveryPolicy(
            max_attempts=settings.webhook_max_attempts,
            backoff_seconds=settings.webhook_backoff_seconds,
            timeout_seconds=settings.webhook_timeout_seconds,
            allow_private=settings.webhook_allow_private,
        )
        self._client: httpx.Client | None = None
        self._sealed = False

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self.policy.timeout_seconds, follow_redirects=False)
        return self._client

    def run_once(self) -> bool:
        runtime = self.runtime
        if not self._sealed:  # the server's start: rows made before 0019g are sealed now
            count = seal_plaintext_webhooks(
                server_key=runtime.server_key, session_factory=runtime.session_factory
            )
            if count:
                logger.info("sealed the URL and secret of %d webhooks", count)
            self._sealed = True
        result = deliver_due(
            runtime.session_factory,
            self._http(),
            policy=self.policy,
            server_key=runtime.server_key,
        )
        if result.dead:
            logger.warning("%d webhook deliveries dead-lettered", result.dead)
        return result.attempted >= BATCH

    def close(self) -> None:
        if self._client is not None:
            self._client.close()
            self._client = None


def build_webhook_notifier(runtime: Runtime) -> WebhookNotifier:
    return WebhookNotifier(runtime)
