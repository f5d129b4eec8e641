"""Publishing over the API: each check recorded on the version, each example policy (allow
and deny), audit mode, approvals with expiry, exceptions that lapse, quarantine, search."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx
from fastapi.testclient import TestClient
from sqlalchemy import update

from quartermaster.domain.timeutil import utc_now
from quartermaster.policy.models import Approval, PolicyException
from quartermaster.runtime import Runtime
from tests.catalog.publish_support import add_team, manifest, submit, upload_policy, zip_b64
from tests.conftest import TenantHandle
from tests.tenancy.support import headers_for, make_cost_center

FAKE_AWS = "AKIA" + "IOSFODNN7EXAMPLE"


def _checks(version: dict) -> dict[str, dict]:  # type: ignore[type-arg]
    return {c["name"]: c for c in version["checks"]}


def test_clean_version_publishes_with_every_check_recorded(
    client: TestClient, tenant: TenantHandle
) -> None:
    add_team(client, tenant)
    package = zip_b64({"app.py": "def invoke(event):\n    return event\n"})
    version = submit(client, tenant, manifest(), package=package)
    assert version["state"] == "published", version
    checks = _checks(version)
    assert {n: c["outcome"] for n, c in checks.items()} == {
        "schema": "pass", "data_scope": "pass", "secrets": "pass", "pii": "pass", "bandit": "pass"
    }  # fmt: skip
    again = submit(client, tenant, manifest(), package=package, expect=200)  # a retry: no-op
    assert again["created_at"] == version["created_at"]
    other = submit(client, tenant, manifest(title="Changed"), package=package, expect=409)
    assert "immutable" in other["error"]["message"]


def test_secret_in_package_blocks_and_is_not_echoed(
    client: TestClient, tenant: TenantHandle
) -> None:
    add_team(client, tenant)
    package = zip_b64({"config.py": f'aws_access_key_id = "{FAKE_AWS}"\n'})
    version = submit(client, tenant, manifest(), package=package)
    assert version["state"] == "rejected"
    secrets = _checks(version)["secrets"]
    assert secrets["outcome"] == "fail"
    assert secrets["blocking"]
    assert secrets["findings"][0]["file"] == "config.py"
    assert FAKE_AWS not in str(version)


def test_pii_flags_and_bandit_reports_without_blocking(
    client: TestClient, tenant: TenantHandle
) -> None:
    add_team(client, tenant)
    package = zip_b64(
        {
            "samples/people.csv": "name,email\nAnn,ann.lee@example.com\n",
            "run.py": "import subprocess\nsubprocess.call('ls', shell=True)\n",
        }
    )
    body = manifest(
        long_description="Questions? Call +1 415 555 0100.", sample_data=["samples/people.csv"]
    )
    version = submit(client, tenant, body, package=package)
    assert version["state"] == "published"
    pii, bandit = _checks(version)["pii"], _checks(version)["bandit"]
    assert pii["outcome"] == "flag"
    assert not pii["blocking"]
    assert {(f["kind"], f["where"]) for f in pii["findings"]} == {
        ("phone", "long_description"), ("email", "samples/people.csv:2")
    }  # fmt: skip
    assert "ann.lee@example.com" not in str(version)
    assert bandit["outcome"] == "report"
    assert "B602" in {f["test_id"] for f in bandit["findings"]}


def test_a_sample_the_package_lacks_is_flagged_not_scanned_as_clean(
    client: TestClient, tenant: TenantHandle
) -> None:
    add_team(client, tenant)
    package = zip_b64({"samples/people.csv": "name\nAnn\n"})
    body = manifest(sample_data=["samples/people.csv", "samples/missing.csv"])
    pii = _checks(submit(client, tenant, body, package=package))["pii"]
    assert (pii["outcome"], pii["blocking"]) == ("flag", False)
    assert pii["summary"] == "1 sample_data path(s) not in the package"
    assert pii["findings"] == [
        {"kind": "not in the package", "where": "samples/missing.csv", "sample": ""}
    ]


def test_a_file_bandit_cannot_parse_is_reported_not_passed(
    client: TestClient, tenant: TenantHandle
) -> None:
    add_team(client, tenant)
    package = zip_b64(
        {"app.py": "import subprocess\nsubprocess.call(x, shell=True)\nprint 'py2'\n"}
    )
    version = submit(client, tenant, manifest(), package=package)
    assert version["state"] == "published"  # bandit reports, it never blocks
    bandit = _checks(version)["bandit"]
    assert bandit["outcome"] == "report"
    assert bandit["summary"] == "0 issue(s), 0 of high severity; 1 file(s) bandit could not parse"
    assert bandit["findings"] == [
        {
            "file": "app.py",
            "kind": "not checked",
            "text": "syntax error while parsing AST from file",
        }
    ]


def test_data_scope_needs_an_owner(client: TestClient, tenant: TenantHandle) -> None:
    add_team(client, tenant)
    version = submit(client, tenant, manifest(data_scopes=["team"]))
    assert version["state"] == "rejected"
    assert _checks(version)["data_scope"]["findings"][0]["field"] == "data_owner"


def test_invalid_manifest_names_every_field(client: TestClient, tenant: TenantHandle) -> None:
    error = submit(client, tenant, manifest(version="one", capabilities=[]), expect=422)
    assert "version" in error["error"]["message"]
    assert "capabilities" in error["error"]["message"]


def test_cost_center_policy_allows_and_denies(client: TestClient, tenant: TenantHandle) -> None:
    add_team(client, tenant)
    upload_policy(client, tenant, "cost-center", "require-cost-center.rego")
    assert submit(client, tenant, manifest())["state"] == "published"
    denied = submit(client, tenant, manifest(version="1.1.0", cost_center=None))
    assert denied["state"] == "rejected"
    assert "no cost_center" in denied["state_reason"]
    log = client.get(
        "/v1/policy-decisions", params={"subject": "where2eat@1.1.0"}, headers=tenant.headers
    ).json()
    assert [(d["policy_name"], d["policy_version"], d["result"]) for d in log] == [
        ("cost-center", 1, "deny")
    ]
    assert len(log[0]["input_digest"]) == 64


def test_audit_mode_logs_but_does_not_block(client: TestClient, tenant: TenantHandle) -> None:
    add_team(client, tenant)
    upload_policy(client, tenant, "cost-center", "require-cost-center.rego", mode="audit")
    version = submit(client, tenant, manifest(cost_center=None))
    assert version["state"] == "published"
    assert version["decision"]["audit_only"]
    assert not version["decision"]["deny"]
    log = client.get("/v1/policy-decisions", headers=tenant.headers).json()
    assert log[0]["result"] == "deny"
    assert log[0]["enforced"] is False


def test_gpu_policy_and_a_lapsing_exception(
    client: TestClient, tenant: TenantHandle, runtime: Runtime
) -> None:
    add_team(client, tenant)
    upload_policy(client, tenant, "gpu", "gpu-requires-approved-team.rego")
    gpu = {"tier": "gpu", "gpu": 1}
    assert submit(client, tenant, manifest())["state"] == "published"  # no GPU: allowed
    denied = submit(client, tenant, manifest(version="2.0.0", estimated_compute_profile=gpu))
    assert denied["state"] == "rejected"
    assert "GPU" in denied["state_reason"]
    grant = {"key": "gpu", "team": "social", "reason": "training run", "days": 14}
    granted = client.post("/v1/policy-exceptions", json=grant, headers=tenant.headers).json()
    allowed = submit(client, tenant, manifest(version="2.0.1", estimated_compute_profile=gpu))
    assert allowed["state"] == "published"
    with runtime.session_factory() as session:  # the exception's time runs out
        session.execute(
            update(PolicyException)
            .where(PolicyException.id == granted["id"])
            .values(expires_at=utc_now() - timedelta(seconds=1))
        )
        session.commit()
    lapsed = submit(client, tenant, manifest(version="2.0.2", estimated_compute_profile=gpu))
    assert lapsed["state"] == "rejected"
    assert client.get("/v1/policy-exceptions", headers=tenant.headers).json() == []


def test_org_scope_waits_for_approval(client: TestClient, tenant: TenantHandle) -> None:
    add_team(client, tenant)
    upload_policy(client, tenant, "org-scope", "org-scope-approval.rego")
    org = {"data_scopes": ["org"], "data_owner": "data-governance"}
    held = submit(client, tenant, manifest(**org))
    assert held["state"] == "pending_approval"
    pending = client.get(
        "/v1/approvals", params={"status": "pending"}, headers=tenant.headers
    ).json()
    assert [p["version"] for p in pending] == ["1.0.0"]
    missing = client.post(
        f"/v1/approvals/{pending[0]['id']}/approve", json={"comment": ""}, headers=tenant.headers
    )
    assert missing.status_code == 422
    approved = client.post(
        f"/v1/approvals/{pending[0]['id']}/approve",
        json={"comment": "reviewed the data flows"},
        headers=tenant.headers,
    ).json()
    assert approved["status"] == "approved"
    version = client.get("/v1/apps/where2eat/versions/1.0.0", headers=tenant.headers).json()
    assert version["state"] == "published"
    held2 = submit(client, tenant, manifest(version="1.1.0", **org))
    second = client.get("/v1/approvals", params={"status": "pending"}, headers=tenant.headers)
    rejected = client.post(
        f"/v1/approvals/{second.json()[0]['id']}/reject",
        json={"comment": "exports customer data"},
        headers=tenant.headers,
    ).json()
    assert held2["state"] == "pending_approval"
    assert rejected["status"] == "rejected"
    v110 = client.get("/v1/apps/where2eat/versions/1.1.0", headers=tenant.headers).json()
    assert v110["state"] == "rejected"
    assert "exports customer data" in v110["state_reason"]


def test_an_undecided_approval_expires(
    client: TestClient, tenant: TenantHandle, runtime: Runtime
) -> None:
    add_team(client, tenant)
    upload_policy(client, tenant, "org-scope", "org-scope-approval.rego")
    submit(client, tenant, manifest(data_scopes=["org"], data_owner="gov"))
    approval = client.get("/v1/approvals", headers=tenant.headers).json()[0]
    with runtime.session_factory() as session:
        session.execute(
            update(Approval)
            .where(Approval.id == approval["id"])
            .values(expires_at=utc_now() - timedelta(seconds=1))
        )
        session.commit()
    listed = client.get("/v1/approvals", headers=tenant.headers).json()
    assert listed[0]["status"] == "expired"
    late = client.post(
        f"/v1/approvals/{approval['id']}/approve", json={"comment": "ok"}, headers=tenant.headers
    )
    assert late.status_code == 409
    assert "expired" in late.json()["error"]["message"]
    version = client.get("/v1/apps/where2eat/versions/1.0.0", headers=tenant.headers).json()
    assert version["state"] == "rejected"


def test_quarantine_from_any_state_removes_from_search(
    client: TestClient, tenant: TenantHandle
) -> None:
    add_team(client, tenant)
    submit(client, tenant, manifest())
    found = client.get("/v1/apps/search", params={"q": "recomm"}, headers=tenant.headers).json()
    assert [h["app_id"] for h in found["hits"]] == ["where2eat"]
    quarantined = client.post(
        "/v1/apps/where2eat/versions/1.0.0/quarantine",
        json={"reason": "leaks customer emails"},
        headers=tenant.headers,
    ).json()
    assert quarantined["state"] == "quarantined"
    assert "leaks customer emails" in quarantined["state_reason"]
    gone = client.get("/v1/apps/search", params={"q": "recomm"}, headers=tenant.headers).json()
    assert gone["hits"] == []
    assert gone["total"] == 0
    draft = submit(client, tenant, manifest(version="1.0.1"), publish=False)
    assert draft["state"] == "draft"
    again = client.post(
        "/v1/apps/where2eat/versions/1.0.1/quarantine", json={"reason": "x"}, headers=tenant.headers
    )
    assert again.json()["state"] == "quarantined"


def test_policy_quarantine_rule(client: TestClient, tenant: TenantHandle) -> None:
    add_team(client, tenant)
    source = (
        "package qm.publish.pii\n"
        'quarantine contains msg if { "card" in input.pii_kinds; msg := "card numbers in app" }\n'
    )
    client.post("/v1/policies", json={"name": "pii", "source": source}, headers=tenant.headers)
    version = submit(client, tenant, manifest(long_description="test card 4111111111111111"))
    assert version["state"] == "quarantined"
    assert version["state_reason"] == "pii: card numbers in app"


def test_bad_policy_refused_with_parser_message(client: TestClient, tenant: TenantHandle) -> None:
    body = {"name": "broken", "source": "package x\ndeny contains msg if { input.a = }\n"}
    response = client.post("/v1/policies", json=body, headers=tenant.headers)
    assert response.status_code == 422
    assert "Invalid assignment operator (line 2" in response.json()["error"]["message"]
    assert client.get("/v1/policies", headers=tenant.headers).json() == []


def test_a_policy_failing_at_runtime_says_why(client: TestClient, tenant: TenantHandle) -> None:
    # Two values for one complete rule: it compiles, and fails on every input with a manifest
    # (upload tries a policy on an empty input, where this one has no value).
    source = (
        "package conflict\nx := 1 if input.manifest\nx := 2 if input.manifest\n"
        'deny contains "x" if { x }\n'
    )
    why = "eval_conflict_error: complete rules must not produce multiple outputs"
    tried = client.post(
        "/v1/policies/test",
        json={"source": source, "input": {"manifest": {}}},
        headers=tenant.headers,
    )
    assert tried.status_code == 422
    assert tried.json()["error"]["message"] == f"policy failed on this input: {why}"
    add_team(client, tenant)
    client.post("/v1/policies", json={"name": "conflict", "source": source}, headers=tenant.headers)
    version = submit(client, tenant, manifest())
    assert version["state"] == "rejected"  # fail closed, saying why
    assert version["state_reason"] == f"policy conflict v1 failed: {why}"


def _validate(client: TestClient, tenant: TenantHandle, body: dict) -> dict:  # type: ignore[type-arg]
    response = client.post("/v1/apps/validate", json={"manifest": body}, headers=tenant.headers)
    assert response.status_code == 200, response.text
    result: dict = response.json()  # type: ignore[type-arg]
    return result


def test_validate_checks_what_publishing_resolves(client: TestClient, tenant: TenantHandle) -> None:
    # The team does not exist yet: publishing would fail with a 422, so validating fails too.
    report = _validate(client, tenant, manifest())
    assert report["ok"] is False
    references = _checks(report)["references"]
    assert (references["outcome"], references["blocking"]) == ("fail", True)
    assert references["findings"] == [{"field": "team", "message": "unknown team 'social'"}]
    submit(client, tenant, manifest(), expect=422)

    add_team(client, tenant)
    unknown_cc = _validate(client, tenant, manifest(cost_center="cc-nowhere"))
    assert unknown_cc["ok"] is False
    assert _checks(unknown_cc)["references"]["findings"] == [
        {"field": "cost_center", "message": "unknown cost center 'cc-nowhere'"}
    ]
    ready = _validate(client, tenant, manifest())
    assert ready["ok"] is True
    assert _checks(ready)["references"]["outcome"] == "pass"
    assert client.get("/v1/apps/where2eat", headers=tenant.headers).status_code == 404  # dry run
    assert submit(client, tenant, manifest())["state"] == "published"

    # Now the app exists: another team in the manifest, or other content under a published
    # version, is refused by publishing, and so by validating.
    add_team(client, tenant, "other")
    moved = _checks(_validate(client, tenant, manifest(team="other")))["references"]
    assert moved["findings"][0]["field"] == "team"
    assert "is not the app's team 'social'" in moved["findings"][0]["message"]
    changed = _checks(_validate(client, tenant, manifest(title="Changed")))["references"]
    assert changed["findings"][0]["field"] == "version"
    assert "versions are immutable" in changed["findings"][0]["message"]
    assert _validate(client, tenant, manifest())["ok"] is True  # the same version: a retry
    assert _validate(client, tenant, manifest(version="1.1.0"))["ok"] is True


def test_a_manifest_naming_another_cost_center_than_the_apps_is_refused(
    client: TestClient, tenant: TenantHandle
) -> None:
    add_team(client, tenant)
    make_cost_center(client, tenant, "cc-b")
    member = headers_for(client, tenant, role="team-member", team="social")

    def send(body: dict[str, Any], headers: dict[str, str]) -> httpx.Response:
        return client.post(
            f"/v1/apps/{body['app_id']}/versions",
            json={"manifest": body, "publish": True},
            headers=headers,
        )

    assert send(manifest(), member).status_code == 201
    message = (
        "manifest cost_center 'cc-b' is not the app's cost center 'default': a manifest does "
        "not change who pays; an admin changes it with `qm app update --cost-center` (a dated "
        "change), then publish"
    )
    for headers in (member, tenant.headers):
        refused = send(manifest(version="1.1.0", cost_center="cc-b"), headers)
        assert refused.status_code == 422, refused.text
        assert refused.json()["error"]["field"] == "cost_center"
        assert refused.json()["error"]["message"] == message
    validated = _checks(_validate(client, tenant, manifest(version="1.1.0", cost_center="cc-b")))
    assert validated["references"]["findings"] == [{"field": "cost_center", "message": message}]
    versions = client.get("/v1/apps/where2eat/versions", headers=tenant.headers).json()
    assert [v["manifest"].get("cost_center") for v in versions] == ["default"]
    assert client.get("/v1/apps/where2eat", headers=tenant.headers).json()["cost_center"] == (
        "default"
    )
    # Without a cost_center, or naming the app's own, a version publishes.
    assert send(manifest(version="1.1.0", cost_center=None), member).status_code == 201
