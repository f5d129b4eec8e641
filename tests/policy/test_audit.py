"""`POST /v1/policies/audit` evaluates every app's published version against the policies
enabled now, as publishing built its input, and changes nothing; a policy failing on one app
is that app's error and the audit goes on; apps with an exception in force are marked; pages
in app-id order; admin only. `qm policy audit` prints the violations and totals, exit 1 when
there are any (0 with --no-fail)."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from fastapi.testclient import TestClient

from quartermaster.runtime import Runtime
from tests.catalog.publish_support import POLICIES, add_team, manifest, submit
from tests.conftest import LiveServer, TenantHandle
from tests.policy.test_restrictions import small_budget  # noqa: F401  # a fixture
from tests.tenancy.cli_support import make_qm
from tests.tenancy.support import headers_for, ok

LEGACY = """package audit.legacy

deny contains msg if {
	"legacy" in input.manifest.tags
	msg := sprintf("%s is tagged legacy", [input.manifest.app_id])
}
"""
# Two values for one complete rule, for the app `boom` only: fails there, nowhere else.
FAILS_ON_BOOM = """package audit.boom

x := 1 if input.manifest.app_id == "boom"

x := 2 if input.manifest.app_id == "boom"

deny contains "x" if x
"""
TITLED = """package audit.titled

warn contains "the title says old" if contains(input.manifest.title, "old")

deny contains "the title says old" if contains(input.manifest.title, "old")

deny contains "no owner" if not input.manifest.owner
"""
GPU = {"tier": "gpu", "gpu": 1}


def _publish(client: TestClient, tenant: TenantHandle, app_id: str, **changes: Any) -> None:
    version = submit(client, tenant, manifest(app_id=app_id, **changes))
    assert version["state"] == "published", version


def _upload(
    client: TestClient, tenant: TenantHandle, name: str, source: str, mode: str = "enforce"
) -> None:
    body = {"name": name, "source": source, "mode": mode}
    ok(client.post("/v1/policies", json=body, headers=tenant.headers), 201)


def _audit(client: TestClient, tenant: TenantHandle, **params: Any) -> dict[str, Any]:
    page: dict[str, Any] = ok(
        client.post("/v1/policies/audit", params=params, headers=tenant.headers)
    )
    return page


def _world(client: TestClient, tenant: TenantHandle) -> None:
    """Five published apps, then policies that object to some of them."""
    add_team(client, tenant)
    add_team(client, tenant, "data")
    _publish(client, tenant, "alpha")
    _publish(client, tenant, "boom")
    _publish(client, tenant, "gpu-app", estimated_compute_profile=GPU)
    _publish(client, tenant, "gpu-ok", estimated_compute_profile=GPU, team="data")
    _publish(client, tenant, "old-app", tags=["legacy"], title="An old app")
    submit(client, tenant, manifest(app_id="drafty"), publish=False)  # never published
    grant = {"key": "gpu", "team": "data", "reason": "training", "days": 7}
    ok(client.post("/v1/policy-exceptions", json=grant, headers=tenant.headers), 201)
    _upload(client, tenant, "legacy", LEGACY)
    _upload(client, tenant, "boom", FAILS_ON_BOOM)
    _upload(client, tenant, "gpu", (POLICIES / "gpu-requires-approved-team.rego").read_text())
    _upload(client, tenant, "titled", TITLED, mode="audit")


def _states(client: TestClient, tenant: TenantHandle) -> dict[str, list[tuple[str, str]]]:
    states = {}
    for app_id in ("alpha", "boom", "gpu-app", "gpu-ok", "old-app", "drafty"):
        versions = ok(client.get(f"/v1/apps/{app_id}/versions", headers=tenant.headers))
        states[app_id] = [(v["version"], v["state"]) for v in versions]
    return states


def test_the_audit_lists_what_publishing_would_do_now_and_changes_nothing(
    client: TestClient, tenant: TenantHandle
) -> None:
    _world(client, tenant)
    before = _states(client, tenant)
    decisions = ok(client.get("/v1/policy-decisions?limit=1000", headers=tenant.headers))

    page = _audit(client, tenant)
    assert page["policies"] == [
        "boom@1 (enforce)", "gpu@1 (enforce)", "legacy@1 (enforce)", "titled@1 (audit)"
    ]  # fmt: skip
    assert page["published_apps"] == 5
    assert page["next_after"] is None
    apps = {a["app_id"]: a for a in page["apps"]}
    assert list(apps) == ["alpha", "boom", "gpu-app", "gpu-ok", "old-app"]  # drafty: no version
    assert {a: v["result"] for a, v in apps.items()} == {
        "alpha": "allow", "boom": "error", "gpu-app": "deny", "gpu-ok": "allow", "old-app": "deny"
    }  # fmt: skip
    assert apps["alpha"] == {
        "app_id": "alpha", "team": "social", "version": "1.0.0", "result": "allow",
        "reasons": [], "excepted": False, "exceptions": [], "findings": [],
    }  # fmt: skip
    # The failing policy is the app's error, with the reason; the other apps went on.
    assert apps["boom"]["reasons"] == [
        "policy boom v1 failed: eval_conflict_error: complete rules must not produce multiple "
        "outputs"
    ]
    assert [f["policy"] for f in apps["boom"]["findings"]] == ["boom"]
    assert "team social is not approved for GPU use" in apps["gpu-app"]["reasons"][0]
    # The data team's exception is in the input as at publish: allowed, and shown excepted.
    assert apps["gpu-ok"]["excepted"] is True
    assert apps["gpu-ok"]["exceptions"] == ["gpu"]
    assert apps["old-app"]["reasons"] == ["old-app is tagged legacy"]
    titled = [f for f in apps["old-app"]["findings"] if f["policy"] == "titled"]
    assert titled == [
        {
            "policy": "titled", "version": 1, "mode": "audit", "enforced": False,
            "result": "deny", "messages": ["the title says old", "warning: the title says old"],
        }
    ]  # fmt: skip
    assert page["totals"] == {
        "apps": 5, "allow": 2, "deny": 2, "require_approval": 0, "quarantine": 0, "error": 1,
        "excepted": 1, "audit_only": 1, "violations": 2,
    }  # fmt: skip

    # Nothing changed: every version in the state it was, no decision logged.
    assert _states(client, tenant) == before
    after = ok(client.get("/v1/policy-decisions?limit=1000", headers=tenant.headers))
    assert after == decisions


def test_the_audit_pages_in_app_id_order(client: TestClient, tenant: TenantHandle) -> None:
    _world(client, tenant)
    seen: list[str] = []
    totals: dict[str, int] = {}
    params: dict[str, Any] = {"limit": 2}
    while True:
        page = _audit(client, tenant, **params)
        assert page["published_apps"] == 5
        assert len(page["apps"]) <= 2
        seen += [a["app_id"] for a in page["apps"]]
        for name, count in page["totals"].items():
            totals[name] = totals.get(name, 0) + count
        if page["next_after"] is None:
            break
        params["after"] = page["next_after"]
    assert seen == ["alpha", "boom", "gpu-app", "gpu-ok", "old-app"]
    assert totals["apps"] == 5
    assert totals["violations"] == 2
    assert _audit(client, tenant, after="old-app")["apps"] == []
    assert [a["app_id"] for a in _audit(client, tenant, after="c")["apps"]] == [
        "gpu-app", "gpu-ok", "old-app"
    ]  # fmt: skip


def test_an_approved_version_is_audited_as_approved(
    client: TestClient, tenant: TenantHandle
) -> None:
    add_team(client, tenant)
    body = {
        "name": "org-scope",
        "source": (POLICIES / "org-scope-approval.rego").read_text(),
    }
    ok(client.post("/v1/policies", json=body, headers=tenant.headers), 201)
    org = {"data_scopes": ["org"], "data_owner": "data-governance"}
    assert submit(client, tenant, manifest(**org))["state"] == "pending_approval"
    pending = ok(client.get("/v1/approvals", headers=tenant.headers))
    ok(
        client.post(
            f"/v1/approvals/{pending[0]['id']}/approve",
            json={"comment": "reviewed"},
            headers=tenant.headers,
        )
    )
    _publish(client, tenant, "other")  # published before the policy applied to it
    ok(client.post("/v1/policies/org-scope/disable", headers=tenant.headers))
    _publish(client, tenant, "later", **org)
    ok(client.post("/v1/policies/org-scope/enable", headers=tenant.headers))
    apps = {a["app_id"]: a for a in _audit(client, tenant)["apps"]}
    assert apps["where2eat"]["result"] == "allow"  # approved: the input says so
    assert apps["other"]["result"] == "allow"
    assert apps["later"]["result"] == "require_approval"  # never reviewed
    assert apps["later"]["reasons"]


def test_without_policies_every_app_is_allowed(client: TestClient, tenant: TenantHandle) -> None:
    add_team(client, tenant)
    _publish(client, tenant, "alpha")
    page = _audit(client, tenant)
    assert page["policies"] == []
    assert [(a["app_id"], a["result"], a["findings"]) for a in page["apps"]] == [
        ("alpha", "allow", [])
    ]
    assert page["totals"]["violations"] == 0
    empty = _audit(client, tenant, after="zzz")
    assert empty["apps"] == []
    assert empty["next_after"] is None


def test_only_an_admin_audits_and_limits_are_checked(
    client: TestClient, tenant: TenantHandle
) -> None:
    add_team(client, tenant)
    for role, team in (("finance", None), ("team-member", "social")):
        headers = headers_for(client, tenant, role=role, team=team)
        response = client.post("/v1/policies/audit", headers=headers)
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "permission_denied"
    for params in ({"limit": 0}, {"limit": 1001}, {"after": "x" * 65}):
        response = client.post("/v1/policies/audit", params=params, headers=tenant.headers)
        assert response.status_code == 422, response.text
        assert response.json()["error"]["field"] == next(iter(params))


def test_a_stored_version_that_no_longer_reads_is_an_error_not_a_stop(
    client: TestClient, tenant: TenantHandle, runtime: Runtime
) -> None:
    from sqlalchemy import update

    from quartermaster.catalog.publish_models import AppVersion

    add_team(client, tenant)
    _publish(client, tenant, "alpha")
    _publish(client, tenant, "beta")
    _upload(client, tenant, "legacy", LEGACY)
    with runtime.session_factory() as session:
        session.execute(
            update(AppVersion).where(AppVersion.version == "1.0.0").values(checks="[{}]")
        )
        session.commit()
    apps = _audit(client, tenant)["apps"]
    assert [a["result"] for a in apps] == ["error", "error"]
    assert apps[0]["reasons"][0].startswith(
        "the stored version could not be read as a policy input:"
    )


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the CLI only talks HTTP
def test_qm_policy_audit_prints_violations_and_fails_on_them(
    live_server: LiveServer,
    http: httpx.Client,
    tenant: TenantHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _world(http, tenant)  # type: ignore[arg-type]  # the same calls over real HTTP
    qm = make_qm(live_server, tenant, monkeypatch)
    failed = qm("policy", "audit", "--page-size", "2", expect=1).output
    assert "old-app is tagged legacy" in failed
    assert "eval_conflict_error" in failed
    assert re.search(r"gpu-app\s.*deny", failed)
    assert "alpha" not in failed  # allowed apps are only counted
    assert re.search(r"5 apps audited.*2 allowed.*2 violations.*1 error", failed, re.S), failed
    assert "1 excepted" in failed
    assert re.search(r"gpu-ok\s.*allow\s.*\n.*excepted: gpu", failed), failed
    passed = qm("policy", "audit", "--no-fail").output
    assert "old-app is tagged legacy" in passed
    every = qm("policy", "audit", "--all-apps", "--no-fail").output
    assert "alpha" in every
    assert "gpu-ok" in every


SLOW_FOR_ONE = """package audit.slowone

deny contains msg if {
	input.manifest.app_id == "slow"
	some i in numbers.range(1, 3000)
	some j in numbers.range(1, 3000)
	i + j == 0
	msg := "never"
}
"""


@pytest.mark.usefixtures("small_budget")  # 0.5 s
def test_a_policy_over_its_budget_on_one_app_is_that_apps_error(
    client: TestClient, tenant: TenantHandle
) -> None:
    add_team(client, tenant)
    for app_id in ("alpha", "old-one", "slow"):
        _publish(client, tenant, app_id, tags=["legacy"] if app_id == "old-one" else ["x"])
    _upload(client, tenant, "slowone", SLOW_FOR_ONE)
    _upload(client, tenant, "legacy", LEGACY)
    apps = {a["app_id"]: a for a in _audit(client, tenant)["apps"]}
    assert {a: v["result"] for a, v in apps.items()} == {
        "alpha": "allow", "old-one": "deny", "slow": "error"
    }  # fmt: skip
    assert apps["slow"]["reasons"] == [
        "policy slowone v1 failed: the policy's evaluation went over its time limit of 0.5 s"
    ]
    # The other policy still answered for the slow app: evaluated alone, it allowed.
    assert [f["policy"] for f in apps["slow"]["findings"]] == ["slowone"]
