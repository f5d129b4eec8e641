"""Run every benchmark (`make bench`). Each module listed exposes `main(argv)`, prints its
absolute figures and its ratio against a floor measured in the same run, and raises if the
run itself failed (a missed target is reported, not raised)."""

from __future__ import annotations

import importlib
import sys
import time

from rich.console import Console

# Add a benchmark by listing its module here.
BENCH_MODULES: tuple[str, ...] = (
    "bench.ingest",
    "bench.event_log_growth",
    "bench.secrets",
    "bench.rating",
    "bench.billing",
    "bench.decisions",
    "bench.search",
    "bench.policy_audit",
    "bench.anomaly_scan",
)


def main() -> int:
    console = Console()
    failed: list[str] = []
    for name in BENCH_MODULES:
        console.rule(f"[bold]{name}")
        started = time.perf_counter()
        try:
            importlib.import_module(name).main([])
        except Exception:
            console.print_exception()
            failed.append(name)
        console.print(f"[dim]{name}: {time.perf_counter() - started:.1f} s[/]")
    if failed:
        console.print(f"[red]failed:[/] {', '.join(failed)}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
