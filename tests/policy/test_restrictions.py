"""What a policy may not do (docs/policy.md "Restricted built-ins", "Evaluation budget"): call
a built-in that reads the server's environment, the network, the clock or randomness (refused
when compiled, however the call is spelled, and a stored one fails closed); run longer or take
more memory than its budget (its worker is killed, the server answers on); read all of `data`
(a 422 saying why, never a 500)."""

from __future__ import annotations

import hashlib
import time
from collections.abc import Iterator

import pytest
from fastapi.testclient import TestClient

from quartermaster.errors import InvalidInputError
from quartermaster.policy.engine import CompiledPolicy, PolicyCache, PolicyRuntimeError
from quartermaster.policy.models import Policy
from quartermaster.policy.sandbox import PolicyBudgetError, PolicySandbox
from quartermaster.runtime import Runtime
from tests.catalog.publish_support import add_team, manifest, submit
from tests.conftest import TenantHandle
from tests.guardrails.support import build_world, ok

CANARY = "qm-canary-secret-5d1f"
ENV_LEAK = (
    'package qm.publish.t\ndeny contains msg if { msg := sprintf("%v", [opa.runtime().env]) }\n'
)
# Slow in time, small in memory: 9 million steps over two small ranges run for seconds (regopy
# stops them at its statement limit, ~4 s here). A policy building one huge array was slow too,
# but reached the 512 MiB memory limit first on a quick machine.
SLOW = (
    "package qm.publish.slow\n"
    "deny contains msg if {\n"
    "  some i in numbers.range(1, 3000)\n"
    "  some j in numbers.range(1, 3000)\n"
    "  i + j == 0\n"
    '  msg := "never"\n'
    "}\n"
)
RUNTIME_SPELLINGS = [
    ENV_LEAK,
    "package t\nx := opa . runtime ( )\n",
    "package t\nx := opa.\n  runtime()\n",
    "package t\nimport rego.v1\nx := opa.runtime()\n",
    "package t\nx := 1 if { some k in opa.runtime().env }\n",
    "package t\nx := 1 if { opa.runtime(y) }\n",
    'package t\nenv(k) := opa.runtime().env[k]\nx := env("HOME")\n',
    'package t\nx := json.marshal(object.get(opa.runtime(), "env", {}))\n',
    "package t\ndefault x := 1\nx := opa.runtime().env if false else := 2\n",
    "package t\nx := 1 if { y := time.now_ns() with time.now_ns as opa.runtime }\n",
    # Not a call in the plan (and regopy crashes evaluating it): refused by its name.
    'package t\nwarn contains m if { f := opa.runtime; m := sprintf("%v", [f()]) }\n',
    "package t\nwarn contains 1 if { opa.runtime }\n",
]


@pytest.fixture
def canary(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("QM_CANARY_SECRET", CANARY)
    return CANARY


@pytest.fixture
def small_budget(runtime: Runtime) -> Iterator[PolicySandbox]:
    sandbox = PolicySandbox(seconds=0.5)
    runtime.services["policy_cache"] = PolicyCache(sandbox=sandbox)
    yield sandbox
    sandbox.close()


@pytest.mark.parametrize("source", RUNTIME_SPELLINGS)
def test_opa_runtime_is_refused_however_it_is_spelled(source: str) -> None:
    with pytest.raises(InvalidInputError, match=r"may not use: opa\.runtime \(line \d\)"):
        CompiledPolicy(source)


@pytest.mark.parametrize(
    ("call", "builtin"),
    [
        ("time.now_ns()", "time.now_ns"),
        ('rand.intn("seed", 10)', "rand.intn"),
        ('uuid.rfc4122("seed")', "uuid.rfc4122"),
        ('http.send({"method": "get", "url": "http://127.0.0.1"})', "http.send"),
        ('io.jwt.decode_verify("a.b.c", {"secret": "s"})', "io.jwt.decode_verify"),
    ],
)
def test_clock_network_and_randomness_are_refused(call: str, builtin: str) -> None:
    source = f'package t\n\nwarn contains msg if {{\n  msg := sprintf("%v", [{call}])\n}}\n'
    with pytest.raises(InvalidInputError, match=rf"may not use: {builtin} \(line 4\)"):
        CompiledPolicy(source)


def test_the_name_in_a_string_or_a_comment_is_not_a_call() -> None:
    source = (
        "package t\n"
        "# opa.runtime() would be refused\n"
        'warn contains "opa.runtime" if true\n'
        'warn contains m if { m := json.marshal({"opa.runtime": "time.now_ns"}) }\n'
    )
    warn = CompiledPolicy(source).evaluate({}).warn
    assert warn == ["opa.runtime", '{"opa.runtime":"time.now_ns"}']


def test_the_test_route_does_not_show_the_environment(
    client: TestClient, tenant: TenantHandle, canary: str
) -> None:
    for source in RUNTIME_SPELLINGS:
        body = {"source": source, "input": {}}
        response = client.post("/v1/policies/test", json=body, headers=tenant.headers)
        assert response.status_code == 422, response.text
        assert "may not use: opa.runtime (line" in response.json()["error"]["message"]
        assert canary not in response.text
        assert "QM_" not in response.text
    stored = client.post(
        "/v1/policies", json={"name": "env", "source": ENV_LEAK}, headers=tenant.headers
    )
    assert stored.status_code == 422
    assert "may not use: opa.runtime (line 2)" in stored.json()["error"]["message"]


def _store_unchecked(runtime: Runtime, tenant_id: str, name: str, source: str) -> None:
    """A policy stored before the restriction existed (upload now refuses it)."""
    package = source.split("\n", 1)[0].removeprefix("package ")
    with runtime.session_factory() as session:
        session.add(
            Policy(
                tenant_id=tenant_id,
                name=name,
                version=1,
                package=package,
                source=source,
                source_digest=hashlib.sha256(source.encode()).hexdigest(),
                mode="enforce",
                enabled=True,
                created_by="test",
            )
        )
        session.commit()


def test_a_stored_policy_calling_opa_runtime_fails_closed_without_the_environment(
    client: TestClient, tenant: TenantHandle, runtime: Runtime, canary: str
) -> None:
    _store_unchecked(runtime, tenant.tenant_id, "env", ENV_LEAK)
    add_team(client, tenant)
    version = submit(client, tenant, manifest())
    assert version["state"] == "rejected"
    assert "may not use: opa.runtime (line 2)" in version["state_reason"]
    assert canary not in str(version)
    tried = client.post(
        "/v1/policies/test", json={"name": "env", "input": {}}, headers=tenant.headers
    )
    assert tried.status_code == 422
    assert canary not in tried.text
    decisions = ok(client.get("/v1/policy-decisions", headers=tenant.headers))
    assert canary not in str(decisions)


def test_a_stored_admission_policy_calling_opa_runtime_denies_without_the_environment(
    client: TestClient, tenant: TenantHandle, runtime: Runtime, canary: str
) -> None:
    world = build_world(client, tenant)
    source = ENV_LEAK.replace("qm.publish.t", "qm.admission.env")
    _store_unchecked(runtime, tenant.tenant_id, "env", source)
    body = {"app": world.app, "resources": {"cpu": "1"}}
    decided = client.post("/v1/decisions", json=body, headers=world.headers)
    assert decided.status_code == 200, decided.text
    assert decided.json()["allowed"] is False
    assert "may not use: opa.runtime" in decided.text
    assert canary not in decided.text


def test_the_test_route_stops_a_policy_over_its_time_limit(
    client: TestClient, tenant: TenantHandle, small_budget: PolicySandbox
) -> None:
    started = time.monotonic()
    body = {"source": SLOW, "input": {}}
    response = client.post("/v1/policies/test", json=body, headers=tenant.headers)
    assert response.status_code == 422, response.text
    assert response.json()["error"]["message"] == (
        "policy failed on this input: the policy's evaluation went over its time limit of 0.5 s"
    )
    assert time.monotonic() - started < 10
    quick = {"source": 'package t\nwarn contains "ok" if true\n', "input": {}}
    answer = ok(client.post("/v1/policies/test", json=quick, headers=tenant.headers))
    assert answer["warn"] == ["ok"]  # a new worker answers


def test_publish_is_bounded_by_the_budget(
    client: TestClient, tenant: TenantHandle, runtime: Runtime, small_budget: PolicySandbox
) -> None:
    # Upload refuses it now (its trial evaluation goes over the budget): stored as before that.
    refused = client.post(
        "/v1/policies", json={"name": "slow", "source": SLOW}, headers=tenant.headers
    )
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["message"] == (
        "the policy fails when evaluated on an empty input, so it would fail on every input:"
        " the policy's evaluation went over its time limit of 0.5 s"
    )
    _store_unchecked(runtime, tenant.tenant_id, "slow", SLOW)
    add_team(client, tenant)
    started = time.monotonic()
    version = submit(client, tenant, manifest())
    assert time.monotonic() - started < 10
    assert version["state"] == "rejected"  # fail closed, naming the limit
    assert version["state_reason"] == (
        "policy slow v1 failed: the policy's evaluation went over its time limit of 0.5 s"
    )


def test_rollback_to_a_version_over_the_budget_is_refused_like_its_upload(
    client: TestClient, tenant: TenantHandle, runtime: Runtime, small_budget: PolicySandbox
) -> None:
    _store_unchecked(runtime, tenant.tenant_id, "slow", SLOW)  # stored before the trial
    fine = SLOW.split("\n", 1)[0] + '\nwarn contains "ok" if true\n'
    uploaded = client.post(
        "/v1/policies", json={"name": "slow", "source": fine}, headers=tenant.headers
    )
    assert uploaded.status_code == 201, uploaded.text
    refused = client.post("/v1/policies/slow/rollback", json={"to": 1}, headers=tenant.headers)
    assert refused.status_code == 422, refused.text
    assert refused.json()["error"]["message"] == (
        "the policy fails when evaluated on an empty input, so it would fail on every input:"
        " the policy's evaluation went over its time limit of 0.5 s"
    )
    latest = ok(client.get("/v1/policies/slow", headers=tenant.headers))
    assert latest["version"] == 2  # nothing stored: version 2 stays in force
    back = client.post("/v1/policies/slow/rollback", json={"to": 2}, headers=tenant.headers)
    assert back.status_code == 200, back.text  # version 2 is the latest already: no new one


def test_a_policy_over_its_memory_limit_is_stopped() -> None:
    sandbox = PolicySandbox(seconds=30.0, memory_bytes=200 * 1024 * 1024)
    try:
        source = (
            "package t\n"
            'warn contains msg if { msg := sprintf("%d", [count(numbers.range(1, 5000000))]) }\n'
        )
        with pytest.raises(PolicyBudgetError, match="over its memory limit of 200 MiB"):
            sandbox.evaluate("big", "big", source, {}, tenant="t")
        verdict = sandbox.evaluate(
            "ok", "ok", "package t\nwarn contains 1 if true\n", {}, tenant="t"
        )
        assert verdict.warn == ["1"]
    finally:
        sandbox.close()


def test_reading_all_of_data_is_a_422_not_a_500(client: TestClient, tenant: TenantHandle) -> None:
    for rule in ("x := data", 'x := sprintf("%v", [data])'):
        source = f'package t\nwarn contains msg if {{ {rule}; msg := sprintf("%v", [x]) }}\n'
        body = {"source": source, "input": {}}
        response = client.post("/v1/policies/test", json=body, headers=tenant.headers)
        assert response.status_code == 422, response.text
        message = response.json()["error"]["message"]
        assert "Recursion detected in rule body: data.t.warn" in message
        assert "reads all of `data`" in message
    with pytest.raises(PolicyRuntimeError, match="Recursion detected"):
        CompiledPolicy(
            'package t\nwarn contains msg if { msg := sprintf("%v", [data]) }\n'
        ).evaluate({})
