"""Every built-in policies may call (policy/builtins.py SUPPORTED_BUILTINS) gives OPA's result
in this regopy: re-probed here, so a regopy upgrade that changes one fails this test. The
probes themselves: tests/policy/builtin_probes.py."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from quartermaster.policy.builtins import OPA_BUILTINS_NOT_SUPPORTED, SUPPORTED_BUILTINS
from quartermaster.policy.engine import FORBIDDEN_BUILTINS
from tests.policy.builtin_probes import PROBES

ROOT = Path(__file__).resolve().parents[2]
# All probes in a process of their own, as a policy worker evaluates: regopy's time built-ins
# abort a process that has loaded DuckDB or pyarrow (tests/policy/test_worker_imports.py), as
# a pytest worker running other tests has.
PROBE_ALL = (
    "import json\n"
    "from tests.policy.builtin_probes import PROBES, probe\n"
    "print(json.dumps({name: probe(name) for name in sorted(PROBES)}))\n"
)


@pytest.fixture(scope="module")
def probed() -> dict[str, tuple[bool, str]]:
    done = subprocess.run(
        [sys.executable, "-c", PROBE_ALL],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=ROOT,
        check=False,
    )
    assert done.returncode == 0, f"the probes' process ended {done.returncode}: {done.stderr}"
    last_line = done.stdout.strip().splitlines()[-1]  # regopy's print() may write before it
    return {name: (fine, got) for name, (fine, got) in json.loads(last_line).items()}


@pytest.mark.parametrize("name", sorted(SUPPORTED_BUILTINS))
def test_each_listed_builtin_gives_opas_result(
    name: str, probed: dict[str, tuple[bool, str]]
) -> None:
    assert name in PROBES, f"{name} is listed without a probe"
    fine, got = probed[name]
    assert fine, f"{name}: {PROBES[name][0]} gave {got}, OPA gives {PROBES[name][1]!r}"


def test_the_lists_do_not_overlap() -> None:
    assert not SUPPORTED_BUILTINS & OPA_BUILTINS_NOT_SUPPORTED
    assert not SUPPORTED_BUILTINS & FORBIDDEN_BUILTINS


@pytest.mark.parametrize(
    "name", sorted(name for name in OPA_BUILTINS_NOT_SUPPORTED if name in PROBES)
)
def test_a_probed_builtin_left_out_still_differs_from_opa(
    name: str, probed: dict[str, tuple[bool, str]]
) -> None:
    # Should regopy start to get one of these right, list it in SUPPORTED_BUILTINS.
    assert not probed[name][0]


def test_docs_list_exactly_the_supported_builtins() -> None:
    docs = (Path(__file__).resolve().parents[2] / "docs" / "policy.md").read_text()
    section = docs.split("## What upload refuses", 1)[1].split("\n### ", 1)[0]
    listed = section.split("OPA's result for it", 1)[1].split("(`equal`, `plus`", 1)[0]
    assert set(re.findall(r"`([a-z_0-9.]+)`", listed)) == SUPPORTED_BUILTINS
