"""Webhooks against a real local HTTP receiver: signed bodies that verify, retries with
exponential backoff until success, dead-lettering after the last attempt and retry from the
dead-letter list, the delivery log, the Slack-compatible payload, and the background service."""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient

from quartermaster.domain.timeutil import utc_now
from quartermaster.guardrails.evaluator import evaluate_tenant
from quartermaster.guardrails.notifier import DeliveryPolicy, WebhookNotifier, deliver_due
from quartermaster.guardrails.webhooks import (
    backoff_seconds,
    sign,
    verify_signature,
)
from quartermaster.runtime import Runtime
from tests.conftest import TenantHandle
from tests.guardrails.receiver import Received, webhook_receiver
from tests.guardrails.support import FixedSpend, World, budget, build_world, ok

POLICY = DeliveryPolicy(
    max_attempts=3, backoff_seconds=10.0, timeout_seconds=5.0, allow_private=True
)


@pytest.fixture
def sender() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=5.0) as client:
        yield client


class Clock:
    def __init__(self) -> None:
        self.now = utc_now()

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)


def _hook(client: TestClient, world: World, url: str, **fields: Any) -> dict[str, Any]:
    body = {"url": url, **fields}
    made: dict[str, Any] = ok(client.post("/v1/webhooks", json=body, headers=world.headers), 201)
    return made


def _spend(runtime: Runtime, world: World, amount: str) -> None:
    spend = FixedSpend()
    spend.set("tenant", "", amount)
    with runtime.session_factory() as session:
        evaluate_tenant(world.tenant.tenant_id, spend=spend, session=session, now=utc_now())


def _verifies(secret: str, request: Received, body: bytes | None = None) -> bool:
    return verify_signature(
        secret,
        timestamp=request.headers["X-QM-Timestamp"],
        body=request.body if body is None else body,
        signature=request.headers["X-QM-Signature"],
        now=time.time(),
    )


def test_signature_and_backoff_rules() -> None:
    body = b'{"a":1}'
    signature = sign("s" * 32, 1_700_000_000, body)
    assert signature.startswith("v1=")
    good = {"timestamp": "1700000000", "body": body, "signature": signature}
    assert verify_signature("s" * 32, **good, now=1_700_000_100)
    assert not verify_signature("t" * 32, **good, now=1_700_000_100)  # another secret
    assert not verify_signature("s" * 32, **{**good, "body": b'{"a":2}'}, now=1_700_000_100)
    assert not verify_signature("s" * 32, **{**good, "timestamp": "1700000001"}, now=1_700_000_100)
    assert not verify_signature("s" * 32, **good, now=1_700_000_000 + 301)  # a replay, too old
    assert not verify_signature("s" * 32, **{**good, "timestamp": "soon"}, now=1_700_000_000)
    assert [backoff_seconds(n, 2.0) for n in (1, 2, 3, 4)] == [2.0, 4.0, 8.0, 16.0]
    assert backoff_seconds(40, 2.0) == 3600.0


def test_failing_receiver_is_retried_with_backoff_then_delivered(
    client: TestClient, runtime: Runtime, tenant: TenantHandle, sender: httpx.Client
) -> None:
    world = build_world(client, tenant)
    budget(client, world, scope_kind="tenant", thresholds=[50], hard_percent=1000)
    clock = Clock()
    with webhook_receiver(fail_first=2) as receiver:
        hook = _hook(client, world, receiver.url)
        assert len(hook["secret"]) >= 32
        _spend(runtime, world, "60")
        clock.advance(1)
        factory = runtime.session_factory
        first = deliver_due(factory, sender, policy=POLICY, now=clock)
        assert (first.retried, first.delivered) == (1, 0)
        clock.advance(9.5)  # the first retry is due 10 s after the failure, not before
        assert deliver_due(factory, sender, policy=POLICY, now=clock).attempted == 0
        clock.advance(0.5)
        assert deliver_due(factory, sender, policy=POLICY, now=clock).retried == 1
        clock.advance(19)  # then 20 s
        assert deliver_due(factory, sender, policy=POLICY, now=clock).attempted == 0
        clock.advance(1)
        assert deliver_due(factory, sender, policy=POLICY, now=clock).delivered == 1
        clock.advance(3600)
        assert deliver_due(factory, sender, policy=POLICY, now=clock).attempted == 0
    assert len(receiver.requests) == 3
    assert len({r.headers["X-QM-Delivery"] for r in receiver.requests}) == 1  # dedup key
    for request in receiver.requests:
        assert _verifies(hook["secret"], request)
        assert not _verifies(hook["secret"], request, request.body.replace(b"60", b"61"))
    payload = orjson.loads(receiver.requests[-1].body)
    assert payload["kind"] == "budget_threshold"
    assert payload["details"]["threshold"] == 50
    assert payload["tenant_id"] == tenant.tenant_id
    [delivery] = ok(client.get("/v1/webhook-deliveries", headers=world.headers))
    assert (delivery["status"], delivery["attempts"]) == ("delivered", 3)
    log = ok(client.get(f"/v1/webhook-deliveries/{delivery['id']}/attempts", headers=world.headers))
    assert [a["status_code"] for a in log] == [500, 500, 200]
    assert log[0]["error"].startswith("HTTP 500: receiver failing on purpose")
    assert log[2]["error"] is None


def test_always_failing_receiver_is_dead_lettered_and_can_be_retried(
    client: TestClient, runtime: Runtime, tenant: TenantHandle, sender: httpx.Client
) -> None:
    world = build_world(client, tenant)
    budget(client, world, scope_kind="tenant", thresholds=[50], hard_percent=1000)
    clock = Clock()
    with webhook_receiver(fail_first=10**6) as receiver:
        _hook(client, world, receiver.url)
        _spend(runtime, world, "60")
        for _ in range(POLICY.max_attempts):
            clock.advance(3600)
            deliver_due(runtime.session_factory, sender, policy=POLICY, now=clock)
        clock.advance(3600)
        assert deliver_due(runtime.session_factory, sender, policy=POLICY, now=clock).attempted == 0
        assert len(receiver.requests) == POLICY.max_attempts
        dead = ok(client.get("/v1/webhook-deliveries?status=dead", headers=world.headers))
        assert len(dead) == 1
        assert dead[0]["last_error"].startswith("HTTP 500")
        assert ok(client.get("/v1/webhook-deliveries?status=pending", headers=world.headers)) == []
        actions = ok(client.get("/v1/guardrail-actions", headers=world.headers))
        assert any(
            a["action"] == "dead_letter" and "failed 3 times" in a["reason"] for a in actions
        )
        receiver.fail_first = 0  # the receiver is fixed: retry from the dead-letter list
        retried = ok(
            client.post(f"/v1/webhook-deliveries/{dead[0]['id']}/retry", headers=world.headers)
        )
        assert (retried["status"], retried["attempts"]) == ("pending", 0)
        clock.advance(1)
        assert deliver_due(runtime.session_factory, sender, policy=POLICY, now=clock).delivered == 1
    again = client.post(f"/v1/webhook-deliveries/{dead[0]['id']}/retry", headers=world.headers)
    assert again.status_code == 409
    assert "delivered, not dead" in again.json()["error"]["message"]


def test_unreachable_receiver_logs_the_connection_error(
    client: TestClient, runtime: Runtime, tenant: TenantHandle, sender: httpx.Client
) -> None:
    from tests.conftest import free_port

    world = build_world(client, tenant)
    budget(client, world, scope_kind="tenant", thresholds=[50], hard_percent=1000)
    hook = _hook(client, world, f"http://127.0.0.1:{free_port()}/nobody-listens")
    _spend(runtime, world, "60")
    clock = Clock()
    clock.advance(1)
    assert deliver_due(runtime.session_factory, sender, policy=POLICY, now=clock).retried == 1
    [delivery] = ok(client.get("/v1/webhook-deliveries", headers=world.headers))
    log = ok(client.get(f"/v1/webhook-deliveries/{delivery['id']}/attempts", headers=world.headers))
    assert log[0]["status_code"] is None
    assert log[0]["error"].startswith("ConnectError")
    # Deleting the webhook drops its pending delivery (other tests' passes must not see it).
    ok(client.delete(f"/v1/webhooks/{hook['id']}", headers=world.headers), 204)
    assert ok(client.get("/v1/webhook-deliveries", headers=world.headers)) == []


def test_slack_payload_and_severity_filter(
    client: TestClient, runtime: Runtime, tenant: TenantHandle, sender: httpx.Client
) -> None:
    world = build_world(client, tenant)
    budget(client, world, name="slacked", scope_kind="tenant", thresholds=[50, 80])
    with webhook_receiver() as receiver:
        _hook(client, world, receiver.url, format="slack", min_severity="warning")
        _spend(runtime, world, "85")  # 50 % (info) is filtered out; 80 % (warning) is sent
        clock = Clock()
        clock.advance(1)
        assert deliver_due(runtime.session_factory, sender, policy=POLICY, now=clock).delivered == 1
    [request] = receiver.requests
    message = orjson.loads(request.body)
    assert message["text"].startswith(":warning: Budget slacked: 80% reached")
    assert [b["type"] for b in message["blocks"]] == ["header", "section", "context"]
    assert "80% threshold crossed" in message["blocks"][1]["text"]["text"]


def test_webhook_input_errors_and_listing(client: TestClient, tenant: TenantHandle) -> None:
    world = build_world(client, tenant)
    cases = [
        ({"url": "ftp://x"}, "url"),
        ({"url": "http://x", "format": "xml"}, "format"),
        ({"url": "http://x", "min_severity": "loud"}, "min_severity"),
        ({"url": "http://x", "secret": "short"}, "secret"),
    ]
    for body, field in cases:
        response = client.post("/v1/webhooks", json=body, headers=world.headers)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == field
    made = _hook(client, world, "https://hooks.example.com/x", secret="a-long-enough-secret")
    listed = ok(client.get("/v1/webhooks", headers=world.headers))
    assert [h["id"] for h in listed] == [made["id"]]
    assert "secret" not in listed[0]
    bad_status = client.get("/v1/webhook-deliveries?status=lost", headers=world.headers)
    assert bad_status.status_code == 422
    ok(client.delete(f"/v1/webhooks/{made['id']}", headers=world.headers), 204)
    assert ok(client.get("/v1/webhooks", headers=world.headers)) == []


def test_notifier_service_delivers_in_the_background(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    budget(client, world, scope_kind="tenant", thresholds=[50], hard_percent=1000)
    policy = DeliveryPolicy(
        max_attempts=3, backoff_seconds=0.05, timeout_seconds=2.0, allow_private=True
    )
    service = WebhookNotifier(runtime, policy=policy, interval_seconds=0.05)
    with webhook_receiver(fail_first=1) as receiver:
        hook = _hook(client, world, receiver.url)
        service.start()
        try:
            _spend(runtime, world, "60")
            deadline = time.monotonic() + 15
            while time.monotonic() < deadline:
                rows = ok(client.get("/v1/webhook-deliveries", headers=world.headers))
                if rows and rows[0]["status"] == "delivered":
                    break
                time.sleep(0.05)
        finally:
            service.stop()
    assert rows[0]["status"] == "delivered", rows
    assert len(receiver.requests) == 2
    assert _verifies(hook["secret"], receiver.requests[1])
    assert service.status().failures == 0
