from __future__ import annotations

from fastapi.testclient import TestClient

from quartermaster.catalog.signing_keys import active_signing_keys
from quartermaster.runtime import Runtime
from tests.conftest import TenantHandle
from tests.tenancy.support import make_app, make_team, ok


def test_signing_keys_rotate_with_at_most_two_active_and_never_show_secrets_twice(
    client: TestClient, tenant: TenantHandle, runtime: Runtime
) -> None:
    make_team(client, tenant, "web")
    make_app(client, tenant, "bot", team="web", cost_center="default")
    path = "/v1/apps/bot/signing-keys"

    first = ok(client.post(path, headers=tenant.headers), 201)
    second = ok(client.post(path, headers=tenant.headers), 201)
    assert first["key_id"].startswith("sk_")
    assert len(bytes.fromhex(first["secret"])) == 32
    assert "shown once" in first["warning"]

    with runtime.session_factory() as session:  # what ingestion verifies signatures with
        keys = active_signing_keys(tenant.tenant_id, server_key=runtime.server_key, session=session)
    assert keys[first["key_id"]].secret.hex() == first["secret"]
    assert keys[second["key_id"]].app_id == "bot"

    third = client.post(path, headers=tenant.headers)
    assert third.status_code == 409
    message = third.json()["error"]["message"]
    assert "already has 2 active signing keys" in message
    assert first["key_id"] in message

    listing = client.get(path, headers=tenant.headers)
    assert first["secret"] not in listing.text
    assert second["secret"] not in listing.text
    assert [(k["key_id"], k["status"]) for k in ok(listing)] == [
        (first["key_id"], "active"),
        (second["key_id"], "active"),
    ]

    retired = ok(client.delete(f"{path}/{first['key_id']}", headers=tenant.headers))
    assert (retired["status"], retired["retired_at"] is not None) == ("retired", True)
    replacement = ok(client.post(path, headers=tenant.headers), 201)
    statuses = {k["key_id"]: k["status"] for k in ok(client.get(path, headers=tenant.headers))}
    assert statuses == {
        first["key_id"]: "retired",
        second["key_id"]: "active",
        replacement["key_id"]: "active",
    }
    with runtime.session_factory() as session:
        keys = active_signing_keys(tenant.tenant_id, server_key=runtime.server_key, session=session)
    assert set(keys) == {second["key_id"], replacement["key_id"]}


def test_retiring_needs_the_key_of_that_app(client: TestClient, tenant: TenantHandle) -> None:
    make_team(client, tenant, "web")
    make_app(client, tenant, "bot", team="web", cost_center="default")
    make_app(client, tenant, "other", team="web", cost_center="default")
    key = ok(client.post("/v1/apps/bot/signing-keys", headers=tenant.headers), 201)

    wrong_app = client.delete(
        f"/v1/apps/other/signing-keys/{key['key_id']}", headers=tenant.headers
    )
    assert wrong_app.status_code == 404
    assert wrong_app.json()["error"]["message"] == (
        f"signing key {key['key_id']!r} not found for app 'other'"
    )
    unknown = client.delete("/v1/apps/bot/signing-keys/sk_nope", headers=tenant.headers)
    assert unknown.status_code == 404
    assert client.post("/v1/apps/ghost/signing-keys", headers=tenant.headers).status_code == 404
    assert client.get("/v1/apps/ghost/signing-keys", headers=tenant.headers).status_code == 404
    statuses = [
        k["status"] for k in ok(client.get("/v1/apps/bot/signing-keys", headers=tenant.headers))
    ]
    assert statuses == ["active"]
