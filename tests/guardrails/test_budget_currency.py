"""A budget's and a default cap's own currency: taken from the default price book when made,
and spend priced in another currency is never compared with it (no conversion): one warning
per period instead of threshold alerts or enforcement."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from decimal import Decimal

from fastapi.testclient import TestClient
from sqlalchemy import select

from quartermaster.guardrails.budget_status import budget_statuses
from quartermaster.guardrails.budgets import list_budgets
from quartermaster.guardrails.evaluator import evaluate_tenant
from quartermaster.guardrails.models import Enforcement
from quartermaster.runtime import Runtime
from tests.conftest import TenantHandle
from tests.guardrails.support import FixedSpend, budget, build_world, ok
from tests.guardrails.test_budget_changes import BOOK

NOW = datetime(2026, 3, 10, 12, tzinfo=UTC)


def _evaluate(runtime: Runtime, tenant_id: str, spend: FixedSpend) -> list[str]:
    with runtime.session_factory() as session:
        alerts: list[str] = evaluate_tenant(tenant_id, spend=spend, session=session, now=NOW).alerts
    return alerts


def _enforcements(runtime: Runtime, tenant_id: str) -> int:
    """The tenant's throttles and halts, in force or not."""
    with runtime.session_factory() as session:
        rows = session.scalars(select(Enforcement).where(Enforcement.tenant_id == tenant_id))
        return len(rows.all())


def test_a_budget_takes_the_default_price_books_currency_or_the_one_given(
    client: TestClient, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    before_any_book = budget(client, world)
    assert before_any_book["amount_currency"] is None  # read in whatever book becomes default
    response = client.post("/v1/price-books", content=json.dumps(BOOK), headers=tenant.headers)
    assert response.status_code in (200, 201), response.text
    assert budget(client, world)["amount_currency"] == "USD"
    assert budget(client, world, currency="EUR")["amount_currency"] == "EUR"
    for bad in ("eur", "EURO", "€", "XYZ"):
        refused = client.post(
            "/v1/budgets", json={"name": "x", "amount": "1", "currency": bad}, headers=world.headers
        )
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["field"] == "currency"
        assert "ISO 4217" in refused.json()["error"]["message"]
    cap = ok(
        client.put(
            "/v1/default-caps",
            json={"applies_to": "ephemeral", "amount": "5"},
            headers=world.headers,
        )
    )
    assert cap["amount_currency"] == "USD"


def test_spend_in_another_currency_is_not_compared_until_the_budget_is_updated(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    made = budget(
        client, world, currency="USD", thresholds=[50, 100], hard_percent=100, action="halt"
    )
    spend = FixedSpend()  # priced in EUR, as after switching the default price book
    spend.set("tenant", "", "500")  # five times the amount, in another currency
    (warning,) = _evaluate(runtime, tenant.tenant_id, spend)
    assert warning == f"budget:{made['id']}:2026-03:currency:EUR"
    assert _evaluate(runtime, tenant.tenant_id, spend) == []  # once per period
    (alert,) = ok(client.get("/v1/alerts", headers=world.headers))
    assert alert["severity"] == "warning"
    assert alert["title"] == f"Budget {made['name']}: not evaluated (in USD, spend in EUR)"
    assert "is not compared with the tenant's spend, priced in EUR" in alert["message"]
    assert "--currency EUR" in alert["message"]
    assert _enforcements(runtime, tenant.tenant_id) == 0  # no halt on a guess
    with runtime.session_factory() as session:
        rows = list_budgets(tenant.tenant_id, session=session)
        (status,) = budget_statuses(
            tenant.tenant_id, rows, spend=spend, session=session, now=NOW
        ).values()
    assert (status.spend, status.currency, status.percent) == (Decimal(500), "EUR", None)
    # Set in EUR: compared again, and the hard limit halts.
    ok(
        client.patch(
            f"/v1/budgets/{made['name']}",
            json={"amount": "400", "currency": "EUR"},
            headers=world.headers,
        )
    )
    fired = _evaluate(runtime, tenant.tenant_id, spend)
    assert [key.rsplit(":", 1)[1] for key in fired] == ["50", "100", "hard"]
    log = ok(client.get("/v1/guardrail-actions", headers=world.headers))
    update = next(a for a in log if a["action"] == "update")
    assert update["reason"].endswith(
        ": amount 100, thresholds 50/100%, halt at 100%, currency USD -> amount 400, "
        "thresholds 50/100%, halt at 100%, currency EUR"
    ), update["reason"]


def test_a_default_cap_in_another_currency_enforces_nothing(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    ok(
        client.patch(
            f"/v1/apps/{world.app}", json={"lifecycle": "ephemeral"}, headers=world.headers
        )
    )
    ok(
        client.put(
            "/v1/default-caps",
            json={"applies_to": "ephemeral", "amount": "5", "currency": "USD"},
            headers=world.headers,
        )
    )
    spend = FixedSpend()
    spend.set("app", world.app, "50")
    (warning,) = _evaluate(runtime, tenant.tenant_id, spend)
    assert warning.endswith(":2026-03:currency:EUR")
    assert _enforcements(runtime, tenant.tenant_id) == 0
    ok(
        client.put(
            "/v1/default-caps",
            json={"applies_to": "ephemeral", "amount": "5", "currency": "EUR"},
            headers=world.headers,
        )
    )
    (halted,) = _evaluate(runtime, tenant.tenant_id, spend)
    assert halted.startswith("cap:")
    assert _enforcements(runtime, tenant.tenant_id) == 1


def test_the_cli_shows_the_amounts_currency_and_spend_it_did_not_compare() -> None:
    from quartermaster.cli.guardrail_defaults import amount_text
    from quartermaster.cli.guardrails import _spent

    assert amount_text({"amount": "2000", "amount_currency": "USD"}) == "2000 USD"
    assert amount_text({"amount": "2000", "amount_currency": None}) == "2000"
    compared = {"spend": "11.115", "currency": "USD", "percent": "111.2"}
    assert _spent(compared) == "11.12 USD (111.2 %)"
    assert _spent({**compared, "currency": "EUR", "percent": None}) == "11.12 EUR (not compared)"
