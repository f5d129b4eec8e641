"""A decision's runtime is at least 1 s, and running work renews its decision before it
expires (guardrails walkthrough finding 9)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from quartermaster.guardrails.quotas import expire_reservations
from quartermaster.runtime import Runtime
from tests.conftest import TenantHandle
from tests.guardrails.support import build_world, key_for, ok


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize("value", ["0", 0, "0s", "0m"])
def test_a_runtime_under_one_second_is_a_422_with_examples(
    client: TestClient, tenant: TenantHandle, value: object
) -> None:
    world = build_world(client, tenant)
    body = {"app": world.app, "resources": {"runtime": value}}
    answer = client.post("/v1/decisions", json=body, headers=world.headers)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["field"] == "resources.runtime"
    assert "90, 15m, 2h" in error["message"]


def test_a_runtime_that_is_no_duration_gives_duration_examples(
    client: TestClient, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    body = {"app": world.app, "resources": {"runtime": "soon"}}
    answer = client.post("/v1/decisions", json=body, headers=world.headers)
    assert answer.status_code == 422, answer.text
    assert "90, 15m, 2h" in answer.json()["error"]["message"]
    assert "1Gi" not in answer.json()["error"]["message"]


def test_renew_extends_active_work_and_keeps_its_quota(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    quota = {"scope_kind": "team", "scope": world.team, "resource": "concurrency", "hard": "1"}
    ok(client.put("/v1/quotas", json=quota, headers=world.headers))
    app_key = key_for(client, tenant, "app", app_id=world.app)
    body = {"app": world.app, "resources": {"runtime": "60"}}
    made = ok(client.post("/v1/decisions", json=body, headers=app_key))
    assert made["allowed"] is True
    renewed = ok(
        client.post(f"/v1/decisions/{made['id']}/renew", json={"runtime": "2h"}, headers=app_key)
    )
    assert renewed["status"] == "active"
    until = _moment(renewed["expires_at"])
    assert until - datetime.now(UTC) > timedelta(minutes=119)
    # Past the first runtime the work still holds its quota: the expiry pass leaves it.
    with runtime.session_factory() as session:
        expire_reservations(session=session, now=datetime.now(UTC) + timedelta(minutes=5))
    assert ok(client.get(f"/v1/decisions/{made['id']}", headers=app_key))["status"] == "active"
    second = ok(client.post("/v1/decisions", json=body, headers=app_key))
    assert second["allowed"] is False  # concurrency 1 still held
    # Without a body: its own runtime again (60 s from now).
    again = ok(client.post(f"/v1/decisions/{made['id']}/renew", headers=app_key))
    assert _moment(again["expires_at"]) - datetime.now(UTC) < timedelta(seconds=61)
    # A bad runtime names it; another team's key does not find it.
    bad = client.post(f"/v1/decisions/{made['id']}/renew", json={"runtime": 0}, headers=app_key)
    assert bad.status_code == 422, bad.text
    assert bad.json()["error"]["field"] == "runtime"
    other = build_world(client, tenant)
    stranger = key_for(client, tenant, "app", app_id=other.app)
    assert client.post(f"/v1/decisions/{made['id']}/renew", headers=stranger).status_code == 404
    # Released: a renew is a 409 saying to ask again.
    ok(client.post(f"/v1/decisions/{made['id']}/release", headers=app_key))
    late = client.post(f"/v1/decisions/{made['id']}/renew", headers=app_key)
    assert late.status_code == 409, late.text
    assert late.json()["error"]["field"] == "decision_id"
    assert "released" in late.json()["error"]["message"]


def test_renew_is_held_to_the_runtime_max_and_refused_after_expiry(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    limit = {"scope_kind": "team", "scope": world.team, "resource": "runtime", "max": "1h"}
    ok(client.put("/v1/limit-ranges", json=limit, headers=world.headers))
    made = ok(
        client.post(
            "/v1/decisions",
            json={"app": world.app, "resources": {"runtime": "30m"}},
            headers=world.headers,
        )
    )
    path = f"/v1/decisions/{made['id']}/renew"
    over = client.post(path, json={"runtime": "2h"}, headers=world.headers)
    assert over.status_code == 422, over.text
    assert "over the max 3600s" in over.json()["error"]["message"]
    with runtime.session_factory() as session:
        expire_reservations(session=session, now=datetime.now(UTC) + timedelta(hours=1))
    late = client.post(path, headers=world.headers)
    assert late.status_code == 409, late.text
    assert "expired" in late.json()["error"]["message"]
