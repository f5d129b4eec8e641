"""Shared helpers for the publishing tests: manifests, packages, teams."""

from __future__ import annotations

import base64
import copy
import io
import zipfile
from pathlib import Path
from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import TenantHandle

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples"
POLICIES = EXAMPLES / "policies"

BASE_MANIFEST: dict[str, Any] = {
    "app_id": "where2eat",
    "version": "1.0.0",
    "title": "Where2Eat - group dinner recommender",
    "short_description": "AI-based dining recommender for friend groups",
    "owner": "user:beckayu",
    "team": "social",
    "cost_center": "default",
    "tags": ["dining", "recommendation"],
    "capabilities": ["read"],
    "data_scopes": ["user"],
    "runtime_descriptor": {"type": "serverless", "handler": "app.invoke"},
    "pricing_template": {"model": "free"},
}


def manifest(**changes: Any) -> dict[str, Any]:
    out = copy.deepcopy(BASE_MANIFEST)
    for key, value in changes.items():
        if value is None:
            out.pop(key, None)
        else:
            out[key] = value
    return out


def zip_b64(files: dict[str, str]) -> str:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, text in files.items():
            archive.writestr(name, text)
    return base64.b64encode(buffer.getvalue()).decode()


def add_team(client: TestClient, tenant: TenantHandle, slug: str = "social") -> None:
    response = client.post(
        "/v1/teams", json={"slug": slug, "cost_center": "default"}, headers=tenant.headers
    )
    assert response.status_code in (201, 409), response.text


def upload_policy(
    client: TestClient, tenant: TenantHandle, name: str, file: str, mode: str = "enforce"
) -> dict[str, Any]:
    body = {"name": name, "source": (POLICIES / file).read_text(), "mode": mode}
    response = client.post("/v1/policies", json=body, headers=tenant.headers)
    assert response.status_code == 201, response.text
    result: dict[str, Any] = response.json()
    return result


def submit(
    client: TestClient,
    tenant: TenantHandle,
    body: dict[str, Any],
    *,
    package: str | None = None,
    publish: bool = True,
    expect: int = 201,
) -> dict[str, Any]:
    payload: dict[str, Any] = {"manifest": body, "publish": publish}
    if package is not None:
        payload["package_zip_b64"] = package
    response = client.post(
        f"/v1/apps/{body['app_id']}/versions", json=payload, headers=tenant.headers
    )
    assert response.status_code == expect, response.text
    result: dict[str, Any] = response.json()
    return result
