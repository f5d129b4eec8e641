"""A team-member reads only the policy exceptions for its own team or its team's apps, in the
list and by id (another team's is a 404); admin and finance read every exception."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.conftest import TenantHandle
from tests.tenancy.support import headers_for, make_app, make_team, ok


def _grant(client: TestClient, tenant: TenantHandle, **target: str) -> str:
    body: dict[str, Any] = {"key": "gpu", "reason": "training run", "days": 7, **target}
    made: dict[str, Any] = ok(
        client.post("/v1/policy-exceptions", json=body, headers=tenant.headers), 201
    )
    return str(made["id"])


def test_a_team_member_sees_only_its_teams_exceptions(
    client: TestClient, tenant: TenantHandle
) -> None:
    make_team(client, tenant, "web", cost_center="default")
    make_team(client, tenant, "data", cost_center="default")
    make_app(client, tenant, "web-app", team="web")
    make_app(client, tenant, "data-app", team="data")
    ids = {
        "web": _grant(client, tenant, team="web"),
        "web-app": _grant(client, tenant, app_id="web-app"),
        "data": _grant(client, tenant, team="data"),
        "data-app": _grant(client, tenant, app_id="data-app"),
    }
    member = headers_for(client, tenant, role="team-member", team="web")
    finance = headers_for(client, tenant, role="finance")

    listed = ok(client.get("/v1/policy-exceptions", headers=member))
    assert {one["id"] for one in listed} == {ids["web"], ids["web-app"]}
    lapsed_too = ok(
        client.get("/v1/policy-exceptions", params={"include_lapsed": "true"}, headers=member)
    )
    assert {one["id"] for one in lapsed_too} == {ids["web"], ids["web-app"]}
    for headers in (tenant.headers, finance):
        every = ok(client.get("/v1/policy-exceptions", headers=headers))
        assert {one["id"] for one in every} == set(ids.values())

    assert ok(client.get(f"/v1/policy-exceptions/{ids['web-app']}", headers=member))["app_id"] == (
        "web-app"
    )
    assert ok(client.get(f"/v1/policy-exceptions/{ids['web'][:12]}", headers=member))["team"] == (
        "web"
    )
    for other in ("data", "data-app"):
        for given in (ids[other], ids[other][:12]):  # by id or prefix: as if it did not exist
            response = client.get(f"/v1/policy-exceptions/{given}", headers=member)
            assert response.status_code == 404, response.text
            assert response.json()["error"]["field"] == "exception_id"
        assert (
            ok(client.get(f"/v1/policy-exceptions/{ids[other]}", headers=finance))["id"]
            == (ids[other])
        )


def test_an_app_moved_to_another_team_takes_its_exceptions_with_it(
    client: TestClient, tenant: TenantHandle
) -> None:
    make_team(client, tenant, "web", cost_center="default")
    make_team(client, tenant, "data", cost_center="default")
    make_app(client, tenant, "mover", team="web")
    granted = _grant(client, tenant, app_id="mover")
    web = headers_for(client, tenant, role="team-member", team="web")
    data = headers_for(client, tenant, role="team-member", team="data")
    assert [one["id"] for one in ok(client.get("/v1/policy-exceptions", headers=web))] == [granted]
    ok(client.patch("/v1/apps/mover", json={"team": "data"}, headers=tenant.headers))
    assert ok(client.get("/v1/policy-exceptions", headers=web)) == []
    assert client.get(f"/v1/policy-exceptions/{granted}", headers=web).status_code == 404
    assert [one["id"] for one in ok(client.get("/v1/policy-exceptions", headers=data))] == [granted]


def test_an_unknown_exception_is_not_found(client: TestClient, tenant: TenantHandle) -> None:
    response = client.get("/v1/policy-exceptions/0123456789abcdef", headers=tenant.headers)
    assert response.status_code == 404
    assert "not found" in response.json()["error"]["message"]
    short = client.get("/v1/policy-exceptions/0123ab", headers=tenant.headers)
    assert short.status_code == 422
    assert short.json()["error"]["field"] == "exception_id"


def test_who_granted_and_who_revoked_an_exception_is_kept_and_audited(
    client: TestClient, tenant: TenantHandle
) -> None:
    make_team(client, tenant, "web", cost_center="default")
    granted = _grant(client, tenant, team="web")
    other_admin = headers_for(client, tenant, role="admin")
    revoked = ok(client.delete(f"/v1/policy-exceptions/{granted}", headers=other_admin))
    assert revoked["revoked_at"] is not None
    assert revoked["revoked_by"] != revoked["granted_by"]
    assert revoked["revoked_by"].startswith("admin")
    again = ok(client.delete(f"/v1/policy-exceptions/{granted}", headers=tenant.headers))
    assert (again["revoked_at"], again["revoked_by"]) == (
        revoked["revoked_at"],
        revoked["revoked_by"],
    )  # revoking twice changes nothing and records nothing
    records = ok(client.get("/v1/audit/records", headers=tenant.headers))["records"]
    changes = [r for r in records if r["action"].endswith("-exception")]
    assert [(r["action"], r["actor"]) for r in changes] == [
        ("grant-exception", f"principal:{revoked['granted_by']}"),
        ("revoke-exception", f"principal:{revoked['revoked_by']}"),
    ]
    assert changes[1]["detail"]["exception_id"] == granted
    assert (changes[1]["detail"]["key"], changes[1]["detail"]["team"]) == ("gpu", "web")
    assert ok(client.get("/v1/audit/verify", headers=tenant.headers))["ok"] is True
