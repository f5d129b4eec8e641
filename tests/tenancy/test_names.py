"""Names in the directory (tester's findings): no principal name may stand for another
principal's id, and no tenant, team, cost center or principal name may carry a character that
spoofs a `qm` table (a newline, a bidi override); on SQLite and PostgreSQL."""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update
from typer.testing import CliRunner

from quartermaster.cli.main import app
from quartermaster.config import Settings
from quartermaster.errors import InvalidInputError
from quartermaster.runtime import Runtime
from quartermaster.tenancy import service
from quartermaster.tenancy.models import Principal
from tests.conftest import LiveServer, TenantHandle
from tests.tenancy.cli_support import Qm, make_qm
from tests.tenancy.support import bearer, headers_for, make_app, make_team, ok

SPOOFS = [
    ("x\nadmin", "U+000A (a control character) at position 2"),
    ("De\u202eatl", "U+202E (RIGHT-TO-LEFT OVERRIDE) at position 3"),
    ("ok\u2066x", "U+2066 (LEFT-TO-RIGHT ISOLATE) at position 3"),
    ("esc\x1b[31m", "U+001B (a control character) at position 4"),
]


def error_of(response: Any) -> dict[str, str]:
    error: dict[str, str] = response.json()["error"]
    return error


def principal_named(client: TestClient, tenant: TenantHandle, name: str) -> dict[str, Any]:
    listed = ok(client.get("/v1/principals", headers=tenant.headers))
    found: dict[str, Any] = next(p for p in listed if p["name"] == name)
    return found


def test_a_principal_name_shaped_like_an_id_is_refused(
    client: TestClient, tenant: TenantHandle
) -> None:
    """`qm key create NAME` looked the id up first: a principal named as the admin's id got
    the admin's key issued when an admin meant that principal's."""
    admin_id = principal_named(client, tenant, "admin")["id"]
    make_team(client, tenant, "web")
    make_app(client, tenant, "shop", team="web", cost_center="default")
    member = headers_for(client, tenant, role="team-member", team="web")
    for headers in (tenant.headers, member):
        for name in (admin_id, uuid.uuid4().hex, f" {admin_id} "):
            body = {"name": name, "role": "app", "app_id": "shop", "kind": "service-account"}
            refused = client.post("/v1/principals", json=body, headers=headers)
            assert refused.status_code == 422, refused.text
            error = error_of(refused)
            assert error["field"] == "name"
            assert "has the shape of a principal id (32 lowercase hex digits)" in error["message"]
            assert "could stand for another principal's id" in error["message"]
    # Near misses are names like any other: they can never equal an id.
    for name in (admin_id.upper(), admin_id[:31], f"{admin_id}0", f"g{admin_id[1:]}"):
        ok(
            client.post(
                "/v1/principals", json={"name": name, "role": "finance"}, headers=tenant.headers
            ),
            201,
        )
    assert principal_named(client, tenant, "admin")["id"] == admin_id


def test_an_old_name_equal_to_another_principals_id_is_ambiguous_not_the_other(
    client: TestClient, tenant: TenantHandle, runtime: Runtime
) -> None:
    """A name stored before the rule that equals the admin's id: issuing by it is refused
    (409 naming both) rather than handing out the admin's key; each stays reachable."""
    admin_id = principal_named(client, tenant, "admin")["id"]
    make_team(client, tenant, "web")
    make_app(client, tenant, "shop", team="web", cost_center="default")
    member = headers_for(client, tenant, role="team-member", team="web")
    body = {"name": "shop-bot", "role": "app", "app_id": "shop", "kind": "service-account"}
    bot = ok(client.post("/v1/principals", json=body, headers=member), 201)
    with runtime.session_factory() as session:  # as an older version let it be named
        session.execute(update(Principal).where(Principal.id == bot["id"]).values(name=admin_id))
        session.commit()

    keys_before = ok(client.get("/v1/keys", headers=tenant.headers))
    for headers in (tenant.headers, member):
        refused = client.post(f"/v1/principals/{admin_id}/keys", json={}, headers=headers)
        assert refused.status_code == 409, refused.text
        error = error_of(refused)
        assert error["field"] == "principal_id"
        assert error["message"] == (
            f"principal {admin_id!r} is ambiguous: it is the id of principal 'admin' and the "
            f"name of principal {bot['id']} (a name given before names shaped like an id were "
            "refused); name the one you mean unambiguously: 'admin' by its name, the other by "
            f"its id {bot['id']}"
        )
    assert ok(client.get("/v1/keys", headers=tenant.headers)) == keys_before  # none issued

    # By the app principal's own id, the team-member issues its key; by name, the admin's.
    issued = ok(client.post(f"/v1/principals/{bot['id']}/keys", json={}, headers=member), 201)
    assert issued["principal_id"] == bot["id"]
    by_name = ok(client.post("/v1/principals/admin/keys", json={}, headers=tenant.headers), 201)
    assert by_name["principal_id"] == admin_id


@pytest.mark.parametrize(("name", "where"), SPOOFS)
def test_directory_names_may_not_spoof_a_table(
    client: TestClient, tenant: TenantHandle, name: str, where: str
) -> None:
    make_team(client, tenant, "web")
    make_app(client, tenant, "shop", team="web", cost_center="default")
    member = headers_for(client, tenant, role="team-member", team="web")
    attempts = [
        ("/v1/principals", {"name": name, "role": "finance"}, tenant.headers, "a principal's"),
        (
            "/v1/principals",
            {"name": name, "role": "app", "app_id": "shop", "kind": "service-account"},
            member,
            "a principal's",
        ),
        ("/v1/teams", {"slug": "spoof", "name": name}, tenant.headers, "a team's"),
        ("/v1/cost-centers", {"slug": "spoof", "name": name}, tenant.headers, "a cost center's"),
    ]
    for path, body, headers, whose in attempts:
        refused = client.post(path, json=body, headers=headers)
        assert refused.status_code == 422, (path, refused.text)
        error = error_of(refused)
        assert error["field"] == "name"
        assert error["message"].startswith(f"name contains {where}: control characters and ")
        assert f"are not allowed in {whose} name" in error["message"]
    assert client.get("/v1/teams/spoof", headers=tenant.headers).status_code == 404
    assert client.get("/v1/cost-centers/spoof", headers=tenant.headers).status_code == 404
    names = [p["name"] for p in ok(client.get("/v1/principals", headers=tenant.headers))]
    assert name not in names
    assert name.strip() not in names


def test_tenant_and_admin_names_from_the_host_may_not_spoof_a_table(
    runtime: Runtime, settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    tenant_id = f"n-{uuid.uuid4().hex[:8]}"
    with runtime.session_factory() as session:
        with pytest.raises(InvalidInputError, match=r"U\+202E .* in a tenant's name") as caught:
            service.bootstrap_tenant(tenant_id, name="Acme\u202e", session=session)
        assert caught.value.field == "name"
        with pytest.raises(InvalidInputError, match="in a principal's name"):
            service.bootstrap_tenant(tenant_id, admin_name="x\nadmin", session=session)

    monkeypatch.setenv("QM_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("COLUMNS", "200")
    data_dir = ["--data-dir", str(settings.data_dir)]
    runner = CliRunner()
    made = runner.invoke(app, ["tenant", "create", tenant_id, "--name", "De\u202elta", *data_dir])
    assert made.exit_code == 1, made.output
    assert "name contains U+202E (RIGHT-TO-LEFT OVERRIDE) at position 3" in made.output
    made = runner.invoke(app, ["tenant", "create", tenant_id, *data_dir])
    assert made.exit_code == 0, made.output
    for name, message in [
        ("ops\nadmin", "name contains U+000A"),
        (uuid.uuid4().hex, "has the shape of a principal id"),
    ]:
        refused = runner.invoke(app, ["tenant", "admin-key", tenant_id, "--name", name, *data_dir])
        assert refused.exit_code == 1, refused.output
        assert message in refused.output


def test_admin_key_help_names_the_recorded_actor() -> None:
    shown = CliRunner().invoke(app, ["tenant", "admin-key", "--help"], env={"COLUMNS": "200"})
    assert shown.exit_code == 0, shown.output
    text = " ".join(shown.output.split())
    assert "(`issue-key` by `system:cli`)" in text
    assert "by `cli`" not in text


def test_an_issued_keys_expiry_is_answered_in_utc(client: TestClient, tenant: TenantHandle) -> None:
    """The answer echoed the caller's offset, so `qm key create` printed another form than
    `qm key list` and the audit record than the stored expiry."""
    issued = ok(
        client.post(
            "/v1/principals/admin/keys",
            json={"expires_at": "2030-01-01T00:00:00+01:00"},
            headers=tenant.headers,
        ),
        201,
    )
    assert issued["expires_at"] == "2029-12-31T23:00:00Z"
    listed = ok(client.get("/v1/keys", headers=bearer(issued["token"])))
    assert (
        next(k for k in listed if k["key_id"] == issued["key_id"])["expires_at"]
        == (issued["expires_at"])
    )


@pytest.fixture
def qm(live_server: LiveServer, tenant: TenantHandle, monkeypatch: pytest.MonkeyPatch) -> Qm:
    return make_qm(live_server, tenant, monkeypatch)


def test_key_create_prints_the_expiry_in_utc_as_key_list_does(qm: Qm) -> None:
    qm("principal", "create", "fin@acme.com", "--role", "finance")
    issued = qm("key", "create", "fin@acme.com", "--expires-at", "2030-01-01T00:00:00+01:00")
    key_id = issued.stdout.strip().split("_")[1]
    assert f"created key {key_id} (expires: 2029-12-31 23:00:00Z)" in issued.stderr
    listed = qm("key", "list").output
    assert re.search(rf"{key_id}\s+.*fin@acme.com\s+.*active, expires 2029-12-31 23:00:00Z", listed)
    never = qm("principal", "create", "ops@acme.com", "--role", "admin")
    assert never.exit_code == 0
    assert "(expires: never)" in qm("key", "create", "ops@acme.com").stderr


def test_the_cli_refuses_spoofing_and_id_shaped_names(qm: Qm) -> None:
    spoof = qm("principal", "create", "x\nadmin", "--role", "finance", expect=1).output
    assert "error 422: name contains U+000A (a control character) at position 2" in spoof
    team = qm("team", "create", "delta", "--name", "De\u202elta", expect=1).output
    assert "error 422: name contains U+202E (RIGHT-TO-LEFT OVERRIDE) at position 3" in team
    center = qm("cost-center", "create", "delta", "--name", "De\u202elta", expect=1).output
    assert "in a cost center's name" in " ".join(center.split())
    shaped = qm("principal", "create", uuid.uuid4().hex, "--role", "finance", expect=1).output
    assert "error 422: name " in shaped
    assert "has the shape of a principal id" in " ".join(shaped.split())
    assert qm("principal", "list").output.count("│ user ") == 1  # the admin alone
    assert "no teams" in qm("team", "list").output
    assert "delta" not in qm("cost-center", "list").output
