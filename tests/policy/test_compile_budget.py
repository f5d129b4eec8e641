"""Compiling a policy is not charged to an evaluation's time limit: a worker compiles a policy
version once, in a step of its own, and keeps it (walkthrough finding 13); and a source is at
most 128 KiB, which compiles in seconds (docs/policy.md "Evaluation budget")."""

from __future__ import annotations

import time

import pytest
from bench.policy_size import generated

from quartermaster.errors import InvalidInputError
from quartermaster.policy import sandbox as sandbox_module
from quartermaster.policy.engine import MAX_POLICY_BYTES, CompiledPolicy
from quartermaster.policy.sandbox import PolicyBudgetError, PolicySandbox

BIG = generated(1400)  # ~121 KB: compiles for seconds, each query takes milliseconds
DOCUMENT = {"manifest": {"tags": ["banned-2"]}}


def _compile_seconds(source: str) -> float:
    started = time.monotonic()
    CompiledPolicy(source, checked=False)
    return time.monotonic() - started


def test_a_policy_compiling_longer_than_the_budget_is_evaluated_within_it() -> None:
    assert len(BIG.encode()) <= MAX_POLICY_BYTES
    sandbox = PolicySandbox(seconds=0.5)
    try:
        seconds = _compile_seconds(BIG)
        assert seconds > 0.5, f"compiled in {seconds:.2f} s: the test needs a slower compile"
        verdict = sandbox.evaluate(
            "big", "big", BIG, DOCUMENT, tenant="t"
        )  # compiled first, then 0.5 s
        assert verdict.deny == ["rule 2 fired: tag banned-2"]
        started = time.monotonic()
        again = sandbox.evaluate(
            "big", "big", BIG, {"manifest": {"tags": ["banned-7"]}}, tenant="t"
        )
        assert again.deny == ["rule 7 fired: tag banned-7"]
        assert time.monotonic() - started < seconds  # kept compiled in the worker
    finally:
        sandbox.close()


def test_a_compile_over_its_own_limit_fails_naming_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sandbox_module, "COMPILE_SECONDS", 0.05)
    sandbox = PolicySandbox(seconds=5.0)
    try:
        with pytest.raises(PolicyBudgetError) as failed:
            sandbox.evaluate("big", "big", BIG, DOCUMENT, tenant="t")
        assert str(failed.value) == "the policy's compilation went over its time limit of 0.05 s"
        small = 'package t\nwarn contains "ok" if true\n'
        monkeypatch.setattr(sandbox_module, "COMPILE_SECONDS", 60.0)
        assert sandbox.evaluate("small", "small", small, {}, tenant="t").warn == [
            "ok"
        ]  # a new worker
    finally:
        sandbox.close()


def test_a_source_that_does_not_compile_is_said_once_per_worker() -> None:
    sandbox = PolicySandbox(seconds=5.0)
    try:
        for _ in range(2):
            with pytest.raises(InvalidInputError, match="policy does not compile"):
                sandbox.evaluate("bad", "bad", "package t\ndeny contains x if {\n", {}, tenant="t")
    finally:
        sandbox.close()


def test_a_source_over_128_kib_is_refused_saying_why() -> None:
    source = generated(1600)
    assert len(source.encode()) > 128 * 1024
    with pytest.raises(InvalidInputError) as refused:
        CompiledPolicy(source)
    assert refused.value.message == (
        "the policy is larger than 131072 bytes (128 KiB): a larger one compiles for tens of"
        " seconds; split it into several policies"
    )
