"""The decision API consults the tenant's admission policies (Rego, package qm.admission…):
an enforced deny is a reason of kind `policy` beside budget, limit-range and quota reasons; an
audit-mode policy is logged and reported, never denies; publish policies are not asked; every
evaluation is in the policy decision log at point `admission`."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from fastapi.testclient import TestClient

from quartermaster.domain.timeutil import utc_now
from quartermaster.guardrails.evaluator import evaluate_tenant
from quartermaster.guardrails.gate import guardrail_gate
from quartermaster.policy import service as policy_service
from quartermaster.policy.dependencies import policy_cache
from quartermaster.policy.engine import PolicyCache, PolicyRuntimeError
from quartermaster.runtime import Runtime
from tests.conftest import TenantHandle
from tests.guardrails.support import FixedSpend, World, budget, build_world, ok

EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples" / "policies"
LONG_JOBS = """package qm.admission.long_jobs

deny contains msg if {
\tinput.resources.runtime > 7200
\tmsg := sprintf("app %s asks for %vs; jobs over 2h need a reservation", [
\t\tinput.app, input.resources.runtime,
\t])
}

warn contains msg if {
\tinput.resources.runtime > 3600
\tmsg := "a job over an hour"
}
"""
# Two complete definitions of f with different values: an error at evaluation (on an input
# with a point: on the empty input upload tries a policy on, it has no value and uploads).
BROKEN = (
    "package qm.admission.broken\n\n"
    "f := 1 if { input.point }\nf := 2 if { input.point }\n"
    'deny contains msg if {\n\tf == 1\n\tmsg := "never"\n}\n'
)


def _policy(client: TestClient, world: World, name: str, source: str, **fields: Any) -> None:
    body = {"name": name, "source": source, **fields}
    ok(client.post("/v1/policies", json=body, headers=world.headers), 201)


def _decide(client: TestClient, world: World, **resources: Any) -> Any:
    body = {"app": world.app, "resources": resources}
    return ok(client.post("/v1/decisions", json=body, headers=world.headers))


def test_enforced_policy_denies_with_its_reason_and_exceptions_lift_it(
    client: TestClient, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    source = (EXAMPLES / "admission" / "gpu-needs-exception.rego").read_text()
    _policy(client, world, "gpu", source)
    # A publish policy has nothing to say about decisions: not asked.
    publish = (EXAMPLES / "require-cost-center.rego").read_text()
    _policy(client, world, "cost-center", publish)
    ok(
        client.put(
            "/v1/quotas",
            json={"scope_kind": "tenant", "resource": "gpu", "hard": "4"},
            headers=world.headers,
        )
    )
    assert _decide(client, world, cpu="1")["allowed"] is True
    denied = _decide(client, world, gpu="1")
    assert denied["allowed"] is False
    assert denied["id"] is None
    assert [r["kind"] for r in denied["reasons"]] == ["policy"]
    message = denied["reasons"][0]["message"]
    assert message.startswith("gpu: team ")
    assert "asks for 1 GPU(s) without a 'gpu' exception" in message
    quotas = ok(client.get("/v1/quotas", headers=world.headers))
    assert quotas[0]["used"] == 0  # a denied request holds nothing
    actions = ok(client.get("/v1/guardrail-actions", headers=world.headers))
    assert any(a["action"] == "deny" and "GPU" in a["reason"] for a in actions)
    log = ok(client.get("/v1/policy-decisions", headers=world.headers))
    admission = [d for d in log if d["point"] == "admission"]
    assert {d["policy_name"] for d in admission} == {"gpu"}  # the publish policy not asked
    assert sorted(d["result"] for d in admission) == ["allow", "deny"]
    assert all(d["subject"] == f"decision:{world.app}" for d in admission)
    grant = {"key": "gpu", "team": world.team, "reason": "training run", "days": 2}
    ok(client.post("/v1/policy-exceptions", json=grant, headers=world.headers), 201)
    allowed = _decide(client, world, gpu="1")
    assert allowed["allowed"] is True
    assert ok(client.get("/v1/quotas", headers=world.headers))[0]["used"] == 1


def test_audit_mode_reports_but_never_denies(client: TestClient, tenant: TenantHandle) -> None:
    world = build_world(client, tenant)
    _policy(client, world, "long-jobs", LONG_JOBS, mode="audit")
    result = _decide(client, world, runtime="3h")
    assert result["allowed"] is True
    assert result["audit_only"] == [
        f"[audit] long-jobs: app {world.app} asks for 10800s; jobs over 2h need a reservation"
    ]
    log = ok(client.get("/v1/policy-decisions", headers=world.headers))
    assert [(d["result"], d["enforced"], d["mode"]) for d in log] == [("deny", False, "audit")]
    assert "warning: a job over an hour" in log[0]["reasons"]
    # Enforced from the next version on: the same request is denied.
    _policy(client, world, "long-jobs", LONG_JOBS)
    denied = _decide(client, world, runtime="3h")
    assert denied["allowed"] is False
    assert denied["audit_only"] == []
    assert denied["reasons"][0]["kind"] == "policy"


def test_policy_reasons_stand_beside_budget_and_limit_range_ones(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    _policy(client, world, "long-jobs", LONG_JOBS)
    ok(
        client.put(
            "/v1/limit-ranges",
            json={"scope_kind": "tenant", "resource": "cpu", "max": "2"},
            headers=world.headers,
        )
    )
    budget(client, world, scope_kind="app", scope=world.app, action="halt")
    spend = FixedSpend()
    spend.set("app", world.app, "100")
    with runtime.session_factory() as session:
        evaluate_tenant(world.tenant.tenant_id, spend=spend, session=session, now=utc_now())
    guardrail_gate(runtime).invalidate()
    denied = _decide(client, world, cpu="4", runtime="3h")
    assert [r["kind"] for r in denied["reasons"]] == ["budget", "limit_range", "policy"]


def test_a_failing_policy_denies_unless_audited(client: TestClient, tenant: TenantHandle) -> None:
    world = build_world(client, tenant)
    broken = BROKEN
    _policy(client, world, "broken", broken)
    denied = _decide(client, world, cpu="1")
    assert denied["allowed"] is False
    assert denied["reasons"][0]["kind"] == "policy"
    assert "policy broken v1 failed" in denied["reasons"][0]["message"]
    # An audit upload beside the enforced version is a trial: v1 still denies.
    _policy(client, world, "broken", broken, mode="audit")
    assert _decide(client, world, cpu="1")["allowed"] is False
    disabled = client.post("/v1/policies/broken/disable", headers=world.headers)
    assert disabled.status_code == 200
    _policy(client, world, "broken", broken, mode="audit")  # after a disable: audit alone
    assert _decide(client, world, cpu="1")["allowed"] is True


def test_publish_does_not_ask_admission_policies(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    _policy(client, world, "gpu", (EXAMPLES / "admission" / "gpu-needs-exception.rego").read_text())
    _policy(client, world, "cost-center", (EXAMPLES / "require-cost-center.rego").read_text())
    with runtime.session_factory() as session:
        evaluation = policy_service.evaluate(
            world.tenant.tenant_id,
            {"point": "publish", "manifest": {"app_id": "a"}, "resources": {"gpu": 3}},
            point="publish",
            subject="a@1.0.0",
            app_version_id=None,
            cache=PolicyCache(),
            session=session,
            record=False,
        )
    assert [d.policy_name for d in evaluation.decisions] == ["cost-center"]
    assert evaluation.deny == [
        "app a has no cost_center in its manifest: name the cost center that pays for it"
    ]


def test_a_decisions_policies_go_to_the_sandbox_in_one_request_with_the_same_verdicts(
    client: TestClient, runtime: Runtime, tenant: TenantHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """All of a decision's admission policies are evaluated together (PolicyCache.
    evaluate_many: one worker request, the input set once); each one's verdict is what it
    gives alone: an enforced deny and a failure are reasons, an audit-mode deny only
    audit_only, each logged."""
    world = build_world(client, tenant)
    audit = LONG_JOBS.replace("qm.admission.long_jobs", "qm.admission.audited")
    policies = {"a-long": (LONG_JOBS, "enforce"), "b-audit": (audit, "audit")}
    policies["c-broken"] = (BROKEN, "enforce")
    for name, (source, mode) in policies.items():
        _policy(client, world, name, source, mode=mode)
    cache = policy_cache(runtime)
    assert cache.sandbox is not None
    requests: list[int] = []
    ask = cache.sandbox._ask

    def counted(batch: Any, *rest: Any) -> Any:
        requests.append(len(batch))
        return ask(batch, *rest)

    monkeypatch.setattr(cache.sandbox, "_ask", counted)
    denied = _decide(client, world, runtime="3h")
    assert requests == [3]  # one request for the three policies
    # Each policy alone (in-process), as a decision evaluated them one by one before.
    alone = PolicyCache()
    tenant_id = world.tenant.tenant_id
    with pytest.raises(PolicyRuntimeError) as failed:
        alone.evaluate(tenant_id, "c-broken", 1, BROKEN, {"point": "admission"})
    too_long = f"app {world.app} asks for 10800s; jobs over 2h need a reservation"
    assert denied["allowed"] is False
    assert denied["reasons"] == [
        {"kind": "policy", "message": f"a-long: {too_long}"},
        {"kind": "policy", "message": f"c-broken: policy c-broken v1 failed: {failed.value}"},
    ]
    assert denied["audit_only"] == [f"[audit] b-audit: {too_long}"]
    log = ok(client.get("/v1/policy-decisions", headers=world.headers))
    assert sorted((d["policy_name"], d["result"], d["enforced"]) for d in log) == [
        ("a-long", "deny", True),
        ("b-audit", "deny", False),
        ("c-broken", "error", True),
    ]
