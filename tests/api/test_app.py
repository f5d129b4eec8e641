from __future__ import annotations

import httpx
from fastapi.testclient import TestClient

from tests.conftest import TenantHandle


def test_health_is_open(client: TestClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.json()["status"] == "ok"


def test_openapi_is_served(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    assert spec["info"]["title"] == "Quartermaster"


def test_live_server_answers_over_real_http(http: httpx.Client) -> None:
    assert http.get("/healthz").status_code == 200


def test_unknown_route_uses_the_error_model(client: TestClient, tenant: TenantHandle) -> None:
    response = client.get("/v1/nope", headers=tenant.headers)
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "not_found"
