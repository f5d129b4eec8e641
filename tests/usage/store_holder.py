"""Another process holding a DuckDB file, as a running `qm serve` holds its usage store."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

_HOLD = (
    "import duckdb, sys\n"
    "connection = duckdb.connect(sys.argv[1])\n"
    "print('holding', flush=True)\n"
    "sys.stdin.read()\n"  # until the test closes our stdin
)


@contextmanager
def held_by_another_process(path: Path) -> Iterator[int]:
    """Holds `path` open in a child process until the block ends; yields the child's pid."""
    with subprocess.Popen(
        [sys.executable, "-c", _HOLD, str(path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    ) as holder:
        try:
            assert holder.stdout is not None
            assert holder.stdout.readline().strip() == "holding"
            yield holder.pid
        finally:
            holder.kill()
