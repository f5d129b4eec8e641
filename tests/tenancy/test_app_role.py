from __future__ import annotations

import re

from fastapi import FastAPI
from fastapi.testclient import TestClient

from tests.conftest import TenantHandle
from tests.tenancy.support import all_routes, headers_for, make_app, make_team


def control_plane_routes(app: FastAPI) -> list[tuple[str, str]]:
    return [(m, path) for m, path, tags in all_routes(app) if {"tenancy", "catalog"} & set(tags)]


def test_the_app_role_is_ingest_only_on_every_tenancy_and_catalog_route(
    app: FastAPI, client: TestClient, tenant: TenantHandle
) -> None:
    make_team(client, tenant, "web")
    make_app(client, tenant, "shop", team="web", cost_center="default")
    app_key = headers_for(client, tenant, role="app", app_id="shop")
    routes = control_plane_routes(app)
    assert len(routes) >= 20
    for method, path in routes:
        url = re.sub(r"\{[^}]+\}", "shop", path)
        response = client.request(method, url, headers=app_key)
        assert response.status_code == 403, (method, path, response.text)
        assert "role 'app' may not do this" in response.json()["error"]["message"]
