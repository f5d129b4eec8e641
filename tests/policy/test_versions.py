"""Which versions of a policy are in force: a draft (uploaded disabled) waits beside the
enforced version, an audit upload runs as a trial beside it; the version history, idempotent
re-uploads and rollback (GET /v1/policies/{name}/versions, POST …/rollback)."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient

from quartermaster.policy.service import VersionRow, in_force, version_state
from tests.catalog.publish_support import add_team, manifest, submit
from tests.conftest import TenantHandle
from tests.guardrails.support import ok

DENY_NO_CC = """package t.publish.cc
import rego.v1
deny contains "needs a cost center" if not input.manifest.cost_center
"""
DENY_ALL = """package t.publish.cc
import rego.v1
deny contains "everything is refused" if true
"""


def _upload(
    client: TestClient, tenant: TenantHandle, source: str, *, expect: int = 201, **extra: Any
) -> dict[str, Any]:
    body = {"name": "cc", "source": source, **extra}
    result: dict[str, Any] = ok(
        client.post("/v1/policies", json=body, headers=tenant.headers), expect
    )
    return result


def _in_force(answer: dict[str, Any]) -> list[tuple[int, str]]:
    return [(v["version"], v["mode"]) for v in answer["in_force"]]


def test_a_disabled_draft_does_not_switch_off_the_enforced_version(
    client: TestClient, tenant: TenantHandle
) -> None:
    add_team(client, tenant)
    _upload(client, tenant, DENY_NO_CC)
    draft = _upload(client, tenant, DENY_ALL, enabled=False)
    assert (draft["version"], draft["enabled"], draft["draft"]) == (2, False, True)
    assert _in_force(draft) == [(1, "enforce")]
    held = submit(client, tenant, manifest(cost_center=None))
    assert (held["state"], held["state_reason"]) == ("rejected", "cc: needs a cost center")
    assert held["decision"]["policies"] == ["cc@1"]
    assert submit(client, tenant, manifest(version="1.1.0"))["state"] == "published"

    promoted = ok(client.post("/v1/policies/cc/enable", headers=tenant.headers))
    assert (promoted["version"], promoted["enabled"], promoted["draft"]) == (3, True, False)
    assert promoted["source"] == DENY_ALL
    assert _in_force(promoted) == [(3, "enforce")]
    assert submit(client, tenant, manifest(version="1.2.0"))["state_reason"] == (
        "cc: everything is refused"
    )


def test_an_audit_upload_is_a_trial_beside_the_enforced_version(
    client: TestClient, tenant: TenantHandle
) -> None:
    add_team(client, tenant)
    _upload(client, tenant, DENY_NO_CC)
    trial = _upload(client, tenant, DENY_ALL, mode="audit")
    assert _in_force(trial) == [(1, "enforce"), (2, "audit")]
    published = submit(client, tenant, manifest())  # has a cost center: v1 allows
    assert published["state"] == "published"
    assert published["decision"]["policies"] == ["cc@1", "cc@2"]
    assert published["decision"]["audit_only"] == ["[audit] cc: everything is refused"]
    rejected = submit(client, tenant, manifest(version="1.1.0", cost_center=None))
    assert rejected["state_reason"] == "cc: needs a cost center"  # v1 still decides

    # Off switches off both; on again, the enforced version decides again.
    off = ok(client.post("/v1/policies/cc/disable", headers=tenant.headers))
    assert (off["version"], off["mode"], off["source"], off["in_force"]) == (
        3,
        "enforce",
        DENY_NO_CC,
        [],
    )
    assert submit(client, tenant, manifest(version="1.2.0", cost_center=None))["state"] == (
        "published"
    )
    on = ok(client.post("/v1/policies/cc/enable", headers=tenant.headers))
    assert _in_force(on) == [(4, "enforce")]
    # After a disable, an audit upload is the policy's only version in force.
    assert _in_force(_upload(client, tenant, DENY_ALL, mode="audit")) == [
        (4, "enforce"),
        (5, "audit"),
    ]


def test_an_admission_draft_leaves_the_enforced_version_deciding(
    client: TestClient, tenant: TenantHandle
) -> None:
    from tests.catalog.publish_support import POLICIES
    from tests.guardrails.support import build_world

    world = build_world(client, tenant)
    source = (POLICIES / "admission" / "gpu-needs-exception.rego").read_text()
    ok(
        client.post("/v1/policies", json={"name": "gpu", "source": source}, headers=tenant.headers),
        201,
    )
    allow_all = 'package qm.admission.gpu\nimport rego.v1\nwarn contains "fine" if true\n'
    for extra in ({"enabled": False}, {"mode": "audit"}):
        body = {"name": "gpu", "source": allow_all, **extra}
        ok(client.post("/v1/policies", json=body, headers=tenant.headers), 201)
        ask = {"app": world.app, "resources": {"gpu": "1"}}
        answer = ok(client.post("/v1/decisions", json=ask, headers=tenant.headers))
        assert answer["allowed"] is False, extra


def test_the_version_history_says_how_each_version_stands(
    client: TestClient, tenant: TenantHandle, make_tenant: Any
) -> None:
    _upload(client, tenant, DENY_NO_CC)
    _upload(client, tenant, DENY_ALL, mode="audit")
    _upload(client, tenant, DENY_ALL, mode="audit", expect=200)  # the same: v2 again
    _upload(client, tenant, DENY_ALL, enabled=False)
    history = ok(client.get("/v1/policies/cc/versions", headers=tenant.headers))
    assert [(v["version"], v["mode"], v["state"]) for v in history] == [
        (3, "enforce", "draft"),
        (2, "audit", "in_force"),
        (1, "enforce", "in_force"),
    ]
    assert "source" not in history[0]
    zero = client.get("/v1/policies/cc?version=0", headers=tenant.headers)
    assert zero.json()["error"]["message"] == "policy 'cc' has no version 0 (its latest is 3)"
    missing = client.get("/v1/policies/nope/versions", headers=tenant.headers)
    assert (missing.status_code, missing.json()["error"]["field"]) == (404, "name")


def test_uploading_the_latest_source_again_answers_that_version(
    client: TestClient, tenant: TenantHandle
) -> None:
    first = _upload(client, tenant, DENY_NO_CC)
    again = _upload(client, tenant, DENY_NO_CC, expect=200)
    assert (again["version"], again["created_at"]) == (1, first["created_at"])
    assert _upload(client, tenant, DENY_NO_CC, mode="audit")["version"] == 2  # another mode
    assert _upload(client, tenant, DENY_NO_CC)["version"] == 3


def test_rollback_uploads_an_old_versions_source_and_mode_again(
    client: TestClient, tenant: TenantHandle
) -> None:
    _upload(client, tenant, DENY_NO_CC, mode="audit")
    _upload(client, tenant, DENY_ALL)
    back = ok(client.post("/v1/policies/cc/rollback", json={"to": 1}, headers=tenant.headers), 201)
    assert (back["version"], back["mode"], back["source"]) == (3, "audit", DENY_NO_CC)
    assert _in_force(back) == [(2, "enforce"), (3, "audit")]
    same = client.post("/v1/policies/cc/rollback", json={"to": 3}, headers=tenant.headers)
    assert (same.status_code, same.json()["version"]) == (200, 3)
    missing = client.post("/v1/policies/cc/rollback", json={"to": 9}, headers=tenant.headers)
    assert missing.status_code == 404
    assert missing.json()["error"]["message"] == "policy 'cc' has no version 9 (its latest is 3)"


@pytest.mark.parametrize(
    ("rows", "expected"),
    [
        ([(1, "enforce", True, False)], [1]),
        ([(1, "enforce", True, False), (2, "enforce", False, True)], [1]),
        ([(1, "enforce", True, False), (2, "audit", True, False)], [1, 2]),
        (
            [(1, "enforce", True, False), (2, "audit", True, False), (3, "audit", True, False)],
            [1, 3],
        ),
        (
            [(1, "enforce", True, False), (2, "enforce", False, False), (3, "audit", True, False)],
            [3],
        ),
        ([(1, "audit", True, False), (2, "enforce", True, False)], [2]),
        ([(1, "enforce", True, False), (2, "enforce", False, False)], []),
        ([(1, "enforce", False, True)], []),
    ],
)
def test_in_force_picks_the_deciding_version_and_its_trial(
    rows: list[tuple[int, str, bool, bool]], expected: list[int]
) -> None:
    versions = [VersionRow(*row) for row in rows]
    assert [v.version for v in in_force(versions)] == expected
    states = {v.version: version_state(v, versions) for v in versions}
    assert [n for n, state in states.items() if state == "in_force"] == expected
