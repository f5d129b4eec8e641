"""Approving a version whose require_approval rule ignores `input.approval.approved`: the
re-run rejects it and asks for no second review, and a rejected version cannot be approved
(it had come back to life as `published` through an orphan request)."""

from __future__ import annotations

from typing import Any

from fastapi.testclient import TestClient

from tests.catalog.publish_support import add_team, manifest, submit
from tests.conftest import TenantHandle
from tests.guardrails.support import ok

NAIVE = """package t.publish.review
import rego.v1
require_approval contains "GPU apps need a review" if {
	input.manifest.estimated_compute_profile.gpu > 0
}
"""
FIXED = """package t.publish.review
import rego.v1
require_approval contains "GPU apps need a review" if {
	input.manifest.estimated_compute_profile.gpu > 0
	not input.approval.approved
}
"""
GPU = {"estimated_compute_profile": {"tier": "gpu", "gpu": 1}}


def _policy(client: TestClient, tenant: TenantHandle, source: str) -> None:
    body = {"name": "review", "source": source}
    ok(client.post("/v1/policies", json=body, headers=tenant.headers), 201)


def _approvals(client: TestClient, tenant: TenantHandle, status: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = ok(
        client.get("/v1/approvals", params={"status": status}, headers=tenant.headers)
    )
    return found


def _review(client: TestClient, tenant: TenantHandle, approval_id: str, verb: str) -> Any:
    return client.post(
        f"/v1/approvals/{approval_id}/{verb}", json={"comment": "ok"}, headers=tenant.headers
    )


def test_a_rule_that_fires_again_after_review_rejects_without_a_new_request(
    client: TestClient, tenant: TenantHandle
) -> None:
    add_team(client, tenant)
    _policy(client, tenant, NAIVE)
    assert submit(client, tenant, manifest(**GPU))["state"] == "pending_approval"
    [request] = _approvals(client, tenant, "pending")
    answer = ok(_review(client, tenant, request["id"], "approve"))
    assert (answer["status"], answer["version_state"]) == ("approved", "rejected")
    assert answer["version_state_reason"] == (
        "still requires approval after review: review: GPU apps need a review (a "
        "require_approval "
        "rule must test `not input.approval.approved`)"
    )
    assert _approvals(client, tenant, "pending") == []  # no orphan request

    # Even once the policy is fixed, the rejected version stays rejected.
    _policy(client, tenant, FIXED)
    again = _review(client, tenant, request["id"], "approve")
    assert again.status_code == 409
    version = ok(client.get("/v1/apps/where2eat/versions/1.0.0", headers=tenant.headers))
    assert version["state"] == "rejected"


def test_a_request_whose_version_is_no_longer_pending_cannot_be_approved(
    client: TestClient, tenant: TenantHandle, runtime: Any
) -> None:
    from sqlalchemy import select, update

    from quartermaster.catalog.publish_models import AppVersion
    from quartermaster.policy.models import Approval

    add_team(client, tenant)
    _policy(client, tenant, FIXED)
    submit(client, tenant, manifest(**GPU))
    [request] = _approvals(client, tenant, "pending")
    with runtime.session_factory() as session:  # as an orphan request left before the fix
        version_id = session.scalar(
            select(Approval.app_version_id).where(Approval.id == request["id"])
        )
        session.execute(
            update(AppVersion)
            .where(AppVersion.id == version_id)
            .values(state="rejected", state_reason="still requires approval after review")
        )
        session.commit()
    refused = _review(client, tenant, request["id"], "approve")
    assert refused.status_code == 409
    assert refused.json()["error"]["message"] == (
        f"where2eat@1.0.0 is rejected, no longer pending approval: it cannot be approved "
        f"(reject approval {request['id']} to close it)"
    )
    closed = ok(_review(client, tenant, request["id"], "reject"))
    assert (closed["status"], closed["version_state"]) == ("rejected", "rejected")
    assert closed["version_state_reason"] == "still requires approval after review"
    assert _approvals(client, tenant, "pending") == []


def test_approving_with_a_rule_that_tests_the_approval_publishes(
    client: TestClient, tenant: TenantHandle
) -> None:
    add_team(client, tenant)
    _policy(client, tenant, FIXED)
    submit(client, tenant, manifest(**GPU))
    [request] = _approvals(client, tenant, "pending")
    answer = ok(_review(client, tenant, request["id"], "approve"))
    assert (answer["version_state"], answer["version_state_reason"]) == ("published", None)
