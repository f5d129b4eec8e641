"""Loading refuses a price book that names a meter, team, cost center or app its tenant does
not have: such a rule never applies, and the real meter would be billed as unpriced at 0."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from quartermaster.pricing.references import Reference, TenantNames, references
from quartermaster.pricing.references import unknown_name_issues as issues_for
from tests.conftest import TenantHandle

BOOKS = "/v1/price-books"
DEFAULT_METERS = (
    "bytes_out, compute_units, cpu_seconds, duration_ms, invocations, memory_gb_hours, "
    "network_bytes, requests, storage_gb_days, tokens"
)


def _book(*prices: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "name": "internal",
        "currency": "USD",
        "version": 1,
        "effective_from": "2026-01-01T00:00:00Z",
        "prices": list(prices) or [_rule("tokens")],
        **extra,
    }


def _rule(meter: str, **fields: Any) -> dict[str, Any]:
    return {"meter": meter, "model": "per_unit", "unit_price": "0.001", **fields}


@pytest.fixture
def owned(client: TestClient, tenant: TenantHandle) -> TenantHandle:
    """A tenant with team web (cost center cc-web) and its app shop."""
    h = tenant.headers
    for path, body in (
        ("/v1/cost-centers", {"slug": "cc-web"}),
        ("/v1/teams", {"slug": "web", "cost_center": "cc-web"}),
        ("/v1/apps", {"app_id": "shop", "owner": "dana", "team": "web"}),
    ):
        assert client.post(path, json=body, headers=h).status_code == 201
    return tenant


def _refused(client: TestClient, tenant: TenantHandle, data: dict[str, Any]) -> dict[str, Any]:
    response = client.post(BOOKS, json=data, headers=tenant.headers)
    assert response.status_code == 422, response.text
    error: dict[str, Any] = response.json()["error"]
    return error


@pytest.mark.parametrize(
    ("changes", "path", "message"),
    [
        (
            {"prices": [_rule("tokenz")]},
            "prices[0].meter",
            "unknown meter 'tokenz' (did you mean 'tokens'?)",
        ),
        (
            {"platform_costs": [{"cost_type": "lb", "method": "proportional", "meter": "reqs"}]},
            "platform_costs[0].meter",
            "unknown meter 'reqs'",
        ),
        (
            {"prices": [_rule("tokens"), _rule("tokens", scope={"team": "nosuchteam"})]},
            "prices[1].scope.team",
            "unknown team 'nosuchteam'",
        ),
        (
            {"prices": [_rule("tokens"), _rule("tokens", scope={"cost_center": "cc-wb"})]},
            "prices[1].scope.cost_center",
            "unknown cost center 'cc-wb' (did you mean 'cc-web'?)",
        ),
        (
            {"prices": [_rule("tokens"), _rule("tokens", scope={"app": "shopp"})]},
            "prices[1].scope.app",
            "unknown app 'shopp' (did you mean 'shop'?)",
        ),
        (
            {"discounts": [{"name": "d", "percent": 10, "applies_to": {"team": "nosuchteam"}}]},
            "discounts[0].applies_to.team",
            "unknown team 'nosuchteam'",
        ),
        (
            {"platform_costs": [{"cost_type": "oncall", "method": "direct", "to": {"app": "x"}}]},
            "platform_costs[0].to.app",
            "unknown app 'x'",
        ),
    ],
)
def test_each_unknown_name_is_refused_with_its_path(
    client: TestClient,
    owned: TenantHandle,
    changes: dict[str, Any],
    path: str,
    message: str,
) -> None:
    error = _refused(client, owned, _book(**changes))
    assert error["field"] == path
    assert f"{path}: {message}" in error["message"]
    assert client.get(BOOKS, headers=owned.headers).json() == []  # nothing stored


def test_every_unknown_name_in_one_answer_with_the_known_meters(
    client: TestClient, owned: TenantHandle
) -> None:
    data = _book(
        _rule("tokenz"),
        _rule("tokens", scope={"team": "nosuchteam"}),
        platform_costs=[
            {"cost_type": "lb", "method": "hybrid", "meter": "egress", "proportional_share": "0.5"}
        ],
        discounts=[
            {
                "name": "d",
                "percent": 10,
                "applies_to": {"cost_center": "cc-x"},
                "meters": ["tokens"],
            }
        ],
    )
    error = _refused(client, owned, data)
    assert error["field"] == "prices[0].meter"
    assert error["message"] == (
        "invalid price book: prices[0].meter: unknown meter 'tokenz' (did you mean 'tokens'?); "
        "prices[1].scope.team: unknown team 'nosuchteam'; "
        "discounts[0].applies_to.cost_center: unknown cost center 'cc-x' (did you mean 'cc-web'?); "
        "platform_costs[0].meter: unknown meter 'egress'. "
        f"The tenant's meters (qm meter list): {DEFAULT_METERS}"
    )


def test_unknown_names_come_with_the_other_problems(
    client: TestClient, owned: TenantHandle
) -> None:
    data = _book(
        _rule("tokenz", unit_price="-1"),  # a bad field and an unknown meter in one rule
        _rule("cpu_seconds", scope={"team": "nosuchteam", "app": "shop"}),  # two owners
        currency="usd",
    )
    error = _refused(client, owned, data)
    message = error["message"]
    assert error["field"] == "currency"
    for part in (
        "currency: string should match pattern",
        "prices[0].unit_price: input should be greater than or equal to 0",
        "prices[0].meter: unknown meter 'tokenz'",
        "prices[1].scope: must name exactly one of team, app, cost_center, lifecycle",
        "prices[1].scope.team: unknown team 'nosuchteam'",
    ):
        assert part in message, message
    # A name that is itself a bad field is reported once, as the bad field.
    bad_pattern = _refused(client, owned, _book(_rule("Tokens!")))
    assert bad_pattern["message"].count("prices[0].meter") == 1
    assert "should match pattern" in bad_pattern["message"]


def test_known_names_load_and_an_unchanged_resend_is_answered_as_before(
    client: TestClient, owned: TenantHandle
) -> None:
    data = _book(
        _rule("tokens"),
        _rule("tokens", scope={"app": "shop"}),
        _rule("tokens", scope={"team": "web"}),
        _rule("tokens", scope={"cost_center": "default"}),
        platform_costs=[{"cost_type": "oncall", "method": "direct", "to": {"team": "web"}}],
    )
    assert client.post(BOOKS, json=data, headers=owned.headers).status_code == 201
    assert client.post(BOOKS, json=data, headers=owned.headers).status_code == 200


def test_a_tenants_own_meters(client: TestClient, tenant: TenantHandle) -> None:
    """Once a tenant has meters of its own, those rate its events; the built-in meters rated
    only what came before the first one, so only a version taking effect before then may
    price them."""
    meter = {
        "name": "gpu_seconds",
        "event_type": "qm.invocation.usage",
        "value": "compute_units",
        "aggregation": "sum",
        "unit": "s",
    }
    assert client.post("/v1/meters", json=meter, headers=tenant.headers).status_code == 201
    future = "2030-01-01T00:00:00Z"
    error = _refused(client, tenant, _book(_rule("tokens"), effective_from=future))
    assert error["message"] == (
        "invalid price book: prices[0].meter: unknown meter 'tokens'. "
        "The tenant's meters (qm meter list): gpu_seconds"
    )
    ok = _book(_rule("gpu_seconds"), effective_from=future)
    assert client.post(BOOKS, json=ok, headers=tenant.headers).status_code == 201
    back_dated = {**_book(_rule("tokens"), _rule("gpu_seconds")), "name": "history"}
    assert client.post(BOOKS, json=back_dated, headers=tenant.headers).status_code == 201


def test_the_walk_finds_every_name_and_skips_what_is_not_a_name() -> None:
    data = _book(
        _rule("tokens", scope={"team": "web", "lifecycle": "ephemeral"}),
        {"meter": 5, "scope": "web"},
        "not a rule",
        discounts=[{"applies_to": {"app": "shop"}, "meters": ["cpu_seconds", None]}],
        platform_costs=[{"method": "direct", "to": {"cost_center": "cc-web"}}, {"method": "even"}],
        reservations=[{"meter": "cpu_seconds"}],
    )
    assert references(data) == [
        Reference("prices[0].meter", "meter", "tokens"),
        Reference("prices[0].scope.team", "team", "web"),
        Reference("discounts[0].applies_to.app", "app", "shop"),
        Reference("discounts[0].meters[0]", "meter", "cpu_seconds"),
        Reference("platform_costs[0].to.cost_center", "cost_center", "cc-web"),
        Reference("reservations[0].meter", "meter", "cpu_seconds"),
    ]
    assert references(["not", "a", "mapping"]) == []
    none = TenantNames(frozenset({"tokens"}), frozenset(), frozenset({"default"}), frozenset())
    assert issues_for([Reference("prices[0].scope.team", "team", "web")], none) == [
        ("prices[0].scope.team", "unknown team 'web': the tenant has no teams of its own")
    ]
