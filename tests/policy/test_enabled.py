"""Disabling a policy and enabling it again (POST /v1/policies/{name}/disable|enable): each
change is the policy's next version, a disabled policy is asked neither at publish nor by the
decision API, and a change already made changes nothing."""

from __future__ import annotations

from fastapi.testclient import TestClient

from tests.catalog.publish_support import POLICIES, add_team, manifest, submit, upload_policy
from tests.conftest import TenantHandle
from tests.guardrails.support import build_world, ok


def _switch(client: TestClient, tenant: TenantHandle, name: str, verb: str) -> dict[str, object]:
    result: dict[str, object] = ok(
        client.post(f"/v1/policies/{name}/{verb}", headers=tenant.headers)
    )
    return result


def test_a_disabled_policy_no_longer_blocks_publishing(
    client: TestClient, tenant: TenantHandle
) -> None:
    add_team(client, tenant)
    first = upload_policy(client, tenant, "cost-center", "require-cost-center.rego", mode="audit")
    assert submit(client, tenant, manifest(cost_center=None))["state"] == "published"
    upload_policy(client, tenant, "cost-center", "require-cost-center.rego")
    assert submit(client, tenant, manifest(version="1.1.0", cost_center=None))["state"] == (
        "rejected"
    )

    disabled = _switch(client, tenant, "cost-center", "disable")
    assert (disabled["version"], disabled["enabled"], disabled["mode"]) == (3, False, "enforce")
    assert disabled["source"] == first["source"]
    assert _switch(client, tenant, "cost-center", "disable")["version"] == 3  # already off
    listed = ok(client.get("/v1/policies", headers=tenant.headers))
    assert [(p["name"], p["version"], p["enabled"]) for p in listed] == [("cost-center", 3, False)]
    published = submit(client, tenant, manifest(version="1.2.0", cost_center=None))
    assert published["state"] == "published"
    assert published["decision"]["policies"] == []  # not asked at all

    enabled = _switch(client, tenant, "cost-center", "enable")
    assert (enabled["version"], enabled["enabled"], enabled["mode"]) == (4, True, "enforce")
    assert submit(client, tenant, manifest(version="1.3.0", cost_center=None))["state"] == (
        "rejected"
    )


def test_disabling_an_admission_policy_takes_effect_at_once(
    client: TestClient, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    source = (POLICIES / "admission" / "gpu-needs-exception.rego").read_text()
    body = {"name": "gpu", "source": source}
    ok(client.post("/v1/policies", json=body, headers=tenant.headers), 201)
    ask = {"app": world.app, "resources": {"gpu": "1"}}
    assert ok(client.post("/v1/decisions", json=ask, headers=tenant.headers))["allowed"] is False
    _switch(client, tenant, "gpu", "disable")
    assert ok(client.post("/v1/decisions", json=ask, headers=tenant.headers))["allowed"] is True
    _switch(client, tenant, "gpu", "enable")
    assert ok(client.post("/v1/decisions", json=ask, headers=tenant.headers))["allowed"] is False


def test_an_unknown_policy_is_404(client: TestClient, tenant: TenantHandle) -> None:
    for verb in ("disable", "enable"):
        response = client.post(f"/v1/policies/nope/{verb}", headers=tenant.headers)
        assert response.status_code == 404
        assert response.json()["error"]["message"] == "policy 'nope' not found"


def test_reading_a_version_the_policy_lacks_names_the_version(
    client: TestClient, tenant: TenantHandle
) -> None:
    upload_policy(client, tenant, "cost-center", "require-cost-center.rego")
    missing = client.get("/v1/policies/cost-center?version=99", headers=tenant.headers)
    assert missing.status_code == 404
    assert missing.json()["error"] == {
        "code": "not_found",
        "message": "policy 'cost-center' has no version 99 (its latest is 1)",
        "field": "version",
    }
    unknown = client.get("/v1/policies/nope?version=1", headers=tenant.headers)
    assert unknown.json()["error"]["field"] == "name"
    assert (
        ok(client.get("/v1/policies/cost-center?version=1", headers=tenant.headers))["version"] == 1
    )
