"""The Rego engine: every built-in the shipped policies use, rule-set forms, errors."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from quartermaster.errors import InvalidInputError
from quartermaster.policy.engine import (
    CompiledPolicy,
    InputBatch,
    PolicyCache,
    PolicyRuntimeError,
    input_digest,
)

POLICIES = Path(__file__).resolve().parents[2] / "docs" / "examples" / "policies"


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ('sprintf("%s uses %d GPUs", ["app", 2])', "app uses 2 GPUs"),
        ('"org" in ["user", "org"]', True),
        ("count([1, 2, 3])", 3),
        ('startswith("gpu-large", "gpu")', True),
        ('lower("GPU")', "gpu"),
    ],
)
def test_builtins_used_by_policies(expression: str, expected: object) -> None:
    source = f"package t\nwarn contains msg if {{ msg := {expression} }}\n"
    assert CompiledPolicy(source).evaluate({}).warn == [str(expected)]


def test_shipped_examples_compile_and_decide() -> None:
    files = sorted(p.name for p in POLICIES.glob("*.rego"))
    assert files == [
        "gpu-requires-approved-team.rego", "org-scope-approval.rego", "require-cost-center.rego"
    ]  # fmt: skip
    gpu = CompiledPolicy((POLICIES / "gpu-requires-approved-team.rego").read_text())
    wants = {"manifest": {"app_id": "a", "team": "t", "estimated_compute_profile": {"gpu": 2}}}
    assert gpu.evaluate({**wants, "exceptions": []}).result == "deny"
    assert gpu.evaluate({**wants, "exceptions": ["gpu"]}).result == "allow"


def test_old_object_rule_form_still_reads_as_messages() -> None:
    # Rego v0's `deny[msg] { … }` parses as an object rule in v1; its keys are still reported.
    source = 'package t\ndeny["always"] { true }\n'
    assert CompiledPolicy(source).evaluate({}).deny == ["always"]


def test_the_v0_form_docs_show_denies_as_they_say() -> None:
    # docs/policy.md shows a v0 `deny[msg] { … }` rule and says it denies like the v1 form.
    docs = (POLICIES.parents[1] / "policy.md").read_text()
    blocks = re.findall(r"```rego\n(.*?)```", docs, flags=re.DOTALL)
    v0 = next(block for block in blocks if "deny[msg] {" in block)
    policy = CompiledPolicy(v0)
    assert policy.evaluate({"manifest": {"app_id": "a"}}).deny == ["app a has no cost_center"]
    assert policy.evaluate({"manifest": {"app_id": "a", "cost_center": "cc"}}).result == "allow"


def test_parse_errors_name_the_line() -> None:
    with pytest.raises(InvalidInputError, match=r"line 3"):
        CompiledPolicy("package t\n\ndeny contains msg if { msg := }\n")
    with pytest.raises(InvalidInputError, match="no 'package'"):
        CompiledPolicy("deny contains 1 if true\n")


def test_cache_reuses_and_input_digest_is_canonical() -> None:
    cache = PolicyCache()
    source = "package t\nwarn contains 1 if true\n"
    assert cache.get("t1", "p", 1, source) is cache.get("t1", "p", 1, source)
    assert cache.get("t1", "p", 2, source) is not cache.get("t1", "p", 1, source)
    assert input_digest({"a": 1, "b": [1, 2]}) == input_digest({"b": [1, 2], "a": 1})


def test_one_input_batch_evaluates_every_policy_on_its_own() -> None:
    # Two policies in the same package: each bundle holds only its own module, so their rules
    # do not merge on the batch's interpreter.
    deny = CompiledPolicy('package same\ndeny contains "no gpu" if { input.gpu > 0 }\n')
    warn = CompiledPolicy("package same\nwarn contains msg if { msg := input.name }\n")
    gpu = CompiledPolicy((POLICIES / "gpu-requires-approved-team.rego").read_text())
    document = {
        "gpu": 1,
        "name": "x",
        "manifest": {"app_id": "a", "team": "t", "estimated_compute_profile": {"gpu": 2}},
        "exceptions": [],
    }
    batch = InputBatch(document)
    verdicts = [batch.evaluate(policy) for policy in (deny, warn, gpu, deny)]
    assert [v.result for v in verdicts] == ["deny", "allow", "deny", "deny"]
    assert verdicts[0].deny == ["no gpu"]
    assert verdicts[0].warn == []
    assert verdicts[1].warn == ["x"]
    assert verdicts[1].deny == []
    assert verdicts == [policy.evaluate(document) for policy in (deny, warn, gpu, deny)]
    assert InputBatch({**document, "gpu": 0}).evaluate(deny).result == "allow"


def test_a_policy_failing_at_runtime_leaves_the_batch_usable() -> None:
    # two values for one complete rule: a conflict only evaluation finds
    failing = CompiledPolicy('package f\nd := input.b\nd := input.c\nwarn contains "x" if d\n')
    fine = CompiledPolicy('package g\nwarn contains "ok" if { true }\n')
    batch = InputBatch({"b": 1, "c": 2})
    with pytest.raises(PolicyRuntimeError):
        batch.evaluate(failing)
    assert batch.evaluate(fine).warn == ["ok"]


@pytest.mark.parametrize(
    ("rules", "expected"),
    [
        (
            "x := 1 if true\nx := 2 if true\n",
            "eval_conflict_error: complete rules must not produce multiple outputs",
        ),
        (
            "f(a) := 1 if true\nf(a) := 2 if true\nx := f(1)\n",
            "eval_conflict_error: functions must not produce multiple outputs for same inputs",
        ),
    ],
)
def test_a_runtime_error_says_what_went_wrong(rules: str, expected: str) -> None:
    # regopy's failed output prints as '<error>': the reason is in its error nodes.
    policy = CompiledPolicy(f'package c\n{rules}deny contains "x" if {{ x > 0 }}\n')
    with pytest.raises(PolicyRuntimeError) as failed:
        policy.evaluate({})
    assert str(failed.value) == expected  # once, though regopy repeats it per rule


def test_a_module_that_builds_badly_says_why_and_where() -> None:
    # Parsed, but refused when built: one rule set written as an object rule (v0's
    # `deny[msg] { … }`) and as a set rule.
    source = 'package t\n\ndeny[msg] {\n  msg := "a"\n}\ndeny contains msg if { msg := "b" }\n'
    with pytest.raises(InvalidInputError) as refused:
        CompiledPolicy(source)
    assert refused.value.message == (
        "policy does not compile: wellformed_error: Invalid rule body for object rule "
        "(line 6, column 1)"
    )
