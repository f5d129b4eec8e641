"""A webhook URL is a credential (Slack's path, a `?token=` query, userinfo): no delivery
error, delivery log row, action-log entry (which finance keys read) or server log line
carries more of it than its host, whether the delivery was refused by the SSRF re-check or
the receiver echoed the request target back."""

from __future__ import annotations

import logging
from urllib.parse import urlsplit

import httpx
import pytest
from fastapi.testclient import TestClient

from quartermaster.domain.timeutil import utc_now
from quartermaster.guardrails.destinations import redact_in, redact_url
from quartermaster.guardrails.evaluator import evaluate_tenant
from quartermaster.guardrails.notifier import DeliveryPolicy, deliver_due
from quartermaster.runtime import Runtime
from tests.conftest import TenantHandle
from tests.guardrails.receiver import webhook_receiver
from tests.guardrails.support import FixedSpend, budget, build_world, key_for, ok

SECRETS = ("XXXXSLACKSECRET", "SECRETTOKEN123", "PASSWORDSECRET", "user:", "/services/")


def test_redact_url_and_redact_in() -> None:
    assert redact_url("https://hooks.slack.com/services/T0/B0/XX") == "https://hooks.slack.com/..."
    assert redact_url("http://u:p@10.0.0.5:8080/h?token=t") == "http://10.0.0.5:8080/..."
    assert redact_url("https://Example.COM") == "https://example.com"
    assert redact_url("http://[::1]:9/") == "http://[::1]:9"
    assert redact_url("http://x:abc/secret") == "http://x:abc/..."  # a port not a number
    assert "secret" not in redact_url("http://[::1/secret")  # not parsable at all
    url = "http://user:pw-secret@h.example:81/services/T0/B0/SLACK?token=TOK"
    text = f"POST {url} failed; GET /services/T0/B0/SLACK?token=TOK: 404 (auth user:pw-secret)"
    cleaned = redact_in(text, url)
    assert cleaned.startswith("POST http://h.example:81/... failed")
    for secret in ("SLACK", "TOK", "pw-secret"):
        assert secret not in cleaned
    assert redact_in("HTTP 500: boom", url) == "HTTP 500: boom"


def test_no_webhook_secret_in_deliveries_logs_actions_or_the_server_log(
    client: TestClient,
    runtime: Runtime,
    tenant: TenantHandle,
    caplog: pytest.LogCaptureFixture,
) -> None:
    world = build_world(client, tenant)
    budget(client, world, scope_kind="tenant", thresholds=[50], hard_percent=1000)
    finance = key_for(client, tenant, "finance")
    caplog.set_level(logging.DEBUG)
    with webhook_receiver(fail_first=10**6, echo_path=True) as receiver:
        host = urlsplit(receiver.url).netloc
        urls = [
            f"http://{host}/services/T000/B000/XXXXSLACKSECRET",
            f"http://user:PASSWORDSECRET@{host}/hook?token=SECRETTOKEN123",
        ]
        hooks = [
            ok(client.post("/v1/webhooks", json={"url": u}, headers=world.headers), 201)
            for u in urls
        ]
        spend = FixedSpend()
        spend.set("tenant", "", "60")
        with runtime.session_factory() as session:
            evaluate_tenant(world.tenant.tenant_id, spend=spend, session=session, now=utc_now())
        with httpx.Client(timeout=5) as sender:
            # Refused at send time by the SSRF re-check (as when a public name comes to
            # resolve to a private address), then sent: the receiver answers 500 quoting the
            # request's path and query, and the deliveries are dead-lettered.
            for allow_private in (False, True):
                policy = DeliveryPolicy(
                    max_attempts=2, backoff_seconds=0.0, allow_private=allow_private
                )
                result = deliver_due(
                    runtime.session_factory, sender, server_key=runtime.server_key, policy=policy
                )
                assert result.attempted >= 2
        assert len(receiver.requests) == 2
        assert any("SECRETTOKEN123" in r.path for r in receiver.requests)  # it did echo
    rows = ok(client.get("/v1/webhook-deliveries", headers=world.headers))
    assert sorted(r["status"] for r in rows) == ["dead", "dead"]
    seen = [r["last_error"] for r in rows]
    for row in rows:
        log = ok(client.get(f"/v1/webhook-deliveries/{row['id']}/attempts", headers=world.headers))
        assert log[0]["error"].startswith(f"refused: url 'http://{host}/...': host '127.0.0.1'")
        assert log[1]["error"].startswith("HTTP 500: no route for POST ...")
        seen += [a["error"] for a in log]
    actions = ok(client.get("/v1/guardrail-actions", headers=finance))
    dead_letters = [a["reason"] for a in actions if a["action"] == "dead_letter"]
    assert len(dead_letters) == 2
    seen += dead_letters
    # What `qm serve` writes: the server's own loggers at any level, anything at warning up.
    server_log = "\n".join(
        record.getMessage() + (record.exc_text or "")
        for record in caplog.records
        if record.name.startswith("quartermaster") or record.levelno >= logging.WARNING
    )
    for text in [*seen, server_log]:
        for secret in SECRETS:
            assert secret not in text, (secret, text)
    for hook in hooks:
        ok(client.delete(f"/v1/webhooks/{hook['id']}", headers=world.headers), 204)
