from __future__ import annotations

from collections.abc import Callable

import httpx
from fastapi.testclient import TestClient

from quartermaster.api.app import create_app
from quartermaster.runtime import Runtime
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


def test_on_started_runs_after_the_background_services(runtime: Runtime) -> None:
    calls: list[str] = []

    def starter(rt: Runtime) -> Callable[[], None]:
        calls.append("background")
        return lambda: calls.append("stopped")

    app = create_app(
        runtime.settings,
        runtime=runtime,
        background=(starter,),
        on_started=lambda: calls.append("started"),
    )
    with TestClient(app):
        assert calls == ["background", "started"]
    assert calls == ["background", "started", "stopped"]
