"""`make demo`: a simulated platform driven through a real Quartermaster server.

    python -m quartermaster.sim.demo [--days N] [--apps M] [--data-dir DIR] [--keep]

Creates a fresh data dir, initializes it and a tenant, starts `qm serve` as a subprocess on a
free port, registers the simulated platform through the HTTP API, sends its signed events
through `POST /v1/events`, and prints the reconciliation counters with checks that every
event is accounted for (nothing lost, nothing counted twice). Exits non-zero on any failure.

The demo is a list of stages sharing a `DemoContext`; later features append stages (pipeline
drain, billing run, showback report, budget crossing, anomaly alert) to `STAGES`."""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import IO, Any

import httpx
import orjson
from rich.console import Console

from quartermaster.config import Settings, load_settings
from quartermaster.domain.timeutil import floor_hour, parse_timestamp, utc_now
from quartermaster.sim import report
from quartermaster.sim.driver import (
    DriverError,
    SendSummary,
    demo_progress,
    fetch_reconciliation,
    send,
    set_up,
)
from quartermaster.sim.factory import Credentials
from quartermaster.sim.generator import Expectation, expectation, stream
from quartermaster.sim.model import Platform, SimConfig
from quartermaster.sim.platform import build_platform

DEFAULT_DATA_DIR = Path(".qm-demo")
TENANT_ID = "acme"
ADMIN_KEY_FILE = "admin.key"
GROUND_TRUTH_FILE = "ground-truth.json"
DEMO_MARKER = ".qm-demo-dir"  # only a directory carrying it is ever wiped
SERVER_START_SECONDS = 60.0


class DemoFailure(RuntimeError):
    """A stage could not do its job, or a check failed; the message says which."""


@dataclass(frozen=True)
class DemoOptions:
    hours: int = 24
    apps: int = 300
    teams: int = 20
    seed: int = 7
    events_per_day: int | None = None
    start: datetime | None = None  # default: `hours` before the current hour
    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str | None = None  # default: SQLite in the data dir
    keep: bool = False
    jsonl: Path | None = None
    connections: int = 4
    batch_size: int = 1000


@dataclass
class DemoContext:
    options: DemoOptions
    console: Console
    started_at: datetime = field(default_factory=utc_now)
    settings: Settings | None = None
    admin_token: str | None = None
    server: subprocess.Popen[bytes] | None = None
    server_log: IO[bytes] | None = None
    url: str | None = None
    platform: Platform | None = None
    credentials: Credentials | None = None
    summary: SendSummary | None = None
    expected: Expectation | None = None
    reconciliation: dict[str, Any] | None = None
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def client(self) -> httpx.Client:
        if self.url is None or self.admin_token is None:
            raise DemoFailure("the server is not running or the tenant does not exist")
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=120,
        )

    def need_platform(self) -> Platform:
        if self.platform is None:
            raise DemoFailure("no platform was built")
        return self.platform


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
        [*_qm_command(), "init", "--data-dir", str(ctx.settings.data_dir)],
        env=_server_env(ctx.settings),
        capture_output=True,
        check=False,
    )
    if init.returncode != 0:
        output = (init.stdout + init.stderr).decode(errors="replace")
        raise DemoFailure(f"qm init failed ({init.returncode}):\n{output}")
    ctx.console.print(f"data dir {data_dir} initialized (database: {database_url.split(':')[0]})")


def _server_env(settings: Settings) -> dict[str, str]:
    return {
        **os.environ,
        "QM_DATA_DIR": str(settings.data_dir),
        "QM_DATABASE_URL": settings.resolved_database_url,
    }


def create_tenant(ctx: DemoContext) -> None:
    """The tenant and its admin key, as `qm tenant create` makes them (the key is kept in a
    file of the data dir, never printed)."""
    from quartermaster.runtime import build_runtime
    from quartermaster.tenancy.service import bootstrap_tenant

    assert ctx.settings is not None
    runtime = build_runtime(ctx.settings)
    try:
        with runtime.session_factory() as session:
            issued = bootstrap_tenant(TENANT_ID, name="Acme Corp", session=session)
    finally:
        runtime.close()
    ctx.admin_token = issued.token
    key_path = ctx.options.data_dir / ADMIN_KEY_FILE
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(issued.token + "\n")
    ctx.console.print(f"tenant {TENANT_ID!r}; admin API key saved to {key_path} (mode 600)")


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _qm_command() -> list[str]:
    script = Path(sys.executable).with_name("qm")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from quartermaster.cli.main import main; main()"]


def start_server(ctx: DemoContext) -> None:
    """`qm serve` as a subprocess on a free port; waits until /healthz answers."""
    assert ctx.settings is not None
    port = _free_port()
    log_path = ctx.options.data_dir / "server.log"
    ctx.server_log = log_path.open("wb")
    command = [*_qm_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    env = _server_env(ctx.settings)
    ctx.server = subprocess.Popen(command, env=env, stdout=ctx.server_log, stderr=subprocess.STDOUT)
    ctx.cleanups.append(lambda: stop_server(ctx))
    ctx.url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if ctx.server.poll() is not None:
            raise DemoFailure(f"qm serve exited with {ctx.server.returncode}:\n{_tail(log_path)}")
        try:
            if httpx.get(f"{ctx.url}/healthz", timeout=2).status_code == 200:
                ctx.console.print(f"qm serve on {ctx.url} (pid {ctx.server.pid}, log {log_path})")
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise DemoFailure(f"qm serve did not answer within {SERVER_START_SECONDS:.0f}s")


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def stop_server(ctx: DemoContext) -> None:
    server = ctx.server
    if server is not None and server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if ctx.server_log is not None:
        ctx.server_log.close()


def build_simulation(ctx: DemoContext) -> None:
    """The platform, its period ending at the current hour (events may not be in the future)."""
    options = ctx.options
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
    ctx.platform = build_platform(config)
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
    ("send the events", send_events),
    ("reconcile", reconcile),
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
            ctx.console.print(f"[dim]{title}: {time.perf_counter() - began:.1f}s")
    finally:
        for cleanup in reversed(ctx.cleanups):
            cleanup()
    return ctx


def parse_args(argv: Sequence[str] | None = None) -> DemoOptions:
    parser = argparse.ArgumentParser(
        prog="python -m quartermaster.sim.demo",
        description="Simulate a platform of micro-apps against a real Quartermaster server.",
    )
    length = parser.add_mutually_exclusive_group()
    length.add_argument("--days", type=int, help="simulated days (default 1; 30 ≈ 2M events)")
    length.add_argument("--hours", type=int, help="simulated hours (for quick runs)")
    parser.add_argument("--apps", type=int, default=300, help="number of apps (default 300)")
    parser.add_argument("--teams", type=int, default=20, help="number of teams (default 20)")
    parser.add_argument("--seed", type=int, default=7, help="random seed (default 7)")
    parser.add_argument(
        "--events-per-day", type=int, help="event volume per day (default 220 per app)"
    )
    parser.add_argument(
        "--start",
        type=parse_timestamp,
        help="start of the simulated period, on the hour (default: it ends at the current hour)",
    )
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--database-url", help="control-plane database (default SQLite)")
    parser.add_argument(
        "--keep", action="store_true", help="keep the data dir afterwards (default: remove it)"
    )
    parser.add_argument("--jsonl", type=Path, help="also write every event sent to this file")
    parser.add_argument("--connections", type=int, default=4, help="concurrent senders")
    args = parser.parse_args(argv)
    hours = args.hours if args.hours is not None else 24 * (args.days or 1)
    return DemoOptions(
        hours=hours,
        apps=args.apps,
        teams=args.teams,
        seed=args.seed,
        events_per_day=args.events_per_day,
        start=args.start,
        data_dir=args.data_dir,
        database_url=args.database_url,
        keep=args.keep,
        jsonl=args.jsonl,
        connections=args.connections,
    )


def main(argv: Sequence[str] | None = None) -> int:
    console = Console()
    try:
        options = parse_args(argv)
        began = time.perf_counter()
        run(options, console=console)
    except (DemoFailure, DriverError, ValueError) as exc:
        console.print(f"[red bold]demo failed:[/] {exc}")
        return 1
    console.print(f"[bold green]demo finished[/] in {time.perf_counter() - began:.0f}s")
    if options.keep:
        console.print(
            f"data dir kept: {options.data_dir}. Try: QM_DATA_DIR={options.data_dir} "
            f"qm tenant list; the admin key is in {options.data_dir / ADMIN_KEY_FILE}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
