"""Helpers for tests that act as principals of several roles through the API."""

from __future__ import annotations

import uuid
from typing import Any, Protocol

from fastapi import FastAPI
from fastapi.routing import iter_route_contexts

from tests.conftest import TenantHandle


class ApiClient(Protocol):
    def post(self, url: str, **kwargs: Any) -> Any: ...


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json()


def create_principal(
    client: ApiClient,
    tenant: TenantHandle,
    *,
    role: str,
    team: str | None = None,
    app_id: str | None = None,
    kind: str = "user",
) -> dict[str, Any]:
    body: dict[str, Any] = {"name": f"{role}-{uuid.uuid4().hex[:8]}", "role": role, "kind": kind}
    if team is not None:
        body["team"] = team
    if app_id is not None:
        body["app_id"] = app_id
    created: dict[str, Any] = ok(
        client.post("/v1/principals", json=body, headers=tenant.headers), 201
    )
    return created


def issue_key(client: ApiClient, tenant: TenantHandle, principal_id: str, **body: Any) -> str:
    issued = ok(
        client.post(f"/v1/principals/{principal_id}/keys", json=body, headers=tenant.headers), 201
    )
    token: str = issued["token"]
    return token


def headers_for(
    client: ApiClient,
    tenant: TenantHandle,
    *,
    role: str,
    team: str | None = None,
    app_id: str | None = None,
) -> dict[str, str]:
    principal = create_principal(client, tenant, role=role, team=team, app_id=app_id)
    return bearer(issue_key(client, tenant, principal["id"]))


def make_team(
    client: ApiClient, tenant: TenantHandle, slug: str, *, cost_center: str | None = None
) -> None:
    body: dict[str, Any] = {"slug": slug}
    if cost_center is not None:
        body["cost_center"] = cost_center
    ok(client.post("/v1/teams", json=body, headers=tenant.headers), 201)


def make_cost_center(client: ApiClient, tenant: TenantHandle, slug: str) -> None:
    ok(client.post("/v1/cost-centers", json={"slug": slug}, headers=tenant.headers), 201)


def make_app(
    client: ApiClient,
    tenant: TenantHandle,
    app_id: str,
    *,
    team: str,
    cost_center: str | None = None,
    headers: dict[str, str] | None = None,
    **extra: Any,
) -> dict[str, Any]:
    body: dict[str, Any] = {"app_id": app_id, "owner": "owner@example.com", "team": team, **extra}
    if cost_center is not None:
        body["cost_center"] = cost_center
    created: dict[str, Any] = ok(
        client.post("/v1/apps", json=body, headers=headers or tenant.headers), 201
    )
    return created


def all_routes(app: FastAPI) -> list[tuple[str, str, tuple[str, ...]]]:
    """(method, path, tags) of every route, including those of included routers (this
    FastAPI includes routers lazily, so `app.routes` alone does not list them). HEAD is
    implied by GET and left out."""
    found = []
    for context in iter_route_contexts(app.routes):
        methods = context.methods or set()
        tags = tuple(str(tag) for tag in getattr(context, "tags", None) or ())
        found.extend((method, str(context.path), tags) for method in methods if method != "HEAD")
    return sorted(found)
