from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.conftest import TenantHandle
from tests.tenancy.support import (
    bearer,
    create_principal,
    headers_for,
    issue_key,
    make_app,
    make_cost_center,
    make_team,
    ok,
)


@pytest.fixture
def org(client: TestClient, tenant: TenantHandle) -> TenantHandle:
    """Teams web (default cost center shop-cc) and data (no default); cost center lab-cc."""
    make_cost_center(client, tenant, "shop-cc")
    make_cost_center(client, tenant, "lab-cc")
    make_team(client, tenant, "web", cost_center="shop-cc")
    make_team(client, tenant, "data")
    return tenant


def register(client: TestClient, tenant: TenantHandle, **body: Any) -> Any:
    return client.post("/v1/apps", json=body, headers=tenant.headers)


def error_of(response: Any) -> dict[str, str]:
    error: dict[str, str] = response.json()["error"]
    return error


def test_registration_records_owner_team_cost_center_and_creator(
    client: TestClient, org: TenantHandle
) -> None:
    created = ok(
        register(
            client,
            org,
            app_id="invoice-bot",
            title="Invoice bot",
            owner="ann@example.com",
            team="data",
            cost_center="lab-cc",
            lifecycle="ephemeral",
            environment="staging",
            require_signatures=True,
        ),
        201,
    )
    assert {k: created[k] for k in ("app_id", "title", "owner", "team", "cost_center")} == {
        "app_id": "invoice-bot",
        "title": "Invoice bot",
        "owner": "ann@example.com",
        "team": "data",
        "cost_center": "lab-cc",
    }
    assert (created["lifecycle"], created["environment"], created["require_signatures"]) == (
        "ephemeral",
        "staging",
        True,
    )
    assert created["created_by"] == "admin"
    detail = ok(client.get("/v1/apps/invoice-bot", headers=org.headers))
    assert detail["ownership"] == [
        {
            "team": "data",
            "cost_center": "lab-cc",
            "valid_from": created["created_at"],
            "valid_to": None,
        }
    ]


def test_created_by_is_the_calling_principal(client: TestClient, org: TenantHandle) -> None:
    member = create_principal(client, org, role="team-member", team="web")
    headers = bearer(issue_key(client, org, member["id"]))
    created = make_app(client, org, "member-app", team="web", headers=headers)
    assert created["created_by"] == member["name"]


@pytest.mark.parametrize("missing", ["owner", "team"])
def test_registration_refuses_a_missing_owner_or_team_naming_it(
    client: TestClient, org: TenantHandle, missing: str
) -> None:
    body = {"app_id": "a1", "owner": "ann", "team": "web", "cost_center": "lab-cc"}
    del body[missing]
    response = register(client, org, **body)
    assert response.status_code == 422
    assert error_of(response)["field"] == missing
    assert missing in error_of(response)["message"]
    blank = register(client, org, **{**body, missing: "  "})
    assert blank.status_code == 422
    assert error_of(blank) == {
        "code": "invalid_input",
        "message": f"{missing} is missing: every app needs an owner, a team and a cost center",
        "field": missing,
    }


def test_a_missing_cost_center_falls_back_to_the_teams_default_or_is_refused(
    client: TestClient, org: TenantHandle
) -> None:
    inherited = ok(register(client, org, app_id="a1", owner="ann", team="web"), 201)
    assert inherited["cost_center"] == "shop-cc"
    refused = register(client, org, app_id="a2", owner="ann", team="data")
    assert refused.status_code == 422
    assert error_of(refused)["field"] == "cost_center"
    assert error_of(refused)["message"] == (
        "cost_center is missing and team 'data' has no default cost center: "
        "every app needs an owner, a team and a cost center"
    )


def test_unknown_references_duplicates_and_bad_values_are_refused(
    client: TestClient, org: TenantHandle
) -> None:
    base = {"app_id": "a1", "owner": "ann", "team": "web"}
    unknown_team = register(client, org, **{**base, "team": "nope"})
    assert unknown_team.status_code == 422
    assert error_of(unknown_team)["message"] == "unknown team 'nope'"
    assert error_of(unknown_team)["field"] == "team"
    unknown_cc = register(client, org, **base, cost_center="nope")
    assert unknown_cc.status_code == 422
    assert error_of(unknown_cc)["message"] == "unknown cost center 'nope'"
    assert error_of(unknown_cc)["field"] == "cost_center"
    bad_slug = register(client, org, **{**base, "app_id": "Bad App"})
    assert (bad_slug.status_code, error_of(bad_slug)["field"]) == (422, "app_id")
    reserved = register(client, org, **{**base, "app_id": "search"})
    assert (reserved.status_code, error_of(reserved)["field"]) == (422, "app_id")
    assert "reserved" in error_of(reserved)["message"]
    for environment in ("PROD!", "e" * 65):
        bad_env = register(client, org, **base, environment=environment)
        assert (bad_env.status_code, error_of(bad_env)["field"]) == (422, "environment")
        assert "as an event's data.environment is" in error_of(bad_env)["message"]
    bad_lifecycle = register(client, org, **base, lifecycle="forever")
    assert (bad_lifecycle.status_code, error_of(bad_lifecycle)["field"]) == (422, "lifecycle")

    # any environment an event may name (a slug of up to 64 characters) can be an app's
    longest = "eu-west.canary_" + "x" * 49
    assert (
        ok(register(client, org, **{**base, "app_id": "a2"}, environment=longest), 201)[
            "environment"
        ]
        == longest
    )

    ok(register(client, org, **base), 201)
    duplicate = register(client, org, **base)
    assert duplicate.status_code == 409
    assert error_of(duplicate) == {
        "code": "conflict",
        "message": "app 'a1' already exists",
        "field": "app_id",
    }


def test_listing_filters_by_team_cost_center_and_lifecycle(
    client: TestClient, org: TenantHandle
) -> None:
    make_app(client, org, "w1", team="web")
    make_app(client, org, "w2", team="web", cost_center="lab-cc", lifecycle="ephemeral")
    make_app(client, org, "d1", team="data", cost_center="lab-cc")

    def listed(**params: str) -> list[str]:
        return [a["app_id"] for a in ok(client.get("/v1/apps", params=params, headers=org.headers))]

    assert listed() == ["d1", "w1", "w2"]
    assert listed(team="web") == ["w1", "w2"]
    assert listed(cost_center="lab-cc") == ["d1", "w2"]
    assert listed(lifecycle="ephemeral") == ["w2"]
    assert listed(team="data", lifecycle="ephemeral") == []
    # A typo is not an empty team: the filter names what the tenant lacks.
    for field, value in (("team", "wbe"), ("cost_center", "lab-c")):
        typo = client.get("/v1/apps", params={field: value}, headers=org.headers)
        assert typo.status_code == 422, typo.text
        assert error_of(typo)["field"] == field
        assert value in error_of(typo)["message"]
    missing = client.get("/v1/apps/ghost", headers=org.headers)
    assert missing.status_code == 404
    assert error_of(missing)["message"] == "app 'ghost' not found"


def test_listing_pages_by_app_id_with_the_total_on_every_page(
    client: TestClient, org: TenantHandle
) -> None:
    for app_id in ("a1", "a2", "a3", "a4", "a5"):
        make_app(client, org, app_id, team="web")
    make_app(client, org, "d1", team="data", cost_center="lab-cc", title="Payroll 100%_sure Éclair")

    def page(**params: Any) -> tuple[list[str], str | None, str]:
        response = client.get("/v1/apps", params=params, headers=org.headers)
        ids = [a["app_id"] for a in ok(response)]
        return ids, response.headers.get("X-Next-After"), response.headers["X-Total-Count"]

    assert page() == (["a1", "a2", "a3", "a4", "a5", "d1"], None, "6")
    assert page(limit=4) == (["a1", "a2", "a3", "a4"], "a4", "6")
    assert page(limit=4, after="a4") == (["a5", "d1"], None, "6")
    assert page(limit=2, after="a0") == (["a1", "a2"], "a2", "6")  # any id marks a place
    assert page(limit=3, team="web") == (["a1", "a2", "a3"], "a3", "5")
    assert page(limit=5, team="web") == (["a1", "a2", "a3", "a4", "a5"], None, "5")
    # Search: id, title or owner, any case; % and _ are themselves.
    assert page(search="PAYROLL") == (["d1"], None, "1")
    assert page(search="100%_") == (["d1"], None, "1")
    assert page(search="a%") == ([], None, "0")
    # any letter, on SQLite as on PostgreSQL (SQLite's lower() folds ASCII only)
    assert page(search="éCLAIR") == (["d1"], None, "1")
    assert page(search="A", limit=2) == (["a1", "a2"], "a2", "6")  # "a" is in every owner
    # A team-member counts and pages its own team's apps only.
    member = headers_for(client, org, role="team-member", team="data")
    response = client.get("/v1/apps", params={"limit": 1}, headers=member)
    assert [a["app_id"] for a in ok(response)] == ["d1"]
    assert response.headers["X-Total-Count"] == "1"
    assert "X-Next-After" not in response.headers
    for bad in ({"limit": 0}, {"limit": 5001}):
        refused = client.get("/v1/apps", params=bad, headers=org.headers)
        assert refused.status_code == 422, refused.text
        assert error_of(refused)["field"] == "limit"


def test_update_changes_only_what_is_sent(client: TestClient, org: TenantHandle) -> None:
    make_app(client, org, "a1", team="web", title="Old")
    updated = ok(
        client.patch(
            "/v1/apps/a1",
            json={
                "title": "New",
                "owner": "bob",
                "lifecycle": "ephemeral",
                "environment": "dev",
                "require_signatures": True,
            },
            headers=org.headers,
        )
    )
    assert (updated["title"], updated["owner"], updated["lifecycle"]) == ("New", "bob", "ephemeral")
    assert (updated["environment"], updated["require_signatures"]) == ("dev", True)
    assert updated["updated_at"] > updated["created_at"]
    assert len(updated["ownership"]) == 1  # no change of owner, no new span

    null_owner = client.patch("/v1/apps/a1", json={"owner": None}, headers=org.headers)
    assert null_owner.status_code == 422
    assert error_of(null_owner)["field"] == "owner"
    assert "owner may not be null" in error_of(null_owner)["message"]
    blank_owner = client.patch("/v1/apps/a1", json={"owner": " "}, headers=org.headers)
    assert (blank_owner.status_code, error_of(blank_owner)["field"]) == (422, "owner")
    unknown_team = client.patch("/v1/apps/a1", json={"team": "nope"}, headers=org.headers)
    assert error_of(unknown_team)["message"] == "unknown team 'nope'"
    assert client.patch("/v1/apps/ghost", json={"title": "x"}, headers=org.headers).status_code == (
        404
    )


def test_team_members_see_and_register_only_their_own_teams_apps(
    client: TestClient, org: TenantHandle
) -> None:
    make_app(client, org, "data-app", team="data", cost_center="lab-cc")
    member = headers_for(client, org, role="team-member", team="web")
    own = make_app(client, org, "web-app", team="web", headers=member)
    assert own["team"] == "web"

    assert [a["app_id"] for a in ok(client.get("/v1/apps", headers=member))] == ["web-app"]
    assert ok(client.get("/v1/apps/web-app", headers=member))["app_id"] == "web-app"
    for method, path, body in (
        ("GET", "/v1/apps/data-app", None),
        ("PATCH", "/v1/apps/data-app", {"title": "mine now"}),
        (
            "POST",
            "/v1/apps",
            {"app_id": "sneaky", "owner": "x", "team": "data", "cost_center": "lab-cc"},
        ),
        ("GET", "/v1/apps/data-app/signing-keys", None),
        ("POST", "/v1/apps/data-app/signing-keys", None),
    ):
        response = client.request(method, path, json=body, headers=member)
        assert response.status_code == 403, (method, path, response.text)
        assert "role 'team-member' may only" in error_of(response)["message"]

    ok(client.patch("/v1/apps/web-app", json={"title": "Renamed"}, headers=member))
    reassign = client.patch("/v1/apps/web-app", json={"team": "data"}, headers=member)
    assert reassign.status_code == 403
    assert "may not change an app's team or cost center" in error_of(reassign)["message"]


def test_finance_reads_apps_but_cannot_register_or_change_them(
    client: TestClient, org: TenantHandle
) -> None:
    make_app(client, org, "a1", team="web")
    finance = headers_for(client, org, role="finance")
    assert [a["app_id"] for a in ok(client.get("/v1/apps", headers=finance))] == ["a1"]
    assert ok(client.get("/v1/apps/a1/signing-keys", headers=finance)) == []
    for method, path in (("POST", "/v1/apps"), ("PATCH", "/v1/apps/a1")):
        response = client.request(method, path, json={}, headers=finance)
        assert response.status_code == 403
        assert error_of(response)["message"] == (
            "role 'finance' may not do this (needs one of: admin, team-member)"
        )


def test_a_team_member_registers_only_on_a_cost_center_its_team_pays_with(
    client: TestClient, org: TenantHandle
) -> None:
    member = headers_for(client, org, role="team-member", team="web")
    sneaky = {"app_id": "sneaky", "owner": "x", "team": "web", "cost_center": "lab-cc"}
    for body in (sneaky, {**sneaky, "owned_since": "2026-01-01T00:00:00Z"}):
        refused = client.post("/v1/apps", json=body, headers=member)
        assert refused.status_code == 403, refused.text
        assert error_of(refused) == {
            "code": "permission_denied",
            "message": "role 'team-member' may not register an app on cost center 'lab-cc' "
            "(only admin may: it decides who pays); a team-member registers on its team's "
            "default cost center or one its team's apps are on, and team 'web' may use: "
            "'shop-cc'",
            "field": "cost_center",
        }
    assert client.get("/v1/apps/sneaky", headers=org.headers).status_code == 404
    assert make_app(client, org, "own", team="web", cost_center="shop-cc", headers=member)
    # An admin put one of web's apps on lab-cc: web pays with it, and its members may use it.
    make_app(client, org, "lab-app", team="web", cost_center="lab-cc")
    assert make_app(client, org, "sneaky", team="web", cost_center="lab-cc", headers=member)


def test_a_team_member_of_a_team_without_cost_centers_is_told_to_ask_an_admin(
    client: TestClient, org: TenantHandle
) -> None:
    member = headers_for(client, org, role="team-member", team="data")
    body = {"app_id": "a1", "owner": "x", "team": "data", "cost_center": "lab-cc"}
    refused = client.post("/v1/apps", json=body, headers=member)
    assert refused.status_code == 403
    assert error_of(refused)["message"].endswith(
        "team 'data' has no default cost center and no apps yet (an admin registers its first app)"
    )
    assert make_app(client, org, "a1", team="data", cost_center="lab-cc")["cost_center"] == "lab-cc"


def test_a_title_over_200_characters_is_refused_not_cut(
    client: TestClient, org: TenantHandle
) -> None:
    long = register(client, org, app_id="a1", owner="ann", team="web", title="t" * 201)
    assert long.status_code == 422
    assert error_of(long) == {
        "code": "invalid_input",
        "message": "title has 201 characters; at most 200 are accepted",
        "field": "title",
    }
    assert client.get("/v1/apps/a1", headers=org.headers).status_code == 404
    created = ok(register(client, org, app_id="a1", owner="ann", team="web", title="t" * 200), 201)
    assert created["title"] == "t" * 200


@pytest.mark.parametrize(
    ("field", "value", "named"),
    [
        # NUL is refused before any route runs (api/text_guard.py; tests/api/test_errors.py).
        ("owner", "ann\x01@example.com", "U+0001 (a control character) at position 4"),
        ("owner", "ann\nbob", "U+000A (a control character) at position 4"),
        ("title", "Invoice \u202etob", "U+202E (RIGHT-TO-LEFT OVERRIDE) at position 9"),
        ("title", "a\u2066b", "U+2066 (LEFT-TO-RIGHT ISOLATE)"),
        ("title", "a\x9bb", "U+009B"),
    ],
)
def test_control_and_bidi_characters_are_refused_in_titles_and_owners(
    client: TestClient, org: TenantHandle, field: str, value: str, named: str
) -> None:
    body = {"app_id": "a1", "owner": "ann", "team": "web", field: value}
    refused = register(client, org, **body)
    assert refused.status_code == 422, refused.text
    assert error_of(refused)["field"] == field
    assert error_of(refused)["message"].startswith(f"{field} contains {named}")
    assert "not allowed in an app's title or owner" in error_of(refused)["message"]
    ok(register(client, org, app_id="a1", owner="ann", team="web"), 201)
    changed = client.patch("/v1/apps/a1", json={field: value}, headers=org.headers)
    assert (changed.status_code, error_of(changed)["field"]) == (422, field)
    assert ok(client.get("/v1/apps/a1", headers=org.headers))[field] != value


@pytest.mark.parametrize("field", ["owner", "title"])
@pytest.mark.parametrize("value", ["\u200b", " \u200c\u200d ", "\u2060", "\ufeff", "\u200b\t"])
def test_a_name_of_only_invisible_format_characters_is_missing(
    client: TestClient, org: TenantHandle, field: str, value: str
) -> None:
    """`str.strip()` keeps U+200B ZERO WIDTH SPACE and the other format characters (Cf): a
    name of only them and whitespace passed the blank check and showed as an empty cell."""
    body = {"app_id": "a1", "owner": "ann", "team": "web", field: value}
    refused = register(client, org, **body)
    assert refused.status_code == 422, refused.text
    assert error_of(refused)["field"] == field
    assert error_of(refused)["message"].startswith(
        f"{field} is missing: it holds only whitespace and invisible format characters (U+"
    )
    ok(register(client, org, app_id="a1", owner="ann", team="web"), 201)
    changed = client.patch("/v1/apps/a1", json={field: value}, headers=org.headers)
    assert (changed.status_code, error_of(changed)["field"]) == (422, field)
    assert error_of(changed)["message"].startswith(f"{field} is missing: ")
    # A visible name with a format character in it is a name.
    joined = ok(client.patch("/v1/apps/a1", json={field: "ann\u200bmarie"}, headers=org.headers))
    assert joined[field] == "ann\u200bmarie"
