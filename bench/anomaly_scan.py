"""The cost-anomaly scan's CPU (`guardrails.anomaly_scan.scan_tenant`) on a simulated platform.

The simulator builds the demo's platform (default 300 apps, 7 days); its events are written
as attributed usage rows straight into an embedded store (DuckDB usage store, SQLite control
plane with the tenant's teams, apps and the example price book), one row per event and meter,
as the pipeline would. Then the last `--hours` hours are scanned as the `anomalies` service
scans them (`now` = the end of the period), `--runs` times: the first run raises the alerts,
the later ones find them already raised (the service's re-scans).

The floor, in the same run: DuckDB executing the scan's priced hourly aggregation
(`hourly_costs_sql`) over the same window (the scored hours and the week before) into an
Arrow table, with no Python object per row. The ratio is the scan's CPU over it.

`--alerts-out FILE` writes the first run's alerts (dedup keys and details, without the
detection times) as JSON, to compare two versions of the code on the same store
(`--workdir` keeps the store between runs; it is built when missing).

    python -m bench.anomaly_scan [--days 7] [--apps 300] [--hours 48] [--runs 3]
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table
from sqlalchemy import delete, select

from quartermaster.catalog.models import App
from quartermaster.config import Settings, generate_server_key
from quartermaster.domain.timeutil import HOUR, Period
from quartermaster.guardrails.anomaly_rates import tenant_rate_card
from quartermaster.guardrails.anomaly_scan import scan_tenant
from quartermaster.guardrails.models import Alert, GuardrailAction
from quartermaster.pricing.document import PriceBookDocument
from quartermaster.pricing.service import store_price_book
from quartermaster.runtime import Runtime, build_runtime
from quartermaster.sim.generator import EventBatch, stream
from quartermaster.sim.model import OwnershipMove, Platform, SimConfig
from quartermaster.sim.platform import build_platform
from quartermaster.tenancy.models import CostCenter, Team
from quartermaster.tenancy.service import bootstrap_tenant
from quartermaster.usage import duckdb_queries as q
from quartermaster.usage.duckdb_store import DuckDBUsageStore
from quartermaster.usage.meters import COUNT_VALUE, DEFAULT_METERS
from quartermaster.usage.store import USAGE_SCHEMA, RatedBatch, TableBuilder

PRICE_BOOK = Path(__file__).resolve().parents[1] / "docs" / "examples" / "pricebook.yaml"
START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
WINDOW_HOURS = 168
ROWS_PER_WRITE = 200_000


@dataclass(frozen=True)
class Clock:
    cpu: float
    wall: float


def timed(work: Callable[[], Any]) -> tuple[Clock, Any]:
    cpu, wall = time.process_time(), time.perf_counter()
    result = work()
    return Clock(time.process_time() - cpu, time.perf_counter() - wall), result


def median_clock(clocks: list[Clock]) -> Clock:
    return Clock(
        statistics.median(c.cpu for c in clocks), statistics.median(c.wall for c in clocks)
    )


def runtime_at(workdir: Path) -> Runtime:
    settings = Settings(data_dir=workdir, anomalies_enabled=False)
    if not (workdir / "server.key").exists():
        generate_server_key(settings)
    return build_runtime(settings)


def seed_control_plane(runtime: Runtime, platform: Platform) -> None:
    """The tenant, its cost centers, teams and apps, and the example price book."""
    tenant_id = platform.config.tenant_id
    with runtime.session_factory() as session:
        bootstrap_tenant(tenant_id, session=session)
        centers: dict[str, int] = {}
        for spec in platform.cost_centers:
            center = CostCenter(tenant_id=tenant_id, slug=spec.slug, name=spec.slug)
            session.add(center)
            session.flush()
            centers[spec.slug] = center.id
        teams: dict[str, int] = {}
        for team_spec in platform.teams:
            team = Team(
                tenant_id=tenant_id,
                slug=team_spec.slug,
                name=team_spec.slug,
                cost_center_id=centers[team_spec.cost_center],
            )
            session.add(team)
            session.flush()
            teams[team_spec.slug] = team.id
        for app in platform.apps:
            session.add(
                App(
                    tenant_id=tenant_id,
                    app_id=app.app_id,
                    title=app.title,
                    owner=app.owner,
                    team_id=teams[app.team],
                    cost_center_id=centers[app.cost_center],
                    lifecycle=app.lifecycle,
                    created_by="bench",
                    created_at=platform.config.start,
                    updated_at=platform.config.start,
                )
            )
        session.commit()
        document = PriceBookDocument.model_validate(yaml.safe_load(PRICE_BOOK.read_text()))
        store_price_book(tenant_id, document, created_by="bench", session=session)


def write_usage(store: DuckDBUsageStore, platform: Platform) -> int:
    """Every event of the platform's stream as attributed usage rows (what the pipeline
    writes for it: one row per meter its type feeds, owned by the app's team at the time)."""
    tenant_id = platform.config.tenant_id
    by_type: dict[str, list[tuple[str, str]]] = {}
    for meter in DEFAULT_METERS:
        by_type.setdefault(meter.event_type, []).append((meter.name, meter.value))
    resource_app = {r.resource_id: r.app_id for r in platform.resources}
    apps = {a.app_id: a for a in platform.apps}
    moves: dict[str, list[OwnershipMove]] = {}
    for move in sorted(platform.moves, key=lambda m: m.at):
        moves.setdefault(move.app_id, []).append(move)
    builder = TableBuilder(USAGE_SCHEMA)
    written = 0
    position = 0
    for item in stream(platform, None):
        if not isinstance(item, EventBatch):
            continue
        for event in item.events:
            data: dict[str, Any] = event["data"]
            app_id = data.get("app_id") or resource_app.get(data.get("resource_id", ""))
            meters = by_type.get(event["type"])
            app = apps.get(app_id or "")
            if app is None or not meters:
                continue
            moment = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
            team, center = app.team, app.cost_center
            for move in moves.get(app.app_id, ()):
                if move.at <= moment:
                    team, center = move.to_team, move.to_cost_center
            for name, value in meters:
                raw = 1 if value == COUNT_VALUE else data.get(value)
                if not isinstance(raw, int | float | str) or isinstance(raw, bool):
                    continue
                position += 1
                builder.append(
                    position, tenant_id, event["id"], event["source"], event["type"], moment,
                    moment, moment, center, team, app.app_id, name, Decimal(str(raw)), None,
                    "app_id", False, False, data.get("resource_id"), app.environment,
                    app.lifecycle,
                )  # fmt: skip
        if len(builder) >= ROWS_PER_WRITE:
            store.write(RatedBatch(stream=None, position=None, usage=builder.to_table()))
            written += len(builder)
            builder = TableBuilder(USAGE_SCHEMA)
    written += len(builder)
    store.write(RatedBatch(stream=None, position=None, usage=builder.to_table()))
    return written


def floor_query(runtime: Runtime, tenant_id: str, window: Period) -> tuple[Clock, int]:
    """DuckDB's own cost of the scan's priced hourly aggregation over `window`, to Arrow."""
    with runtime.read_session_factory() as session:
        rates = tenant_rate_card(tenant_id, window.end - HOUR, session=session)
    store = runtime.usage_store
    assert isinstance(store, DuckDBUsageStore)
    # The store's own query, with the rates registered as the store registers them.
    with store._rates_registered(rates) as (cur, name):
        sql, params = q.hourly_costs_sql(tenant_id, window, name)
        clock, arrow = timed(lambda: cur.sql(sql, params=params).to_arrow_table())
    return clock, arrow.num_rows


def alert_record(alert: Alert) -> dict[str, Any]:
    found = json.loads(alert.details) if isinstance(alert.details, str) else alert.details
    details = {k: v for k, v in found.items() if k not in ("detected_at", "seconds_to_detect")}
    return {"dedup_key": alert.dedup_key, "title": alert.title, "details": details}


def scan(runtime: Runtime, tenant_id: str, hours: list[datetime], now: datetime) -> Clock:
    with runtime.session_factory() as session:
        clock, _ = timed(
            lambda: scan_tenant(
                tenant_id, hours, store=runtime.usage_store, session=session, now=now
            )
        )
    return clock


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--apps", type=int, default=300)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--anomalies", type=int, default=None, help="injected (default: sim's)")
    parser.add_argument("--hours", type=int, default=48, help="hours scored per scan")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=None, help="keep the store here")
    parser.add_argument("--alerts-out", type=Path, default=None)
    args = parser.parse_args(argv)
    console = Console(width=140)
    config = SimConfig(
        start=START,
        hours=args.days * 24,
        seed=args.seed,
        apps=args.apps,
        anomalies=args.anomalies,
    )
    platform = build_platform(config)
    with tempfile.TemporaryDirectory(prefix="bench-anomaly-scan-") as temporary:
        workdir = args.workdir or Path(temporary)
        fresh = not (workdir / "usage.duckdb").exists()
        runtime = runtime_at(workdir)
        try:
            if fresh:
                seed_control_plane(runtime, platform)
                store = runtime.usage_store
                assert isinstance(store, DuckDBUsageStore)
                build, rows = timed(lambda: write_usage(store, platform))
                console.print(f"built the store: {rows:,} usage rows in {build.wall:.1f} s")
            tenant_id = config.tenant_id
            now = config.end
            hours = [now - (i + 1) * HOUR for i in range(args.hours)][::-1]
            with runtime.session_factory() as session:
                session.execute(delete(Alert).where(Alert.tenant_id == tenant_id))
                session.execute(
                    delete(GuardrailAction).where(GuardrailAction.tenant_id == tenant_id)
                )
                session.commit()
            window = Period(hours[0] - WINDOW_HOURS * HOUR, now)
            clocks: list[Clock] = []
            floors: list[Clock] = []
            rows_out = 0
            for _ in range(args.runs):
                floor, rows_out = floor_query(runtime, tenant_id, window)
                floors.append(floor)
                clocks.append(scan(runtime, tenant_id, hours, now))
            with runtime.read_session_factory() as session:
                alerts = list(
                    session.scalars(
                        select(Alert).where(Alert.tenant_id == tenant_id).order_by(Alert.dedup_key)
                    )
                )
            records = [alert_record(a) for a in alerts]
        finally:
            runtime.close()
    if args.alerts_out is not None:
        args.alerts_out.write_text(json.dumps(records, indent=1, sort_keys=True))
    ours, floor = median_clock(clocks), median_clock(floors)
    load = " ".join(f"{x:.2f}" for x in __import__("os").getloadavg())
    table = Table(
        title=f"anomaly scan: {args.hours} scored hours + {WINDOW_HOURS} h history, "
        f"{args.apps} apps, {args.days} days (median of {args.runs} runs; load {load})"
    )
    for column in ("what", "CPU s", "wall s", "x floor (CPU)"):
        table.add_column(column, justify="left" if column == "what" else "right")
    table.add_row(
        f"floor: hourly_costs_sql to Arrow ({rows_out:,} rows)",
        f"{floor.cpu:.2f}",
        f"{floor.wall:.2f}",
        "1.0",
    )
    table.add_row(
        "scan_tenant (first run raises, later runs re-scan)",
        f"{ours.cpu:.2f}",
        f"{ours.wall:.2f}",
        f"{ours.cpu / floor.cpu:.1f}" if floor.cpu > 0 else "-",
    )
    table.add_row("runs (CPU s)", " ".join(f"{c.cpu:.2f}" for c in clocks), "", "")
    console.print(table)
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    console.print(f"alerts: {len(records)}; peak RSS {peak:.0f} MB")


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
