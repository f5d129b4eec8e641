from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from quartermaster.catalog.lease_tokens import verify_token
from quartermaster.catalog.resources import resource_bindings_for_tenant, resource_owner_at
from quartermaster.domain.timeutil import Period
from quartermaster.runtime import Runtime
from tests.conftest import TenantHandle
from tests.tenancy.support import headers_for, make_app, make_team, ok

JAN = datetime(2025, 1, 1, tzinfo=UTC)
FEB = datetime(2025, 2, 1, tzinfo=UTC)
MAR = datetime(2025, 3, 1, tzinfo=UTC)
SKEW = timedelta(seconds=300)  # QM_MAX_FUTURE_SKEW_SECONDS' default


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
def org(client: TestClient, tenant: TenantHandle) -> TenantHandle:
    make_team(client, tenant, "web")
    make_team(client, tenant, "data")
    make_app(client, tenant, "shop", team="web", cost_center="default", environment="staging")
    make_app(client, tenant, "etl", team="data", cost_center="default")
    return tenant


def bind(client: TestClient, tenant: TenantHandle, **body: Any) -> Any:
    return client.post("/v1/resources", json=body, headers=tenant.headers)


def lease(client: TestClient, tenant: TenantHandle, **body: Any) -> Any:
    return client.post("/v1/resource-leases", json=body, headers=tenant.headers)


def test_bindings_are_dated_and_never_overlap(
    client: TestClient, org: TenantHandle, runtime: Runtime
) -> None:
    first = ok(
        bind(
            client, org, resource_id="vm-1", app_id="shop", valid_from=iso(JAN), valid_to=iso(FEB)
        ),
        201,
    )
    assert first == {
        "resource_id": "vm-1",
        "app_id": "shop",
        "environment": "staging",  # the app's, unless given
        "valid_from": iso(JAN),
        "valid_to": iso(FEB),
        "lease_id": None,
    }
    # Adjacent intervals do not overlap: [JAN, FEB) then [FEB, open).
    ok(bind(client, org, resource_id="vm-1", app_id="etl", valid_from=iso(FEB)), 201)

    clash = bind(
        client,
        org,
        resource_id="vm-1",
        app_id="etl",
        valid_from="2025-01-20T00:00:00Z",
        valid_to="2025-01-25T00:00:00Z",
    )
    assert clash.status_code == 409
    assert clash.json()["error"]["message"] == (
        "resource 'vm-1' is already bound to app 'shop' over "
        "[2025-01-01 00:00 UTC, 2025-02-01 00:00 UTC), which overlaps "
        "[2025-01-20 00:00 UTC, 2025-01-25 00:00 UTC)"
    )
    open_clash = bind(client, org, resource_id="vm-1", app_id="shop", valid_from=iso(MAR))
    assert open_clash.status_code == 409
    assert "over [2025-02-01 00:00 UTC, open)" in open_clash.json()["error"]["message"]

    with runtime.session_factory() as session:

        def owner(at: datetime) -> str | None:
            return resource_owner_at(org.tenant_id, "vm-1", at, session=session)

        assert owner(JAN - timedelta(seconds=1)) is None
        assert owner(JAN) == "shop"
        assert owner(FEB - timedelta(microseconds=1)) == "shop"
        assert owner(FEB) == "etl"
        assert resource_owner_at(org.tenant_id, "vm-2", FEB, session=session) is None
        assert resource_owner_at("another-tenant", "vm-1", FEB, session=session) is None
        in_january = resource_bindings_for_tenant(
            org.tenant_id, period=Period(JAN, FEB), session=session
        )
        assert [(b.resource_id, b.app_id) for b in in_january] == [("vm-1", "shop")]

    listed = ok(client.get("/v1/resources", params={"resource_id": "vm-1"}, headers=org.headers))
    assert [(r["app_id"], r["valid_from"]) for r in listed] == [
        ("shop", iso(JAN)),
        ("etl", iso(FEB)),
    ]
    assert (
        ok(client.get("/v1/resources", params={"resource_id": "nope"}, headers=org.headers)) == []
    )


def test_binding_input_is_validated(client: TestClient, org: TenantHandle) -> None:
    def refused(**body: Any) -> dict[str, str]:
        response = bind(client, org, **body)
        assert response.status_code == 422, response.text
        error: dict[str, str] = response.json()["error"]
        return error

    backwards = refused(resource_id="r", app_id="shop", valid_from=iso(FEB), valid_to=iso(JAN))
    assert backwards["field"] == "valid_to"
    assert "is not after valid_from" in backwards["message"]
    empty = refused(resource_id="r", app_id="shop", valid_from=iso(JAN), valid_to=iso(JAN))
    assert empty["field"] == "valid_to"
    unknown = refused(resource_id="r", app_id="ghost")
    assert (unknown["field"], unknown["message"]) == ("app_id", "unknown app 'ghost'")
    assert refused(resource_id=" ", app_id="shop")["field"] == "resource_id"
    assert (
        refused(resource_id="r", app_id="shop", valid_from="2025-01-01T00:00:00")["field"]
        == "valid_from"
    )
    assert refused(resource_id="r", app_id="shop", environment="Prod!")["field"] == "environment"
    assert refused(app_id="shop")["field"] == "resource_id"


def test_a_lease_binds_a_short_lived_resource_for_its_lifetime(
    client: TestClient, org: TenantHandle, runtime: Runtime
) -> None:
    before = datetime.now(UTC).replace(microsecond=0)
    issued = ok(lease(client, org, resource_id="job-7", app_id="etl", ttl_seconds=600), 201)
    issued_at = datetime.fromisoformat(issued["issued_at"])
    expires_at = datetime.fromisoformat(issued["expires_at"])
    assert before <= issued_at <= datetime.now(UTC)
    assert expires_at - issued_at == timedelta(seconds=600)

    claims = verify_token(issued["token"], server_key=runtime.server_key, tenant_id=org.tenant_id)
    assert (claims.lease_id, claims.resource_id, claims.app_id) == (
        issued["lease_id"],
        "job-7",
        "etl",
    )
    assert (claims.issued_at, claims.expires_at) == (issued_at, expires_at)

    binding = ok(client.get("/v1/resources", params={"resource_id": "job-7"}, headers=org.headers))
    assert binding == [
        {
            "resource_id": "job-7",
            "app_id": "etl",
            "environment": "production",
            "valid_from": issued["issued_at"],
            "valid_to": issued["expires_at"],
            "lease_id": issued["lease_id"],
        }
    ]
    # While leased, nothing else may claim the resource.
    taken = bind(client, org, resource_id="job-7", app_id="shop")
    assert taken.status_code == 409
    assert "already bound to app 'etl'" in taken.json()["error"]["message"]
    assert lease(client, org, resource_id="job-7", app_id="shop", ttl_seconds=60).status_code == 409

    ended = ok(client.delete(f"/v1/resource-leases/{issued['lease_id']}", headers=org.headers))
    ended_at = datetime.fromisoformat(ended["ended_at"])
    assert issued_at <= ended_at < expires_at
    shown = ok(client.get(f"/v1/resource-leases/{issued['lease_id']}", headers=org.headers))
    assert shown == ended
    # Ending again changes nothing.
    again = ok(client.delete(f"/v1/resource-leases/{issued['lease_id']}", headers=org.headers))
    assert again["ended_at"] == ended["ended_at"]

    # The lease is revoked now, but its binding ends at now + the future skew (300 s), in
    # whole seconds: events stamped up to then may already be accepted and rated under it.
    [after] = ok(client.get("/v1/resources", params={"resource_id": "job-7"}, headers=org.headers))
    bound_until = datetime.fromisoformat(after["valid_to"])
    assert bound_until.microsecond == 0
    assert ended_at + SKEW <= bound_until < ended_at + SKEW + timedelta(seconds=1)
    with runtime.session_factory() as session:
        # Events from while it ran stay attributable after it is gone; later ones are not.
        assert resource_owner_at(org.tenant_id, "job-7", issued_at, session=session) == "etl"
        ahead = ended_at + timedelta(seconds=200)
        assert resource_owner_at(org.tenant_id, "job-7", ahead, session=session) == "etl"
        assert resource_owner_at(org.tenant_id, "job-7", bound_until, session=session) is None
    # Before the binding's end the resource id is still taken; from it on, it may be bound.
    early = bind(client, org, resource_id="job-7", app_id="shop", valid_from=ended["ended_at"])
    assert early.status_code == 409
    ok(bind(client, org, resource_id="job-7", app_id="shop", valid_from=after["valid_to"]), 201)


def test_ending_a_lease_that_expires_within_the_skew_ends_its_binding_at_expiry(
    client: TestClient, org: TenantHandle
) -> None:
    issued = ok(lease(client, org, resource_id="job-s", app_id="etl", ttl_seconds=60), 201)
    ok(client.delete(f"/v1/resource-leases/{issued['lease_id']}", headers=org.headers))
    [after] = ok(client.get("/v1/resources", params={"resource_id": "job-s"}, headers=org.headers))
    assert after["valid_to"] == issued["expires_at"]


def test_a_lease_issued_a_few_milliseconds_ago_is_not_in_the_future(
    client: TestClient, org: TenantHandle
) -> None:
    just_now = datetime.now(UTC) - timedelta(milliseconds=3)
    issued = ok(
        lease(
            client,
            org,
            resource_id="job-ms",
            app_id="etl",
            ttl_seconds=60,
            issued_at=just_now.isoformat(),
        ),
        201,
    )
    assert datetime.fromisoformat(issued["issued_at"]) == just_now.replace(microsecond=0)


def test_lease_input_and_unknown_leases(client: TestClient, org: TenantHandle) -> None:
    too_long = lease(client, org, resource_id="j", app_id="etl", ttl_seconds=7 * 24 * 3600 + 1)
    assert too_long.status_code == 422
    assert too_long.json()["error"]["field"] == "ttl_seconds"
    assert "604800" in too_long.json()["error"]["message"]
    zero = lease(client, org, resource_id="j", app_id="etl", ttl_seconds=0)
    assert (zero.status_code, zero.json()["error"]["field"]) == (422, "ttl_seconds")
    ghost_app = lease(client, org, resource_id="j", app_id="ghost", ttl_seconds=60)
    assert ghost_app.json()["error"] == {
        "code": "invalid_input",
        "message": "unknown app 'ghost'",
        "field": "app_id",
    }
    for method in ("GET", "DELETE"):
        missing = client.request(method, "/v1/resource-leases/nope", headers=org.headers)
        assert missing.status_code == 404
        assert missing.json()["error"]["message"] == "resource lease 'nope' not found"


def test_team_members_bind_and_lease_only_for_their_own_team(
    client: TestClient, org: TenantHandle
) -> None:
    member = headers_for(client, org, role="team-member", team="web")
    ok(
        client.post(
            "/v1/resources", json={"resource_id": "r-web", "app_id": "shop"}, headers=member
        ),
        201,
    )
    ok(bind(client, org, resource_id="r-data", app_id="etl"), 201)
    etl_lease = ok(lease(client, org, resource_id="j-data", app_id="etl", ttl_seconds=60), 201)

    listed = ok(client.get("/v1/resources", headers=member))
    assert [r["resource_id"] for r in listed] == ["r-web"]
    for method, path, body in (
        ("POST", "/v1/resources", {"resource_id": "r2", "app_id": "etl"}),
        ("POST", "/v1/resource-leases", {"resource_id": "j2", "app_id": "etl", "ttl_seconds": 60}),
        ("DELETE", f"/v1/resource-leases/{etl_lease['lease_id']}", None),
        ("GET", f"/v1/resource-leases/{etl_lease['lease_id']}", None),
    ):
        response = client.request(method, path, json=body, headers=member)
        assert response.status_code == 403, (method, path, response.text)
        assert "role 'team-member' may only" in response.json()["error"]["message"]
    finance = headers_for(client, org, role="finance")
    assert len(ok(client.get("/v1/resources", headers=finance))) == 3
    refused = client.post(
        "/v1/resources", json={"resource_id": "x", "app_id": "shop"}, headers=finance
    )
    assert refused.status_code == 403


def end(client: TestClient, headers: dict[str, str], **body: Any) -> Any:
    return client.post("/v1/resources/end", json=body, headers=headers)


def test_an_open_binding_is_ended_and_the_resource_moves_to_another_app(
    client: TestClient, org: TenantHandle, runtime: Runtime
) -> None:
    ok(bind(client, org, resource_id="vm-9", app_id="shop", valid_from=iso(JAN)), 201)
    move_at = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    ended = ok(end(client, org.headers, resource_id="vm-9", at=iso(move_at)))
    assert ended == {
        "resource_id": "vm-9",
        "app_id": "shop",
        "environment": "staging",
        "valid_from": iso(JAN),
        "valid_to": iso(move_at),
        "lease_id": None,
    }
    ok(bind(client, org, resource_id="vm-9", app_id="etl", valid_from=iso(move_at)), 201)
    with runtime.session_factory() as session:
        before = resource_owner_at(
            org.tenant_id, "vm-9", move_at - timedelta(seconds=1), session=session
        )
        after = resource_owner_at(org.tenant_id, "vm-9", move_at, session=session)
    assert (before, after) == ("shop", "etl")
    # now is the default; etl's binding ends before it begins: none is in force then
    now_ended = ok(
        end(client, org.headers, resource_id="vm-9", at=iso(move_at + timedelta(days=1)))
    )
    assert now_ended["app_id"] == "etl"
    missing = end(client, org.headers, resource_id="vm-9", at=iso(move_at + timedelta(days=2)))
    assert missing.status_code == 404
    assert missing.json()["error"]["field"] == "resource_id"
    assert "has no binding in force at" in missing.json()["error"]["message"]
    at_start = end(client, org.headers, resource_id="vm-9", at=iso(move_at))
    assert at_start.status_code == 422  # etl's binding starts then: none is in force before
    assert "starts at" in at_start.json()["error"]["message"]


def test_a_binding_ends_no_sooner_than_now_plus_the_future_skew(
    client: TestClient, org: TenantHandle, runtime: Runtime
) -> None:
    """Ingest accepts events stamped up to 300 s ahead and rates them under the binding in
    force then: ending it sooner made a replay attribute them to the next binding."""
    before = datetime.now(UTC)
    bound = ok(bind(client, org, resource_id="vm-10", app_id="shop"), 201)
    assert datetime.fromisoformat(bound["valid_from"]).microsecond == 0
    ended_now = ok(end(client, org.headers, resource_id="vm-10"))
    until = datetime.fromisoformat(ended_now["valid_to"])
    assert until.microsecond == 0
    assert before + SKEW <= until <= datetime.now(UTC) + SKEW + timedelta(seconds=1)
    with runtime.session_factory() as session:
        ahead = before + timedelta(seconds=200)
        assert resource_owner_at(org.tenant_id, "vm-10", ahead, session=session) == "shop"
    # The listed end is where the next binding may start, and a clash names it as listed.
    [listed] = ok(client.get("/v1/resources", params={"resource_id": "vm-10"}, headers=org.headers))
    assert listed["valid_to"] == ended_now["valid_to"]
    ok(bind(client, org, resource_id="vm-10", app_id="etl", valid_from=listed["valid_to"]), 201)

    ok(bind(client, org, resource_id="vm-11", app_id="shop", valid_from=iso(JAN)), 201)
    too_soon = datetime.now(UTC) + timedelta(seconds=60)
    refused = end(client, org.headers, resource_id="vm-11", at=iso(too_soon))
    assert refused.status_code == 422
    error = refused.json()["error"]
    assert error["field"] == "at"
    assert "is before" in error["message"]
    assert (
        "the server's now plus 300 s: events stamped up to that far ahead are already "
        in (error["message"])
    )
    assert "accepted and rated under the binding" in error["message"]
    later = datetime.now(UTC).replace(microsecond=0) + SKEW + timedelta(seconds=30)
    assert ok(end(client, org.headers, resource_id="vm-11", at=iso(later)))["valid_to"] == iso(
        later
    )


def test_ending_a_binding_refuses_the_past_a_lease_and_another_team(
    client: TestClient, org: TenantHandle
) -> None:
    ok(bind(client, org, resource_id="vm-p", app_id="shop", valid_from=iso(JAN)), 201)
    past = end(client, org.headers, resource_id="vm-p", at="2025-02-01T01:00:00+01:00")
    assert past.status_code == 422
    assert past.json()["error"]["field"] == "at"
    assert past.json()["error"]["message"].startswith("at 2025-02-01 00:00 UTC is before ")
    leased = ok(lease(client, org, resource_id="job-1", app_id="shop", ttl_seconds=600), 201)
    refused = end(client, org.headers, resource_id="job-1")
    assert refused.status_code == 409
    assert (
        f"end the lease instead (qm resource end-lease {leased['lease_id']})"
        in (refused.json()["error"]["message"])
    )
    member = headers_for(client, org, role="team-member", team="data")
    other_team = end(client, member, resource_id="vm-p")
    assert other_team.status_code == 403
    assert "role 'team-member' may only" in other_team.json()["error"]["message"]
    finance = headers_for(client, org, role="finance")
    assert end(client, finance, resource_id="vm-p").status_code == 403
    assert (
        ok(client.get("/v1/resources", params={"resource_id": "vm-p"}, headers=org.headers))[0][
            "valid_to"
        ]
        is None
    )


def test_a_team_member_is_not_told_another_teams_binding(
    client: TestClient, org: TenantHandle
) -> None:
    """A clash with another team's binding is refused without naming its app or its times (a
    team-member may not read them); the team's own clashes and an admin's keep the detail."""
    ok(bind(client, org, resource_id="res-b", app_id="etl", valid_from=iso(JAN)), 201)
    later = datetime.now(UTC).replace(microsecond=0) + timedelta(hours=1)
    ok(bind(client, org, resource_id="res-f", app_id="etl", valid_from=iso(later)), 201)
    leased = ok(lease(client, org, resource_id="job-b", app_id="etl", ttl_seconds=600), 201)
    member = headers_for(client, org, role="team-member", team="web")
    for path, body in (
        ("/v1/resources", {"resource_id": "res-b", "app_id": "shop"}),
        ("/v1/resource-leases", {"resource_id": "res-b", "app_id": "shop", "ttl_seconds": 60}),
        ("/v1/resource-leases", {"resource_id": "job-b", "app_id": "shop", "ttl_seconds": 60}),
    ):
        refused = client.post(path, json=body, headers=member)
        assert refused.status_code == 409, (path, refused.text)
        message = refused.json()["error"]["message"]
        resource = body["resource_id"]
        assert message == (
            f"resource {resource!r} is bound to an app of another team over an overlapping interval"
        )
    # ending another team's binding or lease, or reading the lease: refused, naming neither
    for method, path, end_body in (
        ("POST", "/v1/resources/end", {"resource_id": "res-b"}),
        ("POST", "/v1/resources/end", {"resource_id": "res-f", "at": iso(later)}),
        ("DELETE", f"/v1/resource-leases/{leased['lease_id']}", None),
        ("GET", f"/v1/resource-leases/{leased['lease_id']}", None),
    ):
        response = client.request(method, path, json=end_body, headers=member)
        assert response.status_code == 403, (method, path, response.text)
        message = response.json()["error"]["message"]
        assert message.startswith("role 'team-member' may only"), message
        assert "etl" not in message, message
        assert "UTC" not in message, message
    # The team's own clash, and an admin's, name the app and its interval.
    ok(bind(client, org, resource_id="res-w", app_id="shop", valid_from=iso(JAN)), 201)
    own = client.post(
        "/v1/resources", json={"resource_id": "res-w", "app_id": "shop"}, headers=member
    )
    assert own.status_code == 409
    assert own.json()["error"]["message"].startswith(
        "resource 'res-w' is already bound to app 'shop' over [2025-01-01 00:00 UTC, open)"
    )
    admin = bind(client, org, resource_id="res-b", app_id="shop")
    assert admin.status_code == 409
    assert admin.json()["error"]["message"].startswith(
        "resource 'res-b' is already bound to app 'etl' over [2025-01-01 00:00 UTC, open)"
    )
