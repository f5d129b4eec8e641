"""Registering history: an app owned since before its registration, a lease that began in the
past. Both are how an existing platform (or the simulator's replayed month) is imported."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from quartermaster.catalog.lease_tokens import verify_token
from quartermaster.domain.timeutil import moment_text, parse_timestamp, utc_now
from quartermaster.runtime import Runtime
from tests.conftest import TenantHandle
from tests.tenancy.support import make_app, make_cost_center, make_team, ok


@pytest.fixture
def org(client: TestClient, tenant: TenantHandle) -> TenantHandle:
    make_cost_center(client, tenant, "ops-cc")
    make_team(client, tenant, "ops", cost_center="ops-cc")
    return tenant


def _app(client: TestClient, tenant: TenantHandle, **extra: Any) -> Any:
    body = {"app_id": "legacy-bot", "owner": "ann@example.com", "team": "ops", **extra}
    return client.post("/v1/apps", json=body, headers=tenant.headers)


def test_an_app_can_be_owned_since_before_its_registration(
    client: TestClient, org: TenantHandle
) -> None:
    since = (utc_now() - timedelta(days=40)).replace(microsecond=0)
    ok(_app(client, org, owned_since=since.isoformat()), 201)
    detail = ok(client.get("/v1/apps/legacy-bot", headers=org.headers))
    (span,) = detail["ownership"]
    assert parse_timestamp(span["valid_from"]) == since
    assert span["valid_to"] is None
    assert parse_timestamp(detail["created_at"]) > since  # registered now, owned since then
    # a later move can be dated inside the back-dated span
    moved_at = since + timedelta(days=10)
    make_cost_center(client, org, "lab-cc")
    make_team(client, org, "lab", cost_center="lab-cc")
    body = {"team": "lab", "effective_at": moved_at.isoformat()}
    moved = ok(client.patch("/v1/apps/legacy-bot", json=body, headers=org.headers))
    assert [(s["team"], parse_timestamp(s["valid_from"])) for s in moved["ownership"]] == [
        ("ops", since),
        ("lab", moved_at),
    ]


def test_a_back_dated_move_says_rated_usage_stays_until_a_replay(
    client: TestClient, org: TenantHandle
) -> None:
    """The pipeline attributed the usage it rated with the owner it knew then
    (docs/usage.md, Determinism): the answer says so and names the replay."""
    since = (utc_now() - timedelta(days=40)).replace(microsecond=0)
    ok(_app(client, org, owned_since=since.isoformat()), 201)
    make_team(client, org, "lab")
    moved_at = since + timedelta(days=10)
    body = {"team": "lab", "effective_at": moved_at.isoformat()}
    moved = ok(client.patch("/v1/apps/legacy-bot", json=body, headers=org.headers))
    assert moved["rated_usage_note"] == (
        f"usage of app 'legacy-bot' since {moment_text(moved_at)} that was already rated stays "
        "with team 'ops' (cost center 'ops-cc') until `qm pipeline replay` "
        "(POST /v1/pipeline/replay) rates it again; usage rated from now on goes to the new "
        "owner (docs/usage.md, Determinism). A replay over finalized billing documents needs "
        "--force and may change what reproduces them: adjust them after"
    )
    # A move from now on, or no move at all: nothing to say.
    now_move = ok(client.patch("/v1/apps/legacy-bot", json={"team": "ops"}, headers=org.headers))
    assert now_move["rated_usage_note"] is None
    retitled = ok(client.patch("/v1/apps/legacy-bot", json={"title": "x"}, headers=org.headers))
    assert retitled["rated_usage_note"] is None


def test_ownership_cannot_start_in_the_future(client: TestClient, org: TenantHandle) -> None:
    later = utc_now() + timedelta(hours=1)
    refused = _app(client, org, owned_since=later.isoformat())
    assert refused.status_code == 422
    assert refused.json()["error"]["field"] == "owned_since"
    assert "in the future" in refused.json()["error"]["message"]
    naive = _app(client, org, owned_since="2026-01-01T00:00:00")
    assert naive.status_code == 422


def test_a_lease_can_start_in_the_past(
    client: TestClient, org: TenantHandle, runtime: Runtime
) -> None:
    make_app(client, org, "etl", team="ops")
    began = (utc_now() - timedelta(days=3)).replace(microsecond=0)
    body = {"resource_id": "job-1", "app_id": "etl", "ttl_seconds": 3600}
    issued = ok(
        client.post(
            "/v1/resource-leases",
            json={**body, "issued_at": began.isoformat()},
            headers=org.headers,
        ),
        201,
    )
    assert parse_timestamp(issued["issued_at"]) == began
    assert parse_timestamp(issued["expires_at"]) == began + timedelta(hours=1)
    claims = verify_token(issued["token"], server_key=runtime.server_key, tenant_id=org.tenant_id)
    assert (claims.issued_at, claims.expires_at) == (began, began + timedelta(hours=1))
    spans = ok(client.get("/v1/resources?resource_id=job-1", headers=org.headers))
    assert [(parse_timestamp(s["valid_from"]), s["lease_id"]) for s in spans] == [
        (began, issued["lease_id"])
    ]
    future = {
        **body,
        "resource_id": "job-2",
        "issued_at": (utc_now() + timedelta(hours=1)).isoformat(),
    }
    refused = client.post("/v1/resource-leases", json=future, headers=org.headers)
    assert refused.status_code == 422
    assert refused.json()["error"]["field"] == "issued_at"
