"""A caller whose role may not use a route is refused (403) before the route validates its
body: an invalid body from such a caller is a 403, never a 422 that tells it which fields the
route wants. Every route with a request body is called with an invalid (but well-formed JSON)
body by a team member, an app key, a workload identity token and finance; only the roles the
route is for may get to the body's validation (MAY_VALIDATE, from docs/tenancy.md's role table
and docs/secrets.md). A new route refusing a role in its service instead of by a dependency
(api/deps.py `require_roles`, secrets/api_deps.py `broker_user`) fails here."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from quartermaster.config import Settings
from quartermaster.secrets.identity import generate_identity_key
from quartermaster.secrets.keys import generate_root_keyring
from tests.conftest import TenantHandle, make_settings
from tests.tenancy.support import all_routes, bearer, headers_for, make_app, make_team, ok

MEMBER, APP, WORKLOAD, FINANCE = "team-member", "app", "workload", "finance"
CATALOG_WRITE = {
    ("PATCH", "/v1/apps/{app_id}"),
    ("POST", "/v1/apps"),
    ("POST", "/v1/apps/validate"),
    ("POST", "/v1/apps/{app_id}/versions"),
    ("POST", "/v1/apps/{app_id}/versions/{version}/deprecate"),
    ("POST", "/v1/apps/{app_id}/versions/{version}/publish"),
    ("POST", "/v1/resources"),
    ("POST", "/v1/resources/end"),
    ("POST", "/v1/resource-leases"),
    ("POST", "/v1/principals"),  # a team member: its team's apps' app principals
    ("POST", "/v1/principals/{principal_id}/keys"),
}
SECRETS_READ = {
    ("POST", "/v1/secrets/creds/{path:path}"),
    ("POST", "/v1/leases/{lease_id}/renew"),
    ("POST", "/v1/leases/revoke-prefix"),
}
SECRETS_WRITE = {
    ("PUT", "/v1/secrets/data/{path:path}"),
    ("POST", "/v1/secrets/delete/{path:path}"),
    ("POST", "/v1/secrets/undelete/{path:path}"),
    ("POST", "/v1/secrets/destroy/{path:path}"),
    ("POST", "/v1/secrets/rotate/{path:path}"),
}
# (method, path) -> the non-admin callers that may reach the body's validation.
MAY_VALIDATE: dict[tuple[str, str], set[str]] = {
    **{route: {MEMBER} for route in CATALOG_WRITE | SECRETS_WRITE},
    **{route: {MEMBER, APP, WORKLOAD} for route in SECRETS_READ},
    ("POST", "/v1/events"): {MEMBER, APP},
    ("POST", "/v1/decisions"): {MEMBER, APP},
    ("POST", "/v1/decisions/{decision_id}/renew"): {MEMBER, APP},
    ("POST", "/v1/identity/token"): {MEMBER, APP},  # not a workload: tokens only ever read
    ("POST", "/v1/policies/test"): {MEMBER, FINANCE},
}
INVALID_BODY = "not-an-object"  # well-formed JSON that no route's body model accepts


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    """With the broker's keys: a team member mints a workload identity token here."""
    configured = make_settings(tmp_path / "qm", db_url, pipeline_enabled=False)
    generate_root_keyring(configured)
    generate_identity_key(configured)
    return configured


def test_a_role_a_route_is_not_for_gets_403_whatever_body_it_sends(
    app: FastAPI, client: TestClient, tenant: TenantHandle
) -> None:
    make_team(client, tenant, "web")
    make_app(client, tenant, "shop", team="web", cost_center="default")
    member = headers_for(client, tenant, role="team-member", team="web")
    minted = ok(client.post("/v1/identity/token", json={"app_id": "shop"}, headers=member))
    callers = {
        MEMBER: member,
        APP: headers_for(client, tenant, role="app", app_id="shop"),
        WORKLOAD: bearer(minted["token"]),
        FINANCE: headers_for(client, tenant, role="finance"),
    }
    spec = app.openapi()["paths"]
    with_body = {
        (method, path)
        for method, path, _tags in all_routes(app)
        if "requestBody" in spec.get(path.replace(":path", ""), {}).get(method.lower(), {})
    }
    validated: dict[tuple[str, str], set[str]] = {}
    unexpected = []
    for method, path in sorted(with_body):
        url = re.sub(r"\{[^}]+\}", "apps/shop/x" if "path" in path else "shop", path)
        for name, headers in callers.items():
            response = client.request(method, url, json=INVALID_BODY, headers=headers)
            if response.status_code in (400, 415, 422):
                validated.setdefault((method, path), set()).add(name)
            elif response.status_code not in (401, 403):
                unexpected.append((method, path, name, response.status_code))
    expected = {route: who for route, who in MAY_VALIDATE.items() if route in with_body}
    assert validated == expected
    assert unexpected == []
    assert len(with_body) > 40
