"""One tenant holds at most its share of the policy workers (docs/policy.md "Evaluation
budget"): another tenant's evaluation finds a worker while the first one's slow policies keep
its share busy, a freed worker goes to the tenant holding the fewest, and an evaluation that
waits too long for a worker fails closed naming why."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator

import pytest
from fastapi.testclient import TestClient

from quartermaster.policy.engine import PolicyCache, Verdict
from quartermaster.policy.sandbox import PolicyBudgetError, PolicyQueueError, PolicySandbox
from quartermaster.policy.tenant_slots import TenantSlots, _next_waiter, tenant_share
from quartermaster.runtime import Runtime
from tests.catalog.publish_support import add_team, manifest, submit
from tests.conftest import TenantHandle
from tests.policy.test_restrictions import SLOW

FINE = 'package t\nwarn contains "ok" if true\n'


def _until(condition: Callable[[], bool], *, seconds: float = 60.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.005)


def test_a_tenant_may_hold_all_workers_but_one() -> None:
    assert [tenant_share(n) for n in (1, 2, 4, 8)] == [1, 1, 3, 7]


def test_a_freed_worker_goes_to_the_tenant_holding_the_fewest() -> None:
    waiting = [(1, "beta"), (2, "beta"), (3, "acme"), (4, "acme")]
    assert _next_waiter(waiting, {"beta": 1}, {}, 3) == 3  # acme holds none: it goes first
    assert _next_waiter(waiting, {"beta": 1, "acme": 1}, {}, 3) == 1  # a tie: the earliest
    served = {"beta": 7, "acme": 5}
    assert _next_waiter(waiting, {}, served, 3) == 3  # a tie: acme was served longer ago
    assert _next_waiter(waiting, {"beta": 3, "acme": 1}, {}, 3) == 3  # beta is at its share
    assert _next_waiter(waiting, {"beta": 3, "acme": 3}, {}, 3) is None
    assert _next_waiter([], {}, {}, 3) is None


def test_with_one_worker_another_tenant_goes_before_the_first_ones_queue() -> None:
    slots = TenantSlots(1, tenant_share(1))
    slots.acquire("beta", seconds=1)
    order: list[str] = []

    def take(tenant: str) -> None:
        slots.acquire(tenant, seconds=60)
        order.append(tenant)
        slots.release(tenant)

    threads = [threading.Thread(target=take, args=("beta",)) for _ in range(3)]
    for thread in threads:
        thread.start()
    _until(lambda: len(slots._waiting) == 3)
    acme = threading.Thread(target=take, args=("acme",))
    acme.start()
    _until(lambda: len(slots._waiting) == 4)
    slots.release("beta")
    for thread in [*threads, acme]:
        thread.join(60)
    assert order == ["acme", "beta", "beta", "beta"]


def test_past_the_wait_an_evaluation_fails_naming_the_cause() -> None:
    slots = TenantSlots(4, tenant_share(4))
    for _ in range(3):
        slots.acquire("beta", seconds=1)
    with pytest.raises(PolicyQueueError) as caught:
        slots.acquire("beta", seconds=0.05)
    assert str(caught.value) == (
        "the policy's evaluation waited over 0.05 s for a worker: this tenant's other"
        " evaluations held its share of 3 of the 4 policy workers"
    )
    slots.acquire("acme", seconds=0.05)  # the fourth worker is another tenant's
    with pytest.raises(PolicyQueueError, match="all 4 policy workers were busy"):
        slots.acquire("gamma", seconds=0.05)
    slots.release("beta")
    slots.acquire("gamma", seconds=0.05)  # not beta's anymore: gamma's
    assert (slots.held("beta"), slots.held("acme"), slots.held("gamma")) == (2, 1, 1)


def test_a_batch_that_finds_no_worker_fails_whole_without_retrying() -> None:
    sandbox = PolicySandbox(max_workers=2, queue_seconds=0.05)
    try:
        sandbox.slots.acquire("beta", seconds=1)  # beta's share of 1 is busy
        started = time.monotonic()
        outcomes = sandbox.evaluate_many([("f", "f", FINE), ("g", "g", FINE)], {}, tenant="beta")
        assert time.monotonic() - started < 5  # not waited again policy by policy
        assert [type(outcome) for outcome in outcomes] == [PolicyQueueError] * 2
        assert "held its share of 1 of the 2 policy workers" in str(outcomes[0])
    finally:
        sandbox.close()


def test_a_tenants_slow_policies_leave_a_worker_for_another_tenant() -> None:
    # beta sends 9 evaluations of a policy that runs into the budget, 3 at a time (its
    # share of 4): three rounds. acme's one evaluation, sent once beta holds its share, runs
    # on the fourth worker: it ends before beta's first round has (at worst) all ended,
    # where one shared queue made it wait behind beta's second round (8 of beta's ended).
    sandbox = PolicySandbox(seconds=0.5, max_workers=4)
    beta_ended: list[object] = []
    lock = threading.Lock()

    def beta() -> None:
        try:
            sandbox.evaluate("slow", "slow", SLOW, {}, tenant="beta")
        except PolicyBudgetError as exc:
            with lock:
                beta_ended.append(exc)

    threads = [threading.Thread(target=beta) for _ in range(9)]
    try:
        for thread in threads:
            thread.start()
        _until(lambda: sandbox.slots.held("beta") == 3)
        assert sandbox.slots.held("beta") == 3  # never 4
        verdict = sandbox.evaluate("fine", "fine", FINE, {}, tenant="acme")
        with lock:
            ended_before_acme = len(beta_ended)
        assert verdict == Verdict(warn=["ok"])
        assert ended_before_acme <= 3
        for thread in threads:
            thread.join(120)
        assert len(beta_ended) == 9  # beta's evaluations all ran, each over the budget
    finally:
        sandbox.close()


@pytest.fixture
def two_workers(runtime: Runtime) -> Iterator[PolicySandbox]:
    sandbox = PolicySandbox(max_workers=2, queue_seconds=0.3)
    runtime.services["policy_cache"] = PolicyCache(sandbox=sandbox)
    yield sandbox
    sandbox.close()


def test_a_publish_waiting_past_its_share_fails_closed_and_another_tenant_publishes(
    client: TestClient,
    make_tenant: Callable[..., TenantHandle],
    two_workers: PolicySandbox,
) -> None:
    acme, beta = make_tenant("acme"), make_tenant("beta")
    for tenant, source in (
        (acme, 'package qm.publish.no\ndeny contains "acme says no" if true\n'),
        (beta, FINE.replace("package t", "package qm.publish.fine")),
    ):
        name = "no" if tenant is acme else "fine"
        uploaded = client.post(
            "/v1/policies", json={"name": name, "source": source}, headers=tenant.headers
        )
        assert uploaded.status_code == 201, uploaded.text
        add_team(client, tenant)
    two_workers.slots.acquire(beta.tenant_id, seconds=1)  # beta's share (1 of 2) is busy
    try:
        refused = submit(client, beta, manifest())
        assert refused["state"] == "rejected"  # fail closed
        assert refused["state_reason"] == (
            "policy fine v1 failed: the policy's evaluation waited over 0.3 s for a worker:"
            " this tenant's other evaluations held its share of 1 of the 2 policy workers"
        )
        decided = submit(client, acme, manifest())  # acme's policy ran meanwhile
        assert decided["state"] == "rejected"
        assert "acme says no" in decided["state_reason"]
    finally:
        two_workers.slots.release(beta.tenant_id)
    again = submit(client, beta, manifest(version="1.0.1"))  # beta evaluates again
    assert again["state"] != "rejected", again
