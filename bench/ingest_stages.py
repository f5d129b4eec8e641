"""Where ingestion's time goes: the ingest path run in-process, one batch at a time, with the
CPU time (`thread_time`) of each stage per 1,000 events. A diagnostic beside bench.ingest
(which measures the whole over HTTP against its floor); the same tenant, apps and events.

    python -m bench.ingest_stages [--batches 60] [--database-url URL]

Stages: parse (`orjson.loads` of the body, what the floor route does), validate (per-event
checks, signature, content hash, log record), append (the event log's INSERT, dedup claim
included), commit (its wall time too: `synchronous=FULL` waits for the disk), and the rest
(lookups, counters, transaction set-up).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table
from sqlalchemy.orm import Session

from bench.ingest import EVENTS_PER_BATCH, build_requests, qm_command, server_env, setup_tenant
from quartermaster.config import Settings
from quartermaster.metering import service
from quartermaster.metering.body import BATCH, parse_events
from quartermaster.runtime import build_runtime
from quartermaster.tenancy.service import authenticate

WARMUP = 5


@contextmanager
def timed(owner: Any, name: str, cpu: Counter[str], wall: Counter[str]) -> Iterator[None]:
    """Replace `owner.name` with a wrapper adding its thread CPU and wall time to the counters."""
    real: Callable[..., Any] = getattr(owner, name)

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        cpu_start, wall_start = time.thread_time(), time.perf_counter()
        try:
            return real(*args, **kwargs)
        finally:
            cpu[name] += time.thread_time() - cpu_start
            wall[name] += time.perf_counter() - wall_start

    setattr(owner, name, wrapper)
    try:
        yield
    finally:
        if isinstance(owner, type):
            setattr(owner, name, real)
        else:
            delattr(owner, name)  # the instance's attribute hid the class's method


def run(*, batches: int, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="qm-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp), database_url=database_url)
        subprocess.run(
            [*qm_command(), "init"], env=server_env(settings), check=True, capture_output=True
        )
        runtime = build_runtime(settings, migrate=False)
        try:
            token, apps = setup_tenant(runtime, apps=20)
            requests = build_requests(
                apps, batches=batches + WARMUP, port=0, path="/v1/events", token=None, seed=7
            )
            bodies = [r.partition(b"\r\n\r\n")[2] for r in requests]
            with runtime.session_factory() as session:
                caller = authenticate(token, session=session)
            state = service.IngestState()
            cpu: Counter[str] = Counter()
            wall: Counter[str] = Counter()
            with (
                timed(service, "validate_batch", cpu, wall),
                timed(runtime.event_log, "append", cpu, wall),
                timed(Session, "commit", cpu, wall),
            ):
                for index, body in enumerate(bodies):
                    if index == WARMUP:
                        cpu.clear()
                        wall.clear()
                        total_cpu, total_wall = time.thread_time(), time.perf_counter()
                    started = time.thread_time()
                    events = parse_events(body, BATCH, max_events=len(body))
                    cpu["parse"] += time.thread_time() - started
                    report = service.ingest_events(
                        events, caller=caller, runtime=runtime, state=state
                    )
                    if report.accepted != EVENTS_PER_BATCH:
                        raise RuntimeError(f"batch {index}: {report.as_dict()}")
            total_cpu = time.thread_time() - total_cpu
            total_wall = time.perf_counter() - total_wall
            report_stages(
                cpu, wall, total_cpu, total_wall, batches=batches, backend=runtime.engine.name
            )
        finally:
            runtime.close()


def report_stages(
    cpu: Counter[str],
    wall: Counter[str],
    total_cpu: float,
    total_wall: float,
    *,
    batches: int,
    backend: str,
) -> None:
    per_batch = 1e3 / batches
    table = Table(title=f"Ingest stages ({backend}, one batch of {EVENTS_PER_BATCH:,} at a time)")
    # ms per 1,000 events = µs per event
    for column in ("stage", "CPU ms / 1,000 events", "wall ms / 1,000 events"):
        table.add_column(column, justify="left" if column == "stage" else "right")
    stages = {
        "parse": "parse",
        "validate_batch": "validate",
        "append": "append",
        "commit": "commit",
    }
    for key, label in stages.items():
        ms = cpu[key] * per_batch
        walled = f"{wall[key] * per_batch:.1f}" if key != "parse" else ""
        table.add_row(label, f"{ms:.1f}", walled)
    rest = total_cpu - sum(cpu[k] for k in stages)
    table.add_row("rest", f"{rest * per_batch:.1f}", "")
    table.add_row("total", f"{total_cpu * per_batch:.1f}", f"{total_wall * per_batch:.1f}")
    console = Console()
    console.print(table)
    load = os.getloadavg()
    console.print(
        f"one thread: {batches * EVENTS_PER_BATCH / total_wall:,.0f} events/s wall, "
        f"{batches * EVENTS_PER_BATCH / total_cpu:,.0f} events per CPU-second; "
        f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} on {os.cpu_count()} CPUs"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--batches", type=int, default=60, help="measured batches")
    parser.add_argument("--database-url", default=os.environ.get("QM_BENCH_DATABASE_URL"))
    args = parser.parse_args(argv)
    run(batches=args.batches, database_url=args.database_url)


if __name__ == "__main__":
    main()
