"""A team-member gives its own team's apps keys of their own (builder walk finding 7): it
creates app principals of its team's apps and issues, lists and revokes their keys, expiring
within 90 days; nothing of another team, of another role, or beyond the cap."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient

from quartermaster.audit.log import list_records
from quartermaster.config import Settings
from quartermaster.runtime import Runtime
from quartermaster.secrets.identity import generate_identity_key
from quartermaster.secrets.keys import generate_root_keyring
from quartermaster.tenancy.management import TEAM_MEMBER_KEY_MAX_LIFETIME
from tests.conftest import TenantHandle, make_settings
from tests.tenancy.support import (
    all_routes,
    bearer,
    headers_for,
    issue_key,
    make_app,
    make_team,
    ok,
)


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    """With the broker's keys: an app key mints its identity token here."""
    configured = make_settings(tmp_path / "qm", db_url, pipeline_enabled=False)
    generate_root_keyring(configured)
    generate_identity_key(configured)
    return configured


def error_of(response: Any) -> dict[str, str]:
    error: dict[str, str] = response.json()["error"]
    return error


def two_teams(client: TestClient, tenant: TenantHandle) -> dict[str, str]:
    """Teams web (app shop) and data (app etl), and a team-member of web's key headers."""
    make_team(client, tenant, "web")
    make_team(client, tenant, "data")
    make_app(client, tenant, "shop", team="web", cost_center="default")
    make_app(client, tenant, "etl", team="data", cost_center="default")
    return headers_for(client, tenant, role="team-member", team="web")


def app_principal(
    client: TestClient, headers: dict[str, str], name: str, app_id: str
) -> dict[str, Any]:
    body = {"name": name, "role": "app", "app_id": app_id, "kind": "service-account"}
    created: dict[str, Any] = ok(client.post("/v1/principals", json=body, headers=headers), 201)
    return created


def records(runtime: Runtime, tenant: TenantHandle, action: str) -> list[tuple[str, str, Any]]:
    with runtime.session_factory() as session:
        found = list_records(tenant.tenant_id, action=action, session=session)
    return [(r.record.outcome, r.record.actor, r.record.detail) for r in found]


def test_a_team_member_gives_its_own_app_a_key_of_its_own(
    client: TestClient, tenant: TenantHandle, runtime: Runtime
) -> None:
    member = two_teams(client, tenant)
    member_name = ok(client.get("/v1/keys", headers=tenant.headers))[-1]["principal_name"]
    bot = app_principal(client, member, "shop-bot", "shop")
    assert (bot["role"], bot["app_id"], bot["kind"]) == ("app", "shop", "service-account")

    # No expires_at: the cap, 90 days from now.
    before = datetime.now(UTC)
    issued = ok(client.post("/v1/principals/shop-bot/keys", json={}, headers=member), 201)
    expires = datetime.fromisoformat(issued["expires_at"])
    assert before + TEAM_MEMBER_KEY_MAX_LIFETIME <= expires
    assert expires <= datetime.now(UTC) + TEAM_MEMBER_KEY_MAX_LIFETIME
    # An earlier expiry is kept as asked.
    soon = (datetime.now(UTC) + timedelta(days=7)).replace(microsecond=0)
    short = ok(
        client.post(
            f"/v1/principals/{bot['id']}/keys",
            json={"expires_at": soon.isoformat()},
            headers=member,
        ),
        201,
    )
    assert datetime.fromisoformat(short["expires_at"]) == soon

    # The app's key does what an app key does: mints its own identity token, no other app's.
    app_key = bearer(issued["token"])
    minted = client.post("/v1/identity/token", json={"app_id": "shop"}, headers=app_key)
    assert minted.status_code == 200, minted.text
    assert minted.json()["subject"] == "app:shop"
    other = client.post("/v1/identity/token", json={"app_id": "etl"}, headers=app_key)
    assert other.status_code == 403
    assert client.get("/v1/principals", headers=app_key).status_code == 403

    # The team-member lists its team's app principals and their keys, and revokes them.
    assert [p["name"] for p in ok(client.get("/v1/principals", headers=member))] == ["shop-bot"]
    listed = ok(client.get("/v1/keys", headers=member))
    assert {k["key_id"] for k in listed} == {issued["key_id"], short["key_id"]}
    revoked = ok(client.delete(f"/v1/keys/{issued['key_id']}", headers=member))
    assert revoked["status"] == "revoked"
    refused = client.post("/v1/identity/token", json={"app_id": "shop"}, headers=app_key)
    assert refused.status_code == 401

    # Each change is in the tenant's audit chain, with who did it; never the token.
    actor = f"principal:{member_name}"
    created = records(runtime, tenant, "create-principal")
    assert ("ok", actor, {**created[-1][2], "principal": "shop-bot", "app_id": "shop"}) == (
        created[-1]
    )
    issues = records(runtime, tenant, "issue-key")
    assert [(o, a, d["key_id"], d["app_id"]) for o, a, d in issues[-2:]] == [
        ("ok", actor, issued["key_id"], "shop"),
        ("ok", actor, short["key_id"], "shop"),
    ]
    assert issues[-2][2]["expires_at"] == expires.isoformat()
    assert issued["token"] not in str(issues)
    assert records(runtime, tenant, "revoke-key")[-1][:2] == ("ok", actor)
    assert records(runtime, tenant, "revoke-key")[-1][2]["key_id"] == issued["key_id"]


def test_a_team_member_is_refused_other_teams_apps_other_roles_and_long_keys(
    client: TestClient, tenant: TenantHandle, runtime: Runtime
) -> None:
    member = two_teams(client, tenant)
    app_principal(client, member, "shop-bot", "shop")
    etl_bot = app_principal(client, tenant.headers, "etl-bot", "etl")  # by an admin
    etl_key = issue_key(client, tenant, etl_bot["id"])
    admin_key_id = tenant.admin_token.split("_")[1]

    def refused(method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, str]:
        response = client.request(method, path, json=body, headers=member)
        assert response.status_code == 403, (method, path, response.text)
        return error_of(response)

    other_app = refused("POST", "/v1/principals", {"name": "x", "role": "app", "app_id": "etl"})
    assert other_app["field"] == "app_id"
    assert other_app["message"].startswith(
        "role 'team-member' may not create a principal for app 'etl': it belongs to another "
        "team than 'web', and a team-member manages only app principals (role 'app') of its "
        "own team's apps"
    )
    for role, extra in (
        ("team-member", {"team": "web"}),
        ("admin", {}),
        ("finance", {}),
    ):
        other_role = refused("POST", "/v1/principals", {"name": "x", "role": role, **extra})
        assert other_role["field"] == "role"
        assert f"may not create a principal of role {role!r}" in other_role["message"]

    not_app = refused("POST", "/v1/principals/admin/keys", {})
    assert not_app["field"] == "principal_id"
    assert (
        "may not issue a key for principal 'admin': it is not an app principal"
        in (not_app["message"])
    )
    other_team = refused("POST", "/v1/principals/etl-bot/keys", {})
    assert (
        "it is the app principal of app 'etl', which belongs to another team"
        in (other_team["message"])
    )
    too_long = (datetime.now(UTC) + TEAM_MEMBER_KEY_MAX_LIFETIME + timedelta(hours=1)).isoformat()
    over_cap = refused("POST", "/v1/principals/shop-bot/keys", {"expires_at": too_long})
    assert over_cap["field"] == "expires_at"
    assert re.match(
        r"role 'team-member' may issue keys expiring within 90 days \(by \d{4}-\d\d-\d\d .*\), "
        r"not at \d{4}-.*: an admin issues longer-lived keys",
        over_cap["message"],
    )
    assert "may not revoke API key" in refused("DELETE", f"/v1/keys/{admin_key_id}")["message"]
    etl_key_id = etl_key.split("_")[1]
    assert (
        "its principal 'etl-bot' is the app principal of app 'etl'"
        in (refused("DELETE", f"/v1/keys/{etl_key_id}")["message"])
    )
    unknown = client.delete("/v1/keys/0000000000000000", headers=member)
    assert unknown.status_code == 404

    # Nothing was created, issued or revoked; another team's key still works.
    names = {p["name"] for p in ok(client.get("/v1/principals", headers=tenant.headers))}
    assert "x" not in names
    assert client.get("/v1/decisions/none", headers=bearer(etl_key)).status_code == 404
    assert [k["key_id"] for k in ok(client.get("/v1/keys", headers=member))] == []
    # The team-member sees neither the admin's nor the other team's principals and keys.
    assert [p["name"] for p in ok(client.get("/v1/principals", headers=member))] == ["shop-bot"]
    # Every refusal is in the audit chain with its reason.
    denied = [
        detail["reason"]
        for action in ("create-principal", "issue-key", "revoke-key")
        for outcome, _actor, detail in records(runtime, tenant, action)
        if outcome == "denied"
    ]
    assert len(denied) == 9
    assert over_cap["message"] in denied


def test_a_team_member_without_the_app_in_its_team_any_more_manages_nothing_of_it(
    client: TestClient, tenant: TenantHandle
) -> None:
    """Who manages an app principal follows the app's current team: an admin moving the app
    to another team moves its keys' management with it."""
    member = two_teams(client, tenant)
    app_principal(client, member, "shop-bot", "shop")
    key_id = ok(client.post("/v1/principals/shop-bot/keys", json={}, headers=member), 201)["key_id"]
    moved = client.patch("/v1/apps/shop", json={"team": "data"}, headers=tenant.headers)
    assert moved.status_code == 200, moved.text
    assert ok(client.get("/v1/principals", headers=member)) == []
    assert ok(client.get("/v1/keys", headers=member)) == []
    assert client.delete(f"/v1/keys/{key_id}", headers=member).status_code == 403
    data_member = headers_for(client, tenant, role="team-member", team="data")
    assert ok(client.delete(f"/v1/keys/{key_id}", headers=data_member))["status"] == "revoked"


def test_admins_are_unchanged_and_finance_still_changes_nothing(
    client: TestClient, tenant: TenantHandle
) -> None:
    two_teams(client, tenant)
    bot = app_principal(client, tenant.headers, "etl-bot", "etl")
    far = (datetime.now(UTC) + timedelta(days=3650)).isoformat()
    assert (
        client.post(
            f"/v1/principals/{bot['id']}/keys", json={"expires_at": far}, headers=tenant.headers
        ).status_code
        == 201
    )
    forever = ok(
        client.post(f"/v1/principals/{bot['id']}/keys", json={}, headers=tenant.headers), 201
    )
    assert forever["expires_at"] is None
    finance = headers_for(client, tenant, role="finance")
    refused = client.post(
        "/v1/principals", json={"name": "y", "role": "app", "app_id": "etl"}, headers=finance
    )
    assert refused.status_code == 403
    assert error_of(refused)["message"] == (
        "role 'finance' may not do this (needs one of: admin, team-member)"
    )


def test_a_team_member_reaches_no_other_tenants_principals_or_keys(
    client: TestClient, tenant: TenantHandle, make_tenant: Any
) -> None:
    member = two_teams(client, tenant)
    other = make_tenant("other")
    make_team(client, other, "web")
    make_app(client, other, "mail", team="web", cost_center="default")
    theirs = app_principal(client, other.headers, "mail-bot", "mail")
    their_key = issue_key(client, other, theirs["id"]).split("_")[1]

    for path in (f"/v1/principals/{theirs['id']}/keys", "/v1/principals/mail-bot/keys"):
        missing = client.post(path, json={}, headers=member)
        assert missing.status_code == 404, missing.text
    assert client.delete(f"/v1/keys/{their_key}", headers=member).status_code == 404
    unknown_app = client.post(
        "/v1/principals", json={"name": "z", "role": "app", "app_id": "mail"}, headers=member
    )
    assert unknown_app.status_code == 422
    assert error_of(unknown_app)["message"] == "unknown app 'mail'"
    assert ok(client.get("/v1/keys", headers=other.headers))[-1]["status"] == "active"


# What an app key may use (docs/tenancy.md's role table, docs/secrets.md): its app's events,
# decisions for itself, its own identity token, secrets the access rules give it and its own
# leases. Every other route answers 403, so a team-member giving its app a key gives nothing
# beyond its own app.
APP_KEY_ROUTES = {
    ("POST", "/v1/events"),
    ("POST", "/v1/decisions"),
    ("GET", "/v1/decisions/{decision_id}"),
    ("POST", "/v1/decisions/{decision_id}/release"),
    ("POST", "/v1/decisions/{decision_id}/renew"),
    ("POST", "/v1/identity/token"),
    ("GET", "/v1/secrets/data/{path:path}"),
    ("POST", "/v1/secrets/creds/{path:path}"),
    ("GET", "/v1/leases"),
    ("GET", "/v1/leases/{lease_id}"),
    ("POST", "/v1/leases/{lease_id}/renew"),
    ("POST", "/v1/leases/{lease_id}/revoke"),
    ("POST", "/v1/leases/revoke-prefix"),
}
# Listing secret metadata is answered, with only what the access rules let the key read.
SCOPED_LISTS = {("GET", "/v1/secrets/metadata")}
PUBLIC_ROUTES = {
    "/healthz",
    "/openapi.json",
    "/docs",
    "/docs/oauth2-redirect",
    "/redoc",
    "/v1/apps/manifest-schema",  # a published JSON schema, for anyone
    "/v1/identity/jwks",  # the public key, for anyone
}


def test_an_app_key_issued_by_a_team_member_is_refused_everywhere_else(
    app: FastAPI, client: TestClient, tenant: TenantHandle
) -> None:
    member = two_teams(client, tenant)
    app_principal(client, member, "shop-bot", "shop")
    app_key = bearer(
        ok(client.post("/v1/principals/shop-bot/keys", json={}, headers=member), 201)["token"]
    )
    checked = 0
    leaks: list[tuple[str, str, int, str]] = []
    for method, path, _tags in all_routes(app):
        if (method, path) in APP_KEY_ROUTES | SCOPED_LISTS or path in PUBLIC_ROUTES:
            continue
        url = re.sub(r"\{[^}]+\}", "apps/etl/x" if "path" in path else "etl", path)
        # An empty body: a route refuses the app role before it validates one.
        response = client.request(method, url, headers=app_key, json={})
        if response.status_code != 403:
            leaks.append((method, path, response.status_code, response.text[:200]))
        checked += 1
    assert leaks == [], "\n".join(map(str, leaks))
    assert checked >= 100
    # Within its routes, only its own app: another app's event, decision and token are refused.
    event = {
        "specversion": "1.0",
        "id": "e-1",
        "source": "app://etl",
        "type": "qm.invocation.usage",
        "time": (datetime.now(UTC) - timedelta(minutes=1)).isoformat(),
        "data": {"app_id": "etl", "tokens": 5},
    }
    sent = client.post("/v1/events", json=event, headers=app_key)
    assert [r["reason"] for r in sent.json()["rejected"]] == ["forbidden_app"], sent.text
    for path in ("apps/shop/db", "apps/etl/db"):
        written = client.put(
            f"/v1/secrets/data/{path}", json={"value": "pw"}, headers=tenant.headers
        )
        assert written.status_code == 200, written.text
    listed = ok(client.get("/v1/secrets/metadata", headers=app_key))["secrets"]
    assert [entry["path"] for entry in listed] == ["apps/shop/db"]
    assert client.get("/v1/secrets/data/apps/shop/db", headers=app_key).status_code == 200
    assert client.get("/v1/secrets/data/apps/etl/db", headers=app_key).status_code == 403
