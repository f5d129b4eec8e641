"""A decision refused (or throttled) by a tenant-wide or cost-center rule quotes that scope's
amounts (the tenant's spend, a tenant quota's use: other teams' money and work) to admin and
finance only. A team-member asking for its own team's work is told the rule and the scope,
without the amounts; so is the action log entry on its team or app, which it reads. A rule
on its own team or app keeps its amounts."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from fastapi.testclient import TestClient

from quartermaster.guardrails.evaluator import evaluate_tenant
from quartermaster.guardrails.gate import guardrail_gate
from quartermaster.runtime import Runtime
from tests.conftest import TenantHandle
from tests.guardrails.support import FixedSpend, World, budget, build_world, key_for, ok

# The tenant's spend, as evaluate writes it into a budget's reason ("12,345.67 EUR").
TENANT_SPEND = "12345.67"
SHOWN = ("12,345.67", "12345.67", "10,000", "10000")


def _cross(runtime: Runtime, world: World, totals: dict[tuple[str, str], str]) -> None:
    spend = FixedSpend()
    for (kind, scope), amount in totals.items():
        spend.set(kind, scope, amount)
    with runtime.session_factory() as session:
        evaluate_tenant(world.tenant.tenant_id, spend=spend, session=session, now=datetime.now(UTC))
    guardrail_gate(runtime).invalidate()


def _decide(client: TestClient, world: World, headers: dict[str, str]) -> Any:
    body = {"team": world.team, "resources": {"cpu": 1}}
    return client.post("/v1/decisions", json=body, headers=headers)


def _quotes_tenant_spend(text: str) -> bool:
    return any(figure in text for figure in SHOWN)


def test_a_tenant_halt_quotes_its_spend_to_admin_but_not_to_a_team_member(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    budget(client, world, name="company", scope_kind="tenant", amount="10000", action="halt")
    _cross(runtime, world, {("tenant", ""): TENANT_SPEND})
    member = key_for(client, tenant, "team-member", team=world.team)

    told = ok(_decide(client, world, member))
    assert told["allowed"] is False
    [reason] = told["reasons"]
    assert reason["kind"] == "budget"
    assert reason["message"].startswith("halted: a budget of the tenant")
    assert "until" in reason["message"]
    assert not _quotes_tenant_spend(reason["message"]), reason
    assert not _quotes_tenant_spend(str(told)), told

    # The admin (and finance) still read the amounts, in the answer and in the log.
    admin = ok(_decide(client, world, tenant.headers))
    assert _quotes_tenant_spend(admin["reasons"][0]["message"])
    finance = key_for(client, tenant, "finance")
    assert finance  # finance cannot ask for decisions; it reads the log below

    # The deny actions are logged on the team: its member reads them without the amounts.
    actions = ok(client.get("/v1/guardrail-actions", headers=member))
    denies = [a for a in actions if a["action"] == "deny"]
    assert len(denies) == 2
    assert all("halted: a budget of the tenant" in a["reason"] for a in denies)
    assert not any(_quotes_tenant_spend(a["reason"]) for a in actions), actions
    # The halt itself (on the tenant) keeps its amounts for admin and finance.
    logged = ok(client.get("/v1/guardrail-actions", headers=finance))
    halt = next(a for a in logged if a["action"] == "halt")
    assert _quotes_tenant_spend(halt["reason"])


def test_a_tenant_throttle_answers_a_team_member_429_without_the_tenants_spend(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    budget(client, world, scope_kind="tenant", amount="10000", action="throttle")
    _cross(runtime, world, {("tenant", ""): TENANT_SPEND})
    member = key_for(client, tenant, "team-member", team=world.team)

    throttled = _decide(client, world, member)
    assert throttled.status_code == 429, throttled.text
    message = throttled.json()["error"]["message"]
    assert "throttled by a budget of the tenant until" in message
    assert not _quotes_tenant_spend(throttled.text), message

    admin = _decide(client, world, tenant.headers)
    assert admin.status_code == 429
    assert _quotes_tenant_spend(admin.json()["error"]["message"])


def test_a_team_member_reads_its_own_teams_amounts(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    budget(client, world, name="mine", scope_kind="team", scope=world.team, action="halt")
    _cross(runtime, world, {("team", world.team): "123.45"})
    member = key_for(client, tenant, "team-member", team=world.team)

    [reason] = ok(_decide(client, world, member))["reasons"]
    assert "123.45" in reason["message"]
    assert "'mine'" in reason["message"]


def test_a_tenant_quota_is_named_without_its_use_to_a_team_member(
    client: TestClient, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    quota = {"scope_kind": "tenant", "resource": "cpu", "hard": "3"}
    ok(client.put("/v1/quotas", json=quota, headers=tenant.headers))
    team_quota = {"scope_kind": "team", "scope": world.team, "resource": "cpu", "hard": "7"}
    ok(client.put("/v1/quotas", json=team_quota, headers=tenant.headers))
    member = key_for(client, tenant, "team-member", team=world.team)
    body = {"team": world.team, "resources": {"cpu": 8}}

    told = ok(client.post("/v1/decisions", json=body, headers=member))
    messages = [r["message"] for r in told["reasons"]]
    tenant_reason = next(m for m in messages if "of tenant" in m)
    assert "requested 8" in tenant_reason
    assert "limit 3" not in tenant_reason
    assert "used" not in tenant_reason
    # Its own team's quota keeps its figures.
    assert any(f"team {world.team!r}" in m and "limit 7" in m for m in messages), messages

    admin = ok(client.post("/v1/decisions", json=body, headers=tenant.headers))
    assert any(
        "of tenant" in m and "limit 3" in m for m in [r["message"] for r in admin["reasons"]]
    )


def test_a_decision_names_the_apps_own_team_or_none(
    client: TestClient, tenant: TenantHandle
) -> None:
    """A team-member may not ask for another team's app by naming its own team beside it;
    nor may anyone charge an app's work to a team that does not own it."""
    mine, theirs = build_world(client, tenant), build_world(client, tenant)
    member = key_for(client, tenant, "team-member", team=mine.team)
    body = {"app": theirs.app, "team": mine.team, "resources": {"cpu": 1}}
    for headers in (member, tenant.headers):
        refused = client.post("/v1/decisions", json=body, headers=headers)
        assert refused.status_code == 422, refused.text
        error = refused.json()["error"]
        assert error["field"] == "team"
        assert f"app {theirs.app!r} belongs to team {theirs.team!r}" in error["message"]
    own = {"app": mine.app, "team": mine.team, "resources": {"cpu": 1}}
    assert ok(client.post("/v1/decisions", json=own, headers=member))["allowed"] is True
    alone = {"app": theirs.app, "resources": {"cpu": 1}}
    assert client.post("/v1/decisions", json=alone, headers=member).status_code == 403
