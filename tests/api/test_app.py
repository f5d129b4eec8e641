from __future__ import annotations

import re
from collections.abc import Callable

import httpx
import pytest
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


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_their_scripts_from_this_server(client: TestClient, page: str) -> None:
    """Offline, a page whose scripts come from a CDN renders blank."""
    html = client.get(page).text
    assets = re.findall(r'(?:src|href)="([^"]+\.(?:js|css))"', html)
    assert assets, html
    for asset in assets:
        assert asset.startswith("/"), f"{page} fetches {asset} from elsewhere"
        response = client.get(asset)
        assert response.status_code == 200, asset
        assert len(response.content) > 10_000, asset


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
