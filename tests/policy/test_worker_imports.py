"""regopy's time built-ins (`time.format`, `time.weekday`, ...) abort a process that has loaded
DuckDB or pyarrow ("double free or corruption": each carries a date library of its own). The
server has both loaded; policies are evaluated in worker processes that must load neither."""

from __future__ import annotations

import subprocess
import sys

LOADED = (
    "import sys\n"
    "import quartermaster.policy.worker\n"
    "print(sorted(m for m in sys.modules if m.split('.')[0] in ('duckdb', 'pyarrow')))\n"
)


def test_the_policy_worker_loads_neither_duckdb_nor_pyarrow() -> None:
    done = subprocess.run(
        [sys.executable, "-c", LOADED], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]"


def test_a_time_builtin_evaluates_in_a_worker_like_process() -> None:
    script = (
        "from quartermaster.policy.engine import evaluate_rule\n"
        "import quartermaster.policy.worker\n"
        "print(evaluate_rule('out := time.weekday(0)', 'out'))\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert (done.returncode, done.stdout.strip()) == (0, "Thursday"), done.stderr
