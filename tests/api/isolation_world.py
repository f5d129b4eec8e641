"""Tenant B's objects on every feature, made through B's own API key, for the isolation test.

A feature's objects are made only when its routes are in the app, so the test runs on any
build; a new feature adds its objects here and its cases to test_tenant_isolation.py."""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy import select

from quartermaster.runtime import Runtime
from quartermaster.storage.base import Base
from quartermaster.storage.models import import_all_models
from tests.conftest import TenantHandle
from tests.tenancy.support import bearer, ok

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
PRICE_BOOK_EXAMPLE = EXAMPLES / "pricebook.yaml"
POLICY_EXAMPLES = EXAMPLES / "policies"
Routes = set[tuple[str, str]]


@dataclass
class World:
    """B's objects (what A aims at) and A's own (to show A's lists and writes still work)."""

    a: TenantHandle
    b: TenantHandle
    marker: str = field(default_factory=lambda: uuid.uuid4().hex[:10])
    a_ids: dict[str, str] = field(default_factory=dict)
    b_ids: dict[str, str] = field(default_factory=dict)
    # Things of B's that A never sends: they must appear in no response at all.
    b_hidden: set[str] = field(default_factory=set)

    def fresh(self, prefix: str) -> str:
        return f"{prefix}-{uuid.uuid4().hex[:8]}"

    @property
    def b_identifiers(self) -> set[str]:
        """B's ids and slugs: A names them in requests, so error messages may echo them, but
        no successful read may contain them. Resource ids are left out: A may bind the same
        resource id in its own tenant; so are version numbers, which any app may have."""
        shared = ("resource", "lease_token", "version", "pending_version")
        return {v for k, v in self.b_ids.items() if k not in shared}

    def hide(self, label: str) -> str:
        value = f"b-{label}-{self.marker}"
        self.b_hidden.add(value)
        return value


def post(
    client: TestClient, path: str, body: Any, headers: dict[str, str], status: int = 201
) -> Any:
    return ok(client.post(path, json=body, headers=headers), status)


def cloud_event(source: str, event_id: str, data: dict[str, Any], **extra: Any) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": event_id,
        "source": source,
        "type": "qm.invocation.usage",
        "time": datetime.now(UTC).isoformat(),
        "data": data,
        **extra,
    }


# The owners the example price book names, by kind (a book loads only when its tenant has them).
EXAMPLE_OWNERS = {
    "team": ("data-science", "facilities", "platform-eng"),
    "cost_center": ("cc-4400-security", "cc-5200-procurement"),
    "app": ("where2eat",),
}


def price_book_yaml(name: str, *, team: str, cost_center: str, app: str) -> str:
    """The example price book named `name`, its scopes, discounts and direct costs aimed at
    the given team, cost center and app."""
    text = PRICE_BOOK_EXAMPLE.read_text().replace("name: internal-platform", f"name: {name}", 1)
    chosen = {"team": team, "cost_center": cost_center, "app": app}
    for kind, slugs in EXAMPLE_OWNERS.items():
        for slug in slugs:
            text = text.replace(f"{{{kind}: {slug}}}", f"{{{kind}: {chosen[kind]}}}")
    return text


def _tenancy_and_catalog(client: TestClient, w: World) -> None:
    ids, h = w.b_ids, w.b.headers
    ids.update(
        cost_center=w.fresh("b-cc"),
        team=w.fresh("b-team"),
        app=w.fresh("b-app"),
        resource=w.fresh("b-res"),
    )
    post(client, "/v1/cost-centers", {"slug": ids["cost_center"], "name": w.hide("cc")}, h)
    team = {"slug": ids["team"], "name": w.hide("team"), "cost_center": ids["cost_center"]}
    post(client, "/v1/teams", team, h)
    app = {
        "app_id": ids["app"],
        "title": w.hide("title"),
        "owner": w.hide("owner"),
        "team": ids["team"],
    }
    post(client, "/v1/apps", app, h)
    ids["signing_key"] = post(client, f"/v1/apps/{ids['app']}/signing-keys", None, h)["key_id"]
    member = {"name": w.hide("user"), "role": "team-member", "team": ids["team"]}
    ids["principal"] = post(client, "/v1/principals", member, h)["id"]
    token = post(client, f"/v1/principals/{ids['principal']}/keys", {}, h)["token"]
    ids["key"] = token.split("_")[1]
    ok(client.get("/v1/tenant", headers=bearer(token)))
    post(client, "/v1/resources", {"resource_id": ids["resource"], "app_id": ids["app"]}, h)
    lease = {"resource_id": w.fresh("b-job"), "app_id": ids["app"], "ttl_seconds": 3600}
    issued = post(client, "/v1/resource-leases", lease, h)
    ids["lease"], ids["lease_token"] = issued["lease_id"], issued["token"]


def _publishing(client: TestClient, w: World) -> None:
    """B's policy (org scope needs approval), a published version of B's app found by B's
    search, a second version waiting for approval, and a policy exception of B's team."""
    ids, h = w.b_ids, w.b.headers
    ids["policy"] = w.fresh("b-pol")
    rule = (POLICY_EXAMPLES / "org-scope-approval.rego").read_text()
    source = f"# {w.hide('policy-comment')}\n{rule}"
    post(client, "/v1/policies", {"name": ids["policy"], "source": source}, h)
    manifest = {
        "app_id": ids["app"],
        "version": "1.0.0",
        "title": w.hide("published-title"),
        "short_description": w.hide("description"),
        "owner": w.hide("owner"),
        "team": ids["team"],
        "cost_center": ids["cost_center"],
        "tags": [w.marker],
        "capabilities": ["read"],
        "data_scopes": ["user"],
        "runtime_descriptor": {"type": "wasm"},
    }
    published = post(
        client, f"/v1/apps/{ids['app']}/versions", {"manifest": manifest, "publish": True}, h
    )
    assert published["state"] == "published", published
    ids["version"] = published["version"]
    found = ok(client.get("/v1/apps/search", params={"q": w.marker}, headers=h))
    assert [hit["app_id"] for hit in found["hits"]] == [ids["app"]], found
    org_wide = {**manifest, "version": "1.1.0", "data_scopes": ["org"], "data_owner": "b-data"}
    held = post(
        client, f"/v1/apps/{ids['app']}/versions", {"manifest": org_wide, "publish": True}, h
    )
    assert held["state"] == "pending_approval", held
    ids["pending_version"] = held["version"]
    approvals = ok(client.get("/v1/approvals", headers=h))
    ids["approval"] = next(a["id"] for a in approvals if a["version"] == held["version"])
    grant = {"key": "gpu", "team": ids["team"], "reason": w.hide("exception-reason"), "days": 1}
    ids["policy_exception"] = post(client, "/v1/policy-exceptions", grant, h)["id"]


def _metering(client: TestClient, w: World) -> None:
    ids = w.b_ids
    ids.update(event_source=f"/b/{w.marker}", event_id=w.fresh("b-evt"))
    data = {"app_id": ids["app"], "tokens": 7, "actor_id": w.hide("actor")}
    headers = {**w.b.headers, "Content-Type": "application/cloudevents+json"}
    stored = client.post(
        "/v1/events", json=cloud_event(ids["event_source"], ids["event_id"], data), headers=headers
    )
    assert ok(stored)["accepted"] == 1


def _pricing(client: TestClient, w: World) -> None:
    w.b_ids["price_book"] = w.fresh("b-book")
    headers = {**w.b.headers, "Content-Type": "application/yaml"}
    ids = w.b_ids
    text = price_book_yaml(
        ids["price_book"], team=ids["team"], cost_center=ids["cost_center"], app=ids["app"]
    )
    ok(client.post("/v1/price-books", content=text, headers=headers), 201)


def _secrets(client: TestClient, w: World) -> None:
    from quartermaster.secrets.envelope import fingerprint  # only in builds with secrets

    ids, h = w.b_ids, w.b.headers
    ids["secret_path"] = f"apps/{ids['app']}/db-password-{w.marker}"
    value = w.hide("secret-value")
    ok(client.put(f"/v1/secrets/data/{ids['secret_path']}", json={"value": value}, headers=h))
    read = ok(client.get(f"/v1/secrets/data/{ids['secret_path']}", headers=h))
    ids["secret_lease"] = read["lease"]["id"]
    key = ok(client.get("/v1/secrets/fingerprint-key", headers=h))["key"]
    w.b_hidden.add(key)
    ids["secret_fingerprint"] = fingerprint(bytes.fromhex(key), value)


def meter_body(name: str) -> dict[str, str]:
    return {
        "name": name,
        "event_type": "qm.invocation.usage",
        "value": "tokens",
        "aggregation": "sum",
        "unit": "tokens",
    }


def _usage(client: TestClient, w: World) -> None:
    ids, h = w.b_ids, w.b.headers
    ids.update(meter=f"b_meter_{w.marker}", environment=w.fresh("b-env"))
    post(client, "/v1/meters", meter_body(ids["meter"]), h)
    override = {"cost_center": ids["cost_center"]}
    ok(client.put(f"/v1/environment-overrides/{ids['environment']}", json=override, headers=h), 201)


def _billing(client: TestClient, w: World, runtime: Runtime) -> None:
    """B's run, made through the billing service with a calculator that reads the store as it
    is: through the API a price book uploaded a moment ago is not yet "recorded" (the run
    waits for the usage to settle)."""
    from quartermaster.billing import service
    from quartermaster.billing.models import RunKind
    from quartermaster.billing.sources import StoreCalculator
    from quartermaster.tenancy.service import authenticate

    ids = w.b_ids
    with runtime.session_factory() as session:
        b_admin = authenticate(w.b.admin_token, session=session)
        period = service.run_period(b_admin, start=None, end=None, month=None, session=session)
        outcome = service.create_run(
            b_admin,
            period=period,
            kind=RunKind.INVOICE,
            price_book=ids["price_book"],
            calculator=StoreCalculator(runtime.usage_store, settle=timedelta(0)),
            session=session,
            as_of=datetime.now(UTC),
        )
    ids["billing_run"] = outcome.document.id
    detail = ok(client.get(f"/v1/billing/runs/{ids['billing_run']}", headers=w.b.headers))
    lines = detail.get("lines") or []
    ids["billing_line"] = lines[0]["id"] if lines else f"{ids['billing_run']}-no-line"


def _guardrails(client: TestClient, w: World) -> None:
    ids, h = w.b_ids, w.b.headers
    ids["budget"] = f"b-budget-{w.marker}"
    budget = {"name": ids["budget"], "scope_kind": "team", "scope": ids["team"], "amount": "100"}
    post(client, "/v1/budgets", budget, h)
    quota = {"scope_kind": "team", "scope": ids["team"], "resource": "cpu", "hard": "4"}
    ids["quota"] = ok(client.put("/v1/quotas", json=quota, headers=h))["id"]
    limit = {"scope_kind": "app", "scope": ids["app"], "rate": "10", "burst": 20}
    ids["rate_limit"] = ok(client.put("/v1/rate-limits", json=limit, headers=h))["id"]
    limit_range = {"scope_kind": "team", "scope": ids["team"], "resource": "memory", "max": "64Gi"}
    ids["limit_range"] = ok(client.put("/v1/limit-ranges", json=limit_range, headers=h))["id"]
    decision = client.post(
        "/v1/decisions", json={"app": ids["app"], "resources": {"cpu": "1"}}, headers=h
    )
    assert decision.status_code in (200, 201), decision.text
    granted = decision.json()
    assert granted["allowed"], decision.text
    ids["decision"] = granted.get("decision_id") or granted["id"]


def _webhooks(client: TestClient, w: World, runtime: Runtime) -> None:
    from quartermaster.guardrails.alerts import Severity, raise_alert
    from quartermaster.guardrails.models import Delivery

    ids, h = w.b_ids, w.b.headers
    url = f"http://127.0.0.1:9/{w.hide('webhook-url')}"
    hook = post(client, "/v1/webhooks", {"url": url, "secret": w.hide("webhook-secret")}, h)
    ids["webhook"] = hook["id"]
    with runtime.session_factory() as session:
        alert_id = raise_alert(
            session,
            tenant_id=w.b.tenant_id,
            kind="budget_threshold",
            severity=Severity.WARNING,
            dedup_key=f"isolation:{w.marker}",
            title=w.hide("alert-title"),
            message=w.hide("alert-message"),
            details={},
        )
        session.commit()
        # Dead-lettered, so no notifier pass anywhere sends it during the test.
        delivery = session.scalars(select(Delivery).where(Delivery.alert_id == alert_id)).one()
        delivery.status = "dead"
        ids["delivery"] = delivery.id
        session.commit()


def _guardrail_defaults(client: TestClient, w: World, runtime: Runtime) -> None:
    """B's default cap (non-production), its high-cost threshold and a cost preview."""
    from datetime import UTC, datetime
    from decimal import Decimal

    from quartermaster.guardrails.models import CostPreview

    ids, h = w.b_ids, w.b.headers
    cap = {"applies_to": "non_production", "amount": "3", "action": "halt"}
    ids["default_cap"] = ok(client.put("/v1/default-caps", json=cap, headers=h))["id"]
    ok(client.put("/v1/guardrail-settings", json={"high_cost_hour_amount": "9"}, headers=h))
    with runtime.session_factory() as session:
        row = CostPreview(
            tenant_id=w.b.tenant_id,
            app=ids["app"],
            team=ids["team"],
            cost_center=ids["cost_center"],
            hour_start=datetime(2026, 1, 5, 10, tzinfo=UTC),
            hour_cost=Decimal("12"),
            threshold=Decimal("9"),
            currency="EUR",
            body=f'{{"note": "{w.hide("preview-body")}"}}',
        )
        session.add(row)
        session.commit()
        ids["cost_preview"] = row.id


def build_world(
    client: TestClient, a: TenantHandle, b: TenantHandle, routes: Routes, runtime: Runtime
) -> World:
    w = World(a=a, b=b)
    w.b_hidden.add(b.tenant_id)
    _tenancy_and_catalog(client, w)
    if ("POST", "/v1/policies") in routes:
        _publishing(client, w)
    if ("POST", "/v1/events") in routes:
        _metering(client, w)
    if ("POST", "/v1/price-books") in routes:
        _pricing(client, w)
    if ("PUT", "/v1/secrets/data/{path:path}") in routes:
        _secrets(client, w)
    if ("POST", "/v1/meters") in routes:
        _usage(client, w)
    if ("POST", "/v1/budgets") in routes:
        _guardrails(client, w)
    if ("POST", "/v1/webhooks") in routes:
        _webhooks(client, w, runtime)
    if ("PUT", "/v1/default-caps") in routes:
        _guardrail_defaults(client, w, runtime)
    if ("POST", "/v1/billing/runs") in routes:
        _billing(client, w, runtime)
    # A's own objects, so that A's lists and writes are shown to work.
    w.a_ids.update(team=w.fresh("a-team"), app=w.fresh("a-app"), cost_center="default")
    post(client, "/v1/teams", {"slug": w.a_ids["team"]}, a.headers)
    app = {
        "app_id": w.a_ids["app"],
        "owner": "a",
        "team": w.a_ids["team"],
        "cost_center": "default",
    }
    post(client, "/v1/apps", app, a.headers)
    w.a_ids.update(principal="admin", key=a.admin_token.split("_")[1])
    return w


def tenant_rows(runtime: Runtime, tenant_id: str) -> dict[str, list[tuple[str, ...]]]:
    """Every row of the tenant in every table that has a tenant_id (and its tenants row)."""
    import_all_models()
    snapshot: dict[str, list[tuple[str, ...]]] = {}
    with runtime.engine.connect() as conn:
        for table in Base.metadata.sorted_tables:
            column = table.c.get("tenant_id")
            if column is None and table.name == "tenants":
                column = table.c.id
            if column is None:
                continue
            rows = conn.execute(select(table).where(column == tenant_id)).all()
            snapshot[table.name] = sorted(tuple(repr(value) for value in row) for row in rows)
    return snapshot
