"""Versions and approvals over the API, beyond the publish flow: who sees which approval
requests, what publishing a draft needs sent again, and an ill-formed version in the URL."""

from __future__ import annotations

import base64
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import select

from quartermaster.catalog import checks, versions
from quartermaster.catalog.publish_models import AppVersion, VersionState
from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import InvalidInputError
from quartermaster.runtime import Runtime
from tests.catalog.publish_support import add_team, manifest, submit, upload_policy, zip_b64
from tests.conftest import TenantHandle
from tests.tenancy.support import headers_for, ok

ORG = {"data_scopes": ["org"], "data_owner": "data-governance"}


def _approvals(client: TestClient, headers: dict[str, str], **params: str) -> list[str]:
    listed: list[dict[str, Any]] = ok(client.get("/v1/approvals", params=params, headers=headers))
    return [f"{one['app_id']}@{one['version']}" for one in listed]


def test_a_team_member_sees_only_its_teams_approval_requests(
    client: TestClient, tenant: TenantHandle
) -> None:
    add_team(client, tenant, "social")
    add_team(client, tenant, "other")
    upload_policy(client, tenant, "org-scope", "org-scope-approval.rego")
    assert submit(client, tenant, manifest(**ORG))["state"] == "pending_approval"
    theirs = manifest(app_id="rival", team="other", **ORG)
    assert submit(client, tenant, theirs)["state"] == "pending_approval"
    social = headers_for(client, tenant, role="team-member", team="social")
    other = headers_for(client, tenant, role="team-member", team="other")
    finance = headers_for(client, tenant, role="finance")

    assert _approvals(client, social) == ["where2eat@1.0.0"]
    assert _approvals(client, social, status="pending") == ["where2eat@1.0.0"]
    assert _approvals(client, other) == ["rival@1.0.0"]
    # As for the versions themselves: the other team's app is not the member's to read.
    assert client.get("/v1/apps/rival/versions", headers=social).status_code == 403
    for headers in (tenant.headers, finance):
        assert _approvals(client, headers) == ["where2eat@1.0.0", "rival@1.0.0"]

    # A decided request stays its team's, reviewer's comment and all.
    rival = next(
        one
        for one in ok(client.get("/v1/approvals", headers=tenant.headers))
        if one["app_id"] == "rival"
    )
    ok(
        client.post(
            f"/v1/approvals/{rival['id']}/reject",
            json={"comment": "exports customer data"},
            headers=tenant.headers,
        )
    )
    assert "exports customer data" not in client.get("/v1/approvals", headers=social).text
    assert _approvals(client, other, status="rejected") == ["rival@1.0.0"]

    # An app moved to another team takes its requests with it.
    ok(client.patch("/v1/apps/rival", json={"team": "social"}, headers=tenant.headers))
    assert _approvals(client, social) == ["where2eat@1.0.0", "rival@1.0.0"]
    assert _approvals(client, other) == []


def test_no_approval_request_of_another_tenant_is_listed(
    client: TestClient, tenant: TenantHandle, make_tenant: Callable[..., TenantHandle]
) -> None:
    add_team(client, tenant, "social")
    upload_policy(client, tenant, "org-scope", "org-scope-approval.rego")
    submit(client, tenant, manifest(**ORG))
    neighbour = make_tenant()
    add_team(client, neighbour, "social")
    member = headers_for(client, neighbour, role="team-member", team="social")
    for headers in (neighbour.headers, member):
        assert _approvals(client, headers) == []


def _publish(client: TestClient, tenant: TenantHandle, body: dict[str, Any]) -> Any:
    return client.post(
        "/v1/apps/where2eat/versions/1.0.0/publish", json=body, headers=tenant.headers
    )


def test_publishing_a_draft_sends_its_package_again(
    client: TestClient, tenant: TenantHandle
) -> None:
    add_team(client, tenant)
    package = zip_b64({"app.py": "print('hi')\n"})
    draft = submit(client, tenant, manifest(), package=package, publish=False)
    assert draft["state"] == "draft"

    left_out = _publish(client, tenant, {})
    assert left_out.status_code == 422, left_out.text
    error = left_out.json()["error"]
    assert error["field"] == "package_zip_b64"
    assert error["message"].startswith(
        "package_zip_b64 is required: resend the package submitted with version 1.0.0"
    )
    other = _publish(client, tenant, {"package_zip_b64": zip_b64({"app.py": "print(1)\n"})})
    assert other.status_code == 422, other.text
    assert other.json()["error"]["field"] == "package_zip_b64"
    assert other.json()["error"]["message"].startswith(
        "the package differs from the one submitted with version 1.0.0"
    )
    published = ok(_publish(client, tenant, {"package_zip_b64": package}))
    assert published["state"] == "published"


def test_a_draft_submitted_without_a_package_publishes_without_one(
    client: TestClient, tenant: TenantHandle
) -> None:
    add_team(client, tenant)
    submit(client, tenant, manifest(), publish=False)
    late = _publish(client, tenant, {"package_zip_b64": zip_b64({"app.py": "x = 1\n"})})
    assert late.status_code == 422, late.text
    assert late.json()["error"]["message"].startswith(
        "version 1.0.0 was submitted without a package: publish it without package_zip_b64"
    )
    assert ok(_publish(client, tenant, {}))["state"] == "published"


def test_an_ill_formed_version_in_the_url_is_a_422(
    client: TestClient, tenant: TenantHandle
) -> None:
    add_team(client, tenant)
    submit(client, tenant, manifest())
    base = "/v1/apps/where2eat/versions"
    for method, path, body in (
        ("GET", f"{base}/notsemver", None),
        ("POST", f"{base}/v1.0/publish", {}),
        ("POST", f"{base}/1.0/deprecate", {}),
        ("POST", f"{base}/01.0.0/quarantine", {"reason": "leak"}),
    ):
        response = client.request(method, path, json=body, headers=tenant.headers)
        assert response.status_code == 422, (path, response.text)
        error = response.json()["error"]
        assert error["field"] == "version"
        assert "is not a semantic version (MAJOR.MINOR.PATCH[-pre]" in error["message"]
    unknown = client.get(f"{base}/9.9.9", headers=tenant.headers)
    assert unknown.status_code == 404
    assert unknown.json()["error"]["field"] == "version"
    assert ok(client.get(f"{base}/1.0.0", headers=tenant.headers))["state"] == "published"


def _versions(client: TestClient, tenant: TenantHandle) -> list[tuple[str, str]]:
    response = client.get("/v1/apps/where2eat/versions", headers=tenant.headers)
    if response.status_code == 404:  # the app itself was never registered
        return []
    rows: list[dict[str, Any]] = ok(response)
    return [(row["version"], row["state"]) for row in rows]


def test_a_package_publishing_would_refuse_is_refused_before_anything_is_stored(
    client: TestClient, tenant: TenantHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_team(client, tenant)
    monkeypatch.setattr(checks, "MAX_PACKAGE_FILES", 3)
    refused = [
        (base64.b64encode(b"not a zip").decode(), 422, "package is not a zip archive"),
        (zip_b64({"../evil.txt": "x"}), 422, "package entry '../evil.txt' leaves the package"),
        (zip_b64({f"f{i}.txt": "x" for i in range(4)}), 413, "package has more than 3 files"),
    ]
    for package, status, message in refused:
        for publish in (True, False):
            body = {"manifest": manifest(), "package_zip_b64": package, "publish": publish}
            answer = client.post("/v1/apps/where2eat/versions", json=body, headers=tenant.headers)
            assert answer.status_code == status, answer.text
            assert answer.json()["error"]["message"] == message
            assert _versions(client, tenant) == []
    # The good package beside them is stored and published.
    good = zip_b64({"app.py": "print('hi')\n"})
    assert submit(client, tenant, manifest(), package=good)["state"] == "published"


def test_a_publish_whose_checks_fail_leaves_the_version_a_draft(
    client: TestClient, tenant: TenantHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    add_team(client, tenant)
    package = zip_b64({"app.py": "print('hi')\n"})
    assert submit(client, tenant, manifest(), package=package, publish=False)["state"] == "draft"

    def broken(*_args: object) -> object:
        raise InvalidInputError("the scanner is missing", field="package")

    monkeypatch.setattr(versions, "checks_for_zip", broken)
    failed = _publish(client, tenant, {"package_zip_b64": package})
    assert failed.status_code == 422, failed.text
    assert _versions(client, tenant) == [("1.0.0", "draft")]
    monkeypatch.undo()
    assert ok(_publish(client, tenant, {"package_zip_b64": package}))["state"] == "published"


def test_a_version_left_checking_by_a_stopped_server_publishes_again_once_stale(
    client: TestClient, tenant: TenantHandle, runtime: Runtime
) -> None:
    add_team(client, tenant)
    submit(client, tenant, manifest(), publish=False)

    def left_checking(since: timedelta) -> None:
        with runtime.session_factory() as session:
            row = session.scalars(
                select(AppVersion).where(AppVersion.tenant_id == tenant.tenant_id)
            ).one()
            row.state = VersionState.CHECKING.value
            row.updated_at = utc_now() - since
            session.commit()

    left_checking(timedelta(minutes=1))  # another publish still checking: not this one's
    running = _publish(client, tenant, {})
    assert running.status_code == 409, running.text
    assert running.json()["error"]["message"] == (
        "where2eat@1.0.0 is checking; only a draft is published"
    )
    left_checking(versions.CHECKING_STALE_AFTER + timedelta(minutes=1))
    assert ok(_publish(client, tenant, {}))["state"] == "published"


def test_a_patch_of_an_older_line_does_not_rename_the_app(
    client: TestClient, tenant: TenantHandle
) -> None:
    add_team(client, tenant)
    submit(client, tenant, manifest(version="1.10.0", title="Where2Eat"))
    older = submit(client, tenant, manifest(version="1.9.1", title="Where2Eat classic"))
    assert older["state"] == "published"  # beside 1.10.0: an older line, maintained
    app = ok(client.get("/v1/apps/where2eat", headers=tenant.headers))
    assert app["title"] == "Where2Eat"
    hits = ok(client.get("/v1/apps/search", params={"q": "where2eat"}, headers=tenant.headers))
    assert [(h["version"], h["title"]) for h in hits["hits"]] == [("1.10.0", "Where2Eat")]
    # A newer one names it.
    submit(client, tenant, manifest(version="1.11.0", title="Where2Eat Next"))
    assert ok(client.get("/v1/apps/where2eat", headers=tenant.headers))["title"] == (
        "Where2Eat Next"
    )


def test_quarantining_a_version_pending_approval_closes_its_request(
    client: TestClient, tenant: TenantHandle
) -> None:
    add_team(client, tenant)
    upload_policy(client, tenant, "org-scope", "org-scope-approval.rego")
    assert submit(client, tenant, manifest(**ORG))["state"] == "pending_approval"
    ok(
        client.post(
            "/v1/apps/where2eat/versions/1.0.0/quarantine",
            json={"reason": "leaks"},
            headers=tenant.headers,
        )
    )
    assert _approvals(client, tenant.headers, status="pending") == []
    (closed,) = ok(client.get("/v1/approvals", headers=tenant.headers))
    assert closed["status"] == "rejected"
    assert closed["comment"] == "closed: the version was quarantined: leaks"
    assert closed["version_state"] == "quarantined"


def test_a_deprecation_without_a_reason_names_who_deprecated_it(
    client: TestClient, tenant: TenantHandle
) -> None:
    add_team(client, tenant)
    submit(client, tenant, manifest())
    member = headers_for(client, tenant, role="team-member", team="social")
    done = ok(client.post("/v1/apps/where2eat/versions/1.0.0/deprecate", json={}, headers=member))
    assert done["state"] == "deprecated"
    assert done["state_reason"].startswith("deprecated by ")
    assert done["state_reason"] != "deprecated by its owner"
