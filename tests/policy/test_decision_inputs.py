"""What every policy point adds to its input and logs: `time`/`time_ns` of the decision (its
`decided_at`), the caller at publish as at admission; the decision log's caller, decision id,
`policy`/`point` filters, and unknown query parameters refused."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from fastapi.testclient import TestClient

from quartermaster.policy.service import input_time
from tests.catalog.publish_support import add_team, manifest, submit
from tests.conftest import TenantHandle
from tests.guardrails.support import build_world, key_for, ok

FREEZE = """package t.publish.freeze
import rego.v1
deny contains msg if {
	time.weekday(input.time_ns) == "Friday"
	[hour, _, _] := time.clock(input.time_ns)
	hour >= 16
	msg := sprintf("change freeze: no publishing on Friday after 16:00 UTC (%s)", [input.time])
}
"""
WHO = """package t.publish.who
import rego.v1
who := input.caller.principal
role := input.caller.role
warn contains sprintf("published by %s (%s, team %s)", [who, role, input.caller.team]) if {
	input.caller.team
}
warn contains sprintf("published by %s (%s)", [who, role]) if not input.caller.team
"""
ADMISSION = """package qm.admission.clock
import rego.v1
warn contains sprintf("asked at %s by %s", [input.time, input.caller.principal]) if {
	input.time_ns > 0
}
"""


def _upload(client: TestClient, tenant: TenantHandle, name: str, source: str) -> None:
    body = {"name": name, "source": source}
    ok(client.post("/v1/policies", json=body, headers=tenant.headers), 201)


def _log(client: TestClient, tenant: TenantHandle, **params: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = ok(
        client.get("/v1/policy-decisions", params=params, headers=tenant.headers)
    )
    return found


def test_input_time_is_rfc3339_and_nanoseconds() -> None:
    at = datetime(2026, 12, 4, 16, 30, 0, 123456, tzinfo=UTC)
    assert input_time(at) == {
        "time": "2026-12-04T16:30:00.123456Z",
        "time_ns": 1796401800123456000,
    }


@pytest.mark.parametrize(
    ("moment", "state"),
    [
        (datetime(2026, 12, 4, 16, 30, tzinfo=UTC), "rejected"),  # a Friday, after 16:00
        (datetime(2026, 12, 4, 15, 59, tzinfo=UTC), "published"),
        (datetime(2026, 12, 3, 17, 0, tzinfo=UTC), "published"),  # a Thursday
    ],
)
def test_a_friday_freeze_reads_the_decisions_time(
    client: TestClient, tenant: TenantHandle, monkeypatch: pytest.MonkeyPatch, moment: datetime,
    state: str,
) -> None:  # fmt: skip
    monkeypatch.setattr("quartermaster.catalog.versions.utc_now", lambda: moment)
    add_team(client, tenant)
    _upload(client, tenant, "freeze", FREEZE)
    version = submit(client, tenant, manifest())
    assert version["state"] == state
    if state == "rejected":
        assert version["state_reason"] == (
            "freeze: change freeze: no publishing on Friday after 16:00 UTC "
            "(2026-12-04T16:30:00.000000Z)"
        )
    [logged] = _log(client, tenant, policy="freeze")
    assert datetime.fromisoformat(logged["decided_at"]) == moment  # the input's time, logged


def test_the_publisher_is_in_the_input_and_the_log(
    client: TestClient, tenant: TenantHandle
) -> None:
    add_team(client, tenant)
    _upload(client, tenant, "who", WHO)
    admin = submit(client, tenant, manifest())
    assert admin["decision"]["result"] == "allow"
    [logged] = _log(client, tenant, policy="who")
    assert logged["reasons"] == ["warning: published by admin (admin)"]
    assert logged["caller_name"] == "admin"
    assert logged["caller_id"]
    assert logged["decision_id"] is None
    member = key_for(client, tenant, "team-member", team="social")
    body = {"manifest": manifest(version="1.1.0"), "publish": True}
    ok(client.post("/v1/apps/where2eat/versions", json=body, headers=member), 201)
    newest = _log(client, tenant, policy="who")[0]
    assert newest["reasons"][0].endswith("(team-member, team social)")
    assert newest["caller_id"] != logged["caller_id"]


def test_admission_entries_carry_time_caller_and_the_decision_id(
    client: TestClient, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    _upload(client, tenant, "clock", ADMISSION)
    ask = {"app": world.app, "resources": {"cpu": "100m"}}
    decision = ok(client.post("/v1/decisions", json=ask, headers=tenant.headers))
    assert decision["allowed"] is True
    [logged] = _log(client, tenant, point="admission")
    assert logged["decision_id"] == decision["id"]
    assert logged["caller_name"] == "admin"
    stamp = input_time(datetime.fromisoformat(logged["decided_at"]))["time"]
    assert logged["reasons"] == [f"warning: asked at {stamp} by admin"]
    assert _log(client, tenant, point="publish") == []
    assert _log(client, tenant, policy="nope") == []
    assert [d["policy_name"] for d in _log(client, tenant, policy="clock")] == ["clock"]


def test_the_decision_log_refuses_what_it_does_not_know(
    client: TestClient, tenant: TenantHandle
) -> None:
    unknown = client.get(
        "/v1/policy-decisions", params={"polcy": "x", "zzz": "1"}, headers=tenant.headers
    )
    assert unknown.status_code == 422
    assert unknown.json()["error"] == {
        "code": "invalid_input",
        "message": "unknown query parameter(s): polcy, zzz; the decision log takes: subject, "
        "app, result, policy, point, after, limit",
        "field": "polcy",
    }
    point = client.get("/v1/policy-decisions", params={"point": "zzz"}, headers=tenant.headers)
    assert point.status_code == 422
    assert point.json()["error"]["field"] == "point"
