"""Tenant A can read and change nothing of tenant B's, on every route.

Every route of the app must appear in CASES (how to aim it at B's objects with A's admin key)
or in EXEMPT (not tenant-scoped, with the reason). A new route without a case fails
`test_every_route_has_an_isolation_case`: add a case below (and, if it needs objects of B's,
make them in tests/api/isolation_world.py).

Each case sends its requests with A's admin key and checks:
- the status is one the case allows (404 for B's object ids, 422 for B's slugs used as
  references in a body, 200/201 for lists and for A's writes into its own tenant);
- no response contains anything of B's that A never sent (B's tenant id, names, titles,
  secret values, ...); a successful read contains none of B's identifiers either (lists never
  hold B's items; a write may echo an id A itself sent, e.g. in a per-event rejection);
- its own `check`, if any;
- and after all cases, every row of B's in every table with a tenant_id is exactly as before.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from quartermaster.api.app import create_app
from quartermaster.runtime import Runtime
from tests.api.isolation_world import (
    World,
    build_world,
    cloud_event,
    meter_body,
    price_book_yaml,
    tenant_rows,
)
from tests.conftest import TenantHandle, make_settings
from tests.tenancy.support import all_routes, ok

EXEMPT: dict[tuple[str, str], str] = {
    ("GET", "/healthz"): "liveness probe: no tenant data",
    ("GET", "/openapi.json"): "the API description: no tenant data",
    ("GET", "/docs"): "Swagger UI page: no tenant data",
    ("GET", "/docs/oauth2-redirect"): "Swagger UI helper page: no tenant data",
    ("GET", "/redoc"): "ReDoc page: no tenant data",
    ("POST", "/v1/_bench/parse"): "benchmark floor: parses and discards the body, reads and "
    "stores nothing (mounted only when bench routes are enabled)",
    ("GET", "/v1/identity/jwks"): "the server's public token-verification key, the same for "
    "every tenant",
    (
        "GET",
        "/v1/apps/manifest-schema",
    ): "the app manifest's JSON Schema, the same for every tenant",
}

Call = tuple[str, str, dict[str, Any]]
Responses = list[httpx.Response]


@dataclass(frozen=True)
class Case:
    calls: Callable[[World], list[Call]]
    expect: frozenset[int]
    check: Callable[[World, Responses], None] | None = None
    # A's own audit trail records the ids A sent at B's objects: only hidden data is checked.
    echoes_requests: bool = False


def _fmt(text: str, w: World) -> str:
    return text.format(b=w.b_ids, a=w.a_ids)


def missing(method: str, path: str, body: dict[str, Any] | None = None) -> Case:
    """B's object named in the URL: 404, as if it did not exist."""
    extra = {"json": body} if body is not None else {}
    return Case(lambda w: [(method, _fmt(path, w), dict(extra))], frozenset({404}))


def reads(path: str, *, shows: str | None = None, **params: str) -> Case:
    """A read of A's own tenant: 200, none of B's items; `shows` names an A id it must hold."""

    def check(w: World, responses: Responses) -> None:
        if shows is not None:
            assert w.a_ids[shows] in responses[0].text, f"{path} lost A's own {shows}"

    params_of = lambda w: {k: _fmt(v, w) for k, v in params.items()}  # noqa: E731
    return Case(lambda w: [("GET", path, {"params": params_of(w)})], frozenset({200}), check)


def sends(
    method: str,
    path: str,
    body: Callable[[World], Any],
    expect: set[int],
    check: Callable[[World, Responses], None] | None = None,
) -> Case:
    return Case(lambda w: [(method, _fmt(path, w), {"json": body(w)})], frozenset(expect), check)


def calls(expect: set[int], *requests: Callable[[World], Call]) -> Case:
    return Case(lambda w: [request(w) for request in requests], frozenset(expect))


def _is_a_tenant(w: World, body: dict[str, Any]) -> None:
    assert body["tenant_id"] == w.a.tenant_id, body


def _ends_only_a_binding_of_a(w: World, responses: Responses) -> None:
    if responses[0].status_code == 200:
        assert responses[0].json()["app_id"] == w.a_ids["app"], responses[0].text


def _events(w: World) -> list[Call]:
    a_app, b_ids = w.a_ids["app"], w.b_ids
    batch = [
        # B's (source, id) is no claim in A's tenant: A's event with the same pair is stored.
        cloud_event(b_ids["event_source"], b_ids["event_id"], {"app_id": a_app, "tokens": 1}),
        cloud_event(
            "/a/src",
            w.fresh("evt"),
            {"app_id": b_ids["app"], "tokens": 1},
            qmkeyid=b_ids["signing_key"],
            qmsignature="0" * 64,
        ),
        cloud_event(
            "/a/src", w.fresh("evt"), {"app_id": a_app, "tokens": 1}, qmlease=b_ids["lease_token"]
        ),
    ]
    headers = {"Content-Type": "application/cloudevents-batch+json"}
    return [("POST", "/v1/events", {"json": batch, "headers": headers})]


def _events_check(w: World, responses: Responses) -> None:
    report = responses[0].json()
    assert report["accepted"] == 1, report
    assert [r["index"] for r in report["rejected"]] == [1, 2], report


def _no_counters_yet(w: World, responses: Responses) -> None:
    # Runs before A ingests anything: B's counted events must not show up as A's.
    assert responses[0].json()["hours"] == []


def _price_book(w: World) -> list[Call]:
    """A's book naming A's owners is stored; one naming B's team, cost center and app is
    refused: they are no names of A's."""
    headers = {"Content-Type": "application/yaml"}
    a, b = w.a_ids, w.b_ids
    own = price_book_yaml(
        w.fresh("a-book"), team=a["team"], cost_center=a["cost_center"], app=a["app"]
    )
    theirs = price_book_yaml(
        w.fresh("a-book"), team=b["team"], cost_center=b["cost_center"], app=b["app"]
    )
    return [
        ("POST", "/v1/price-books", {"content": own, "headers": headers}),
        ("POST", "/v1/price-books", {"content": theirs, "headers": headers}),
    ]


def _price_book_check(w: World, responses: Responses) -> None:
    assert [r.status_code for r in responses] == [201, 422], [r.text for r in responses]
    message = responses[1].json()["error"]["message"]
    for kind in ("team", "cost center", "app"):
        assert f"unknown {kind} 'b-" in message, message


def _field_equals(name: str, expected: Any) -> Callable[[World, Responses], None]:
    def check(w: World, responses: Responses) -> None:
        for response in responses:
            assert response.json()[name] == expected, response.text

    return check


def _days_ago(days: int) -> str:
    return (datetime.now(UTC) - timedelta(days=days)).strftime("%Y-%m-%dT%H:00:00Z")


def _only_own_audit_records(w: World, responses: Responses) -> None:
    records = responses[0].json()["records"]
    assert records, "A's requests at B's secrets were not audited in A's chain"
    assert {r["tenant_id"] for r in records} == {w.a.tenant_id}


SECRET = "/v1/secrets/{verb}/{{b[secret_path]}}"


def _b_manifest(w: World) -> dict[str, Any]:
    """A manifest naming B's app and team, as tenant A would send it."""
    return {
        "app_id": w.b_ids["app"],
        "version": "1.0.0",
        "title": "a takeover",
        "short_description": "aims at B",
        "owner": "a-owner",
        "team": w.b_ids["team"],
        "capabilities": ["read"],
        "data_scopes": ["user"],
        "runtime_descriptor": {"type": "wasm"},
    }


# Run in this order: reads of A's own counters and lists come before A's own writes.
CASES: dict[tuple[str, str], Case] = {
    # --- tenancy ---
    ("GET", "/v1/tenant"): reads("/v1/tenant"),
    # A changes its own tenant only (UTC again: later cases' periods stay as they were).
    ("PATCH", "/v1/tenant"): sends(
        "PATCH",
        "/v1/tenant",
        lambda w: {"timezone": "UTC"},
        {200},
        lambda w, r: _is_a_tenant(w, r[0].json()),
    ),
    ("GET", "/v1/cost-centers"): reads("/v1/cost-centers", shows="cost_center"),
    ("GET", "/v1/cost-centers/{slug}"): missing("GET", "/v1/cost-centers/{b[cost_center]}"),
    ("POST", "/v1/cost-centers"): sends(
        "POST", "/v1/cost-centers", lambda w: {"slug": w.fresh("a-cc")}, {201}
    ),
    ("GET", "/v1/teams"): reads("/v1/teams", shows="team"),
    ("GET", "/v1/teams/{slug}"): missing("GET", "/v1/teams/{b[team]}"),
    ("POST", "/v1/teams"): sends(
        "POST",
        "/v1/teams",
        lambda w: {"slug": w.fresh("t"), "cost_center": w.b_ids["cost_center"]},
        {422},
    ),
    ("GET", "/v1/principals"): reads("/v1/principals", shows="principal"),
    ("POST", "/v1/principals"): sends(
        "POST",
        "/v1/principals",
        lambda w: {"name": w.fresh("p"), "role": "team-member", "team": w.b_ids["team"]},
        {422},
    ),
    ("POST", "/v1/principals/{principal_id}/keys"): missing(
        "POST", "/v1/principals/{b[principal]}/keys", {}
    ),
    ("GET", "/v1/keys"): reads("/v1/keys", shows="key"),
    ("DELETE", "/v1/keys/{key_id}"): missing("DELETE", "/v1/keys/{b[key]}"),
    # --- catalog ---
    ("GET", "/v1/apps"): reads("/v1/apps", shows="app"),
    ("GET", "/v1/apps/{app_id}"): missing("GET", "/v1/apps/{b[app]}"),
    ("POST", "/v1/apps"): sends(
        "POST",
        "/v1/apps",
        lambda w: {
            "app_id": w.fresh("app"),
            "owner": "a",
            "team": w.b_ids["team"],
            "cost_center": w.b_ids["cost_center"],
        },
        {422},
    ),
    ("PATCH", "/v1/apps/{app_id}"): calls(
        {404, 422},
        lambda w: ("PATCH", f"/v1/apps/{w.b_ids['app']}", {"json": {"title": "taken over"}}),
        # A's own app cannot be moved onto B's team or cost center either.
        lambda w: ("PATCH", f"/v1/apps/{w.a_ids['app']}", {"json": {"team": w.b_ids["team"]}}),
        lambda w: (
            "PATCH",
            f"/v1/apps/{w.a_ids['app']}",
            {"json": {"cost_center": w.b_ids["cost_center"]}},
        ),
    ),
    ("GET", "/v1/apps/{app_id}/signing-keys"): missing("GET", "/v1/apps/{b[app]}/signing-keys"),
    ("POST", "/v1/apps/{app_id}/signing-keys"): missing("POST", "/v1/apps/{b[app]}/signing-keys"),
    ("DELETE", "/v1/apps/{app_id}/signing-keys/{key_id}"): calls(
        {404},
        lambda w: ("DELETE", _fmt("/v1/apps/{b[app]}/signing-keys/{b[signing_key]}", w), {}),
        lambda w: ("DELETE", _fmt("/v1/apps/{a[app]}/signing-keys/{b[signing_key]}", w), {}),
    ),
    # --- catalog publishing and policy (B's app and team as A would name them) ---
    ("POST", "/v1/apps/validate"): sends(
        "POST", "/v1/apps/validate", lambda w: {"manifest": _b_manifest(w)}, {200}
    ),
    # B's marker is a tag of B's published app: B's own search finds it (isolation_world).
    ("GET", "/v1/apps/search"): Case(
        lambda w: [("GET", "/v1/apps/search", {"params": {"q": w.marker}})],
        frozenset({200}),
        _field_equals("total", 0),
    ),
    ("POST", "/v1/apps/{app_id}/versions"): sends(
        "POST", "/v1/apps/{b[app]}/versions", lambda w: {"manifest": _b_manifest(w)}, {422}
    ),
    ("GET", "/v1/apps/{app_id}/versions"): missing("GET", "/v1/apps/{b[app]}/versions"),
    ("GET", "/v1/apps/{app_id}/versions/{version}"): missing(
        "GET", "/v1/apps/{b[app]}/versions/{b[version]}"
    ),
    ("POST", "/v1/apps/{app_id}/versions/{version}/publish"): missing(
        "POST", "/v1/apps/{b[app]}/versions/{b[pending_version]}/publish", {}
    ),
    ("POST", "/v1/apps/{app_id}/versions/{version}/deprecate"): missing(
        "POST", "/v1/apps/{b[app]}/versions/{b[version]}/deprecate", {}
    ),
    ("POST", "/v1/apps/{app_id}/versions/{version}/quarantine"): missing(
        "POST", "/v1/apps/{b[app]}/versions/{b[version]}/quarantine", {"reason": "takeover"}
    ),
    ("GET", "/v1/approvals"): reads("/v1/approvals"),
    ("POST", "/v1/approvals/{approval_id}/approve"): missing(
        "POST", "/v1/approvals/{b[approval]}/approve", {"comment": "ok"}
    ),
    ("POST", "/v1/approvals/{approval_id}/reject"): missing(
        "POST", "/v1/approvals/{b[approval]}/reject", {"comment": "no"}
    ),
    ("GET", "/v1/policies"): reads("/v1/policies"),
    ("GET", "/v1/policies/{name}"): missing("GET", "/v1/policies/{b[policy]}"),
    ("POST", "/v1/policies"): sends(
        "POST",
        "/v1/policies",
        lambda w: {"name": w.fresh("a-pol"), "source": "package a\nwarn contains 1 if false\n"},
        {201},
    ),
    ("POST", "/v1/policies/test"): sends(
        "POST", "/v1/policies/test", lambda w: {"name": w.b_ids["policy"], "input": {}}, {404}
    ),
    ("POST", "/v1/policies/audit"): Case(
        lambda w: [("POST", "/v1/policies/audit", {"params": {"limit": "1000"}})],
        frozenset({200}),
    ),
    ("POST", "/v1/policies/{name}/disable"): missing("POST", "/v1/policies/{b[policy]}/disable"),
    ("POST", "/v1/policies/{name}/enable"): missing("POST", "/v1/policies/{b[policy]}/enable"),
    ("GET", "/v1/policies/{name}/versions"): missing("GET", "/v1/policies/{b[policy]}/versions"),
    ("POST", "/v1/policies/{name}/rollback"): missing(
        "POST", "/v1/policies/{b[policy]}/rollback", {"to": 1}
    ),
    ("GET", "/v1/policy-decisions"): reads("/v1/policy-decisions"),
    ("GET", "/v1/policy-exceptions"): reads("/v1/policy-exceptions", include_lapsed="true"),
    ("POST", "/v1/policy-exceptions"): sends(
        "POST",
        "/v1/policy-exceptions",
        lambda w: {"key": "gpu", "team": w.b_ids["team"], "reason": "takeover", "days": 1},
        {422},
    ),
    ("GET", "/v1/policy-exceptions/{exception_id}"): missing(
        "GET", "/v1/policy-exceptions/{b[policy_exception]}"
    ),
    ("DELETE", "/v1/policy-exceptions/{exception_id}"): missing(
        "DELETE", "/v1/policy-exceptions/{b[policy_exception]}"
    ),
    ("GET", "/v1/resources"): reads("/v1/resources", resource_id="{b[resource]}"),
    ("POST", "/v1/resources"): calls(
        {201, 422},
        lambda w: (
            "POST",
            "/v1/resources",
            {"json": {"resource_id": "r", "app_id": w.b_ids["app"]}},
        ),
        # The same resource id in A's tenant does not collide with B's binding.
        lambda w: (
            "POST",
            "/v1/resources",
            {"json": {"resource_id": w.b_ids["resource"], "app_id": w.a_ids["app"]}},
        ),
    ),
    # B's resource id in A's tenant names A's own binding (made by the case above) or none.
    ("POST", "/v1/resources/end"): sends(
        "POST",
        "/v1/resources/end",
        lambda w: {"resource_id": w.b_ids["resource"]},
        {200, 404},
        _ends_only_a_binding_of_a,
    ),
    ("POST", "/v1/resource-leases"): sends(
        "POST",
        "/v1/resource-leases",
        lambda w: {"resource_id": w.fresh("r"), "app_id": w.b_ids["app"], "ttl_seconds": 60},
        {422},
    ),
    ("GET", "/v1/resource-leases/{lease_id}"): missing("GET", "/v1/resource-leases/{b[lease]}"),
    ("DELETE", "/v1/resource-leases/{lease_id}"): missing(
        "DELETE", "/v1/resource-leases/{b[lease]}"
    ),
    # --- metering ---
    ("GET", "/v1/reconciliation"): Case(
        lambda w: [("GET", "/v1/reconciliation", {})], frozenset({200}), _no_counters_yet
    ),
    ("GET", "/v1/events"): reads("/v1/events", after="0"),
    ("POST", "/v1/events"): Case(_events, frozenset({200}), _events_check),
    # --- pricing ---
    ("GET", "/v1/price-books"): reads("/v1/price-books"),
    ("GET", "/v1/price-books/{name}"): missing("GET", "/v1/price-books/{b[price_book]}"),
    ("GET", "/v1/price-books/{name}/versions"): missing(
        "GET", "/v1/price-books/{b[price_book]}/versions"
    ),
    ("GET", "/v1/price-books/{name}/versions/{version}"): missing(
        "GET", "/v1/price-books/{b[price_book]}/versions/1"
    ),
    ("POST", "/v1/price-books"): Case(_price_book, frozenset({201, 422}), _price_book_check),
    # B's book is no book of A's: A cannot make it A's default (B's default is unchanged).
    ("PUT", "/v1/price-books/default"): sends(
        "PUT", "/v1/price-books/default", lambda w: {"name": w.b_ids["price_book"]}, {404}
    ),
    # --- secrets, leases, identity, audit ---
    ("GET", "/v1/secrets/metadata"): reads("/v1/secrets/metadata"),
    ("GET", "/v1/secrets/metadata/{path:path}"): missing("GET", SECRET.format(verb="metadata")),
    ("GET", "/v1/secrets/data/{path:path}"): missing("GET", SECRET.format(verb="data")),
    ("GET", "/v1/secrets/fingerprint-key"): reads("/v1/secrets/fingerprint-key"),
    ("POST", "/v1/secrets/match"): sends(
        "POST",
        "/v1/secrets/match",
        lambda w: {"fingerprints": [w.b_ids["secret_fingerprint"]]},
        {200},
        _field_equals("matches", []),
    ),
    ("GET", "/v1/secrets/access-rules"): reads("/v1/secrets/access-rules"),
    ("GET", "/v1/secrets/engines/{path:path}"): missing("GET", SECRET.format(verb="engines")),
    # Deleting an engine A does not have is a no-op (204) or unknown (404); B has none there
    # either, and B's rows are checked after all cases.
    ("DELETE", "/v1/secrets/engines/{path:path}"): Case(
        lambda w: [("DELETE", _fmt(SECRET.format(verb="engines"), w), {})], frozenset({204, 404})
    ),
    ("POST", "/v1/secrets/creds/{path:path}"): missing("POST", SECRET.format(verb="creds"), {}),
    ("POST", "/v1/secrets/delete/{path:path}"): missing("POST", SECRET.format(verb="delete"), {}),
    ("POST", "/v1/secrets/undelete/{path:path}"): missing(
        "POST", SECRET.format(verb="undelete"), {}
    ),
    ("POST", "/v1/secrets/destroy/{path:path}"): missing("POST", SECRET.format(verb="destroy"), {}),
    ("GET", "/v1/leases"): reads("/v1/leases", all="true"),
    ("GET", "/v1/leases/{lease_id}"): missing("GET", "/v1/leases/{b[secret_lease]}"),
    ("POST", "/v1/leases/{lease_id}/renew"): missing(
        "POST", "/v1/leases/{b[secret_lease]}/renew", {}
    ),
    ("POST", "/v1/leases/{lease_id}/revoke"): Case(
        lambda w: [("POST", _fmt("/v1/leases/{b[secret_lease]}/revoke", w), {})],
        frozenset({200}),
        _field_equals("status", "not_found"),
    ),
    ("POST", "/v1/leases/revoke-prefix"): sends(
        "POST",
        "/v1/leases/revoke-prefix",
        lambda w: {"prefix": f"apps/{w.b_ids['app']}"},
        {200},
        _field_equals("revoked", 0),
    ),
    ("POST", "/v1/identity/token"): sends(
        "POST", "/v1/identity/token", lambda w: {"app_id": w.b_ids["app"]}, {403, 404, 422}
    ),
    ("GET", "/v1/audit/records"): Case(
        lambda w: [("GET", "/v1/audit/records", {})],
        frozenset({200}),
        _only_own_audit_records,
        echoes_requests=True,
    ),
    ("GET", "/v1/audit/verify"): reads("/v1/audit/verify"),
    # --- billing ---
    ("GET", "/v1/billing/runs"): reads("/v1/billing/runs"),
    ("GET", "/v1/billing/runs/{run_id}"): missing("GET", "/v1/billing/runs/{b[billing_run]}"),
    ("GET", "/v1/billing/runs/{run_id}/reproduce"): missing(
        "GET", "/v1/billing/runs/{b[billing_run]}/reproduce"
    ),
    ("GET", "/v1/billing/runs/{run_id}/lines"): missing(
        "GET", "/v1/billing/runs/{b[billing_run]}/lines"
    ),
    ("GET", "/v1/billing/runs/{run_id}/summary"): missing(
        "GET", "/v1/billing/runs/{b[billing_run]}/summary"
    ),
    ("GET", "/v1/billing/runs/{run_id}/export"): missing(
        "GET", "/v1/billing/runs/{b[billing_run]}/export"
    ),
    ("GET", "/v1/billing/adjustments"): reads("/v1/billing/adjustments", run_id="{b[billing_run]}"),
    ("GET", "/v1/billing/lines/{line_id:path}/explain"): missing(
        "GET", "/v1/billing/lines/{b[billing_line]}/explain"
    ),
    # B's team is no team of A's: 422 on team, not B's costs.
    ("GET", "/v1/billing/costs"): Case(
        lambda w: [
            ("GET", "/v1/billing/costs", {"params": {"month": "2026-01", "team": w.b_ids["team"]}})
        ],
        frozenset({422}),
    ),
    ("GET", "/v1/billing/late"): reads("/v1/billing/late"),
    ("GET", "/v1/billing/preview"): Case(
        lambda w: [("GET", "/v1/billing/preview", {})], frozenset({200, 404, 422})
    ),
    ("POST", "/v1/billing/runs"): sends(
        "POST",
        "/v1/billing/runs",
        lambda w: {"month": "2026-01", "price_book": w.b_ids["price_book"]},
        {404, 422},
    ),
    ("POST", "/v1/billing/adjustments"): sends(
        "POST", "/v1/billing/adjustments", lambda w: {"run_id": w.b_ids["billing_run"]}, {404}
    ),
    ("POST", "/v1/billing/runs/{run_id}/finalize"): missing(
        "POST", "/v1/billing/runs/{b[billing_run]}/finalize"
    ),
    ("DELETE", "/v1/billing/runs/{run_id}"): missing("DELETE", "/v1/billing/runs/{b[billing_run]}"),
    # --- guardrails ---
    ("GET", "/v1/budgets"): reads("/v1/budgets"),
    ("GET", "/v1/quotas"): reads("/v1/quotas"),
    ("GET", "/v1/limit-ranges"): reads("/v1/limit-ranges"),
    ("GET", "/v1/rate-limits"): reads("/v1/rate-limits"),
    ("GET", "/v1/enforcements"): reads("/v1/enforcements"),
    ("GET", "/v1/guardrail-actions"): reads("/v1/guardrail-actions"),
    ("GET", "/v1/alerts"): reads("/v1/alerts"),
    ("GET", "/v1/decisions/{decision_id}"): missing("GET", "/v1/decisions/{b[decision]}"),
    ("DELETE", "/v1/budgets/{name}"): missing("DELETE", "/v1/budgets/{b[budget]}"),
    ("PATCH", "/v1/budgets/{name}"): missing("PATCH", "/v1/budgets/{b[budget]}", {"amount": "5"}),
    ("DELETE", "/v1/quotas/{quota_id}"): missing("DELETE", "/v1/quotas/{b[quota]}"),
    ("DELETE", "/v1/rate-limits/{rate_limit_id}"): missing(
        "DELETE", "/v1/rate-limits/{b[rate_limit]}"
    ),
    ("DELETE", "/v1/limit-ranges/{limit_range_id}"): missing(
        "DELETE", "/v1/limit-ranges/{b[limit_range]}"
    ),
    ("POST", "/v1/decisions/{decision_id}/release"): missing(
        "POST", "/v1/decisions/{b[decision]}/release"
    ),
    ("POST", "/v1/decisions/{decision_id}/renew"): missing(
        "POST", "/v1/decisions/{b[decision]}/renew", {}
    ),
    # Weak: B has no enforcement (it would need spend over a budget); the id is made up.
    ("POST", "/v1/enforcements/{enforcement_id}/lift"): missing(
        "POST", "/v1/enforcements/{b[decision]}-enforcement/lift", {}
    ),
    ("POST", "/v1/budgets"): sends(
        "POST",
        "/v1/budgets",
        lambda w: {
            "name": w.fresh("a-budget"),
            "scope_kind": "team",
            "scope": w.b_ids["team"],
            "amount": "1",
        },
        {404, 422},
    ),
    ("PUT", "/v1/quotas"): sends(
        "PUT",
        "/v1/quotas",
        lambda w: {"scope_kind": "team", "scope": w.b_ids["team"], "resource": "cpu", "hard": "1"},
        {404, 422},
    ),
    ("PUT", "/v1/limit-ranges"): sends(
        "PUT",
        "/v1/limit-ranges",
        lambda w: {"scope_kind": "team", "scope": w.b_ids["team"], "resource": "cpu", "max": "1"},
        {404, 422},
    ),
    ("PUT", "/v1/rate-limits"): sends(
        "PUT",
        "/v1/rate-limits",
        lambda w: {"scope_kind": "app", "scope": w.b_ids["app"], "rate": "1", "burst": 1},
        {404, 422},
    ),
    ("POST", "/v1/decisions"): sends(
        "POST", "/v1/decisions", lambda w: {"app": w.b_ids["app"]}, {404, 422}
    ),
    ("GET", "/v1/webhooks"): reads("/v1/webhooks"),
    ("GET", "/v1/webhook-deliveries"): reads("/v1/webhook-deliveries"),
    ("POST", "/v1/webhooks"): sends(
        "POST", "/v1/webhooks", lambda w: {"url": "https://a.example.com/hook"}, {201}
    ),
    ("GET", "/v1/webhooks/{webhook_id}"): missing("GET", "/v1/webhooks/{b[webhook]}"),
    ("DELETE", "/v1/webhooks/{webhook_id}"): missing("DELETE", "/v1/webhooks/{b[webhook]}"),
    ("GET", "/v1/webhook-deliveries/{delivery_id}/attempts"): missing(
        "GET", "/v1/webhook-deliveries/{b[delivery]}/attempts"
    ),
    ("POST", "/v1/webhook-deliveries/{delivery_id}/retry"): missing(
        "POST", "/v1/webhook-deliveries/{b[delivery]}/retry"
    ),
    ("GET", "/v1/default-caps"): reads("/v1/default-caps"),
    ("PUT", "/v1/default-caps"): sends(
        "PUT", "/v1/default-caps", lambda w: {"applies_to": "ephemeral", "amount": "2"}, {200}
    ),
    # B has a non-production cap, A none: A's delete finds nothing of B's.
    ("DELETE", "/v1/default-caps/{applies_to}"): missing(
        "DELETE", "/v1/default-caps/non_production"
    ),
    ("GET", "/v1/guardrail-settings"): reads("/v1/guardrail-settings"),
    ("PUT", "/v1/guardrail-settings"): sends(
        "PUT", "/v1/guardrail-settings", lambda w: {"high_cost_hour_amount": "5"}, {200}
    ),
    ("GET", "/v1/cost-previews"): reads("/v1/cost-previews"),
    ("GET", "/v1/cost-previews/{preview_id}"): missing(
        "GET", "/v1/cost-previews/{b[cost_preview]}"
    ),
    # Evaluates A's own budgets only (B's rows are checked after all cases).
    ("POST", "/v1/budgets/evaluate"): sends("POST", "/v1/budgets/evaluate", lambda w: None, {200}),
    # Scans A's own usage only: B's usage (sent in the world) raises no alert of A's.
    ("POST", "/v1/alerts/scan"): sends(
        "POST",
        "/v1/alerts/scan",
        lambda w: {"since": _days_ago(3), "until": _days_ago(-1)},
        {200},
        _field_equals("alerts", []),
    ),
    # --- usage and pipeline ---
    ("GET", "/v1/meters"): reads("/v1/meters"),
    ("GET", "/v1/environment-overrides"): reads("/v1/environment-overrides"),
    ("GET", "/v1/usage"): reads("/v1/usage", start=_days_ago(300), end=_days_ago(-2)),
    ("GET", "/v1/pipeline/status"): reads("/v1/pipeline/status"),
    ("GET", "/v1/pipeline/accounting"): reads("/v1/pipeline/accounting"),
    ("PUT", "/v1/environment-overrides/{environment}"): sends(
        "PUT",
        "/v1/environment-overrides/{b[environment]}",
        lambda w: {"cost_center": w.b_ids["cost_center"]},
        {404, 422},
    ),
    ("DELETE", "/v1/environment-overrides/{environment}"): missing(
        "DELETE", "/v1/environment-overrides/{b[environment]}"
    ),
    ("POST", "/v1/meters"): sends(
        "POST", "/v1/meters", lambda w: meter_body(w.fresh("a_meter").replace("-", "_")), {201}
    ),
    ("POST", "/v1/meters/install-defaults"): sends(
        "POST", "/v1/meters/install-defaults", lambda w: None, {200}
    ),
    # Rebuilds A's own usage only (B's rows are checked after all cases).
    ("POST", "/v1/pipeline/replay"): sends("POST", "/v1/pipeline/replay", lambda w: None, {200}),
    # Writes at B's secret paths: B's app does not exist in A's tenant.
    ("PUT", "/v1/secrets/access-rules"): sends(
        "PUT", "/v1/secrets/access-rules", lambda w: {"rules": []}, {200}
    ),
    ("PUT", "/v1/secrets/engines/{path:path}"): sends(
        "PUT", SECRET.format(verb="engines"), lambda w: {"grants": []}, {404}
    ),
    ("POST", "/v1/secrets/rotate/{path:path}"): sends(
        "POST", SECRET.format(verb="rotate"), lambda w: {"value": "a-value"}, {404}
    ),
    ("PUT", "/v1/secrets/data/{path:path}"): sends(
        "PUT", SECRET.format(verb="data"), lambda w: {"value": "a-value"}, {404}
    ),
    ("POST", "/v1/secrets/redact"): Case(
        lambda w: [
            (
                "POST",
                "/v1/secrets/redact",
                {"params": {"lease_id": w.b_ids["secret_lease"]}, "content": iter([b"no B"])},
            )
        ],
        frozenset({200, 404}),
    ),
}


def _all_features_app(tmp_path: Path, db_url: str, runtime: Runtime | None = None) -> FastAPI:
    # Bench routes on, so that every route that can exist is enumerated.
    settings = make_settings(
        tmp_path / "qm", db_url, pipeline_enabled=False, bench_routes_enabled=True
    )
    return create_app(settings, runtime=runtime)


def test_every_route_has_an_isolation_case(tmp_path: Path) -> None:
    app = _all_features_app(tmp_path, f"sqlite:///{tmp_path / 'unused.db'}")
    uncovered = [
        f"{method} {path}"
        for method, path, _tags in all_routes(app)
        if (method, path) not in CASES and (method, path) not in EXEMPT
    ]
    assert not uncovered, (
        "routes without a tenant-isolation case: "
        + ", ".join(uncovered)
        + ". Add a case for each to CASES in tests/api/test_tenant_isolation.py (how tenant A's "
        "admin aims it at tenant B's objects, and the statuses to expect), or, if the route "
        "touches no tenant data, list it in EXEMPT with the reason."
    )


def _secrets_keys(runtime: Runtime) -> None:
    """The broker needs its root keyring and identity key in the data dir (as `qm init`)."""
    try:
        from quartermaster.secrets.identity import generate_identity_key
        from quartermaster.secrets.keys import generate_root_keyring
    except ImportError:
        return
    generate_root_keyring(runtime.settings)
    generate_identity_key(runtime.settings)


@pytest.fixture
def isolation_client(tmp_path: Path, db_url: str, runtime: Runtime) -> Iterator[TestClient]:
    _secrets_keys(runtime)
    app = _all_features_app(tmp_path, db_url, runtime)
    with TestClient(app) as client:
        yield client
    secrets_context = getattr(app.state, "secrets_context", None)
    if secrets_context is not None:
        secrets_context.close()


def _run(client: TestClient, w: World, key: tuple[str, str], case: Case) -> None:
    responses = []
    for method, url, kwargs in case.calls(w):
        headers = {**w.a.headers, **kwargs.pop("headers", {})}
        response = client.request(method, url, headers=headers, **kwargs)
        where = f"{key[0]} {key[1]} (as {method} {url})"
        assert response.status_code in case.expect, (
            f"{where}: {response.status_code} {response.text}"
        )
        for hidden in w.b_hidden:
            assert hidden not in response.text, f"{where} leaked B's {hidden!r}"
        if response.is_success and method == "GET" and not case.echoes_requests:
            for ident in w.b_identifiers:
                assert ident not in response.text, f"{where} returned B's {ident!r}"
        responses.append(response)
    if case.check is not None:
        case.check(w, responses)


def test_tenant_a_can_read_and_change_nothing_of_tenant_b(
    isolation_client: TestClient, runtime: Runtime, make_tenant: Callable[..., TenantHandle]
) -> None:
    client = isolation_client
    app = client.app
    assert isinstance(app, FastAPI)
    routes = {(method, path) for method, path, _tags in all_routes(app)}
    world = build_world(client, make_tenant("iso-a"), make_tenant("iso-b"), routes, runtime)
    before = tenant_rows(runtime, world.b.tenant_id)

    exercised = [key for key in CASES if key in routes]
    for key in exercised:
        _run(client, world, key, CASES[key])

    after = tenant_rows(runtime, world.b.tenant_id)
    assert len(exercised) >= 24
    assert sum(len(rows) for rows in before.values()) >= 10
    for table, rows in before.items():
        assert after[table] == rows, f"tenant B's rows in {table} changed"
    b_app = ok(client.get(f"/v1/apps/{world.b_ids['app']}", headers=world.b.headers))
    assert b_app["title"] in world.b_hidden
