"""Sending webhook deliveries: claim what is due, POST the signed body, log the attempt, then
mark it delivered, schedule the next try (exponential backoff) or dead-letter it.

Webhooks are served apart from each other: one webhook's due deliveries are sent one after
the other, oldest alert first, while up to `DeliveryPolicy.concurrency` webhooks are served at
once, each in a worker thread. An attempt ends at a hard deadline (`webhook_post.py`), so a
slow, hanging or trickling receiver delays only its own deliveries, by at most that deadline
per attempt, never another webhook's.

A delivery is claimed just before its send with one conditional UPDATE (still pending, same
attempt count): the attempt count goes up and `next_attempt_at` moves past the attempt's
deadline (a lease), so another notifier (another process) skips it while it is in flight, and
a notifier that dies mid-send leaves it to be retried after that lease. Delivery is at least
once; receivers deduplicate on the `X-QM-Delivery` id, which is the same on every attempt.
The outcome is recorded only while the claim still holds: a delivery deleted meanwhile (with
its webhook) is skipped.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timedelta

import httpx
from sqlalchemy import and_, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from quartermaster.background import BackgroundService
from quartermaster.domain.timeutil import utc_now
from quartermaster.guardrails.common import record_action
from quartermaster.guardrails.destinations import pin_destination, redact_in
from quartermaster.guardrails.models import Alert, Delivery, DeliveryAttempt, Webhook
from quartermaster.guardrails.webhook_post import PostOutcome, post_within
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
BATCH = 50  # most deliveries of one webhook one pass sends
LEASE_MARGIN = timedelta(seconds=30)
ERROR_TEXT_LIMIT = 500
CLAIM_CANDIDATES = 5
_GONE = "webhook delivery %s is gone (deleted with its webhook) or claimed again; not logged"


@dataclass(frozen=True, slots=True)
class DeliveryPolicy:
    max_attempts: int = 6
    backoff_seconds: float = 2.0
    timeout_seconds: float = 5.0  # a hard deadline per attempt: connect, headers and body
    allow_private: bool = False  # QM_WEBHOOK_ALLOW_PRIVATE: see destinations.py
    concurrency: int = 8  # webhooks served at once


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

    def add(self, other: PassResult) -> None:
        self.delivered += other.delivered
        self.retried += other.retried
        self.dead += other.dead


def due_webhooks(
    session: Session, now: datetime, *, exclude: Collection[str] = (), limit: int | None = None
) -> list[str]:
    """The webhooks with a delivery due at `now` (but those in `exclude`), the one whose due
    delivery has waited longest first."""
    waited = func.min(Delivery.next_attempt_at)
    query = (
        select(Delivery.webhook_id)
        .where(Delivery.status == DeliveryStatus.PENDING, Delivery.next_attempt_at <= now)
        .group_by(Delivery.webhook_id)
        .order_by(waited, Delivery.webhook_id)
    )
    if exclude:
        query = query.where(Delivery.webhook_id.not_in(list(exclude)))
    if limit is not None:
        query = query.limit(limit)
    hooks = list(session.scalars(query))
    session.rollback()
    return hooks


def _claim_next(
    session: Session,
    webhook_id: str,
    policy: DeliveryPolicy,
    now: datetime,
    *,
    skip: set[str],
    server_key: bytes,
) -> _Job | None:
    """Claim the webhook's next due delivery — the oldest alert first (then the order they
    were queued in) — but those in `skip`, which grows by every one looked at; None when none
    is left. The lease covers this one send."""
    lease_until = now + timedelta(seconds=policy.timeout_seconds) + LEASE_MARGIN
    while True:
        query = (
            select(Delivery.id, Delivery.attempts)
            .join(Alert, Alert.id == Delivery.alert_id)
            .where(
                Delivery.webhook_id == webhook_id,
                Delivery.status == DeliveryStatus.PENDING,
                Delivery.next_attempt_at <= now,
            )
            .order_by(Alert.created_at, Delivery.created_at, Delivery.id)
            .limit(CLAIM_CANDIDATES)
        )
        if skip:
            query = query.where(Delivery.id.not_in(list(skip)))
        due = session.execute(query).all()
        session.rollback()
        if not due:
            return None
        for delivery_id, attempts in due:
            skip.add(delivery_id)
            job = _claim(session, delivery_id, attempts, lease_until, server_key=server_key)
            if job is not None:
                return job


def _claim(
    session: Session, delivery_id: str, attempts: int, lease_until: datetime, *, server_key: bytes
) -> _Job | None:
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
        return None  # another notifier took it
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
    session.rollback()
    if row is None:  # deleted with its webhook meanwhile
        return None
    tenant_id, hook_id, plain_url, plain_secret, sealed_url, sealed_secret, fmt, alert = row
    url, secret = open_secrets(
        hook_id, sealed_url, sealed_secret, (plain_url, plain_secret), server_key=server_key
    )
    body = encode_payload(alert_payload(alert, fmt))
    return _Job(delivery_id, tenant_id, attempts + 1, url, secret, body, alert.kind)


def _send(
    client: httpx.Client, job: _Job, clock: Callable[[], float], *, policy: DeliveryPolicy
) -> PostOutcome:
    """One POST under the attempt's deadline. Never raises for the receiver's faults; the
    error names what went wrong without echoing headers (the signature) or the URL past its
    host (it may be a credential). The destination is checked again first, within the
    attempt's deadline, and the connection goes to the address checked: its name may resolve
    elsewhere than at creation, or than a moment ago."""
    timestamp = int(clock())
    headers = {
        "Content-Type": "application/json",
        SIGNATURE_HEADER: sign(job.secret, timestamp, job.body),
        TIMESTAMP_HEADER: str(timestamp),
        DELIVERY_HEADER: job.delivery_id,
        EVENT_HEADER: job.kind,
        "User-Agent": "Quartermaster-Webhooks/1",
    }
    outcome = post_within(
        client,
        job.url,
        body=job.body,
        headers=headers,
        timeout_seconds=policy.timeout_seconds,
        destination=lambda: pin_destination(job.url, allow_private=policy.allow_private),
    )
    if outcome.error is None:
        return outcome
    error = redact_in(outcome.error, job.url)[:ERROR_TEXT_LIMIT]
    return PostOutcome(outcome.status_code, error, outcome.duration_ms)


def _record(
    session: Session,
    job: _Job,
    outcome: PostOutcome,
    *,
    policy: DeliveryPolicy,
    now: datetime,
    result: PassResult,
) -> None:
    """Log the attempt and move the delivery on, in one transaction, while the claim still
    holds (same attempt count, still pending); a delivery deleted meanwhile, with its
    webhook, is left alone. The log numbers attempts on from earlier rounds (a retry from
    the dead-letter list starts the count of `attempts` again, not the log's)."""
    error = outcome.error
    values: dict[str, object]
    if error is None:
        values = {"status": DeliveryStatus.DELIVERED, "finished_at": now, "last_error": None}
    elif job.attempt >= policy.max_attempts:
        values = {"status": DeliveryStatus.DEAD, "finished_at": now, "last_error": error}
    else:
        delay = backoff_seconds(job.attempt, policy.backoff_seconds)
        values = {"next_attempt_at": now + timedelta(seconds=delay), "last_error": error}
    moved = session.execute(
        update(Delivery)
        .where(
            Delivery.id == job.delivery_id,
            Delivery.attempts == job.attempt,
            Delivery.status == DeliveryStatus.PENDING,
        )
        .values(**values)
        .execution_options(synchronize_session=False)
    )
    if moved.rowcount != 1:  # type: ignore[attr-defined]
        session.rollback()
        logger.info(_GONE, job.delivery_id)
        return
    logged = session.scalar(
        select(func.max(DeliveryAttempt.attempt)).where(
            DeliveryAttempt.delivery_id == job.delivery_id
        )
    )
    session.add(
        DeliveryAttempt(
            tenant_id=job.tenant_id,
            delivery_id=job.delivery_id,
            attempt=(logged or 0) + 1,
            at=now,
            status_code=outcome.status_code,
            error=error,
            duration_ms=outcome.duration_ms,
        )
    )
    dead = error is not None and job.attempt >= policy.max_attempts
    if dead:
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
    try:
        session.commit()
    except IntegrityError:  # deleted between the update and the insert
        session.rollback()
        logger.info(_GONE, job.delivery_id)
        return
    if error is None:
        result.delivered += 1
    elif dead:
        result.dead += 1
    else:
        result.retried += 1


def deliver_webhook(
    session_factory: sessionmaker[Session],
    client: httpx.Client,
    webhook_id: str,
    *,
    policy: DeliveryPolicy,
    now: Callable[[], datetime] = utc_now,
    clock: Callable[[], float] = time.time,
    limit: int = BATCH,
    server_key: bytes,
    keep_going: Callable[[], bool] = lambda: True,
) -> PassResult:
    """Send the webhook's deliveries due now, one after the other, oldest alert first; each
    is claimed just before its send and tried at most once (up to `limit` of them, while
    `keep_going()`). Each outcome is committed as it lands."""
    result = PassResult()
    looked_at: set[str] = set()
    for _ in range(limit):
        if not keep_going():
            break
        with session_factory() as session:
            job = _claim_next(
                session, webhook_id, policy, now(), skip=looked_at, server_key=server_key
            )
        if job is None:
            break
        outcome = _send(client, job, clock, policy=policy)
        with session_factory() as session:
            _record(session, job, outcome, policy=policy, now=now(), result=result)
    return result


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
    """Send every delivery due now (up to `limit` per webhook) and wait for all: webhooks in
    parallel (up to `policy.concurrency` at once), each one's deliveries in order. Each
    webhook's URL and secret are unsealed with `server_key` for its send."""
    with session_factory() as session:
        hooks = due_webhooks(session, now())
    result = PassResult()
    if not hooks:
        return result
    workers = max(1, min(policy.concurrency, len(hooks)))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="qm-webhooks") as pool:
        futures = [
            pool.submit(
                deliver_webhook,
                session_factory,
                client,
                hook,
                policy=policy,
                now=now,
                clock=clock,
                limit=limit,
                server_key=server_key,
            )
            for hook in hooks
        ]
        for future in futures:
            result.add(future.result())
    return result


class WebhookNotifier(BackgroundService):
    """Delivers alerts to webhooks beside the API (`qm serve`). Every second a pass hands each
    webhook with a due delivery, unless one is already serving it, to a worker of a pool of
    `policy.concurrency` threads, which sends that webhook's due deliveries in order; the
    pass itself never waits for a send."""

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
        self._pool: ThreadPoolExecutor | None = None
        self._serving: set[str] = set()
        self._serving_lock = threading.Lock()
        self._worker_error: Exception | None = None
        self._sealed = False

    def _http(self) -> httpx.Client:
        if self._client is None:
            self._client = httpx.Client(timeout=self.policy.timeout_seconds, follow_redirects=False)
        return self._client

    def _workers(self) -> ThreadPoolExecutor:
        if self._pool is None:
            self._pool = ThreadPoolExecutor(
                max_workers=self.policy.concurrency, thread_name_prefix="qm-webhooks"
            )
        return self._pool

    def run_once(self) -> bool:
        runtime = self.runtime
        if not self._sealed:  # the server's start: rows made before 0019g are sealed now
            count = seal_plaintext_webhooks(
                server_key=runtime.server_key, session_factory=runtime.session_factory
            )
            if count:
                logger.info("sealed the URL and secret of %d webhooks", count)
            self._sealed = True
        failed, self._worker_error = self._worker_error, None
        with self._serving_lock:
            busy = set(self._serving)
        free = self.policy.concurrency - len(busy)
        if free > 0:
            with runtime.session_factory() as session:
                hooks = due_webhooks(session, utc_now(), exclude=busy, limit=free)
            client, pool = self._http(), self._workers()
            with self._serving_lock:
                for hook in hooks:  # under the lock: a worker done at once finds its entry
                    self._serving.add(hook)
                    pool.submit(self._serve, client, hook)
        if failed is not None:  # a worker's, after this pass's dispatch: shown in status()
            raise failed
        return False

    def _serve(self, client: httpx.Client, webhook_id: str) -> None:
        """A worker: one webhook's due deliveries, in order."""
        more = False
        try:
            result = deliver_webhook(
                self.runtime.session_factory,
                client,
                webhook_id,
                policy=self.policy,
                server_key=self.runtime.server_key,
                keep_going=lambda: not self._stop.is_set(),
            )
            if result.dead:
                logger.warning("%d webhook deliveries dead-lettered", result.dead)
            more = result.attempted >= BATCH
        except Exception as exc:
            logger.exception("serving the deliveries of webhook %s failed", webhook_id)
            self._worker_error = exc
        finally:
            with self._serving_lock:
                self._serving.discard(webhook_id)
        if more:  # more may be waiting: the next pass now
            self.wake()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True)  # each worker stops after its attempt in flight
            self._pool = None
        if self._client is not None:
            self._client.close()
            self._client = None


def build_webhook_notifier(runtime: Runtime) -> WebhookNotifier:
    return WebhookNotifier(runtime)
