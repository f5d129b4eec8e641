"""Default hard caps: every ephemeral (or non-production) app without a budget of its own is
held to the tenant's cap — halted or throttled once it reaches it, once per period, with the
alert, the enforcement and the action log saying why; production apps and apps with their own
budget are left alone."""

from __future__ import annotations

import re
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from quartermaster.guardrails.evaluator import evaluate_tenant, tenants_with_budgets
from quartermaster.guardrails.gate import guardrail_gate
from quartermaster.runtime import Runtime
from tests.conftest import TenantHandle
from tests.guardrails.support import (
    FixedSpend,
    World,
    budget,
    build_world,
    key_for,
    ok,
    send_events,
    usage_event,
)


def _app(client: TestClient, world: World, **fields: Any) -> str:
    slug = f"app-{uuid.uuid4().hex[:6]}"
    body = {"app_id": slug, "owner": "o", "team": world.team, "cost_center": "default", **fields}
    ok(client.post("/v1/apps", json=body, headers=world.headers), 201)
    return slug


def _evaluate(runtime: Runtime, world: World, spend: FixedSpend) -> Any:
    with runtime.session_factory() as session:
        result = evaluate_tenant(
            world.tenant.tenant_id, spend=spend, session=session, now=datetime.now(UTC)
        )
    guardrail_gate(runtime).invalidate()
    return result


def _decide(client: TestClient, world: World, app: str, **body: Any) -> Any:
    return client.post("/v1/decisions", json={"app": app, **body}, headers=world.headers)


def test_caps_halt_ephemeral_apps_once_and_say_why(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    preview_app = _app(client, world, lifecycle="ephemeral", environment="preview")
    small = _app(client, world, lifecycle="ephemeral")
    prod = world.app  # persistent, production: never capped
    cap = ok(
        client.put(
            "/v1/default-caps",
            json={"applies_to": "ephemeral", "amount": "20", "period": "day", "action": "halt"},
            headers=world.headers,
        )
    )
    assert cap["action"] == "halt"
    assert cap["period"] == "day"
    with runtime.session_factory() as session:
        assert world.tenant.tenant_id in tenants_with_budgets(session=session)
    spend = FixedSpend()
    spend.set("app", preview_app, "25")
    spend.set("app", small, "5")
    spend.set("app", prod, "1000")
    first = _evaluate(runtime, world, spend)
    assert first.enforcements == [f"default-cap:ephemeral:{preview_app}"]
    assert _evaluate(runtime, world, spend).enforcements == []  # once per period
    assert _evaluate(runtime, world, spend).alerts == []
    refused = ok(_decide(client, world, preview_app))
    assert refused["allowed"] is False
    assert refused["reasons"][0]["kind"] == "budget"
    assert "default hard cap for ephemeral apps" in refused["reasons"][0]["message"]
    # Its period's end as a person reads it, not as isoformat() writes it.
    assert re.search(
        r"refused until \d{4}-\d\d-\d\d 00:00 (UTC|[+-]\d\d:\d\d)$",
        refused["reasons"][0]["message"],
    )
    assert ok(_decide(client, world, preview_app, essential=True))["allowed"] is True
    assert ok(_decide(client, world, small))["allowed"] is True
    assert ok(_decide(client, world, prod))["allowed"] is True
    enforcements = ok(client.get("/v1/enforcements", headers=world.headers))
    assert [(e["scope_kind"], e["scope"], e["action"]) for e in enforcements] == [
        ("app", preview_app, "halt")
    ]
    assert "25.00 EUR" in enforcements[0]["reason"]
    assert "no budget of its own" in enforcements[0]["reason"]
    actions = ok(client.get("/v1/guardrail-actions", headers=world.headers))
    halts = [a for a in actions if a["action"] == "halt"]
    assert len(halts) == 1
    assert halts[0]["subject"] == "default_cap:ephemeral"
    assert halts[0]["scope"] == preview_app
    alerts = ok(client.get("/v1/alerts?kind=default_cap", headers=world.headers))
    assert len(alerts) == 1
    assert alerts[0]["severity"] == "critical"
    assert alerts[0]["details"]["app"] == preview_app
    # Lifted: the app may start work again, and the same period does not halt it twice.
    ok(client.post(f"/v1/enforcements/{enforcements[0]['id']}/lift", headers=world.headers))
    guardrail_gate(runtime).invalidate()
    assert ok(_decide(client, world, preview_app))["allowed"] is True
    assert _evaluate(runtime, world, spend).enforcements == []


def test_non_production_cap_throttles_and_own_budget_wins(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    staging = _app(client, world, environment="staging")
    budgeted = _app(client, world, environment="dev")
    budget(client, world, scope_kind="app", scope=budgeted, amount="500", action="notify")
    ok(
        client.put(
            "/v1/default-caps",
            json={"applies_to": "non_production", "amount": "10", "action": "throttle"},
            headers=world.headers,
        )
    )
    spend = FixedSpend()
    spend.set("app", staging, "10")  # at the cap counts
    spend.set("app", budgeted, "100")  # over the cap, but its own budget (500) decides
    result = _evaluate(runtime, world, spend)
    assert result.enforcements == [f"default-cap:non_production:{staging}"]
    throttled = _decide(client, world, staging)
    assert throttled.status_code == 429
    assert "default hard cap for non-production apps" in throttled.json()["error"]["message"]
    assert _decide(client, world, budgeted).status_code == 200
    # Ingest too, whoever sends it: a team-member key of the app's team (a CI job) has the
    # capped app's events rejected `throttled`, its other app's stored (builder walk 5).
    member = key_for(client, tenant, "team-member", team=world.team)
    report = ok(send_events(client, member, [usage_event(staging), usage_event(budgeted)]))
    assert report["accepted"] == 1
    assert [(r["index"], r["reason"]) for r in report["rejected"]] == [(0, "throttled")]
    assert "default hard cap for non-production apps" in report["rejected"][0]["message"]
    # Changing the cap keeps one row per kind; deleting it ends what it started.
    ok(
        client.put(
            "/v1/default-caps",
            json={"applies_to": "non_production", "amount": "50", "action": "halt"},
            headers=world.headers,
        )
    )
    listed = ok(client.get("/v1/default-caps", headers=world.headers))
    assert [(c["applies_to"], c["amount"], c["action"]) for c in listed] == [
        ("non_production", "50", "halt")
    ]
    ok(client.delete("/v1/default-caps/non_production", headers=world.headers), 204)
    guardrail_gate(runtime).invalidate()
    assert _decide(client, world, staging).status_code == 200
    assert ok(client.get("/v1/default-caps", headers=world.headers)) == []


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"applies_to": "production", "amount": "5"}, "applies_to"),
        ({"applies_to": "ephemeral", "amount": "0"}, "amount"),
        ({"applies_to": "ephemeral", "amount": "5", "period": "week"}, "period"),
        ({"applies_to": "ephemeral", "amount": "5", "action": "notify"}, "action"),
    ],
)
def test_bad_caps_are_refused_naming_the_field(
    client: TestClient, tenant: TenantHandle, body: dict[str, str], field: str
) -> None:
    response = client.put("/v1/default-caps", json=body, headers=tenant.headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["field"] == field


def test_caps_are_admin_to_write_and_missing_ones_404(
    client: TestClient, tenant: TenantHandle
) -> None:
    missing = client.delete("/v1/default-caps/ephemeral", headers=tenant.headers)
    assert missing.status_code == 404
    assert "no default cap for 'ephemeral'" in missing.json()["error"]["message"]
    principal = ok(
        client.post(
            "/v1/principals",
            json={"name": f"fin-{uuid.uuid4().hex[:6]}", "role": "finance"},
            headers=tenant.headers,
        ),
        201,
    )
    issued = ok(
        client.post(f"/v1/principals/{principal['id']}/keys", json={}, headers=tenant.headers),
        201,
    )
    finance = {"Authorization": f"Bearer {issued['token']}"}
    body = {"applies_to": "ephemeral", "amount": "5"}
    assert client.put("/v1/default-caps", json=body, headers=finance).status_code == 403
    assert ok(client.get("/v1/default-caps", headers=finance)) == []
