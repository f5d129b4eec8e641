"""Webhooks against a real local HTTP receiver: signed bodies that verify, retries with
exponential backoff until success, dead-lettering after the last attempt and retry from the
dead-letter list, the delivery log, the Slack-compatible payload, and the background service."""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import orjson
import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from quartermaster.catalog.signing_keys import check_server_key
from quartermaster.config import ConfigurationError
from quartermaster.domain.timeutil import utc_now
from quartermaster.guardrails.evaluator import evaluate_tenant
from quartermaster.guardrails.models import Alert, Webhook
from quartermaster.guardrails.notifier import DeliveryPolicy, WebhookNotifier, deliver_due
from quartermaster.guardrails.webhooks import (
    alert_payload,
    backoff_seconds,
    open_webhook,
    seal_plaintext_webhooks,
    sign,
    slack_mrkdwn,
    verify_signature,
)
from quartermaster.runtime import Runtime, build_runtime
from quartermaster.storage.base import new_id
from quartermaster.tenancy.service import bootstrap_tenant
from tests.conftest import TenantHandle, make_settings
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
        first = deliver_due(
            factory, sender, server_key=runtime.server_key, policy=POLICY, now=clock
        )
        assert (first.retried, first.delivered) == (1, 0)
        clock.advance(9.5)  # the first retry is due 10 s after the failure, not before
        assert (
            deliver_due(
                factory, sender, server_key=runtime.server_key, policy=POLICY, now=clock
            ).attempted
            == 0
        )
        clock.advance(0.5)
        assert (
            deliver_due(
                factory, sender, server_key=runtime.server_key, policy=POLICY, now=clock
            ).retried
            == 1
        )
        clock.advance(19)  # then 20 s
        assert (
            deliver_due(
                factory, sender, server_key=runtime.server_key, policy=POLICY, now=clock
            ).attempted
            == 0
        )
        clock.advance(1)
        assert (
            deliver_due(
                factory, sender, server_key=runtime.server_key, policy=POLICY, now=clock
            ).delivered
            == 1
        )
        clock.advance(3600)
        assert (
            deliver_due(
                factory, sender, server_key=runtime.server_key, policy=POLICY, now=clock
            ).attempted
            == 0
        )
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
            deliver_due(
                runtime.session_factory,
                sender,
                server_key=runtime.server_key,
                policy=POLICY,
                now=clock,
            )
        clock.advance(3600)
        assert (
            deliver_due(
                runtime.session_factory,
                sender,
                server_key=runtime.server_key,
                policy=POLICY,
                now=clock,
            ).attempted
            == 0
        )
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
        assert (
            deliver_due(
                runtime.session_factory,
                sender,
                server_key=runtime.server_key,
                policy=POLICY,
                now=clock,
            ).delivered
            == 1
        )
    again = client.post(f"/v1/webhook-deliveries/{dead[0]['id']}/retry", headers=world.headers)
    assert again.status_code == 409
    assert "delivered, not dead" in again.json()["error"]["message"]
    # The log numbers the retry's attempt on from the earlier ones, in the order made.
    log = ok(client.get(f"/v1/webhook-deliveries/{dead[0]['id']}/attempts", headers=world.headers))
    assert [a["attempt"] for a in log] == [1, 2, 3, 4]
    assert [a["status_code"] for a in log] == [500, 500, 500, 200]
    [delivered] = ok(client.get("/v1/webhook-deliveries", headers=world.headers))
    assert (delivered["status"], delivered["attempts"]) == ("delivered", 1)  # this round's


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
    assert (
        deliver_due(
            runtime.session_factory, sender, server_key=runtime.server_key, policy=POLICY, now=clock
        ).retried
        == 1
    )
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
        assert (
            deliver_due(
                runtime.session_factory,
                sender,
                server_key=runtime.server_key,
                policy=POLICY,
                now=clock,
            ).delivered
            == 1
        )
    [request] = receiver.requests
    message = orjson.loads(request.body)
    assert message["text"].startswith(":warning: Budget slacked: 80% reached")
    assert [b["type"] for b in message["blocks"]] == ["header", "section", "context"]
    assert "80% threshold crossed" in message["blocks"][1]["text"]["text"]


def test_slack_mrkdwn_texts_are_escaped() -> None:
    """`&`, `<` and `>` in an alert's text cannot form a Slack link or mention (`<!channel>`);
    the plain-text header stays as it is, and a cut never splits an escape."""
    alert = Alert(
        id="a" * 32,
        tenant_id="t",
        kind="anomaly",
        severity="critical",
        dedup_key="k",
        title="R&D <ops>",
        message="<!channel> spent 5 > 3 & <http://x|click>",
        details="{}",
        created_at=utc_now(),
    )
    message = alert_payload(alert, "slack")
    assert message["text"] == (
        ":rotating_light: R&amp;D &lt;ops&gt;: &lt;!channel&gt; spent 5 &gt; 3 &amp; "
        "&lt;http://x|click&gt;"
    )
    assert message["blocks"][0]["text"] == {"type": "plain_text", "text": "R&D <ops>"}
    section = message["blocks"][1]["text"]["text"]
    assert section == "&lt;!channel&gt; spent 5 &gt; 3 &amp; &lt;http://x|click&gt;"
    assert "<" not in message["blocks"][2]["elements"][0]["text"]
    assert slack_mrkdwn("ab<", 4) == "ab"  # not "ab&l"
    assert slack_mrkdwn("a<b", 5) == "a&lt;"
    assert len(slack_mrkdwn("<" * 3000, 3000)) <= 3000


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


def test_a_webhooks_url_and_secret_are_stored_sealed_and_lists_show_the_host_only(
    client: TestClient,
    runtime: Runtime,
    tenant: TenantHandle,
    sender: httpx.Client,
    make_tenant: Callable[..., TenantHandle],
) -> None:
    """A Slack webhook URL's path is itself a credential: the row keeps URL and secret
    sealed with the server key, a list shows the URL up to its host, an admin asking for one
    webhook gets it whole, and deliveries still reach it, signed with the secret."""
    world = build_world(client, tenant)
    budget(client, world, scope_kind="tenant", thresholds=[50], hard_percent=1000)
    with webhook_receiver() as receiver:
        url = f"{receiver.url}/services/T000/B000/xoxb-secret-path"
        hook = _hook(client, world, url)
        assert hook["url"] == url  # the creator sees what it gave, and the secret once
        with runtime.session_factory() as session:
            row = session.get(Webhook, hook["id"])
            assert row is not None
            assert (row.url, row.secret) == ("", "")
            assert row.sealed_url is not None
            assert row.sealed_secret is not None
            assert b"xoxb-secret-path" not in row.sealed_url
            assert hook["secret"].encode() not in row.sealed_secret
        [listed] = ok(client.get("/v1/webhooks", headers=world.headers))
        host = urlsplit(receiver.url).netloc
        assert listed["url"] == f"http://{host}/..."
        one = ok(client.get(f"/v1/webhooks/{hook['id']}", headers=world.headers))
        assert one["url"] == url
        assert "secret" not in one
        other = make_tenant()
        missing = client.get(f"/v1/webhooks/{hook['id']}", headers=other.headers)
        assert missing.status_code == 404, missing.text
        _spend(runtime, world, "60")
        clock = Clock()
        clock.advance(1)
        result = deliver_due(
            runtime.session_factory,
            sender,
            server_key=runtime.server_key,
            policy=POLICY,
            now=clock,
        )
        assert result.delivered == 1
    [request] = receiver.requests
    assert verify_signature(
        hook["secret"],
        timestamp=request.headers["X-QM-Timestamp"],
        body=request.body,
        signature=request.headers["X-QM-Signature"],
        now=time.time(),
    )


def test_plaintext_webhooks_from_before_sealing_are_sealed_once(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    """A webhook stored before migration 0019g (URL and secret in plaintext) is sealed at
    the server's start and its plaintext emptied; sealing again changes nothing."""
    url = "https://hooks.example.com/services/T1/B1/plain-path"
    with runtime.session_factory() as session:
        session.add(Webhook(id=new_id(), tenant_id=tenant.tenant_id, url=url, secret="s" * 32))
        session.commit()
    key, factory = runtime.server_key, runtime.session_factory
    assert seal_plaintext_webhooks(server_key=key, session_factory=factory) >= 1
    with runtime.session_factory() as session:
        [row] = session.scalars(select(Webhook).where(Webhook.tenant_id == tenant.tenant_id))
        assert (row.url, row.secret) == ("", "")
        opened = open_webhook(row, server_key=key)
        assert (opened.url, opened.secret) == (url, "s" * 32)
        sealed = row.sealed_url
    seal_plaintext_webhooks(server_key=key, session_factory=factory)
    with runtime.session_factory() as session:
        again = session.get(Webhook, row.id)
        assert again is not None
        assert again.sealed_url == sealed


def test_a_server_key_that_cannot_open_the_webhooks_is_refused(
    fresh_db_url: str, tmp_path: Path
) -> None:
    """A plaintext webhook is sealed by the notifier's first pass; a server whose key cannot
    open it is refused at start, naming the key file and the webhooks."""
    settings = make_settings(tmp_path / "qm", fresh_db_url, pipeline_enabled=False)
    rt = build_runtime(settings, migrate=False)
    try:
        with rt.session_factory() as session:
            bootstrap_tenant("acme", session=session)
            hook = Webhook(id=new_id(), tenant_id="acme", url="https://x.example/h", secret="s")
            session.add(hook)
            session.commit()
        notifier = WebhookNotifier(rt)
        notifier.run_once()  # the server's start: the notifier's first pass seals it
        notifier.close()
        with rt.session_factory() as session:
            row = session.get(Webhook, hook.id)
            assert row is not None
            assert row.sealed_secret is not None
            assert (row.url, row.secret) == ("", "")
        check_server_key(rt.server_key, session_factory=rt.session_factory, key_source="mine")
        with pytest.raises(ConfigurationError) as refused:
            check_server_key(
                os.urandom(len(rt.server_key)),
                session_factory=rt.session_factory,
                key_source="other.key",
            )
        assert "the server key other.key is not the one this database's webhooks" in str(
            refused.value
        )
    finally:
        rt.close()
