"""Budgets keep their identity when changed (guardrails walkthrough finding 3): PATCH keeps
what fired this period and the enforcement in force, and a lifted enforcement starts again
only once the budget's hard limit changed; deleting a budget or a default cap ends
its enforcements as history with an action-log entry; a time-zone change neither re-fires
thresholds nor starts a second enforcement (finding 4); amounts that cannot be stored are
422s (finding 10)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient

from quartermaster.guardrails.evaluator import Evaluation, evaluate_tenant
from quartermaster.guardrails.gate import guardrail_gate
from quartermaster.guardrails.models import Enforcement
from quartermaster.runtime import Runtime
from tests.conftest import TenantHandle
from tests.guardrails.support import (
    FixedSpend,
    World,
    build_world,
    ok,
    send_events,
    usage_event,
)

NOW = datetime(2026, 12, 4, 12, 0, tzinfo=UTC)


def _evaluate(runtime: Runtime, world: World, spend: FixedSpend, now: datetime = NOW) -> Evaluation:
    with runtime.session_factory() as session:
        result = evaluate_tenant(world.tenant.tenant_id, spend=spend, session=session, now=now)
    guardrail_gate(runtime).invalidate()
    return result


def _app_budget(client: TestClient, world: World, **fields: object) -> dict[str, object]:
    body = {
        "name": "app-month",
        "scope_kind": "app",
        "scope": world.app,
        "amount": "10",
        "action": "throttle",
        **fields,
    }
    made: dict[str, object] = ok(client.post("/v1/budgets", json=body, headers=world.headers), 201)
    return made


def _over_budget(world: World) -> FixedSpend:
    """The app's spend this period: 11, over `_app_budget`'s 10."""
    spend = FixedSpend()
    spend.set("app", world.app, "11")
    return spend


def _capped_staging_app(
    client: TestClient, world: World
) -> tuple[str, dict[str, str], dict[str, Any]]:
    """A staging app and a throttling default cap of 5 for non-production apps: the app's
    id, the cap as sent and as answered."""
    staging = "staging-app"
    app = {"app_id": staging, "owner": "o", "team": world.team, "cost_center": "default"}
    ok(client.post("/v1/apps", json={**app, "environment": "staging"}, headers=world.headers), 201)
    cap = {"applies_to": "non_production", "amount": "5", "action": "throttle"}
    return staging, cap, ok(client.put("/v1/default-caps", json=cap, headers=world.headers))


def _actions(client: TestClient, world: World, action: str) -> list[dict[str, str]]:
    rows = ok(client.get("/v1/guardrail-actions", headers=world.headers))
    return [r for r in rows if r["action"] == action]


def test_patch_keeps_what_fired_and_the_enforcement(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    made = _app_budget(client, world)
    spend = _over_budget(world)
    first = _evaluate(runtime, world, spend)
    assert len(first.alerts) == 4  # 50, 80, 100 and the hard limit
    assert first.enforcements == ["app-month"]
    # Raised above the spend: nothing fires again, the throttle stays in force.
    patch = {"amount": "30", "thresholds": [50, 80, 90, 100]}
    raised = ok(client.patch("/v1/budgets/app-month", json=patch, headers=world.headers))
    assert raised["id"] == made["id"]
    assert raised["amount"] == "30"
    assert raised["thresholds"] == [50, 80, 90, 100]
    again = _evaluate(runtime, world, spend)
    assert again.alerts == []
    assert again.enforcements == []
    enforcements = ok(client.get("/v1/enforcements", headers=world.headers))
    assert len(enforcements) == 1
    assert enforcements[0]["lifted_at"] is None
    (update,) = _actions(client, world, "update")
    assert "amount 10, thresholds 50/80/100%, throttle at 100%" in update["reason"]
    assert "amount 30, thresholds 50/80/90/100%" in update["reason"]
    # Lowered again under the spend: only the threshold not fired yet (90 %) alerts.
    ok(client.patch("/v1/budgets/app-month", json={"amount": "12"}, headers=world.headers))
    lowered = _evaluate(runtime, world, spend)
    assert lowered.alerts == [f"budget:{made['id']}:2026-12:90"]
    assert lowered.enforcements == []
    # A changed action applies to the enforcement in force; notify ends it.
    halted = {"action": "halt"}
    ok(client.patch("/v1/budgets/app-month", json=halted, headers=world.headers))
    assert ok(client.get("/v1/enforcements", headers=world.headers))[0]["action"] == "halt"
    ok(client.patch("/v1/budgets/app-month", json={"action": "notify"}, headers=world.headers))
    ended = ok(client.get("/v1/enforcements", headers=world.headers))[0]
    assert ended["lifted_by"] is not None


def _decide(client: TestClient, world: World) -> int:
    answer = client.post("/v1/decisions", json={"app": world.app}, headers=world.headers)
    return int(answer.status_code)


def test_a_lift_lasts_until_the_budget_changes_then_the_new_limit_is_enforced(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    made = _app_budget(client, world)
    spend = _over_budget(world)
    assert _evaluate(runtime, world, spend).enforcements == ["app-month"]
    (first,) = ok(client.get("/v1/enforcements", headers=world.headers))
    assert first["hard_limit"] == "10"
    ok(client.post(f"/v1/enforcements/{first['id']}/lift", headers=world.headers))
    # Lifted at an unchanged limit: it stays lifted however far the spend goes.
    spend.set("app", world.app, "25")
    assert _evaluate(runtime, world, spend) == Evaluation()
    assert _decide(client, world) == 200
    # Raised to 30 (the hard limit at 100 %): nothing until the spend reaches it...
    ok(client.patch("/v1/budgets/app-month", json={"amount": "30.00"}, headers=world.headers))
    assert _evaluate(runtime, world, spend) == Evaluation()
    # ...then a second throttle, with an alert of its own; the soft thresholds stay fired.
    spend.set("app", world.app, "31")
    again = _evaluate(runtime, world, spend)
    assert again.enforcements == ["app-month"]
    assert again.alerts == [f"budget:{made['id']}:2026-12:hard:30"]
    assert _decide(client, world) == 429
    second, older = ok(client.get("/v1/enforcements", headers=world.headers))
    assert older["id"] == first["id"]
    assert (second["hard_limit"], second["lifted_at"]) == ("30", None)
    assert "again (the budget changed after the last one was lifted)" in second["reason"]
    alerts = ok(client.get("/v1/alerts", headers=world.headers))
    rearmed = next(a for a in alerts if a["details"].get("hard_limit") == "30")
    assert rearmed["severity"] == "critical"
    assert rearmed["title"] == "Budget app-month: hard limit reached again (throttle)"
    assert _evaluate(runtime, world, spend) == Evaluation()  # once per limit
    # Lifted again and put back at a limit already lifted this period: stays lifted.
    ok(client.post(f"/v1/enforcements/{second['id']}/lift", headers=world.headers))
    ok(client.patch("/v1/budgets/app-month", json={"amount": "10"}, headers=world.headers))
    assert _evaluate(runtime, world, spend) == Evaluation()
    assert _decide(client, world) == 200
    # A changed hard_percent is a changed limit too (10 at 200 % = 20).
    ok(client.patch("/v1/budgets/app-month", json={"hard_percent": 200}, headers=world.headers))
    assert _evaluate(runtime, world, spend).enforcements == ["app-month"]
    assert ok(client.get("/v1/enforcements", headers=world.headers))[0]["hard_limit"] == "20"


def test_a_default_cap_lifted_for_an_app_binds_again_at_a_changed_amount(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    staging, cap, made = _capped_staging_app(client, world)
    spend = FixedSpend()
    spend.set("app", staging, "6")
    label = f"default-cap:non_production:{staging}"
    assert _evaluate(runtime, world, spend).enforcements == [label]
    (first,) = ok(client.get("/v1/enforcements", headers=world.headers))
    assert first["hard_limit"] == "5"
    ok(client.post(f"/v1/enforcements/{first['id']}/lift", headers=world.headers))
    spend.set("app", staging, "20")
    assert _evaluate(runtime, world, spend) == Evaluation()  # the same cap: stays lifted
    ok(client.put("/v1/default-caps", json={**cap, "amount": "15"}, headers=world.headers))
    again = _evaluate(runtime, world, spend)
    assert again.enforcements == [label]
    assert again.alerts == [f"cap:{made['id']}:{staging}:2026-12:15"]
    second = ok(client.get("/v1/enforcements", headers=world.headers))[0]
    assert (second["hard_limit"], second["lifted_at"]) == ("15", None)
    assert "again (the cap changed after the last one was lifted)" in second["reason"]
    assert _evaluate(runtime, world, spend) == Evaluation()


def test_a_budget_changed_while_throttled_keeps_one_enforcement_in_force(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    _app_budget(client, world)
    spend = FixedSpend()
    spend.set("app", world.app, "40")
    assert _evaluate(runtime, world, spend).enforcements == ["app-month"]
    for amount in ("20", "5"):  # both still under the spend: no second throttle in force
        ok(client.patch("/v1/budgets/app-month", json={"amount": amount}, headers=world.headers))
        assert _evaluate(runtime, world, spend).enforcements == []
    assert len(ok(client.get("/v1/enforcements", headers=world.headers))) == 1


def test_a_lift_recorded_without_a_limit_lasts_the_period(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    """An enforcement started before limits were recorded (hard_limit NULL) keeps the old
    rule: its lift lasts the period, whatever the budget becomes."""
    world = build_world(client, tenant)
    _app_budget(client, world)
    spend = _over_budget(world)
    _evaluate(runtime, world, spend)
    (throttle,) = ok(client.get("/v1/enforcements", headers=world.headers))
    ok(client.post(f"/v1/enforcements/{throttle['id']}/lift", headers=world.headers))
    with runtime.session_factory() as session:
        row = session.get(Enforcement, throttle["id"])
        assert row is not None
        row.hard_limit = None
        session.commit()
    ok(client.patch("/v1/budgets/app-month", json={"amount": "20"}, headers=world.headers))
    spend.set("app", world.app, "50")
    assert _evaluate(runtime, world, spend).enforcements == []


def test_a_notify_budget_does_not_alert_again_at_a_changed_limit(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    _app_budget(client, world, action="notify")
    spend = _over_budget(world)
    assert len(_evaluate(runtime, world, spend).alerts) == 4
    ok(client.patch("/v1/budgets/app-month", json={"amount": "20"}, headers=world.headers))
    spend.set("app", world.app, "21")
    assert _evaluate(runtime, world, spend) == Evaluation()


@pytest.mark.parametrize(
    ("patch", "field"),
    [
        ({"amount": "0"}, "amount"),
        ({"amount": "1e400"}, "amount"),
        ({"thresholds": [150]}, "thresholds"),
        ({"hard_percent": 0}, "hard_percent"),
        ({"action": "explode"}, "action"),
    ],
)
def test_patch_refuses_bad_limits_naming_the_field(
    client: TestClient, tenant: TenantHandle, patch: dict[str, object], field: str
) -> None:
    world = build_world(client, tenant)
    _app_budget(client, world)
    answer = client.patch("/v1/budgets/app-month", json=patch, headers=world.headers)
    assert answer.status_code == 422, answer.text
    assert field in answer.text
    missing = client.patch("/v1/budgets/nope", json={"amount": "5"}, headers=world.headers)
    assert missing.status_code == 404


def test_deleting_a_budget_ends_its_enforcement_as_history_and_logs_it(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    _app_budget(client, world)
    spend = _over_budget(world)
    _evaluate(runtime, world, spend)
    (throttle,) = ok(client.get("/v1/enforcements", headers=world.headers))
    ok(client.delete("/v1/budgets/app-month", headers=world.headers), 204)
    (kept,) = ok(client.get("/v1/enforcements", headers=world.headers))
    assert kept["id"] == throttle["id"]
    assert kept["lifted_at"] is not None
    (deleted,) = _actions(client, world, "delete")
    assert deleted["subject"] == "budget:app-month"
    assert f"ended throttle {throttle['id']}" in deleted["reason"]
    decision = client.post("/v1/decisions", json={"app": world.app}, headers=world.headers)
    assert decision.status_code == 200, decision.text


def test_deleting_a_default_cap_ends_its_enforcement_as_history_and_logs_it(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    staging, _, _ = _capped_staging_app(client, world)
    spend = FixedSpend()
    spend.set("app", staging, "6")
    assert _evaluate(runtime, world, spend).enforcements == [
        f"default-cap:non_production:{staging}"
    ]
    ok(client.delete("/v1/default-caps/non_production", headers=world.headers), 204)
    (kept,) = ok(client.get("/v1/enforcements", headers=world.headers))
    assert kept["lifted_at"] is not None
    (deleted,) = _actions(client, world, "delete")
    assert deleted["subject"] == "default_cap:non_production"
    assert kept["id"] in deleted["reason"]


def test_a_time_zone_change_refires_nothing_and_keeps_a_lift(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    _app_budget(client, world)
    day = {"name": "app-day", "scope_kind": "app", "scope": world.app, "amount": "5"}
    ok(client.post("/v1/budgets", json={**day, "period": "day"}, headers=world.headers), 201)
    spend = _over_budget(world)
    first = _evaluate(runtime, world, spend)
    assert len(first.alerts) == 8
    (throttle,) = ok(client.get("/v1/enforcements", headers=world.headers))
    ok(client.post(f"/v1/enforcements/{throttle['id']}/lift", headers=world.headers))
    for zone in ("Asia/Tokyo", "America/Los_Angeles", "UTC"):
        ok(client.patch("/v1/tenant", json={"timezone": zone}, headers=world.headers))
        after = _evaluate(runtime, world, spend)
        assert after.alerts == [], zone
        assert after.enforcements == [], zone
    assert len(ok(client.get("/v1/enforcements", headers=world.headers))) == 1
    decision = client.post("/v1/decisions", json={"app": world.app}, headers=world.headers)
    assert decision.status_code == 200, decision.text


@pytest.mark.parametrize(
    ("amount", "says"),
    [("1e400", "10^56"), ("1e-200", "6 decimal places"), ("0.0000001", "6 decimal places")],
)
def test_an_amount_that_cannot_be_stored_is_a_422_on_amount(
    client: TestClient, tenant: TenantHandle, amount: str, says: str
) -> None:
    answer = client.post(
        "/v1/budgets", json={"name": "zz", "amount": amount}, headers=tenant.headers
    )
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == "amount"
    assert says in answer.json()["error"]["message"]


def test_budget_defaults_to_the_tenant_and_keeps_trailing_zeros_out(
    client: TestClient, tenant: TenantHandle
) -> None:
    made = ok(
        client.post(
            "/v1/budgets", json={"name": "whole", "amount": "10.500000000"}, headers=tenant.headers
        ),
        201,
    )
    assert made["scope_kind"] == "tenant"
    assert made["amount"] in ("10.500000", "10.5")


def test_a_soft_threshold_above_the_hard_percent_is_refused(
    client: TestClient, tenant: TenantHandle
) -> None:
    body = {"name": "odd", "amount": "10", "thresholds": [150], "hard_percent": 120}
    answer = client.post("/v1/budgets", json=body, headers=tenant.headers)
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"]["field"] == "thresholds"
    assert "hard_percent 120" in answer.json()["error"]["message"]


BOOK = {
    "name": "pb",
    "currency": "USD",
    "version": 1,
    "effective_from": "2026-01-01T00:00:00Z",
    "prices": [{"meter": "tokens", "model": "per_unit", "unit_price": "0.001"}],
}


def test_budgets_list_their_spend_so_far_on_request(
    client: TestClient, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    _app_budget(client, world, amount="4")
    # No price book yet: the budgets, without spend.
    (unpriced,) = ok(client.get("/v1/budgets?spend=true", headers=world.headers))
    assert unpriced["spend"] is None
    answer = client.post("/v1/price-books", content=json.dumps(BOOK), headers=tenant.headers)
    assert answer.status_code in (200, 201), answer.text
    sent = ok(send_events(client, tenant.headers, [usage_event(world.app, tokens=3000)]))
    assert sent["accepted"] == 1
    ok(client.post("/v1/budgets/evaluate", headers=world.headers))
    (row,) = ok(client.get("/v1/budgets?spend=true", headers=world.headers))
    assert Decimal(row["spend"]) == Decimal("3")
    assert row["percent"] == "75.0"
    assert row["currency"] == "USD"
    (plain,) = ok(client.get("/v1/budgets", headers=world.headers))
    assert plain["spend"] is None
