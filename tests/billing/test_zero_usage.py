"""Usage of quantity 0 through the real pipeline: a subscription's fee is charged to a pool
present in the period's usage even when its quantity is 0 (docs/pricing.md, subscription),
and a zero quantity of any other meter makes no line and no "no price rule" note."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from tests.billing.platform import JANUARY_MONTH, PIPELINE_TOTAL, Platform, event, jan


def _run(platform: Platform) -> dict[str, Any]:
    response = platform.client.post(
        "/v1/billing/runs", json={"month": JANUARY_MONTH}, headers=platform.headers
    )
    assert response.status_code in (200, 201), response.text
    run_id = response.json()["run"]["id"]
    detail = platform.client.get(f"/v1/billing/runs/{run_id}", headers=platform.headers)
    assert detail.status_code == 200, detail.text
    body: dict[str, Any] = detail.json()
    return body


def test_a_subscription_fee_is_charged_to_a_pool_whose_quantity_is_0(platform: Platform) -> None:
    platform.send(
        [
            # api never stored anything, but reported its storage meter: the fee (10.00,
            # 100 GB-days included) is due.
            event("resource.usage", jan(8), {"resource_id": "api-pod-1", "storage_gb_days": 0}),
            # Zero quantities of a graduated meter and of a meter without a price rule.
            event("resource.usage", jan(9), {"resource_id": "etl-vol", "cpu_seconds": 0}),
            event("resource.usage", jan(9), {"resource_id": "etl-vol", "memory_gb_hours": 0}),
        ]
    )
    detail = _run(platform)
    lines = {(line["cost_type"], line["app"], line["item"]): line for line in detail["lines"]}
    fee = lines["subscription", "api", "storage_gb_days"]
    assert (fee["amount"], Decimal(fee["quantity"])) == ("10.000000", Decimal(0))
    assert fee["pricing_rule"].startswith("subscription: fee 10")
    assert ("usage", "etl", "cpu_seconds") not in lines
    assert not [key for key in lines if key[2] == "memory_gb_hours"]
    assert detail["document"]["note"] is None
    assert Decimal(detail["document"]["total"]) == PIPELINE_TOTAL + 10
    # Shared costs are still among the apps with usage > 0: the same three.
    assert lines["platform", "api", "control_plane"]["amount"] == "3.000000"


def test_a_zero_member_of_a_shared_subscription_pool_adds_no_line(platform: Platform) -> None:
    """A tenant pool that other apps used: its fee is shared by usage, the app of quantity 0
    pays nothing and gets no 0.000000 line."""
    platform.upload_price_book(
        version=2,
        effective_from="2026-01-01T00:00:00Z",
        prices=[
            {
                "meter": "cpu_seconds",
                "model": "subscription",
                "fee": "4",
                "included": 0,
                "pool": "tenant",
            }
        ],
        discounts=[],
    )
    platform.send([event("resource.usage", jan(8), {"resource_id": "etl-vol", "cpu_seconds": 0})])
    detail = _run(platform)
    cpu = {line["app"]: line["amount"] for line in detail["lines"] if line["item"] == "cpu_seconds"}
    # web 5000, api 500 and etl 0 share the tenant's fee 10:1:0.
    assert cpu == {"web": "3.636364", "api": "0.363636"}
