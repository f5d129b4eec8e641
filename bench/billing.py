"""Billing benchmark: a month's billing run and a line's explanation on a demo-sized usage
store, against a floor measured in the same run.

One month of synthetic usage (default 1M raw rows; 20 cost centers and teams, 300 apps,
10 meters, a shared platform cost per day) is written through the usage store's write path
before the clock starts. Then:

* ours, run: what a billing run computes after the pipeline has caught up, phase by phase:
  the store's quantities "as of" the cutoff, the pricing engine (rating, discounts,
  largest-remainder rounding, shared-cost allocation), the billing lines with their audit
  keys (the rows a run inserts), and the FOCUS 1.2 rows of the document (the INSERT itself
  and loading lines back are not included);
* ours, explain: one app's meter per day from its raw rows as of the cutoff, with its top
  events (`qm explain`'s first two steps);
* floor: DuckDB alone over the same raw rows: a bare
  `GROUP BY cost_center, team, app, meter` with `sum(quantity)`.

    python -m bench.billing [--events 1000000]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from rich.console import Console
from rich.table import Table

from quartermaster.billing.calculator import PricingContext, subscription_test
from quartermaster.billing.explain import daily_from_raw
from quartermaster.billing.focus import FocusContext, focus_rows
from quartermaster.billing.lines import build_lines, total_of
from quartermaster.billing.models import BillingDocument, BillingLine
from quartermaster.billing.service import line_values
from quartermaster.billing.sources import plain
from quartermaster.domain.timeutil import Period
from quartermaster.pricing.engine import price_period
from quartermaster.pricing.history import PriceBookHistory, PriceBookVersion
from quartermaster.pricing.lines import PlatformCostItem, UsageRow
from quartermaster.pricing.loader import validate_document
from quartermaster.usage.duckdb_store import DuckDBUsageStore
from quartermaster.usage.meters import DEFAULT_METERS, Aggregation
from quartermaster.usage.store import COST_SCHEMA, USAGE_SCHEMA, RatedBatch

MONTH = Period(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
AS_OF = datetime(2026, 2, 2, tzinfo=UTC)
TENANT = "bench"
BATCH = 250_000
console = Console()


def synthetic_usage(events: int, offset: int) -> pa.Table:
    meters = ", ".join(f"'{m.name}'" for m in DEFAULT_METERS)
    span_us = int(MONTH.duration.total_seconds() * 1_000_000)
    con = duckdb.connect()
    table = con.sql(
        f"""
        SELECT i::BIGINT + {offset} + 1 AS position, '{TENANT}' AS tenant_id,
               'ev-' || (i + {offset}) AS event_id, 'bench' AS source,
               'qm.invocation.usage' AS event_type,
               TIMESTAMP '2026-01-01' + to_microseconds((i * {span_us} // {events})::BIGINT)
                 AS event_time,
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
    con.close()
    return table.cast(USAGE_SCHEMA)


def platform_costs() -> pa.Table:
    rows: dict[str, list[Any]] = {name: [] for name in COST_SCHEMA.names}
    for day in range(31):
        moment = (MONTH.start + timedelta(days=day)).replace(tzinfo=None)
        values = [
            10**9 + day,
            TENANT,
            f"cost-{day}",
            "bench",
            moment,
            moment,
            "lb",
            Decimal("125.50"),
            "USD",
            None,
            None,
        ]
        for name, value in zip(COST_SCHEMA.names, values, strict=True):
            rows[name].append(value)
    return pa.table(rows, schema=COST_SCHEMA)


def load(store: DuckDBUsageStore, events: int) -> None:
    for offset in range(0, events, BATCH):
        size = min(BATCH, events - offset)
        store.write(RatedBatch(stream=None, position=None, usage=synthetic_usage(size, offset)))
    store.write(RatedBatch(stream=None, position=None, costs=platform_costs()))


def price_book() -> PricingContext:
    document = validate_document(
        {
            "name": "bench",
            "currency": "USD",
            "version": 1,
            "effective_from": "2026-01-01T00:00:00Z",
            "prices": [
                {
                    "meter": m.name,
                    "model": "graduated",
                    "tiers": [{"up_to": 1000, "unit_price": "0"}, {"unit_price": f"0.000{i + 1}"}],
                }
                for i, m in enumerate(DEFAULT_METERS)
            ],
            "discounts": [{"name": "team-3", "percent": 15, "applies_to": {"team": "team-3"}}],
            "platform_costs": [{"cost_type": "lb", "method": "proportional", "meter": "tokens"}],
        }
    )
    history = PriceBookHistory([PriceBookVersion(document, datetime(2025, 12, 1, tzinfo=UTC))])
    return PricingContext(history=history)


def timed(work: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = work()
    return time.perf_counter() - started, result


def billing_run(store: DuckDBUsageStore, context: PricingContext) -> dict[str, Any]:
    """One run, phase by phase: {phase: seconds} plus counts."""
    phases: dict[str, Any] = {}
    started = time.perf_counter()
    totals = store.quantities(TENANT, MONTH, as_of=AS_OF)
    usage = tuple(
        UsageRow(t.cost_center, t.team, t.app, t.meter, plain(t.quantity_sum), at=MONTH.start)
        for t in totals
    )
    costs = tuple(
        PlatformCostItem(c.cost_type, plain(c.amount), c.currency, at=MONTH.start)
        for c in store.platform_costs(TENANT, MONTH, as_of=AS_OF)
    )
    phases["quantities as of the cutoff (usage store)"] = time.perf_counter() - started
    started = time.perf_counter()
    result = price_period(
        context.history, MONTH, usage, costs, as_of=AS_OF, directory=context.directory
    )
    phases["pricing engine (rate, discount, round, allocate)"] = time.perf_counter() - started
    started = time.perf_counter()
    lines = build_lines(result, is_subscription=subscription_test(context.history))
    document = BillingDocument(
        id="b" * 32,
        tenant_id=TENANT,
        doc_type="run",
        kind="invoice",
        corrects_id=None,
        period_start=MONTH.start,
        period_end=MONTH.end,
        as_of=AS_OF,
        currency="USD",
        total=total_of(lines),
    )
    values = line_values(document, lines)  # the rows a run INSERTs
    phases["billing lines and audit keys"] = time.perf_counter() - started
    stored = [BillingLine(**row) for row in values]  # what an export loads (not timed)
    started = time.perf_counter()
    rows = focus_rows([(document, stored)], FocusContext(billing_account_name=TENANT))
    phases["FOCUS 1.2 rows of the lines"] = time.perf_counter() - started
    phases["lines"], phases["focus"], phases["total"] = len(stored), len(rows), document.total
    return phases


def run_seconds_of(phases: dict[str, Any]) -> float:
    return sum(value for value in phases.values() if isinstance(value, float))


def explain_one(store: DuckDBUsageStore) -> int:
    line = BillingLine(
        tenant_id=TENANT, app="app-7", meter="tokens", cost_center="cc-7", team="team-7"
    )
    found = daily_from_raw(store, line, MONTH, AS_OF, Aggregation.SUM)
    if found is None:
        raise RuntimeError("explain fell back to rollups on a store within retention")
    return sum(day.events for day in found[0])


def floor_group_by(path: Path) -> tuple[float, int]:
    con = duckdb.connect(str(path), read_only=True)
    try:
        seconds, rows = timed(
            lambda: con.sql(
                "SELECT cost_center, team, app, meter, sum(quantity) FROM usage_rows "
                f"WHERE tenant_id = '{TENANT}' GROUP BY ALL"
            ).fetchall()
        )
    finally:
        con.close()
    return seconds, len(rows)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--events", type=int, default=1_000_000)
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="qm-bench-billing-") as tmp:
        path = Path(tmp) / "usage.duckdb"
        store = DuckDBUsageStore(path)
        load_seconds, _ = timed(lambda: load(store, args.events))
        context = price_book()
        billing_run(store, context)  # warm-up: DuckDB caches, imports
        phases = billing_run(store, context)
        run_seconds = run_seconds_of(phases)
        explain_seconds, explained = timed(lambda: explain_one(store))
        store.close()
        floor_seconds, groups = floor_group_by(path)
    title = f"billing, {args.events:,} raw rows"
    table = Table("measure", "seconds", "x floor", "detail", title=title)
    table.add_row("load (usage store write path, not timed below)", f"{load_seconds:.2f}", "", "")
    table.add_row(
        "billing run, in all",
        f"{run_seconds:.2f}",
        f"{run_seconds / floor_seconds:.1f}",
        f"{phases['lines']:,} lines, {phases['focus']:,} FOCUS rows, total {phases['total']}",
    )
    for phase, seconds in phases.items():
        if isinstance(seconds, float):
            table.add_row(f"  {phase}", f"{seconds:.3f}", f"{seconds / floor_seconds:.1f}", "")
    table.add_row(
        "explain one line (daily from raw rows, top events)",
        f"{explain_seconds:.3f}",
        f"{explain_seconds / floor_seconds:.1f}",
        f"{explained:,} events",
    )
    table.add_row(
        "floor: DuckDB GROUP BY owner, meter", f"{floor_seconds:.3f}", "1.0", f"{groups:,} groups"
    )
    console.print(table)


if __name__ == "__main__":
    main()
