"""Every built-in policies may call (policy/builtins.py SUPPORTED_BUILTINS) gives OPA's result
in this regopy: re-probed here, so a regopy upgrade that changes one fails this test. The
probes themselves: tests/policy/builtin_probes.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from quartermaster.policy.builtins import OPA_BUILTINS_NOT_SUPPORTED, SUPPORTED_BUILTINS
from quartermaster.policy.engine import FORBIDDEN_BUILTINS
from tests.policy.builtin_probes import PROBES, probe


@pytest.mark.parametrize("name", sorted(SUPPORTED_BUILTINS))
def test_each_listed_builtin_gives_opas_result(name: str) -> None:
    assert name in PROBES, f"{name} is listed without a probe"
    fine, got = probe(name)
    assert fine, f"{name}: {PROBES[name][0]} gave {got}, OPA gives {PROBES[name][1]!r}"


def test_the_lists_do_not_overlap() -> None:
    assert not SUPPORTED_BUILTINS & OPA_BUILTINS_NOT_SUPPORTED
    assert not SUPPORTED_BUILTINS & FORBIDDEN_BUILTINS


@pytest.mark.parametrize(
    "name", sorted(name for name in OPA_BUILTINS_NOT_SUPPORTED if name in PROBES)
)
def test_a_probed_builtin_left_out_still_differs_from_opa(name: str) -> None:
    # Should regopy start to get one of these right, list it in SUPPORTED_BUILTINS.
    assert not probe(name)[0]


def test_docs_list_exactly_the_supported_builtins() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text()
    section = docs.split("## What upload refuses", 1)[1].split("\n### ", 1)[0]
    listed = section.split("OPA's result for it", 1)[1].split("(`equal`, `plus`", 1)[0]
    assert set(re.findall(r"`([a-z_0-9.]+)`", listed)) == SUPPORTED_BUILTINS
