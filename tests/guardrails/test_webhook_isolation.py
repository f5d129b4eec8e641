"""A slow webhook receiver delays only its own deliveries: every attempt ends at a hard
wall-clock deadline (connect, headers and body), and webhooks are served apart from each
other — against real local receivers that trickle, hang, or answer at once. Also: a webhook
deleted while its delivery is in flight, and the order a webhook's deliveries go out in."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from quartermaster.domain.timeutil import utc_now
from quartermaster.guardrails.evaluator import evaluate_tenant
from quartermaster.guardrails.notifier import (
    DeliveryPolicy,
    PassResult,
    WebhookNotifier,
    deliver_due,
)
from quartermaster.guardrails.webhook_post import post_within
from quartermaster.runtime import Runtime
from tests.conftest import TenantHandle
from tests.guardrails.receiver import webhook_receiver
from tests.guardrails.slow_receivers import slow_receiver
from tests.guardrails.support import FixedSpend, World, budget, build_world, ok

DEADLINE = 2.0
POLICY = DeliveryPolicy(
    max_attempts=3, backoff_seconds=60.0, timeout_seconds=DEADLINE, allow_private=True
)


@pytest.fixture
def sender() -> Iterator[httpx.Client]:
    # Its own timeout (per wait) is far longer than the deadline: the deadline must not
    # depend on it.
    with httpx.Client(timeout=30.0) as client:
        yield client


def _hook(client: TestClient, world: World, url: str) -> dict[str, Any]:
    made: dict[str, Any] = ok(
        client.post("/v1/webhooks", json={"url": url}, headers=world.headers), 201
    )
    return made


def _spend(runtime: Runtime, world: World, amount: str) -> None:
    spend = FixedSpend()
    spend.set("tenant", "", amount)
    with runtime.session_factory() as session:
        evaluate_tenant(world.tenant.tenant_id, spend=spend, session=session, now=utc_now())


def _log(client: TestClient, world: World, hook_id: str) -> list[dict[str, Any]]:
    """Every attempt to the webhook's deliveries."""
    rows = ok(client.get(f"/v1/webhook-deliveries?webhook_id={hook_id}", headers=world.headers))
    attempts: list[dict[str, Any]] = []
    for row in rows:
        path = f"/v1/webhook-deliveries/{row['id']}/attempts"
        attempts += ok(client.get(path, headers=world.headers))
    return attempts


@pytest.mark.parametrize("mode", ["trickle-body", "trickle-headers", "hang"])
def test_an_attempt_ends_at_the_deadline_whatever_the_receiver_does(
    mode: str, sender: httpx.Client
) -> None:
    """A byte every 0.3 s never trips a per-read timeout; the attempt still ends at the
    deadline, as a failure, though a 200 status line may have come."""
    with slow_receiver(mode) as receiver:
        started = time.monotonic()
        outcome = post_within(
            sender, receiver.url, body=b"{}", headers={}, timeout_seconds=DEADLINE
        )
        took = time.monotonic() - started
        # The attempt itself gave up at the deadline (every wait is cut there), not only
        # its caller: the connection is dropped, no thread is left reading it.
        while not receiver.dropped and time.monotonic() < started + DEADLINE + 1.5:
            time.sleep(0.02)
        dropped = list(receiver.dropped)
    assert dropped, "the attempt's connection was still open 1.5 s after the deadline"
    assert DEADLINE - 0.1 <= took < DEADLINE + 0.6, took
    assert outcome.status_code is None
    assert outcome.error is not None
    assert "no complete answer within 2 s" in outcome.error, outcome.error
    # A 200 status line came first from the body trickler: still a failure, and said so.
    came = "(HTTP 200 came, its body did not)" in outcome.error
    assert came == (mode == "trickle-body"), outcome.error
    assert DEADLINE * 1000 - 100 <= outcome.duration_ms < DEADLINE * 1000 + 600


def test_a_healthy_webhook_is_served_while_slow_ones_stall(
    client: TestClient, runtime: Runtime, tenant: TenantHandle, sender: httpx.Client
) -> None:
    """Nine thresholds crossed at once: 9 deliveries to each of three webhooks. The healthy
    receiver has all nine within a second or so, in the order of the alerts; the trickling
    and the hanging one get theirs one after the other, each attempt failed at the deadline."""
    world = build_world(client, tenant)
    budget(
        client, world, scope_kind="tenant", thresholds=list(range(10, 100, 10)), hard_percent=1000
    )
    with (
        webhook_receiver() as healthy,
        slow_receiver("trickle-body") as trickle,
        slow_receiver("hang") as hang,
    ):
        hooks = [_hook(client, world, r.url) for r in (trickle, hang, healthy)]
        _spend(runtime, world, "95")
        started = time.monotonic()
        results: list[PassResult] = []
        worker = threading.Thread(
            target=lambda: results.append(
                deliver_due(
                    runtime.session_factory, sender, server_key=runtime.server_key, policy=POLICY
                )
            )
        )
        worker.start()
        worker.join(timeout=60)
        assert not worker.is_alive()
        took = time.monotonic() - started
        trickle_arrivals, hang_arrivals = list(trickle.arrived), list(hang.arrived)
    assert len(healthy.requests) == 9
    assert healthy.requests[-1].at - started < 3.0, healthy.requests[-1].at - started
    thresholds = [orjson.loads(r.body)["details"]["threshold"] for r in healthy.requests]
    assert thresholds == list(range(10, 100, 10))  # the alerts' order, not the ids'
    # The slow ones: one attempt at a time, each cut at the deadline; not one after another
    # webhook's (18 slow attempts serially would take 36 s).
    assert len(trickle_arrivals) == len(hang_arrivals) == 9
    assert 9 * DEADLINE - 1 < took < 9 * DEADLINE + 6, took
    [result] = results
    assert (result.delivered, result.retried, result.dead) == (9, 18, 0)
    for hook in hooks[:2]:
        log = _log(client, world, hook["id"])
        assert len(log) == 9
        for attempt in log:
            assert attempt["status_code"] is None
            assert "no complete answer within 2 s" in attempt["error"]
            assert DEADLINE * 1000 - 100 <= attempt["duration_ms"] < DEADLINE * 1000 + 600
    for hook in hooks:
        ok(client.delete(f"/v1/webhooks/{hook['id']}", headers=world.headers), 204)


def test_the_notifier_keeps_serving_healthy_webhooks_while_a_slow_one_is_busy(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    """`qm serve`'s notifier: a pass never waits for a send, so an alert raised while the
    trickling webhook is still working through earlier ones reaches the healthy receiver
    within a few seconds."""
    world = build_world(client, tenant)
    budget(client, world, scope_kind="tenant", thresholds=[20, 40, 60, 80], hard_percent=1000)
    service = WebhookNotifier(runtime, policy=POLICY, interval_seconds=0.1)
    with webhook_receiver() as healthy, slow_receiver("trickle-body") as trickle:
        hooks = [_hook(client, world, r.url) for r in (trickle, healthy)]
        service.start()
        try:
            _spend(runtime, world, "50")  # 20 % and 40 %: the trickling hook is busy 4 s
            deadline = time.monotonic() + 10
            while len(trickle.arrived) < 1 and time.monotonic() < deadline:
                time.sleep(0.05)
            _spend(runtime, world, "90")  # 60 % and 80 %, raised while it is busy
            raised = time.monotonic()
            while len(healthy.requests) < 4 and time.monotonic() < raised + 10:
                time.sleep(0.05)
            waited = time.monotonic() - raised
            busy_after = len(trickle.arrived)
        finally:
            service.stop()
    assert len(healthy.requests) == 4
    assert waited < 2 * DEADLINE - 0.5, waited  # not behind the trickling hook's 2 attempts
    assert busy_after < 4  # it was still working through its own
    assert service.status().failures == 0
    for hook in hooks:
        ok(client.delete(f"/v1/webhooks/{hook['id']}", headers=world.headers), 204)


def test_a_webhook_deleted_while_its_delivery_is_in_flight(
    client: TestClient, runtime: Runtime, tenant: TenantHandle, sender: httpx.Client
) -> None:
    """The outcome of the attempt in flight is dropped with the delivery (its log went with
    the webhook); the pass does not fail, and the webhook's other deliveries are not sent."""
    world = build_world(client, tenant)
    budget(client, world, scope_kind="tenant", thresholds=[30, 60], hard_percent=1000)
    with slow_receiver("hang") as hang:
        hook = _hook(client, world, hang.url)
        _spend(runtime, world, "70")
        results: list[PassResult] = []
        errors: list[BaseException] = []

        def deliver() -> None:
            try:
                results.append(
                    deliver_due(
                        runtime.session_factory,
                        sender,
                        server_key=runtime.server_key,
                        policy=POLICY,
                    )
                )
            except BaseException as exc:
                errors.append(exc)

        worker = threading.Thread(target=deliver)
        worker.start()
        deadline = time.monotonic() + 10
        while not hang.arrived and time.monotonic() < deadline:
            time.sleep(0.02)
        assert hang.arrived
        ok(client.delete(f"/v1/webhooks/{hook['id']}", headers=world.headers), 204)
        worker.join(timeout=30)
        arrived = len(hang.arrived)
    assert errors == []
    assert results == [PassResult()]  # nothing recorded: the delivery is gone
    assert arrived == 1  # the second delivery went with the webhook
    assert ok(client.get("/v1/webhook-deliveries", headers=world.headers)) == []


def test_two_notifiers_at_once_send_each_delivery_once(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    """Two servers' notifiers on one database, passing at the same moment over the same
    webhook's deliveries: each is claimed just before its send, so every delivery reaches
    the receiver exactly once."""
    world = build_world(client, tenant)
    budget(
        client, world, scope_kind="tenant", thresholds=list(range(10, 100, 10)), hard_percent=1000
    )
    with webhook_receiver(delay=0.2) as healthy:
        hook = _hook(client, world, healthy.url)
        _spend(runtime, world, "95")
        results: list[PassResult] = []

        def notifier() -> None:
            with httpx.Client(timeout=5) as own:
                results.append(
                    deliver_due(
                        runtime.session_factory, own, server_key=runtime.server_key, policy=POLICY
                    )
                )

        workers = [threading.Thread(target=notifier) for _ in range(2)]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join(timeout=60)
    ids = [r.headers["X-QM-Delivery"] for r in healthy.requests]
    assert len(ids) == 9
    assert len(set(ids)) == 9
    assert sum(r.delivered for r in results) == 9
    ok(client.delete(f"/v1/webhooks/{hook['id']}", headers=world.headers), 204)
