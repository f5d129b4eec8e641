"""`qm alerts deliveries` and `delivery-log` over real HTTP: only a pending delivery shows a
next attempt, and the log numbers a retry's attempts on from the earlier ones."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi.testclient import TestClient

from quartermaster.domain.timeutil import utc_now
from quartermaster.guardrails.evaluator import evaluate_tenant
from quartermaster.guardrails.notifier import DeliveryPolicy, deliver_due
from quartermaster.runtime import Runtime
from tests.conftest import LiveServer, TenantHandle, free_port
from tests.guardrails.support import FixedSpend, budget, build_world, ok
from tests.tenancy.cli_support import make_qm

# The CLI only talks HTTP; the API it calls is tested on both backends elsewhere.
pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
STAMP = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ"


def test_dead_deliveries_show_no_next_attempt_and_retries_number_on(
    client: TestClient,
    runtime: Runtime,
    live_server: LiveServer,
    tenant: TenantHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = build_world(client, tenant)
    budget(client, world, scope_kind="tenant", thresholds=[50], hard_percent=1000)
    hook = ok(
        client.post(
            "/v1/webhooks",
            json={"url": f"http://127.0.0.1:{free_port()}/nobody"},
            headers=world.headers,
        ),
        201,
    )
    spend = FixedSpend()
    spend.set("tenant", "", "60")
    with runtime.session_factory() as session:
        evaluate_tenant(world.tenant.tenant_id, spend=spend, session=session, now=utc_now())
    qm = make_qm(live_server, tenant, monkeypatch)
    pending = qm("alerts", "deliveries", "--webhook-id", hook["id"]).output
    assert re.search(rf"│ pending\s+│ {STAMP}", pending), pending
    policy = DeliveryPolicy(max_attempts=1, backoff_seconds=0.0, allow_private=True)

    def deliver() -> None:
        with httpx.Client(timeout=5) as sender:
            deliver_due(
                runtime.session_factory, sender, server_key=runtime.server_key, policy=policy
            )

    deliver()
    dead = qm("alerts", "deliveries", "--status", "dead", "--webhook-id", hook["id"]).output
    assert "dead" in dead
    assert "ConnectError" in dead
    assert not re.search(STAMP, dead), dead  # no "next attempt at" for a dead delivery
    [row] = ok(client.get(f"/v1/webhook-deliveries?webhook_id={hook['id']}", headers=world.headers))
    qm("alerts", "retry", row["id"])
    deliver()
    log = qm("alerts", "delivery-log", row["id"]).output
    assert [int(n) for n in re.findall(r"│ (\d+)\s+│ " + STAMP, log)] == [1, 2]
    ok(client.delete(f"/v1/webhooks/{hook['id']}", headers=world.headers), 204)
