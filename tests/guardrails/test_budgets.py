"""Budget thresholds fire exactly once per period and threshold; a hard crossing starts the
budget's action once; every action is in the log with why."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.domain.timeutil import Period
from quartermaster.guardrails import evaluator
from quartermaster.guardrails.budgets import crossed, hard_limit_of
from quartermaster.guardrails.common import record_action
from quartermaster.guardrails.evaluator import evaluate_tenant
from quartermaster.guardrails.models import Alert, Enforcement
from quartermaster.guardrails.spend import ScopeSpend
from quartermaster.runtime import Runtime
from tests.conftest import TenantHandle
from tests.guardrails.support import FixedSpend, budget, build_world, ok

NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)


def _evaluate(runtime: Runtime, tenant_id: str, spend: FixedSpend, now: datetime = NOW) -> object:
    with runtime.session_factory() as session:
        return evaluate_tenant(tenant_id, spend=spend, session=session, now=now)


def test_each_threshold_fires_once_per_period(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    made = budget(client, world, scope_kind="team", scope=world.team, thresholds=[50, 80, 100])
    spend = FixedSpend()
    spend.set("team", world.team, "10")
    assert _evaluate(runtime, tenant.tenant_id, spend).alerts == []  # type: ignore[attr-defined]
    spend.set("team", world.team, "55")
    first = _evaluate(runtime, tenant.tenant_id, spend)
    assert [k.rsplit(":", 1)[1] for k in first.alerts] == ["50"]  # type: ignore[attr-defined]
    for _ in range(3):  # evaluated again and again: nothing new
        assert _evaluate(runtime, tenant.tenant_id, spend).alerts == []  # type: ignore[attr-defined]
    spend.set("team", world.team, "130")  # jumps past 80, 100 and the hard limit at once
    jumped = _evaluate(runtime, tenant.tenant_id, spend)
    assert [k.rsplit(":", 1)[1] for k in jumped.alerts] == ["80", "100", "hard"]  # type: ignore[attr-defined]
    assert _evaluate(runtime, tenant.tenant_id, spend).alerts == []  # type: ignore[attr-defined]
    # Next month is a new period: the thresholds fire again, once.
    april = _evaluate(runtime, tenant.tenant_id, spend, NOW + timedelta(days=31))
    assert len(april.alerts) == 4  # type: ignore[attr-defined]
    alerts = ok(client.get("/v1/alerts", headers=world.headers))
    assert len(alerts) == 8
    assert {a["details"]["budget"] for a in alerts} == {made["name"]}
    fifty = [a for a in alerts if a["details"]["threshold"] == 50]
    assert len(fifty) == 2
    assert "50% threshold crossed" in fifty[0]["message"]
    assert f"of its monthly budget '{made['name']}'" in fifty[0]["message"]
    actions = ok(client.get("/v1/guardrail-actions", headers=world.headers))
    assert [a["action"] for a in actions].count("notify") == 6
    assert all(a["reason"] for a in actions)


def test_a_day_budgets_alert_calls_it_daily(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    made = budget(client, world, scope_kind="team", scope=world.team, period="day")
    spend = FixedSpend()
    spend.set("team", world.team, "55")
    _evaluate(runtime, tenant.tenant_id, spend)
    (alert,) = ok(client.get("/v1/alerts", headers=world.headers))
    assert f"of its daily budget '{made['name']}'" in alert["message"]  # it said "dayly"


def test_racing_evaluators_fire_once(
    runtime: Runtime, client: TestClient, tenant: TenantHandle
) -> None:
    import threading

    world = build_world(client, tenant)
    budget(client, world, scope_kind="app", scope=world.app, action="halt")
    spend = FixedSpend()
    spend.set("app", world.app, "500")
    threads = [
        threading.Thread(target=_evaluate, args=(runtime, tenant.tenant_id, spend))
        for _ in range(4)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    with runtime.session_factory() as session:
        alerts = session.scalars(select(Alert).where(Alert.tenant_id == tenant.tenant_id)).all()
        enforced = session.scalars(
            select(Enforcement).where(Enforcement.tenant_id == tenant.tenant_id)
        ).all()
    assert len(alerts) == 4  # 50, 80, 100 and hard: once each, whichever thread won
    assert len(enforced) == 1
    assert enforced[0].action == "halt"


def test_notify_budget_alerts_without_enforcing(
    runtime: Runtime, client: TestClient, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    budget(client, world, scope_kind="tenant", thresholds=[90], hard_percent=120)
    spend = FixedSpend()
    spend.set("tenant", "", "121")
    result = _evaluate(runtime, tenant.tenant_id, spend)
    assert [k.rsplit(":", 1)[1] for k in result.alerts] == ["90", "hard"]  # type: ignore[attr-defined]
    assert result.enforcements == []  # type: ignore[attr-defined]
    assert ok(client.get("/v1/enforcements", headers=world.headers)) == []


def test_a_budget_answers_its_thresholds_as_it_was_given_them(
    client: TestClient, tenant: TenantHandle
) -> None:
    """A client sending `thresholds: [80, 50]` reads back a list of integers (sorted, without
    repeats), not the stored text "50,80"."""
    world = build_world(client, tenant)
    made = budget(client, world, scope_kind="tenant", thresholds=[80, 50, 80])
    assert made["thresholds"] == [50, 80]
    listed = ok(client.get("/v1/budgets", headers=world.headers))
    assert [b["thresholds"] for b in listed if b["id"] == made["id"]] == [[50, 80]]


def test_amounts_given_with_an_exponent_are_answered_written_out(
    client: TestClient, tenant: TenantHandle
) -> None:
    """`1e3` is a number a script may send; the answer, at once and later, reads `1000`."""
    world = build_world(client, tenant)
    made = budget(client, world, scope_kind="tenant", amount="1e3")
    assert made["amount"] == "1000"
    listed = ok(client.get("/v1/budgets", headers=world.headers))
    assert [b["amount"] for b in listed if b["id"] == made["id"]] == ["1000"]
    changed = ok(
        client.patch(f"/v1/budgets/{made['name']}", json={"amount": "2.5E1"}, headers=world.headers)
    )
    assert changed["amount"] == "25"
    cap = {"applies_to": "ephemeral", "amount": "1e1", "period": "day", "action": "halt"}
    assert ok(client.put("/v1/default-caps", json=cap, headers=world.headers))["amount"] == "10"
    threshold = {"high_cost_hour_amount": "1.5e2"}
    answered = ok(client.put("/v1/guardrail-settings", json=threshold, headers=world.headers))
    assert answered["high_cost_hour_amount"] == "150"
    rate = {"scope_kind": "tenant", "rate": "1e1", "burst": 5}
    assert ok(client.put("/v1/rate-limits", json=rate, headers=world.headers))["rate"] == "10"


def test_budget_input_errors_name_the_field(client: TestClient, tenant: TenantHandle) -> None:
    world = build_world(client, tenant)
    cases = [
        ({"scope_kind": "galaxy"}, "scope_kind"),
        ({"scope_kind": "team"}, "scope"),
        ({"scope_kind": "tenant", "amount": "-1"}, "amount"),
        ({"scope_kind": "tenant", "action": "explode"}, "action"),
        ({"scope_kind": "tenant", "thresholds": [0]}, "thresholds"),
        ({"scope_kind": "tenant", "period": "year"}, "period"),
    ]
    for fields, field in cases:
        body = {"name": "x", "amount": "10", **fields}
        response = client.post("/v1/budgets", json=body, headers=world.headers)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == field, response.text
    budget(client, world, name="dup", scope_kind="tenant")
    again = client.post(
        "/v1/budgets",
        json={"name": "dup", "scope_kind": "tenant", "amount": "1"},
        headers=world.headers,
    )
    assert again.status_code == 409


def test_pricing_runs_before_the_write_transaction(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    """With a reader, every period is priced before the write session starts (on SQLite a
    write session holds the database's write lock from its first statement), and the
    crossing is still recorded."""
    world = build_world(client, tenant)
    budget(client, world, scope_kind="team", scope=world.team, thresholds=[50])
    observed: list[bool] = []

    class WatchedSpend(FixedSpend):
        def spend(self, tenant_id: str, period: Period, *, session: Session) -> ScopeSpend:
            observed.append(writer.in_transaction())
            assert session is reader
            return super().spend(tenant_id, period, session=session)

    spend = WatchedSpend()
    spend.set("team", world.team, "60")
    with runtime.session_factory() as writer, runtime.read_session_factory() as reader:
        result = evaluate_tenant(
            tenant.tenant_id, spend=spend, session=writer, now=NOW, reader=reader
        )
    assert observed == [False]  # one period, priced once, with no write transaction open
    assert [k.rsplit(":", 1)[1] for k in result.alerts] == ["50"]


def test_a_pass_holds_no_write_lock_while_it_compares(
    client: TestClient, runtime: Runtime, tenant: TenantHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """While a pass compares spend with thresholds, another writer commits at once (on
    SQLite a write transaction holds the database's only write lock: the pass compared
    3,000 budgets inside one and every write of the server waited), and what crossed is
    still recorded, once, afterwards."""
    if not runtime.settings.database_url.startswith("sqlite"):
        pytest.skip("the database-wide write lock is SQLite's")
    world = build_world(client, tenant)
    budget(client, world, scope_kind="team", scope=world.team, thresholds=[50])
    budget(client, world, scope_kind="app", scope=world.app, thresholds=[50])
    spend = FixedSpend()
    spend.set("team", world.team, "60")
    spend.set("app", world.app, "60")
    comparing, release = threading.Event(), threading.Event()
    compared: list[int] = []
    real_crossed = evaluator.crossed

    def slow_crossed(spent: Decimal, amount: Decimal, thresholds: list[int]) -> list[int]:
        compared.append(1)
        if len(compared) == 2:  # the first budget has crossed: pause on the second
            comparing.set()
            release.wait(10)
        return real_crossed(spent, amount, thresholds)

    monkeypatch.setattr(evaluator, "crossed", slow_crossed)
    results: list[evaluator.Evaluation] = []

    def run_pass() -> None:
        with runtime.session_factory() as writer, runtime.read_session_factory() as reader:
            results.append(
                evaluator.evaluate_tenant(
                    tenant.tenant_id, spend=spend, session=writer, now=NOW, reader=reader
                )
            )

    written = threading.Event()

    def write_meanwhile() -> None:
        with runtime.session_factory() as session:
            record_action(
                session,
                tenant_id=tenant.tenant_id,
                action="note",
                scope_kind="tenant",
                scope="",
                subject="test",
                reason="written while a pass compares",
            )
            session.commit()
        written.set()

    pass_thread = threading.Thread(target=run_pass)
    writer_thread = threading.Thread(target=write_meanwhile)
    pass_thread.start()
    try:
        assert comparing.wait(10)
        writer_thread.start()
        assert written.wait(3), "another writer waited for the pass's write lock"
    finally:
        release.set()
        pass_thread.join(30)
        if writer_thread.ident is not None:
            writer_thread.join(30)
    assert sorted(k.rsplit(":", 1)[1] for k in results[0].alerts) == ["50", "50"]
    alerts = ok(client.get("/v1/alerts", headers=world.headers))
    assert len(alerts) == 2


def test_thresholds_compare_spend_exactly_past_28_digits() -> None:
    """The default decimal context rounded spend x 100 and amount x threshold to 28 digits:
    a spend a millionth under a budget of 10^27 read as having reached 100%."""
    amount = Decimal("1000000000000000000000000000.000001")
    assert crossed(Decimal("1000000000000000000000000000.000000"), amount, [50, 100]) == [50]
    assert crossed(amount, amount, [50, 100]) == [50, 100]


def test_a_huge_budget_alerts_quoting_its_amounts_in_full(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    """Quoting a budget of 10^26 or more to the cent raised InvalidOperation and failed the
    tenant's evaluation every pass."""
    world = build_world(client, tenant)
    limit = "1" + "0" * 40
    budget(client, world, scope_kind="team", scope=world.team, amount=limit, thresholds=[50])
    spend = FixedSpend()
    spend.set("team", world.team, "7" + "0" * 39 + ".125")
    result = _evaluate(runtime, tenant.tenant_id, spend)
    assert [k.rsplit(":", 1)[1] for k in result.alerts] == ["50"]  # type: ignore[attr-defined]
    alerts = ok(client.get("/v1/alerts", headers=world.headers))
    assert f"7{'0' * 39}.12 EUR" in alerts[0]["message"]
    assert f"{limit}.00 EUR" in alerts[0]["message"]


def test_a_budget_the_store_cannot_hold_is_refused_naming_the_limit(
    client: TestClient, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    body = {"name": "too-big", "scope_kind": "team", "scope": world.team, "amount": "1e56"}
    response = client.post("/v1/budgets", json=body, headers=world.headers)
    assert response.status_code == 422, response.text
    assert "budget 'too-big'" in response.text
    assert "not below 10^56" in response.text


@pytest.mark.parametrize(
    ("amount", "hard_percent", "limit"),
    [
        ("30.00", 100, "30"),
        ("10", 150, "15"),
        ("0.333333", 1000, "3.33333"),
        ("99999999999999999999999999999999999999999999999999999999.999999", 1000, None),
    ],
)
def test_a_hard_limit_is_one_exact_key_however_the_amount_was_written(
    amount: str, hard_percent: int, limit: str | None
) -> None:
    found = hard_limit_of(Decimal(amount), hard_percent)
    expected = limit or "999999999999999999999999999999999999999999999999999999999.99999"
    assert format(found, "f") == expected
    assert len(expected) <= 80  # the column's width
