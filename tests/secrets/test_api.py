"""The HTTP API of the broker: every operation through its route, the error bodies of each
denial, and the audit endpoints."""

from __future__ import annotations

from fastapi.testclient import TestClient

from quartermaster.audit.log import list_records
from quartermaster.runtime import Runtime
from quartermaster.tenancy.models import Role
from tests.secrets.conftest import World, api_key

PATH = "apps/billing/db-password"


def _put(client: TestClient, world: World, path: str, value: str, **extra: object) -> dict:  # type: ignore[type-arg]
    response = client.put(
        f"/v1/secrets/data/{path}", json={"value": value, **extra}, headers=world.headers
    )
    assert response.status_code == 200, response.text
    return dict(response.json())


def test_kv_lifecycle_over_http(client: TestClient, world: World) -> None:
    h = world.headers
    assert _put(client, world, PATH, "first-value")["version"] == 1
    assert _put(client, world, PATH, "second-value", cas=1)["version"] == 2
    conflict = client.put(
        f"/v1/secrets/data/{PATH}", json={"value": "x-value", "cas": 1}, headers=h
    )
    assert conflict.status_code == 409
    assert conflict.json()["error"]["message"] == (
        f"check-and-set failed for {PATH!r}: cas=1 but the current version is 2"
    )
    read = client.get(f"/v1/secrets/data/{PATH}", params={"version": 1}, headers=h).json()
    assert (read["version"], read["value"]) == (1, "first-value")
    listing = client.get("/v1/secrets/metadata", params={"prefix": "apps/"}, headers=h).json()
    assert [s["path"] for s in listing["secrets"]] == [PATH]
    assert "value" not in listing["secrets"][0]
    meta = client.get(f"/v1/secrets/metadata/{PATH}", headers=h).json()
    assert [v["version"] for v in meta["versions"]] == [1, 2]
    deleted = client.post(f"/v1/secrets/delete/{PATH}", json={}, headers=h).json()
    assert deleted["versions"][0]["deleted_at"] is not None
    gone = client.get(f"/v1/secrets/data/{PATH}", headers=h)
    assert gone.status_code == 404
    assert "is deleted" in gone.json()["error"]["message"]
    client.post(f"/v1/secrets/undelete/{PATH}", json={"versions": [2]}, headers=h)
    assert client.get(f"/v1/secrets/data/{PATH}", headers=h).json()["value"] == "second-value"
    destroyed = client.post(f"/v1/secrets/destroy/{PATH}", json={"versions": [1]}, headers=h)
    assert destroyed.json()["versions"][0]["destroyed_at"] is not None
    rotated = client.post(f"/v1/secrets/rotate/{PATH}", json={"value": "third-value"}, headers=h)
    assert rotated.json()["version"]["version"] == 3
    # Two reads were leased; destroying version 1 already ended its lease.
    assert rotated.json()["revoked_leases"] == 1


def test_lease_routes(client: TestClient, world: World) -> None:
    h = world.headers
    _put(client, world, PATH, "lease-me-value")
    lease = client.get(f"/v1/secrets/data/{PATH}", params={"ttl_seconds": 30}, headers=h).json()[
        "lease"
    ]
    assert lease["ttl"] <= 30
    assert lease["max_ttl"] == 86_400
    one = client.get(f"/v1/leases/{lease['id']}", headers=h).json()
    assert one["state"] == "active"
    renewed = client.post(
        f"/v1/leases/{lease['id']}/renew", json={"increment_seconds": 120}, headers=h
    ).json()
    assert 110 <= renewed["ttl"] <= 120
    revoked = client.post(f"/v1/leases/{lease['id']}/revoke", headers=h).json()
    assert revoked["status"] == "revoked"
    again = client.post(f"/v1/leases/{lease['id']}/revoke", headers=h).json()
    assert again["status"] == "already_ended"
    denied = client.post(f"/v1/leases/{lease['id']}/renew", json={}, headers=h)
    assert denied.status_code == 409
    assert "cannot be renewed" in denied.json()["error"]["message"]
    for _ in range(3):
        client.get(f"/v1/secrets/data/{PATH}", headers=h)
    listed = client.get("/v1/leases", params={"prefix": "apps/billing"}, headers=h).json()
    assert len(listed["leases"]) == 3
    prefix = client.post(
        "/v1/leases/revoke-prefix", json={"prefix": "apps/billing/"}, headers=h
    ).json()
    assert prefix["revoked"] == 3
    assert client.get("/v1/leases", headers=h).json()["leases"] == []


def test_wrong_tenant_gets_nothing(client: TestClient, make_world: object, world: World) -> None:
    assert callable(make_world)
    other: World = make_world()
    _put(client, world, PATH, "tenant-a-only")
    lease_id = client.get(f"/v1/secrets/data/{PATH}", headers=world.headers).json()["lease"]["id"]
    assert client.get(f"/v1/secrets/data/{PATH}", headers=other.headers).status_code == 404
    assert client.get(f"/v1/secrets/metadata/{PATH}", headers=other.headers).status_code == 404
    assert client.get("/v1/secrets/metadata", headers=other.headers).json()["secrets"] == []
    assert client.get(f"/v1/leases/{lease_id}", headers=other.headers).status_code == 404
    foreign = client.post(f"/v1/leases/{lease_id}/revoke", headers=other.headers).json()
    assert foreign["status"] == "not_found"
    assert client.get(f"/v1/leases/{lease_id}", headers=world.headers).json()["state"] == "active"
    assert (
        client.post(
            "/v1/leases/revoke-prefix", json={"prefix": "apps/"}, headers=other.headers
        ).json()["revoked"]
        == 0
    )


def test_role_denials_are_403_and_named(client: TestClient, world: World, runtime: Runtime) -> None:
    _put(client, world, PATH, "payments-value")
    finance = api_key(runtime, world.tenant_id, "fin", Role.FINANCE)
    growth = api_key(
        runtime, world.tenant_id, "gus", Role.TEAM_MEMBER, team_id=world.growth_team_id
    )
    app_key = api_key(runtime, world.tenant_id, "web-svc", Role.APP, app_slug="web")
    for headers, expected in (
        (finance, "role 'finance' has no access to secrets"),
        (growth, "apps/billing/ does not belong to your team"),
        (app_key, "no access rule lets app:web read"),
    ):
        response = client.get(f"/v1/secrets/data/{PATH}", headers=headers)
        assert response.status_code == 403
        assert expected in response.json()["error"]["message"]
    engine = client.put(f"/v1/secrets/engines/{PATH}", json={"grants": []}, headers=growth)
    assert engine.status_code == 403
    # Finance may use nothing: listing is refused (and audited) as reading is, not an empty list.
    for listing in ("/v1/secrets/metadata", "/v1/leases?prefix=apps/billing"):
        response = client.get(listing, headers=finance)
        assert response.status_code == 403, response.text
        assert "role 'finance' has no access to secrets" in response.json()["error"]["message"]
    with runtime.session_factory() as session:
        records = list_records(world.tenant_id, action="list", session=session)
    assert [(s.record.outcome, s.record.path) for s in records] == [
        ("denied", None),
        ("denied", "apps/billing"),
    ]
    unauthenticated = client.get(f"/v1/secrets/data/{PATH}")
    assert unauthenticated.status_code == 401


def test_quota_over_http_is_429_with_retry_after(
    client: TestClient, world: World, runtime: Runtime
) -> None:
    from quartermaster.secrets.models import SecretLease

    _put(client, world, PATH, "hot-value")
    headers = api_key(runtime, world.tenant_id, "billing-svc", Role.APP, app_slug="billing")
    quota = client.app.state.runtime.settings.secrets_max_leases_per_app  # type: ignore[attr-defined]
    first = client.get(f"/v1/secrets/data/{PATH}", headers=headers)
    assert first.status_code == 200
    with runtime.session_factory() as session:
        template = session.get(SecretLease, first.json()["lease"]["id"])
        assert template is not None
        for index in range(quota - 1):  # fill the quota without 200 HTTP round trips
            session.add(
                SecretLease(
                    id=f"filler-{world.tenant_id}-{index}",
                    tenant_id=template.tenant_id,
                    kind="kv",
                    path=PATH,
                    version=1,
                    holder=template.holder,
                    actor=template.actor,
                    state="active",
                    issued_at=template.issued_at,
                    expires_at=template.expires_at,
                    max_expires_at=template.max_expires_at,
                    cleanup_pending=False,
                )
            )
        session.commit()
    refused = client.get(f"/v1/secrets/data/{PATH}", headers=headers)
    assert refused.status_code == 429
    assert "secrets_max_leases_per_app" in refused.json()["error"]["message"]
    assert int(refused.headers["Retry-After"]) >= 1


def test_validation_errors_name_the_field(client: TestClient, world: World) -> None:
    h = world.headers
    bad_path = client.put("/v1/secrets/data/prod/db", json={"value": "v-value"}, headers=h)
    assert bad_path.status_code == 422
    assert bad_path.json()["error"]["field"] == "path"
    too_big = client.put(f"/v1/secrets/data/{PATH}", json={"value": "x" * 70_000}, headers=h)
    assert too_big.status_code == 422
    assert "at most 65536" in too_big.json()["error"]["message"]
    grants = client.put(
        "/v1/secrets/engines/apps/billing/db",
        json={
            "grants": [{"on": "schema", "name": "public", "privileges": ["DROP"]}],
            "connection_url": "postgresql://x@127.0.0.1/db",
        },
        headers=h,
    )
    assert grants.status_code == 422
    assert "DROP" in grants.json()["error"]["message"]


def test_audit_routes_list_and_verify(client: TestClient, world: World) -> None:
    h = world.headers
    _put(client, world, PATH, "audited-value")
    client.get(f"/v1/secrets/data/{PATH}", headers=h)
    page = client.get("/v1/audit/records", headers=h).json()
    actions = [r["action"] for r in page["records"]]
    assert actions == ["write", "read"]
    assert page["head_seq"] == 2
    assert "audited-value" not in str(page)
    assert page["records"][0]["detail"]["value_hmac"] == page["records"][1]["detail"]["value_hmac"]
    verified = client.get("/v1/audit/verify", headers=h).json()
    assert (verified["ok"], verified["checked"]) == (True, 2)


def test_scan_matching_endpoints(client: TestClient, world: World) -> None:
    from quartermaster.secrets.envelope import fingerprint

    h = world.headers
    assert client.get("/v1/secrets/fingerprint-key", headers=h).json()["key"] is None
    _put(client, world, PATH, "leaked-in-git-9f8e7d")
    key = bytes.fromhex(client.get("/v1/secrets/fingerprint-key", headers=h).json()["key"])
    found = client.post(
        "/v1/secrets/match",
        json={"fingerprints": [fingerprint(key, "leaked-in-git-9f8e7d"), fingerprint(key, "x")]},
        headers=h,
    ).json()["matches"]
    assert [(m["path"], m["version"], m["is_current"]) for m in found] == [(PATH, 1, True)]
    malformed = client.post("/v1/secrets/match", json={"fingerprints": ["zz"]}, headers=h)
    assert malformed.status_code == 422


def test_redact_endpoint_streams(client: TestClient, world: World) -> None:
    h = world.headers
    _put(client, world, PATH, "hunter2-is-the-password")
    client.get(f"/v1/secrets/data/{PATH}", headers=h)  # now it is leased

    def chunks() -> object:
        yield b"login with hunter2-is-"
        yield b"the-password and go\n"
        yield "caf\u00e9".encode()[:4]
        yield "caf\u00e9".encode()[4:]

    response = client.post("/v1/secrets/redact", content=chunks(), headers=h)  # type: ignore[arg-type]
    assert response.status_code == 200
    assert response.text == "login with [REDACTED] and go\ncaf\u00e9"


def test_a_fresh_lease_reports_the_ttl_granted(client: TestClient, world: World) -> None:
    """The seconds left are rounded up: a fresh 900 s lease said 899, a 1 s lease 0."""
    _put(client, world, PATH, "ttl-value")
    default = client.get(f"/v1/secrets/data/{PATH}", headers=world.headers).json()["lease"]
    assert default["ttl"] == 900
    one = client.get(
        f"/v1/secrets/data/{PATH}", params={"ttl_seconds": 1}, headers=world.headers
    ).json()["lease"]
    assert one["ttl"] == 1
    listed = client.get("/v1/leases", headers=world.headers).json()["leases"]
    assert 899 <= max(lease["ttl"] for lease in listed) <= 900


def test_a_version_past_64_bits_is_a_422_naming_it(client: TestClient, world: World) -> None:
    """Bound to SQL's BIGINT: a larger one overflowed the driver (a 500 in text/plain)."""
    _put(client, world, PATH, "first-value")
    huge = 10**25
    h = world.headers
    calls = [
        (client.get(f"/v1/secrets/data/{PATH}", params={"version": huge}, headers=h), "version"),
        (
            client.post(f"/v1/secrets/destroy/{PATH}", json={"versions": [huge]}, headers=h),
            "versions.0",
        ),
        (
            client.post(f"/v1/secrets/delete/{PATH}", json={"versions": [huge]}, headers=h),
            "versions.0",
        ),
        (
            client.put(f"/v1/secrets/data/{PATH}", json={"value": "v", "cas": huge}, headers=h),
            "cas",
        ),
    ]
    for response, field in calls:
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == field
    assert client.get(f"/v1/secrets/data/{PATH}", headers=h).json()["value"] == "first-value"


def test_unmounting_an_engine_that_is_not_mounted_is_404(client: TestClient, world: World) -> None:
    h = world.headers
    url = "/v1/secrets/engines/apps/billing/db"
    never = client.delete("/v1/secrets/engines/apps/billing/never-mounted", headers=h)
    assert never.status_code == 404, never.text
    assert never.json()["error"] == {
        "code": "not_found",
        "message": "no engine is mounted at 'apps/billing/never-mounted'",
        "field": "path",
    }
    mounted = client.put(
        url, json={"grants": [], "connection_url": "postgresql://x@127.0.0.1/db"}, headers=h
    )
    assert mounted.status_code == 200, mounted.text
    assert client.delete(url, headers=h).status_code == 204
    # Gone: a second delete is a 404, as GET is.
    assert client.delete(url, headers=h).status_code == 404
    assert client.get(url, headers=h).status_code == 404


def test_finance_is_refused_before_its_body_is_validated(
    client: TestClient, world: World, runtime: Runtime
) -> None:
    """A role that may use nothing of the broker gets 403 on every secrets, lease and token
    route whatever it sends (an empty or invalid body is not a 422), each refusal audited."""
    finance = api_key(runtime, world.tenant_id, "fin", Role.FINANCE)
    _put(client, world, PATH, "finance-may-not")
    lease_id = client.get(f"/v1/secrets/data/{PATH}", headers=world.headers).json()["lease"]["id"]
    calls: list[tuple[str, str, object]] = [
        ("PUT", "/v1/secrets/access-rules", {}),
        ("PUT", f"/v1/secrets/data/{PATH}", {}),
        ("PUT", f"/v1/secrets/data/{PATH}", {"value": 5}),
        ("PUT", f"/v1/secrets/engines/{PATH}", {"grants": "all"}),
        ("POST", f"/v1/secrets/delete/{PATH}", {"versions": "x"}),
        ("POST", f"/v1/secrets/undelete/{PATH}", {"versions": "x"}),
        ("POST", f"/v1/secrets/destroy/{PATH}", {"versions": "x"}),
        ("POST", f"/v1/secrets/rotate/{PATH}", {"value": 5}),
        ("POST", f"/v1/secrets/creds/{PATH}", {"ttl_seconds": "x"}),
        ("POST", "/v1/secrets/match", {}),
        ("POST", f"/v1/leases/{lease_id}/renew", {"increment_seconds": "x"}),
        ("POST", "/v1/leases/revoke-prefix", {}),
        ("POST", "/v1/identity/token", {}),
        ("POST", f"/v1/leases/{lease_id}/revoke", None),
        ("POST", "/v1/leases/no-such-lease/revoke", None),
        ("GET", f"/v1/leases/{lease_id}", None),
        ("GET", "/v1/secrets/access-rules", None),
        ("GET", f"/v1/secrets/engines/{PATH}", None),
        ("DELETE", f"/v1/secrets/engines/{PATH}", None),
        ("GET", "/v1/secrets/fingerprint-key", None),
    ]
    for method, url, body in calls:
        response = client.request(method, url, json=body, headers=finance)
        assert response.status_code == 403, (method, url, response.text)
        error = response.json()["error"]
        assert error["code"] == "permission_denied"
        assert "role 'finance' has no access to secrets" in error["message"], error
    redact = client.post("/v1/secrets/redact", content=b"text", headers=finance)
    assert redact.status_code == 403
    # The lease is untouched, and every refusal is in the audit log.
    assert client.get(f"/v1/leases/{lease_id}", headers=world.headers).json()["state"] == "active"
    with runtime.session_factory() as session:
        records = list_records(world.tenant_id, action="revoke", session=session)
        refused = [
            s.record
            for s in list_records(world.tenant_id, limit=1000, session=session)
            if s.record.outcome == "denied"
        ]
    assert [(s.record.outcome, s.record.lease_id) for s in records] == [
        ("denied", None),  # revoke-prefix
        ("denied", lease_id),
        ("denied", "no-such-lease"),
    ]
    assert len(refused) == len(calls) + 1
    assert {r.actor for r in refused} == {"principal:fin"}


def test_roles_a_route_is_not_for_are_refused_before_the_body_is_validated(
    client: TestClient, world: World, runtime: Runtime
) -> None:
    """Admin-only routes (engines, access rules, fingerprint key, match, redact) refuse a
    team member, an app key and a workload token with 403 whatever body they send (an empty
    or invalid body is not a 422), and write routes refuse app keys and workload tokens the
    same way, and a workload token on the token route; each refusal audited, and nothing
    changed."""
    _put(client, world, PATH, "stays-as-it-is")
    member = api_key(
        runtime, world.tenant_id, "pat", Role.TEAM_MEMBER, team_id=world.payments_team_id
    )
    app_key = api_key(runtime, world.tenant_id, "billing-svc", Role.APP, app_slug="billing")
    minted = client.post("/v1/identity/token", json={"app_id": "billing"}, headers=member)
    assert minted.status_code == 200, minted.text
    workload = {"Authorization": f"Bearer {minted.json()['token']}"}
    admin_only: list[tuple[str, str, object]] = [
        ("PUT", f"/v1/secrets/engines/{PATH}", {}),
        ("PUT", f"/v1/secrets/engines/{PATH}", {"grants": "all", "default_ttl_seconds": "x"}),
        ("GET", f"/v1/secrets/engines/{PATH}", None),
        ("DELETE", f"/v1/secrets/engines/{PATH}", None),
        ("PUT", "/v1/secrets/access-rules", {}),
        ("PUT", "/v1/secrets/access-rules", {"rules": [{"role": 5}]}),
        ("GET", "/v1/secrets/fingerprint-key", None),
        ("POST", "/v1/secrets/match", {}),
        ("POST", "/v1/secrets/match", {"fingerprints": "zz"}),
    ]
    writes: list[tuple[str, str, object]] = [
        ("PUT", f"/v1/secrets/data/{PATH}", {}),
        ("PUT", f"/v1/secrets/data/{PATH}", {"value": 5}),
        ("POST", f"/v1/secrets/delete/{PATH}", {"versions": "x"}),
        ("POST", f"/v1/secrets/undelete/{PATH}", {"versions": "x"}),
        ("POST", f"/v1/secrets/destroy/{PATH}", {"versions": "x"}),
        ("POST", f"/v1/secrets/rotate/{PATH}", {"value": 5}),
    ]
    refused = 0
    for headers, caller, calls in (
        (member, "role 'team-member'", admin_only),
        (app_key, "role 'app'", [*admin_only, *writes]),
        (
            workload,
            "a workload identity token",
            [*admin_only, *writes, ("POST", "/v1/identity/token", {"app_id": 5})],
        ),
    ):
        for method, url, body in calls:
            response = client.request(method, url, json=body, headers=headers)
            assert response.status_code == 403, (caller, method, url, response.text)
            error = response.json()["error"]
            assert error["code"] == "permission_denied"
            assert error["message"].endswith(f", not {caller}"), error
            refused += 1
        redact = client.post("/v1/secrets/redact", content=b"text", headers=headers)
        assert redact.status_code == 403, redact.text
        refused += 1
    # Which roles, in the message: an admin only, or an admin or a team member.
    engine = client.put(f"/v1/secrets/engines/{PATH}", json={}, headers=member)
    assert engine.json()["error"]["message"] == (
        "principal:pat may not configure: only an admin may, not role 'team-member'"
    )
    write = client.put(f"/v1/secrets/data/{PATH}", json={}, headers=app_key)
    assert write.json()["error"]["message"] == (
        "principal:billing-svc may not write: only an admin or a team member may, not role 'app'"
    )
    refused += 2
    # A team member may still read the rules and write its team's paths; an admin may do all.
    assert client.get("/v1/secrets/access-rules", headers=member).status_code == 200
    assert client.put(f"/v1/secrets/data/{PATH}", json={}, headers=member).status_code == 422
    assert (
        client.put(f"/v1/secrets/engines/{PATH}", json={}, headers=world.headers).status_code == 422
    )
    # Nothing changed, and every refusal is in the audit log, with the path it named.
    read = client.get(f"/v1/secrets/data/{PATH}", headers=world.headers).json()
    assert (read["version"], read["value"]) == (1, "stays-as-it-is")
    with runtime.session_factory() as session:
        denied = [
            s.record
            for s in list_records(world.tenant_id, limit=1000, session=session)
            if s.record.outcome == "denied"
        ]
    assert len(denied) == refused
    assert {r.action for r in denied} == {"configure", "deny", "write", "destroy", "token"}
    assert {r.path for r in denied if r.action == "write"} == {PATH}
