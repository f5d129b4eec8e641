"""A decision's runtime is at least 1 s, and running work renews its decision before it
expires (guardrails walkthrough finding 9), asked again by a halt and the admission policies:
a halt stops non-essential work at its renewal, and work admitted under a policy exception
cannot renew past it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from quartermaster.guardrails.evaluator import evaluate_tenant
from quartermaster.guardrails.gate import guardrail_gate
from quartermaster.guardrails.quotas import expire_reservations
from quartermaster.runtime import Runtime
from tests.conftest import TenantHandle
from tests.guardrails.support import FixedSpend, World, budget, build_world, key_for, ok

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples" / "policies"
# Renewals may be told apart: this policy refuses to renew work admitted before a cut-off.
NO_RENEWALS = """package qm.admission.no_renewals

deny contains msg if {
\tinput.renewal.decision_id
\tmsg := sprintf("decision %s may not renew", [input.renewal.decision_id])
}
"""


def _moment(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.mark.parametrize("value", ["0", 0, "0s", "0m"])
def test_a_runtime_under_one_second_is_a_422_with_examples(
    client: TestClient, tenant: TenantHandle, value: object
) -> None:
    world = build_world(client, tenant)
    body = {"app": world.app, "resources": {"runtime": value}}
    answer = client.post("/v1/decisions", json=body, headers=world.headers)
    assert answer.status_code == 422, answer.text
    error = answer.json()["error"]
    assert error["field"] == "resources.runtime"
    assert "90, 15m, 2h" in error["message"]


def test_a_runtime_that_is_no_duration_gives_duration_examples(
    client: TestClient, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    body = {"app": world.app, "resources": {"runtime": "soon"}}
    answer = client.post("/v1/decisions", json=body, headers=world.headers)
    assert answer.status_code == 422, answer.text
    assert "90, 15m, 2h" in answer.json()["error"]["message"]
    assert "1Gi" not in answer.json()["error"]["message"]


def test_renew_extends_active_work_and_keeps_its_quota(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    quota = {"scope_kind": "team", "scope": world.team, "resource": "concurrency", "hard": "1"}
    ok(client.put("/v1/quotas", json=quota, headers=world.headers))
    app_key = key_for(client, tenant, "app", app_id=world.app)
    body = {"app": world.app, "resources": {"runtime": "60"}}
    made = ok(client.post("/v1/decisions", json=body, headers=app_key))
    assert made["allowed"] is True
    renewed = ok(
        client.post(f"/v1/decisions/{made['id']}/renew", json={"runtime": "2h"}, headers=app_key)
    )
    assert renewed["status"] == "active"
    until = _moment(renewed["expires_at"])
    assert until - datetime.now(UTC) > timedelta(minutes=119)
    # Past the first runtime the work still holds its quota: the expiry pass leaves it.
    with runtime.session_factory() as session:
        expire_reservations(session=session, now=datetime.now(UTC) + timedelta(minutes=5))
    assert ok(client.get(f"/v1/decisions/{made['id']}", headers=app_key))["status"] == "active"
    second = ok(client.post("/v1/decisions", json=body, headers=app_key))
    assert second["allowed"] is False  # concurrency 1 still held
    # Without a body: its own runtime again (60 s from now).
    again = ok(client.post(f"/v1/decisions/{made['id']}/renew", headers=app_key))
    assert _moment(again["expires_at"]) - datetime.now(UTC) < timedelta(seconds=61)
    # A bad runtime names it; another team's key does not find it.
    bad = client.post(f"/v1/decisions/{made['id']}/renew", json={"runtime": 0}, headers=app_key)
    assert bad.status_code == 422, bad.text
    assert bad.json()["error"]["field"] == "runtime"
    other = build_world(client, tenant)
    stranger = key_for(client, tenant, "app", app_id=other.app)
    assert client.post(f"/v1/decisions/{made['id']}/renew", headers=stranger).status_code == 404
    # Released: a renew is a 409 saying to ask again.
    ok(client.post(f"/v1/decisions/{made['id']}/release", headers=app_key))
    late = client.post(f"/v1/decisions/{made['id']}/renew", headers=app_key)
    assert late.status_code == 409, late.text
    assert late.json()["error"]["field"] == "decision_id"
    assert "released" in late.json()["error"]["message"]


def test_renew_is_held_to_the_runtime_max_and_refused_after_expiry(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    limit = {"scope_kind": "team", "scope": world.team, "resource": "runtime", "max": "1h"}
    ok(client.put("/v1/limit-ranges", json=limit, headers=world.headers))
    made = ok(
        client.post(
            "/v1/decisions",
            json={"app": world.app, "resources": {"runtime": "30m"}},
            headers=world.headers,
        )
    )
    path = f"/v1/decisions/{made['id']}/renew"
    over = client.post(path, json={"runtime": "2h"}, headers=world.headers)
    assert over.status_code == 422, over.text
    assert "over the max 3600s" in over.json()["error"]["message"]
    with runtime.session_factory() as session:
        expire_reservations(session=session, now=datetime.now(UTC) + timedelta(hours=1))
    late = client.post(path, headers=world.headers)
    assert late.status_code == 409, late.text
    assert "expired" in late.json()["error"]["message"]


def _decision(client: TestClient, world: World, headers: dict[str, str], **body: Any) -> Any:
    made = ok(client.post("/v1/decisions", json={"app": world.app, **body}, headers=headers))
    assert made["allowed"] is True, made
    return made


def _evaluate(runtime: Runtime, world: World, spend: FixedSpend) -> None:
    """An evaluation pass on `spend`, its enforcements in the gate at once."""
    with runtime.session_factory() as session:
        evaluate_tenant(world.tenant.tenant_id, spend=spend, session=session)
    guardrail_gate(runtime).invalidate()


def _renew(client: TestClient, decision: Any, headers: dict[str, str]) -> Any:
    return client.post(f"/v1/decisions/{decision['id']}/renew", headers=headers)


def test_a_halt_refuses_the_renewal_of_non_essential_work(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    app_key = key_for(client, tenant, "app", app_id=world.app)
    work = _decision(client, world, app_key, resources={"runtime": "10m"})
    essential = _decision(client, world, app_key, resources={"runtime": "10m"}, essential=True)
    budget(client, world, name="team-cap", scope_kind="team", scope=world.team, action="halt")
    spend = FixedSpend()
    spend.set("team", world.team, "101")
    _evaluate(runtime, world, spend)
    refused = _renew(client, work, app_key)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["field"] == "decision_id"
    assert error["message"].startswith(f"decision {work['id']} is not renewed (budget: halted:")
    assert "unless released sooner" in error["message"]
    # The work keeps its expiry (it was not shortened) and its quota until then.
    kept = ok(client.get(f"/v1/decisions/{work['id']}", headers=app_key))
    assert (kept["status"], kept["expires_at"]) == ("active", work["expires_at"])
    actions = ok(client.get("/v1/guardrail-actions", headers=world.headers))
    deny = next(a for a in actions if a["subject"] == f"decision:{work['id']}")
    assert (deny["action"], deny["reason"][:25]) == ("deny", "renewal refused: halted: ")
    # Essential work renews through the halt when an admin asks, as it is admitted.
    by_app = _renew(client, essential, app_key)
    assert by_app.status_code == 409, by_app.text
    assert "passes a halt only when an admin key asks" in by_app.json()["error"]["message"]
    assert ok(_renew(client, essential, world.headers))["status"] == "active"


def test_work_admitted_under_an_exception_does_not_renew_past_it(
    client: TestClient, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    source = (EXAMPLES / "admission" / "gpu-needs-exception.rego").read_text()
    policy = {"name": "gpu", "source": source}
    ok(client.post("/v1/policies", json=policy, headers=world.headers), 201)
    grant = {"key": "gpu", "team": world.team, "reason": "training run", "days": 2}
    exception = ok(client.post("/v1/policy-exceptions", json=grant, headers=world.headers), 201)
    work = _decision(client, world, world.headers, resources={"gpu": "1", "runtime": "1h"})
    cpu_work = _decision(client, world, world.headers, resources={"cpu": "1", "runtime": "1h"})
    assert ok(_renew(client, work, world.headers))["status"] == "active"
    ok(client.delete(f"/v1/policy-exceptions/{exception['id']}", headers=world.headers))
    refused = _renew(client, work, world.headers)
    assert refused.status_code == 409, refused.text
    message = refused.json()["error"]["message"]
    assert "policy: gpu: team " in message
    assert "without a 'gpu' exception" in message
    # Work the policy never objected to renews as before; each renewal is in the policy log
    # with the decision it was about.
    assert ok(_renew(client, cpu_work, world.headers))["status"] == "active"
    log = ok(client.get("/v1/policy-decisions", headers=world.headers))
    renewals = [d for d in log if d["decision_id"] == work["id"]]
    assert sorted(d["result"] for d in renewals) == ["allow", "allow", "deny"]


def test_a_policy_sees_a_renewal_as_one(client: TestClient, tenant: TenantHandle) -> None:
    world = build_world(client, tenant)
    policy = {"name": "no-renewals", "source": NO_RENEWALS}
    ok(client.post("/v1/policies", json=policy, headers=world.headers), 201)
    work = _decision(client, world, world.headers, resources={"runtime": "5m"})
    refused = _renew(client, work, world.headers)
    assert refused.status_code == 409, refused.text
    assert f"no-renewals: decision {work['id']} may not renew" in refused.text


def test_a_renewals_input_names_the_decision_and_when_it_was_admitted(
    client: TestClient, tenant: TenantHandle
) -> None:
    """The renewal's input, as the policy decision log digests it, is the one documented."""
    world = build_world(client, tenant)
    echo = (
        "package qm.admission.echo\n\n"
        "deny contains msg if {\n\tinput.renewal\n"
        '\tmsg := sprintf("%s %s %v", [input.renewal.decision_id, input.renewal.admitted_at,'
        " input.resources.runtime])\n}\n"
    )
    ok(
        client.post("/v1/policies", json={"name": "echo", "source": echo}, headers=world.headers),
        201,
    )
    work = _decision(client, world, world.headers, resources={"runtime": "5m"})
    refused = client.post(
        f"/v1/decisions/{work['id']}/renew", json={"runtime": "7m"}, headers=world.headers
    )
    assert refused.status_code == 409, refused.text
    message = refused.json()["error"]["message"]
    admitted = ok(client.get(f"/v1/decisions/{work['id']}", headers=world.headers))["created_at"]
    stamp = datetime.fromisoformat(admitted.replace("Z", "+00:00")).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ"
    )
    assert f"echo: {work['id']} {stamp} 420" in message


def test_an_apps_work_renews_under_the_team_the_app_has_now(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    """An app moved to another team since its work was admitted: the renewal goes on under
    the new team, whose limit ranges and halt hold it (the old team's do not)."""
    world = build_world(client, tenant)
    other = build_world(client, tenant)
    work = _decision(client, world, world.headers, resources={"runtime": "10m"})
    moved = {"team": other.team}
    ok(client.patch(f"/v1/apps/{world.app}", json=moved, headers=world.headers))
    assert ok(_renew(client, work, world.headers))["status"] == "active"
    # The new team's limit ranges hold its runtime.
    limit = {"scope_kind": "team", "scope": other.team, "resource": "runtime", "max": "10m"}
    ok(client.put("/v1/limit-ranges", json=limit, headers=world.headers))
    path = f"/v1/decisions/{work['id']}/renew"
    over = client.post(path, json={"runtime": "20m"}, headers=world.headers)
    assert over.status_code == 422, over.text
    assert f"limit range of team '{other.team}'" in over.json()["error"]["message"]
    budget(client, world, name="old-team", scope_kind="team", scope=world.team, action="halt")
    budget(client, world, name="new-team", scope_kind="team", scope=other.team, action="halt")
    spend = FixedSpend()
    spend.set("team", world.team, "101")
    _evaluate(runtime, world, spend)
    assert ok(_renew(client, work, world.headers))["status"] == "active"  # not its team now
    spend.set("team", other.team, "101")
    _evaluate(runtime, world, spend)
    refused = _renew(client, work, world.headers)
    assert refused.status_code == 409, refused.text
    assert "new-team" in refused.json()["error"]["message"]
