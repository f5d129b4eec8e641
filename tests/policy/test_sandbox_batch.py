"""Every policy on one input in one request to a worker (the input set once), each policy's
outcome its own: a policy that fails or does not compile fails alone, and a request over the
budget is evaluated again policy by policy, so only the policy over its budget fails."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from quartermaster.errors import InvalidInputError
from quartermaster.policy.engine import PolicyCache, PolicyRuntimeError, Verdict
from quartermaster.policy.sandbox import PolicyBudgetError, PolicySandbox
from tests.policy.test_restrictions import SLOW

FINE = 'package t\nwarn contains "ok" if true\n'
DENY = "package t\ndeny contains input.who if input.who\n"
CONFLICT = 'package t\nx := 1 if true\nx := 2 if true\ndeny contains "x" if x\n'
BROKEN = "package t\ndeny contains x if {\n"


@pytest.fixture
def sandbox() -> Iterator[PolicySandbox]:
    made = PolicySandbox(seconds=0.5)
    yield made
    made.close()


def test_each_policy_answers_for_itself(sandbox: PolicySandbox) -> None:
    outcomes = sandbox.evaluate_many(
        [("f", "fine", FINE), ("d", "deny", DENY), ("c", "conflict", CONFLICT), ("b", "b", BROKEN)],
        {"who": "me"},
        tenant="t",
    )
    assert outcomes[0] == Verdict(warn=["ok"])
    assert outcomes[1] == Verdict(deny=["me"])
    assert isinstance(outcomes[2], PolicyRuntimeError)
    assert "eval_conflict_error" in str(outcomes[2])
    assert isinstance(outcomes[3], InvalidInputError)
    assert sandbox.evaluate_many([], {}, tenant="t") == []


def test_over_the_budget_only_the_slow_policy_fails(sandbox: PolicySandbox) -> None:
    started = time.monotonic()
    outcomes = sandbox.evaluate_many(
        [("f", "fine", FINE), ("s", "slow", SLOW), ("d", "deny", DENY)], {"who": "me"}, tenant="t"
    )
    assert time.monotonic() - started < 10
    assert outcomes[0] == Verdict(warn=["ok"])
    assert isinstance(outcomes[1], PolicyBudgetError)
    assert str(outcomes[1]) == "the policy's evaluation went over its time limit of 0.5 s"
    assert outcomes[2] == Verdict(deny=["me"])
    alone = sandbox.evaluate_many([("s", "slow", SLOW)], {}, tenant="t")  # not evaluated twice
    assert [type(outcome) for outcome in alone] == [PolicyBudgetError]


@pytest.mark.parametrize("in_sandbox", [True, False])
def test_the_cache_answers_the_same_in_the_sandbox_and_in_process(
    in_sandbox: bool, sandbox: PolicySandbox
) -> None:
    cache = PolicyCache(sandbox=sandbox if in_sandbox else None)
    policies = [("fine", 1, FINE), ("deny", 1, DENY), ("conflict", 1, CONFLICT)]
    outcomes = cache.evaluate_many("t", policies, {"who": "me"})
    assert outcomes[:2] == [Verdict(warn=["ok"]), Verdict(deny=["me"])]
    assert isinstance(outcomes[2], PolicyRuntimeError)
    refused = cache.evaluate_many("t", [("broken", 1, BROKEN)], {})
    assert isinstance(refused[0], PolicyRuntimeError)
    assert str(refused[0]).startswith("the stored policy is refused: policy does not compile")
