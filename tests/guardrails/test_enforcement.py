"""Each enforcement action: throttle (429 with Retry-After on ingest and decisions), halt
(non-essential work refused, essential work admitted), lift; each recorded with why."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient

from quartermaster.guardrails.evaluator import evaluate_tenant
from quartermaster.guardrails.gate import guardrail_gate
from quartermaster.runtime import Runtime
from tests.conftest import TenantHandle
from tests.guardrails.support import FixedSpend, World, budget, build_world, ok

EVENT = {
    "specversion": "1.0",
    "type": "com.quartermaster.usage.v1",
    "source": "/tests/guardrails",
    "id": "e-1",
    "time": "2026-03-10T11:00:00Z",
    "data": {"tokens": 1},
}


def _cross(runtime: Runtime, world: World, kind: str, scope: str, amount: str) -> None:
    spend = FixedSpend()
    spend.set(kind, scope, amount)
    with runtime.session_factory() as session:
        evaluate_tenant(world.tenant.tenant_id, spend=spend, session=session, now=datetime.now(UTC))
    guardrail_gate(runtime).invalidate()


def _decide(client: TestClient, world: World, **body: object) -> object:
    return client.post("/v1/decisions", json={"app": world.app, **body}, headers=world.headers)


def test_throttle_answers_429_on_ingest_and_decisions(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    budget(client, world, scope_kind="tenant", action="throttle")
    assert _decide(client, world).status_code == 200  # type: ignore[attr-defined]
    _cross(runtime, world, "tenant", "", "100")
    ingest = client.post(
        "/v1/events",
        json={**EVENT, "data": {"app_id": world.app, "tokens": 1}},
        headers={**world.headers, "Content-Type": "application/cloudevents+json"},
    )
    assert ingest.status_code == 429, ingest.text
    assert int(ingest.headers["Retry-After"]) >= 1
    assert "throttled by a budget" in ingest.json()["error"]["message"]
    decision = _decide(client, world)
    assert decision.status_code == 429  # type: ignore[attr-defined]
    enforcements = ok(client.get("/v1/enforcements", headers=world.headers))
    assert [e["action"] for e in enforcements] == ["throttle"]
    assert "throttled (429)" in enforcements[0]["reason"]
    # Lifted: ingest and decisions go through again; the lift is in the log.
    ok(client.post(f"/v1/enforcements/{enforcements[0]['id']}/lift", headers=world.headers))
    assert _decide(client, world).status_code == 200  # type: ignore[attr-defined]
    actions = [a["action"] for a in ok(client.get("/v1/guardrail-actions", headers=world.headers))]
    assert "throttle" in actions
    assert "lift" in actions


def test_throttle_of_one_app_leaves_other_apps_alone(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    other = build_world(client, tenant)
    budget(client, world, scope_kind="app", scope=world.app, action="throttle")
    _cross(runtime, world, "app", world.app, "150")
    assert _decide(client, world).status_code == 429  # type: ignore[attr-defined]
    assert _decide(client, other).status_code == 200  # type: ignore[attr-defined]


def test_halt_refuses_non_essential_work(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    budget(client, world, name="team-cap", scope_kind="team", scope=world.team, action="halt")
    _cross(runtime, world, "team", world.team, "101")
    refused = ok(_decide(client, world))
    assert refused["allowed"] is False
    assert refused["id"] is None
    assert refused["reasons"][0]["kind"] == "budget"
    assert "team-cap" in refused["reasons"][0]["message"]
    essential = ok(_decide(client, world, essential=True))
    assert essential["allowed"] is True
    assert essential["id"]
    actions = ok(client.get("/v1/guardrail-actions", headers=world.headers))
    assert {"halt", "deny"} <= {a["action"] for a in actions}
    deny = next(a for a in actions if a["action"] == "deny")
    assert "halted" in deny["reason"]
