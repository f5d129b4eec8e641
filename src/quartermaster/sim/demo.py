"""`make demo`: a simulated platform driven through a real Quartermaster server.

    python -m quartermaster.sim.demo [--days N | --hours N] [--apps M] [--data-dir DIR] [--keep]

Creates a fresh data dir, initializes it and a tenant, starts `qm serve` as a subprocess on a
free port, registers the simulated platform through the HTTP API, sends its signed events
(by default: last calendar month's) through `POST /v1/events` and checks the reconciliation
counters (nothing lost, nothing counted twice); then waits for the pipeline, loads the price
book, runs and finalizes the period's billing, explains a line, crosses a budget when the
period reaches into the current month, and prints the showback. Exits non-zero on any
failure.

The demo is a list of stages sharing a `DemoContext` (`sim/context.py`); later features
append theirs (an anomaly alert, ...) to `STAGES`."""

from __future__ import annotations

import argparse
import calendar
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
from rich.console import Console

from quartermaster.config import load_settings
from quartermaster.domain.timeutil import floor_hour, parse_timestamp, utc_now
from quartermaster.sim import anomaly_stage, billing_stages, report, showback
from quartermaster.sim.context import (
    DEFAULT_DATA_DIR,
    DemoContext,
    DemoFailure,
    DemoOptions,
    qm_command,
    server_environment,
    start_server,
)
from quartermaster.sim.driver import (
    DriverError,
    demo_progress,
    fetch_reconciliation,
    send,
    set_up,
)
from quartermaster.sim.generator import expectation, stream
from quartermaster.sim.model import SimConfig
from quartermaster.sim.platform import build_platform

__all__ = ["STAGES", "DemoContext", "DemoFailure", "DemoOptions", "main", "parse_args", "run"]

TENANT_ID = "acme"
ADMIN_KEY_FILE = "admin.key"
GROUND_TRUTH_FILE = "ground-truth.json"
DEMO_MARKER = ".qm-demo-dir"  # only a directory carrying it is ever wiped
# The default month's volume per day (all 300 apps together, the simulator's full density:
# ~2 million events a month); docs/demo.md, "Volume and timings".
MONTH_EVENTS_PER_DAY = 66_000


# --- stages ----------------------------------------------------------------------------------


def prepare_data_dir(ctx: DemoContext) -> None:
    """Wipe the data dir and run `qm init` on it (keys, migrations)."""
    data_dir = ctx.options.data_dir
    if data_dir.exists():
        if not data_dir.is_dir():
            raise DemoFailure(f"{data_dir} exists and is not a directory")
        if any(data_dir.iterdir()) and not (data_dir / DEMO_MARKER).exists():
            raise DemoFailure(
                f"{data_dir} is not empty and was not made by the demo: refusing to wipe it "
                "(choose another --data-dir, or remove it yourself)"
            )
        shutil.rmtree(data_dir)
    data_dir.mkdir(parents=True)
    (data_dir / DEMO_MARKER).write_text("made by python -m quartermaster.sim.demo; wiped by it\n")
    if not ctx.options.keep:
        ctx.cleanups.append(lambda: shutil.rmtree(data_dir, ignore_errors=True))
    # Never QM_DATABASE_URL from the environment: that would point the demo at someone's data.
    database_url = ctx.options.database_url or f"sqlite:///{data_dir.resolve()}/qm.db"
    ctx.settings = load_settings(data_dir=data_dir.resolve(), database_url=database_url)
    init = subprocess.run(
        [*qm_command(), "init", "--data-dir", str(ctx.settings.data_dir)],
        env=server_environment(ctx.settings, ctx.server_env),
        capture_output=True,
        check=False,
    )
    if init.returncode != 0:
        output = (init.stdout + init.stderr).decode(errors="replace")
        raise DemoFailure(f"qm init failed ({init.returncode}):\n{output}")
    ctx.console.print(f"data dir {data_dir} initialized (database: {database_url.split(':')[0]})")


def create_tenant(ctx: DemoContext) -> None:
    """The tenant and its admin key, as `qm tenant create` makes them (the key is kept in a
    file of the data dir, never printed)."""
    from quartermaster.runtime import build_runtime
    from quartermaster.tenancy.service import CLI_ACTOR, bootstrap_tenant

    assert ctx.settings is not None
    runtime = build_runtime(ctx.settings)
    try:
        with runtime.session_factory() as session:
            issued = bootstrap_tenant(TENANT_ID, name="Acme Corp", actor=CLI_ACTOR, session=session)
    finally:
        runtime.close()
    ctx.admin_token = issued.token
    key_path = ctx.options.data_dir / ADMIN_KEY_FILE
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(issued.token + "\n")
    ctx.console.print(f"tenant {TENANT_ID!r}; admin API key saved to {key_path} (mode 600)")


def simulation_config(options: DemoOptions) -> SimConfig:
    """The simulation's knobs, checked (SimConfig refuses what it cannot simulate, naming it):
    by `parse_args` before anything starts, and again by the stage that builds the platform.
    Its period ends at the current hour at the latest: events may not be in the future."""
    start = options.start or floor_hour(utc_now()) - timedelta(hours=options.hours)
    config = SimConfig(
        start=start,
        hours=options.hours,
        seed=options.seed,
        tenant_id=TENANT_ID,
        teams=options.teams,
        apps=options.apps,
        events_per_day=options.events_per_day,
    )
    if config.end > floor_hour(utc_now()):
        raise ValueError(
            f"the simulated period ends at {config.end.isoformat()}, in the future: events "
            "may not be (choose an earlier --start, or fewer --days/--hours)"
        )
    return config


def build_simulation(ctx: DemoContext) -> None:
    """The platform, its period ending at the current hour (events may not be in the future)."""
    ctx.platform = build_platform(simulation_config(ctx.options))
    ctx.expected = expectation(ctx.platform)
    report.print_platform(ctx.console, ctx.platform)
    truth = ctx.options.data_dir / GROUND_TRUTH_FILE
    truth.write_bytes(orjson.dumps(ctx.platform.ground_truth(), option=orjson.OPT_INDENT_2))
    ctx.console.print(f"ground truth of the injected cases: {truth}")


def set_up_platform(ctx: DemoContext) -> None:
    """Teams, cost centers, apps, signing keys, resources and leases, through the API."""
    platform = ctx.need_platform()
    with ctx.client() as client, demo_progress(console=ctx.console) as progress:
        ctx.credentials = set_up(client, platform, progress=progress)


def send_events(ctx: DemoContext) -> None:
    """The period's events through POST /v1/events, with the late registrations and the
    ownership change performed when their time comes."""
    platform = ctx.need_platform()
    options = ctx.options
    items = stream(platform, ctx.credentials, batch_size=options.batch_size)
    with ctx.client() as client, demo_progress(console=ctx.console) as progress:
        ctx.summary = send(
            client,
            items,
            hours=platform.config.hours,
            connections=options.connections,
            progress=progress,
            jsonl=options.jsonl,
        )
    report.print_summary(ctx.console, ctx.summary)
    if options.jsonl is not None:
        ctx.console.print(f"events written to {options.jsonl} (replay: qm events send FILE)")


def reconcile(ctx: DemoContext) -> None:
    """Read the reconciliation counters back and check every event is accounted for."""
    end = floor_hour(utc_now()) + timedelta(hours=1)
    with ctx.client() as client:
        ctx.reconciliation = fetch_reconciliation(client, floor_hour(ctx.started_at), end)
    report.print_reconciliation(ctx.console, ctx.reconciliation)
    if ctx.summary is None or ctx.expected is None:
        raise DemoFailure("nothing was sent")
    problems = report.check_counts(ctx.summary, ctx.expected, ctx.reconciliation)
    if problems:
        raise DemoFailure("the counts do not reconcile:\n  " + "\n  ".join(problems))
    ctx.console.print(
        "[green]reconciled:[/] every event sent is accepted, a duplicate, or rejected "
        "for its injected reason; nothing lost, nothing counted twice"
    )


Stage = tuple[str, Callable[[DemoContext], None]]

STAGES: list[Stage] = [
    ("prepare the data dir", prepare_data_dir),
    ("create the tenant", create_tenant),
    ("start the server", start_server),
    ("build the simulated platform", build_simulation),
    ("register the platform", set_up_platform),
    ("load the price book", billing_stages.load_price_book),
    ("send the events", send_events),
    ("reconcile", reconcile),
    ("drain the pipeline", billing_stages.drain_pipeline),
    ("close the reconciliation window", billing_stages.close_window),
    ("run and finalize the billing", billing_stages.billing_run),
    ("explain a line", billing_stages.explain_line),
    ("bill late usage", billing_stages.late_usage),
    ("cross a budget", billing_stages.budget_crossing),
    ("detect an anomaly", anomaly_stage.anomaly_alerts),
    ("showback report", billing_stages.showback_report),
]


def run(options: DemoOptions, *, console: Console | None = None) -> DemoContext:
    """Run every stage in order; raises DemoFailure (or DriverError) on the first failure.
    Cleanups (stopping the server, removing the data dir) run whatever happens."""
    ctx = DemoContext(options=options, console=console or Console())
    try:
        for number, (title, stage) in enumerate(STAGES, start=1):
            ctx.console.rule(f"[bold]{number}/{len(STAGES)} {title}")
            began = time.perf_counter()
            stage(ctx)
            ctx.timings[title] = time.perf_counter() - began
            ctx.console.print(f"[dim]{title}: {ctx.timings[title]:.1f}s")
    finally:
        for cleanup in reversed(ctx.cleanups):
            cleanup()
    return ctx


def previous_month(now: datetime) -> tuple[datetime, int]:
    """The first instant and the length in hours of the calendar month (UTC) before `now`'s:
    a complete past month, so its billing run can be finalized."""
    first_of_this = datetime(now.year, now.month, 1, tzinfo=UTC)
    last_month = first_of_this - timedelta(days=1)
    days = calendar.monthrange(last_month.year, last_month.month)[1]
    return datetime(last_month.year, last_month.month, 1, tzinfo=UTC), 24 * days


def parse_args(argv: Sequence[str] | None = None) -> DemoOptions:
    parser = argparse.ArgumentParser(
        prog="python -m quartermaster.sim.demo",
        description="Simulate a platform of micro-apps against a real Quartermaster server.",
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument(
        "--days", type=int, help="simulated days ending at the current hour (default: last month)"
    )
    length.add_argument("--hours", type=int, help="simulated hours ending at the current hour")
    parser.add_argument("--apps", type=int, default=300, help="number of apps (default 300)")
    parser.add_argument("--teams", type=int, default=20, help="number of teams (default 20)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument(
        "--events-per-day",
        type=int,
        help=f"event volume per day (default {MONTH_EVENTS_PER_DAY:,} for the month, "
        "220 per app with --days or --hours)",
    )
    parser.add_argument(
        "--start",
        type=parse_timestamp,
        help="start of the simulated period, on the hour (default: the first of last month, "
        "or --days/--hours before the current hour)",
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--database-url", help="control-plane database (default SQLite)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the data dir afterwards (default: remove it)"
    )
    parser.add_argument("--jsonl", type=Path, help="also write every event sent to this file")
    parser.add_argument("--connections", type=int, default=4, help="concurrent senders")
    parser.add_argument(
        "--price-book", type=Path, help="price book YAML (default docs/examples/pricebook.yaml)"
    )
    args = parser.parse_args(argv)
    start: datetime | None = args.start
    events_per_day: int | None = args.events_per_day
    if args.hours is not None or args.days is not None:
        hours = args.hours if args.hours is not None else 24 * args.days
    else:
        month_start, hours = previous_month(utc_now())
        start = start or month_start
        events_per_day = events_per_day or MONTH_EVENTS_PER_DAY
    if args.connections < 1:
        parser.error(f"--connections must be at least 1, got {args.connections}")
    if args.price_book is not None and not args.price_book.is_file():
        parser.error(f"--price-book {args.price_book}: no such file")
    options = DemoOptions(
        hours=hours,
        apps=args.apps,
        teams=args.teams,
        seed=args.seed,
        events_per_day=events_per_day,
        start=start,
        price_book=args.price_book,
        data_dir=args.data_dir,
        database_url=args.database_url,
        keep=args.keep,
        jsonl=args.jsonl,
        connections=args.connections,
    )
    try:
        simulation_config(options)  # before the data dir is wiped and a server started
    except ValueError as exc:
        parser.error(str(exc))
    return options


def main(argv: Sequence[str] | None = None) -> int:
    console = Console()
    try:
        options = parse_args(argv)
        began = time.perf_counter()
        ctx = run(options, console=console)
    except (DemoFailure, DriverError, ValueError) as exc:
        console.print(f"[red bold]demo failed:[/] {exc}")
        return 1
    showback.print_timings(console, ctx.timings, ctx.summary.sent if ctx.summary else None)
    console.print(f"[bold green]demo finished[/] in {time.perf_counter() - began:.0f}s")
    if options.keep:
        console.print(
            f"data dir kept: {options.data_dir}. Try: QM_DATA_DIR={options.data_dir} "
            f"qm tenant list; the admin key is in {options.data_dir / ADMIN_KEY_FILE}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
