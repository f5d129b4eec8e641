"""A halt is passed as essential only by an admin key, and each pass is in the action log
(guardrails walkthrough finding 2); a team's denied decision is logged under the team
(finding 14)."""

from __future__ import annotations

from datetime import UTC, datetime

from fastapi.testclient import TestClient

from quartermaster.guardrails.evaluator import evaluate_tenant
from quartermaster.guardrails.gate import guardrail_gate
from quartermaster.runtime import Runtime
from tests.conftest import TenantHandle
from tests.guardrails.support import FixedSpend, World, budget, build_world, key_for, ok


def _halt_team(runtime: Runtime, client: TestClient, world: World) -> None:
    budget(client, world, name="team-cap", scope_kind="team", scope=world.team, action="halt")
    spend = FixedSpend()
    spend.set("team", world.team, "101")
    with runtime.session_factory() as session:
        evaluate_tenant(world.tenant.tenant_id, spend=spend, session=session, now=datetime.now(UTC))
    guardrail_gate(runtime).invalidate()


def test_only_an_admin_key_passes_a_halt_as_essential_and_it_is_logged(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    _halt_team(runtime, client, world)
    app_key = key_for(client, tenant, "app", app_id=world.app)
    member = key_for(client, tenant, "team-member", team=world.team)
    body = {"app": world.app, "essential": True}
    for headers in (app_key, member):
        refused = ok(client.post("/v1/decisions", json=body, headers=headers))
        assert refused["allowed"] is False
        assert refused["reasons"][0]["kind"] == "budget"
        assert "halted" in refused["reasons"][0]["message"]
        assert "only when an admin key asks" in refused["reasons"][0]["message"]
    admitted = ok(client.post("/v1/decisions", json=body, headers=world.headers))
    assert admitted["allowed"] is True
    actions = ok(client.get("/v1/guardrail-actions", headers=world.headers))
    passes = [a for a in actions if a["action"] == "essential_pass"]
    assert len(passes) == 1
    assert passes[0]["scope_kind"] == "app"
    assert passes[0]["scope"] == world.app
    assert "admin" in passes[0]["reason"]
    halt = ok(client.get("/v1/enforcements", headers=world.headers))[0]
    assert halt["id"] in passes[0]["reason"]
    # Without a halt, essential changes nothing for other keys: their work is admitted.
    other = build_world(client, tenant)
    other_key = key_for(client, tenant, "app", app_id=other.app)
    free = ok(client.post("/v1/decisions", json={"essential": True}, headers=other_key))
    assert free["allowed"] is True


def test_a_teams_denied_decision_is_logged_under_the_team(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    _halt_team(runtime, client, world)
    member = key_for(client, tenant, "team-member", team=world.team)
    refused = ok(client.post("/v1/decisions", json={"team": world.team}, headers=member))
    assert refused["allowed"] is False
    denies = [
        a for a in ok(client.get("/v1/guardrail-actions", headers=member)) if a["action"] == "deny"
    ]
    assert [(d["scope_kind"], d["scope"]) for d in denies] == [("team", world.team)]
