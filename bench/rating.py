"""Rating-and-rollup benchmark: raw attributed events -> rollups -> daily priced rollups,
against floors measured in the same run.

For each size (default 1M and 10M events; one month, 20 cost centers and teams, 300 apps,
10 meters, one usage row per event), the same synthetic rows (made with DuckDB before the
clock starts) go through:

* ours: the usage store's write path exactly as the pipeline calls it (raw rows, per-event
  ledger, day-rollup increments, pipeline counters; one transaction per batch of
  `--batch-size` events; the closing checkpoint included), then the daily priced rollups:
  in DuckDB from the day rollups (the same query shape as the floor and PostgreSQL), and
  through `store.daily_totals` with Decimal pricing (what billing code sees);
* floor: DuckDB alone over the same rows: one bare Arrow insert (and checkpoint), then a bare
  `GROUP BY day, cost center, team, app, meter` priced with the same price map;
* the seeds' reference (1M only): PostgreSQL on 127.0.0.1, the rows loaded with binary COPY
  (timed separately), then `GROUP BY date_trunc('day', ...)` priced the same way.
Every way must give the same priced total; the table says whether it did.

Then the event-to-billable latency on the embedded backends (SQLite + DuckDB): ingestion's own
service function feeds a steady stream while the pipeline worker runs in its thread, and
recorded_at -> committed in the store is read back from the store (p50/p99). Last, the full
pipeline (log -> attribution -> meters -> store) drains a backlog, for its events/s.

    python -m bench.rating [--sizes 1000000 10000000] [--batch-size N] [--skip-postgres]
                           [--latency-seconds 20] [--latency-rate 5000] [--backlog 200000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import psycopg
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from quartermaster.catalog.models import App, AppAssignment
from quartermaster.config import Settings, generate_server_key
from quartermaster.domain.timeutil import Period, utc_now
from quartermaster.metering.service import ingest_events
from quartermaster.runtime import Runtime, build_runtime
from quartermaster.tenancy.models import CostCenter, Team
from quartermaster.tenancy.service import AuthContext, authenticate, bootstrap_tenant
from quartermaster.usage.duckdb_store import DuckDBUsageStore
from quartermaster.usage.meters import DEFAULT_METERS
from quartermaster.usage.pipeline import pipeline_worker, run_pipeline_until_drained
from quartermaster.usage.store import EVENT_SCHEMA, USAGE_SCHEMA, RatedBatch

PG_DSN = "postgresql://postgres@127.0.0.1:5432/postgres"
MONTH_START = datetime(2026, 1, 1, tzinfo=UTC)
MONTH = Period(MONTH_START, datetime(2026, 2, 1, tzinfo=UTC))
TENANT = "bench"
PRICES = {m.name: Decimal(f"0.{i + 1:02d}") for i, m in enumerate(DEFAULT_METERS)}
TARGET_1M_SECONDS = 3.0
TARGET_PG_RATIO = 10.0
TARGET_P99_MS = 2000.0
console = Console()


def synthetic(events: int) -> tuple[pa.Table, pa.Table]:
    """Rated usage rows (one meter per event) and the per-event ledger rows, in log order."""
    meters = ", ".join(f"'{m.name}'" for m in DEFAULT_METERS)
    span_us = int(MONTH.duration.total_seconds() * 1_000_000)
    con = duckdb.connect()
    usage = con.sql(
        f"""
        SELECT i::BIGINT + 1 AS position, '{TENANT}' AS tenant_id, 'ev-' || i AS event_id,
               'bench' AS source, 'qm.invocation.usage' AS event_type,
               TIMESTAMP '2026-01-01'
                 + to_microseconds((i::HUGEINT * {span_us} // {events})::BIGINT) AS event_time,
               event_time AS recorded_at, event_time AS billable_at,
               'cc-' || (hash(i * 7) % 300 % 20) AS cost_center,
               'team-' || (hash(i * 7) % 300 % 20) AS team, 'app-' || (hash(i * 7) % 300) AS app,
               [{meters}][(1 + hash(i * 13) % 10)::BIGINT] AS meter,
               ((hash(i * 31) % 1000000) / 1000)::DECIMAL(38, 12) AS quantity,
               NULL::VARCHAR AS distinct_value, 'app_id' AS method, false AS unattributed,
               false AS late, NULL::VARCHAR AS resource_id, 'production' AS environment,
               'persistent' AS lifecycle
        FROM range({events}) r(i)
        """
    ).to_arrow_table()
    usage = usage.cast(USAGE_SCHEMA)
    ledger = con.sql(
        "SELECT position, tenant_id, event_type, recorded_at, billable_at, "
        "'attributed' AS outcome, 'app_id' AS method, false AS waited FROM usage"
    ).to_arrow_table()
    con.close()
    return usage, ledger.cast(EVENT_SCHEMA)


@dataclass(frozen=True)
class Clock:
    """Wall seconds and CPU seconds of this process (all its threads, DuckDB's included)."""

    wall: float
    cpu: float

    def __add__(self, other: Clock) -> Clock:
        return Clock(self.wall + other.wall, self.cpu + other.cpu)


def timed(work: Callable[[], Any]) -> tuple[Clock, Any]:
    wall, cpu = time.perf_counter(), time.process_time()
    result = work()
    return Clock(time.perf_counter() - wall, time.process_time() - cpu), result


def median_of(runs: int, work: Callable[[], Any]) -> Clock:
    clocks = sorted((timed(work)[0] for _ in range(runs)), key=lambda c: c.wall)
    return clocks[len(clocks) // 2]


def price_daily(store: DuckDBUsageStore) -> tuple[int, Decimal]:
    rows = store.daily_totals(TENANT, MONTH)
    total = sum((d.total.quantity_sum * PRICES[d.total.meter] for d in rows), Decimal(0))
    return len(rows), total


@dataclass
class SizeResult:
    events: int
    ours_write: Clock  # the pipeline's store write path, checkpoint included
    ours_daily: Clock  # daily priced rollups in DuckDB, from the day rollups
    ours_daily_api: Clock  # the same through store.daily_totals and Decimal pricing
    floor_load: Clock
    floor_group_by: Clock
    daily_rows: int
    amounts: set[Decimal]
    pg_load: Clock | None = None
    pg_group_by: Clock | None = None

    @property
    def ours(self) -> Clock:
        return self.ours_write + self.ours_daily

    @property
    def floor(self) -> Clock:
        return self.floor_load + self.floor_group_by


def priced_sql(table: str, day: str, quantity: str, where: str = "") -> str:
    price_map = ", ".join(f"('{name}', {price})" for name, price in PRICES.items())
    return f"""
        SELECT sum(q * p) FROM (
            SELECT {day} AS day, cost_center, team, app, meter, sum({quantity}) AS q
            FROM {table} {where} GROUP BY ALL
        ) JOIN (VALUES {price_map}) prices(meter, p) USING (meter)
    """


def run_size(events: int, *, batch_size: int, workdir: Path, postgres: bool) -> SizeResult:
    console.print(f"[bold]{events:,} events[/]: generating rows ...")
    usage, ledger = synthetic(events)
    path = workdir / f"usage-{events}.duckdb"

    def write_all() -> None:
        store = DuckDBUsageStore(path)
        for start in range(0, events, batch_size):
            store.write(
                RatedBatch(
                    stream=None,
                    position=None,
                    usage=usage.slice(start, batch_size),
                    events=ledger.slice(start, batch_size),
                )
            )
        store.close()  # its checkpoint is part of the cost

    console.print(f"  ours: the store's write path in batches of {batch_size:,} ...")
    write_clock, _ = timed(write_all)
    reopened = DuckDBUsageStore(path)
    api_clock, (daily_rows, api_amount) = timed(lambda: price_daily(reopened))
    reopened.close()
    rollups = duckdb.connect(str(path), read_only=True)
    daily_sql = priced_sql(
        "usage_day",
        "bucket",
        "quantity_sum",
        f"WHERE tenant_id = '{TENANT}' AND bucket >= TIMESTAMP '2026-01-01' "
        "AND bucket < TIMESTAMP '2026-02-01'",
    )
    daily_clock = median_of(3, lambda: rollups.execute(daily_sql).fetchall())
    amount = Decimal(rollups.execute(daily_sql).fetchall()[0][0])
    rollups.close()

    console.print("  floor: a bare DuckDB insert and GROUP BY ...")
    floor = duckdb.connect(str(workdir / f"floor-{events}.duckdb"))
    floor.register("rows", usage)

    def load() -> None:
        floor.execute("CREATE TABLE raw AS SELECT * FROM rows")
        floor.execute("CHECKPOINT")

    load_clock, _ = timed(load)
    floor.unregister("rows")
    floor_sql = priced_sql("raw", "date_trunc('day', event_time)", "quantity")
    group_clock = median_of(3, lambda: floor.execute(floor_sql).fetchall())
    floor_amount = Decimal(floor.execute(floor_sql).fetchall()[0][0])
    floor.close()
    result = SizeResult(
        events=events,
        ours_write=write_clock,
        ours_daily=daily_clock,
        ours_daily_api=api_clock,
        floor_load=load_clock,
        floor_group_by=group_clock,
        daily_rows=daily_rows,
        amounts={amount, api_amount, floor_amount},
    )
    if postgres:
        console.print("  PostgreSQL: binary COPY, then GROUP BY date_trunc('day', ...) ...")
        result.pg_load, result.pg_group_by, pg_amount = postgres_reference(usage)
        result.amounts.add(pg_amount)
    return result


def postgres_reference(usage: pa.Table) -> tuple[Clock, Clock, Decimal]:
    name = f"qm_bench_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_DSN, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    try:
        with psycopg.connect(PG_DSN.rsplit("/", 1)[0] + f"/{name}", autocommit=True) as conn:
            conn.execute("SET TIME ZONE 'UTC'")
            conn.execute(
                "CREATE TABLE raw_events (position bigint, tenant_id text, event_time timestamptz,"
                " cost_center text, team text, app text, meter text, quantity numeric(38, 12))"
            )
            columns = ["position", "tenant_id", "event_time", "cost_center", "team", "app"]
            rows = usage.select([*columns, "meter", "quantity"])
            load_clock, _ = timed(lambda: _copy(conn, rows))
            conn.execute("ANALYZE raw_events")
            sql = priced_sql("raw_events", "date_trunc('day', event_time)", "quantity")
            sql = sql.replace("GROUP BY ALL", "GROUP BY 1, 2, 3, 4, 5").replace(
                ") JOIN", ") d JOIN"
            )
            group_clock = median_of(3, lambda: conn.execute(sql).fetchall())
            amount = conn.execute(sql).fetchall()[0][0]
    finally:
        with psycopg.connect(PG_DSN, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    return load_clock, group_clock, Decimal(amount)


def _copy(conn: psycopg.Connection[Any], rows: pa.Table) -> None:
    with (
        conn.cursor() as cursor,
        cursor.copy("COPY raw_events FROM STDIN (FORMAT BINARY)") as copy,
    ):
        copy.set_types(["int8", "text", "timestamptz", "text", "text", "text", "text", "numeric"])
        for batch in rows.to_batches(100_000):
            columns = [c.to_pylist() for c in batch.columns]
            columns[2] = [t.replace(tzinfo=UTC) for t in columns[2]]
            for row in zip(*columns, strict=True):
                copy.write_row(row)


# --- latency and full pipeline on the embedded backends ---------------------------------------


def embedded_runtime(workdir: Path, **overrides: Any) -> Runtime:
    settings = Settings(data_dir=workdir, **overrides)  # SQLite control plane + DuckDB
    generate_server_key(settings)
    return build_runtime(settings)


def invocation(i: int, now: datetime) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": f"lat-{i}",
        "source": "bench/rating",
        "type": "qm.invocation.usage",
        "time": (now - timedelta(seconds=1)).isoformat(),
        "data": {"app_id": f"app-{i % 50}", "tokens": 100 + i % 900, "compute_units": "0.25"},
    }


def seed_tenant(runtime: Runtime) -> AuthContext:
    """The tenant, 5 teams with their cost centers, and 50 apps registered a day ago."""
    registered = utc_now() - timedelta(days=1)
    with runtime.session_factory() as session:
        token = bootstrap_tenant(TENANT, session=session).token
        caller = authenticate(token, session=session)
        owners = []
        for k in range(5):
            center = CostCenter(tenant_id=TENANT, slug=f"cc-{k}", name=f"cc-{k}")
            session.add(center)
            session.flush()
            team = Team(
                tenant_id=TENANT, slug=f"team-{k}", name=f"team-{k}", cost_center_id=center.id
            )
            session.add(team)
            session.flush()
            owners.append((team.id, center.id))
        for i in range(50):
            team_id, center_id = owners[i % 5]
            app = App(
                tenant_id=TENANT,
                app_id=f"app-{i}",
                title=f"app-{i}",
                owner="bench",
                team_id=team_id,
                cost_center_id=center_id,
                created_by="bench",
                created_at=registered,
                updated_at=registered,
            )
            session.add(app)
            session.flush()
            session.add(
                AppAssignment(
                    tenant_id=TENANT,
                    app_pk=app.id,
                    team_id=team_id,
                    cost_center_id=center_id,
                    valid_from=registered,
                )
            )
        session.commit()
    return caller


@dataclass
class LatencyResult:
    events: int
    rate: float
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    drain_events: int
    drain: Clock


def measure_latency(workdir: Path, *, seconds: float, rate: int, backlog: int) -> LatencyResult:
    runtime = embedded_runtime(workdir / "latency")
    try:
        caller = seed_tenant(runtime)
        worker = pipeline_worker(runtime)
        worker.start()
        started = utc_now()
        batch = max(rate // 10, 1)
        sent = 0
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            tick = time.monotonic()
            now = utc_now()
            ingest_events(
                [invocation(sent + k, now) for k in range(batch)], caller=caller, runtime=runtime
            )
            sent += batch
            time.sleep(max(0.0, 0.1 - (time.monotonic() - tick)))
        elapsed = (utc_now() - started).total_seconds()
        run_pipeline_until_drained(runtime, timeout_seconds=120)
        worker.stop()
        summary = runtime.usage_store.latency(TENANT, since=started)
        # Full pipeline throughput: a backlog in the log, drained with the worker stopped.
        now = utc_now()
        for start in range(0, backlog, 5000):
            ingest_events(
                [invocation(sent + start + k, now) for k in range(5000)],
                caller=caller,
                runtime=runtime,
            )
        drain_clock, drained = timed(lambda: run_pipeline_until_drained(runtime))
        return LatencyResult(
            events=summary.events,
            rate=sent / elapsed,
            p50_ms=summary.p50_ms,
            p99_ms=summary.p99_ms,
            max_ms=summary.max_ms,
            drain_events=int(drained),
            drain=drain_clock,
        )
    finally:
        runtime.close()


# --- report ------------------------------------------------------------------------------------


def report(sizes: list[SizeResult], latency: LatencyResult | None, batch_size: int) -> None:
    table = Table(title=f"rating and rollups (store batches of {batch_size:,} events)")
    for column in ("events", "measurement", "wall s", "CPU s", "events/s", "ratio", "target"):
        table.add_column(column, justify="left" if column == "measurement" else "right")

    def row(label: str, clock: Clock, *extra: str, events: int | None = None) -> None:
        rate = f"{events / clock.wall:,.0f}" if events else ""
        table.add_row("", label, f"{clock.wall:.3f}", f"{clock.cpu:.3f}", rate, *extra)

    for r in sizes:
        met = r.ours.wall < TARGET_1M_SECONDS
        target = f"< {TARGET_1M_SECONDS:.0f} s {_mark(met)}" if r.events == 1_000_000 else ""
        table.add_row(f"[bold]{r.events:,}[/]", "", "", "", "", "", "")
        row(
            "ours: raw events -> rollups -> daily priced",
            r.ours,
            f"{r.ours.cpu / r.floor.cpu:.1f}x floor (CPU)",
            target,
            events=r.events,
        )
        row("  the store's write path (raw, ledger, day rollups)", r.ours_write)
        row(
            "  daily priced rollups, read from the day rollups",
            r.ours_daily,
            f"{r.ours_daily.wall / r.floor_group_by.wall:.2f}x bare GROUP BY",
        )
        row(f"  the same via store.daily_totals ({r.daily_rows:,} rows)", r.ours_daily_api)
        row("floor: bare Arrow insert + bare GROUP BY", r.floor, "1.0x", events=r.events)
        row("  bare GROUP BY day, cost center, team, app, meter", r.floor_group_by)
        if r.pg_group_by is not None and r.pg_load is not None:
            ratio = r.pg_group_by.wall / r.ours_daily.wall
            row(
                "PostgreSQL GROUP BY date_trunc('day') (seeds' approach)",
                r.pg_group_by,
                f"{ratio:.0f}x our daily priced (wall)",
                f">= {TARGET_PG_RATIO:.0f}x {_mark(ratio >= TARGET_PG_RATIO)}",
            )
            pg_total = r.pg_load + r.pg_group_by
            row(
                "  PostgreSQL binary COPY + GROUP BY (vs ours end to end)",
                pg_total,
                f"{pg_total.wall / r.ours.wall:.1f}x ours (wall)",
            )
            table.add_row(
                "",
                "  PostgreSQL GROUP BY vs DuckDB bare GROUP BY",
                "",
                "",
                "",
                f"{r.pg_group_by.wall / r.floor_group_by.wall:.1f}x",
                "",
            )
        total = min(r.amounts)
        table.add_row("", f"priced total {total} (all ways equal: {len(r.amounts) == 1})")
    console.print(table)
    console.print(
        "PostgreSQL's CPU runs in its server process, so its CPU column counts only the client."
    )
    if latency is not None:
        lat = Table(title="event-to-billable latency, embedded backends (SQLite + DuckDB)")
        for column in ("measurement", "value", "target"):
            lat.add_column(column)
        lat.add_row("steady ingest rate", f"{latency.rate:,.0f} events/s")
        lat.add_row("events measured", f"{latency.events:,}")
        lat.add_row("p50", f"{latency.p50_ms or 0:,.0f} ms")
        p99 = latency.p99_ms or 0.0
        lat.add_row(
            "p99", f"{p99:,.0f} ms", f"< {TARGET_P99_MS:,.0f} ms {_mark(p99 < TARGET_P99_MS)}"
        )
        lat.add_row("max", f"{latency.max_ms or 0:,.0f} ms")
        drain = latency.drain
        lat.add_row(
            "full pipeline drain (log -> attribution -> meters -> store)",
            f"{latency.drain_events:,} events: {drain.wall:.1f} s wall, {drain.cpu:.1f} CPU s = "
            f"{latency.drain_events / drain.wall:,.0f} events/s, "
            f"{1e6 * drain.cpu / max(latency.drain_events, 1):,.0f} CPU us/event",
        )
        console.print(lat)


def _mark(ok: bool) -> str:
    return "[green]met[/]" if ok else "[red]missed[/]"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--sizes", type=int, nargs="+", default=[1_000_000, 10_000_000])
    parser.add_argument("--batch-size", type=int, default=Settings().pipeline_batch_size)
    parser.add_argument("--skip-postgres", action="store_true")
    parser.add_argument("--latency-seconds", type=float, default=20.0)
    parser.add_argument("--latency-rate", type=int, default=5000)
    parser.add_argument("--backlog", type=int, default=200_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qm-bench-rating-") as tmp:
        workdir = Path(tmp)
        sizes = [
            run_size(
                n,
                batch_size=args.batch_size,
                workdir=workdir,
                postgres=not args.skip_postgres and n <= 1_000_000,
            )
            for n in args.sizes
        ]
        latency = None
        if args.latency_seconds > 0:
            console.print("latency: steady ingest with the pipeline worker running ...")
            latency = measure_latency(
                workdir, seconds=args.latency_seconds, rate=args.latency_rate, backlog=args.backlog
            )
        report(sizes, latency, args.batch_size)


if __name__ == "__main__":
    main()
