from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from quartermaster.audit.log import list_records
from quartermaster.errors import InvalidInputError
from quartermaster.runtime import Runtime
from quartermaster.tenancy import auth_cache, service
from quartermaster.tenancy.models import ApiKey
from tests.conftest import TenantHandle
from tests.tenancy.support import (
    bearer,
    create_principal,
    headers_for,
    issue_key,
    make_cost_center,
    make_team,
    ok,
)


def error_of(response: object) -> dict[str, str]:
    body = response.json()  # type: ignore[attr-defined]
    error: dict[str, str] = body["error"]
    return error


def test_tenant_is_the_callers_own(client: TestClient, tenant: TenantHandle) -> None:
    body = ok(client.get("/v1/tenant", headers=tenant.headers))
    assert body["tenant_id"] == tenant.tenant_id
    assert body["timezone"] == "UTC"


def test_an_admin_sets_the_tenant_time_zone_audited(
    client: TestClient, tenant: TenantHandle, runtime: Runtime
) -> None:
    berlin = {"timezone": "Europe/Berlin"}
    body = ok(client.patch("/v1/tenant", json=berlin, headers=tenant.headers))
    assert (body["tenant_id"], body["timezone"]) == (tenant.tenant_id, "Europe/Berlin")
    assert ok(client.get("/v1/tenant", headers=tenant.headers))["timezone"] == "Europe/Berlin"
    bad = client.patch("/v1/tenant", json={"timezone": "Mars/Olympus"}, headers=tenant.headers)
    assert bad.status_code == 422
    assert error_of(bad)["message"] == "tenant time zone 'Mars/Olympus' is not a known IANA zone"
    assert error_of(bad)["field"] == "timezone"
    finance = headers_for(client, tenant, role="finance")
    refused = client.patch("/v1/tenant", json={"timezone": "UTC"}, headers=finance)
    assert refused.status_code == 403
    assert ok(client.get("/v1/tenant", headers=tenant.headers))["timezone"] == "Europe/Berlin"
    with runtime.session_factory() as session:
        records = list_records(tenant.tenant_id, action="configure", session=session)
    assert [r.record.detail for r in records] == [
        {"tenant_timezone": {"from": "UTC", "to": "Europe/Berlin"}}
    ]


def test_a_tenant_is_created_with_a_time_zone_checked(runtime: Runtime) -> None:
    with runtime.session_factory() as session:
        made = service.create_tenant("tz-ok", timezone="America/New_York", session=session)
        assert made.timezone == "America/New_York"
        with pytest.raises(InvalidInputError, match="'Europe/Nowhere' is not a known IANA"):
            service.create_tenant("tz-bad", timezone="Europe/Nowhere", session=session)


def test_requests_without_a_valid_key_are_refused(client: TestClient) -> None:
    missing = client.get("/v1/teams")
    assert missing.status_code == 401
    assert "missing API key" in error_of(missing)["message"]
    malformed = client.get("/v1/teams", headers=bearer("not-a-key"))
    assert malformed.status_code == 401
    assert "malformed" in error_of(malformed)["message"]
    unknown = client.get("/v1/teams", headers=bearer("qm_0123456789abcdef_nope"))
    assert unknown.status_code == 401
    assert error_of(unknown)["message"] == "unknown API key"


def test_cost_centers(client: TestClient, tenant: TenantHandle) -> None:
    created = ok(
        client.post(
            "/v1/cost-centers",
            json={"slug": "marketing", "name": "Marketing"},
            headers=tenant.headers,
        ),
        201,
    )
    assert created == {**created, "slug": "marketing", "name": "Marketing", "is_default": False}
    listed = ok(client.get("/v1/cost-centers", headers=tenant.headers))
    assert [(c["slug"], c["is_default"]) for c in listed] == [
        ("default", True),
        ("marketing", False),
    ]
    assert ok(client.get("/v1/cost-centers/marketing", headers=tenant.headers))["name"] == (
        "Marketing"
    )

    duplicate = client.post("/v1/cost-centers", json={"slug": "marketing"}, headers=tenant.headers)
    assert duplicate.status_code == 409
    assert error_of(duplicate) == {
        "code": "conflict",
        "message": "cost center 'marketing' already exists",
        "field": "slug",
    }
    bad = client.post("/v1/cost-centers", json={"slug": "Not A Slug"}, headers=tenant.headers)
    assert bad.status_code == 422
    assert error_of(bad)["field"] == "slug"
    assert "'Not A Slug'" in error_of(bad)["message"]
    missing = client.get("/v1/cost-centers/nope", headers=tenant.headers)
    assert missing.status_code == 404
    assert "cost center 'nope' not found" in error_of(missing)["message"]


def test_teams_with_a_default_cost_center(client: TestClient, tenant: TenantHandle) -> None:
    make_cost_center(client, tenant, "research")
    created = ok(
        client.post(
            "/v1/teams",
            json={"slug": "lab", "name": "The Lab", "cost_center": "research"},
            headers=tenant.headers,
        ),
        201,
    )
    assert (created["slug"], created["name"], created["cost_center"]) == (
        "lab",
        "The Lab",
        "research",
    )
    make_team(client, tenant, "ops")
    listed = ok(client.get("/v1/teams", headers=tenant.headers))
    assert [(t["slug"], t["cost_center"]) for t in listed] == [("lab", "research"), ("ops", None)]
    assert ok(client.get("/v1/teams/lab", headers=tenant.headers))["cost_center"] == "research"

    unknown_cc = client.post(
        "/v1/teams", json={"slug": "x", "cost_center": "nowhere"}, headers=tenant.headers
    )
    assert unknown_cc.status_code == 422
    assert error_of(unknown_cc)["message"] == "unknown cost center 'nowhere'"
    assert error_of(unknown_cc)["field"] == "cost_center"
    assert client.post("/v1/teams", json={"slug": "lab"}, headers=tenant.headers).status_code == 409
    missing = client.get("/v1/teams/nope", headers=tenant.headers)
    assert missing.status_code == 404
    assert "team 'nope' not found" in error_of(missing)["message"]


def test_principals_need_what_their_role_needs(client: TestClient, tenant: TenantHandle) -> None:
    make_team(client, tenant, "web")

    def refused(body: dict[str, str]) -> dict[str, str]:
        response = client.post("/v1/principals", json=body, headers=tenant.headers)
        assert response.status_code == 422, response.text
        return error_of(response)

    assert refused({"name": "tm", "role": "team-member"})["field"] == "team"
    assert refused({"name": "bot", "role": "app"})["field"] == "app_id"
    unknown_team = refused({"name": "tm", "role": "team-member", "team": "nope"})
    assert unknown_team == {**unknown_team, "field": "team", "message": "unknown team 'nope'"}
    unknown_app = refused({"name": "bot", "role": "app", "app_id": "ghost"})
    assert unknown_app == {**unknown_app, "field": "app_id", "message": "unknown app 'ghost'"}
    stray_team = refused({"name": "fin", "role": "finance", "team": "web"})
    assert "team applies only to role 'team-member'" in stray_team["message"]
    assert refused({"name": "x", "role": "wizard"})["field"] == "role"

    member = create_principal(client, tenant, role="team-member", team="web")
    assert (member["role"], member["team"], member["kind"]) == ("team-member", "web", "user")
    duplicate = client.post(
        "/v1/principals",
        json={"name": member["name"], "role": "finance"},
        headers=tenant.headers,
    )
    assert duplicate.status_code == 409
    assert error_of(duplicate)["field"] == "name"
    names = [p["name"] for p in ok(client.get("/v1/principals", headers=tenant.headers))]
    assert names == sorted(["admin", member["name"]])


def test_api_keys_are_shown_once_listed_without_secrets_and_revocable(
    client: TestClient, tenant: TenantHandle
) -> None:
    finance = create_principal(client, tenant, role="finance", kind="service-account")
    token = issue_key(client, tenant, finance["id"])
    key_id, secret = token.split("_", 2)[1:]
    assert ok(client.get("/v1/tenant", headers=bearer(token)))["tenant_id"] == tenant.tenant_id

    listing = client.get("/v1/keys", headers=tenant.headers)
    assert secret not in listing.text
    assert "hash" not in listing.text
    mine = next(k for k in ok(listing) if k["key_id"] == key_id)
    assert (mine["principal_name"], mine["status"]) == (finance["name"], "active")

    revoked = ok(client.delete(f"/v1/keys/{key_id}", headers=tenant.headers))
    assert revoked["status"] == "revoked"
    assert revoked["revoked_at"] is not None
    refused = client.get("/v1/tenant", headers=bearer(token))
    assert refused.status_code == 401
    assert error_of(refused)["message"] == f"API key {key_id} was revoked"
    # Revoking again keeps the first revocation time.
    again = ok(client.delete(f"/v1/keys/{key_id}", headers=tenant.headers))
    assert again["revoked_at"] == revoked["revoked_at"]
    assert client.delete("/v1/keys/nope", headers=tenant.headers).status_code == 404


def test_the_last_active_admin_key_cannot_be_revoked(
    client: TestClient, tenant: TenantHandle, runtime: Runtime
) -> None:
    own_key_id = tenant.admin_token.split("_")[1]
    refused = client.delete(f"/v1/keys/{own_key_id}", headers=tenant.headers)
    assert refused.status_code == 409
    assert "last active admin key" in error_of(refused)["message"]
    assert ok(client.get("/v1/tenant", headers=tenant.headers))["tenant_id"] == tenant.tenant_id

    # A second admin key that has expired does not count as a way back in.
    second_admin = create_principal(client, tenant, role="admin")
    soon = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    expired_id = issue_key(client, tenant, second_admin["id"], expires_at=soon).split("_")[1]
    with runtime.session_factory() as session:  # let an hour pass
        past = datetime.now(UTC) - timedelta(seconds=1)
        session.execute(update(ApiKey).where(ApiKey.id == expired_id).values(expires_at=past))
        session.commit()
    assert client.delete(f"/v1/keys/{own_key_id}", headers=tenant.headers).status_code == 409
    fresh = issue_key(client, tenant, second_admin["id"])
    # With another usable admin key, the first one can go, and the new one still works.
    assert ok(client.delete(f"/v1/keys/{own_key_id}", headers=tenant.headers))["status"] == (
        "revoked"
    )
    assert ok(client.get("/v1/tenant", headers=bearer(fresh)))["tenant_id"] == tenant.tenant_id
    fresh_id = fresh.split("_")[1]
    assert client.delete(f"/v1/keys/{fresh_id}", headers=bearer(fresh)).status_code == 409


def test_expired_keys_are_refused_with_a_message_saying_so(
    client: TestClient, tenant: TenantHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    member = create_principal(client, tenant, role="finance")
    # Within the hour, at 30 s past a minute: the message's form is fixed whatever the clock.
    soon = (datetime.now(UTC) + timedelta(minutes=59)).replace(second=30).isoformat()
    token = issue_key(client, tenant, member["id"], expires_at=soon)
    key_id = token.split("_")[1]
    # Verified now, so the server's key cache holds it (tenancy/auth_cache.py) ...
    assert client.get("/v1/tenant", headers=bearer(token)).status_code == 200
    # ... and the key expires all the same once its time passes (a clock an hour ahead).
    later = datetime.now(UTC) + timedelta(hours=1, seconds=1)
    for module in (auth_cache, service):
        monkeypatch.setattr(module, "utc_now", lambda: later)
    refused = client.get("/v1/tenant", headers=bearer(token))
    assert refused.status_code == 401
    # The moment as a person reads it, to the second: no microseconds, no +00:00.
    expired_at = datetime.fromisoformat(soon).strftime("%Y-%m-%d %H:%M:30")
    assert error_of(refused)["message"] == f"API key {key_id} expired at {expired_at} UTC"
    listed = ok(client.get("/v1/keys", headers=tenant.headers))
    assert next(k for k in listed if k["key_id"] == key_id)["status"] == "expired"


def test_key_creation_validates_expiry_and_principal(
    client: TestClient, tenant: TenantHandle
) -> None:
    member = create_principal(client, tenant, role="finance")
    path = f"/v1/principals/{member['id']}/keys"
    past = client.post(path, json={"expires_at": "2000-01-01T00:00:00Z"}, headers=tenant.headers)
    assert past.status_code == 422
    assert error_of(past) == {**error_of(past), "field": "expires_at"}
    assert "in the past" in error_of(past)["message"]
    naive = client.post(path, json={"expires_at": "2999-01-01T00:00:00"}, headers=tenant.headers)
    assert naive.status_code == 422
    assert error_of(naive)["field"] == "expires_at"
    ghost = client.post("/v1/principals/ghost/keys", json={}, headers=tenant.headers)
    assert ghost.status_code == 404
    assert "principal 'ghost' not found" in error_of(ghost)["message"]


def test_finance_reads_everything_but_changes_nothing(
    client: TestClient, tenant: TenantHandle
) -> None:
    finance = headers_for(client, tenant, role="finance")
    for path in ("/v1/tenant", "/v1/teams", "/v1/cost-centers", "/v1/principals", "/v1/keys"):
        assert client.get(path, headers=finance).status_code == 200, path
    refused = client.post("/v1/teams", json={"slug": "x"}, headers=finance)
    assert refused.status_code == 403
    assert error_of(refused)["message"] == "role 'finance' may not do this (needs one of: admin)"


def test_team_members_read_the_directory_and_only_their_apps_principals_and_keys(
    client: TestClient, tenant: TenantHandle
) -> None:
    """A team-member manages only its team's apps' app principals and their keys
    (tests/tenancy/test_team_app_keys.py): with none, it lists none, and changes no
    cost center."""
    make_team(client, tenant, "web")
    member = headers_for(client, tenant, role="team-member", team="web")
    for path in ("/v1/tenant", "/v1/teams", "/v1/teams/web", "/v1/cost-centers"):
        assert client.get(path, headers=member).status_code == 200, path
    assert ok(client.get("/v1/principals", headers=member)) == []
    assert ok(client.get("/v1/keys", headers=member)) == []
    response = client.post("/v1/cost-centers", headers=member, json={"slug": "x"})
    assert response.status_code == 403
    assert "role 'team-member' may not do this" in error_of(response)["message"]
    assert client.delete("/v1/keys/whatever", headers=member).status_code == 404
