"""Cost-anomaly detection scored against the simulator's injected anomalies: precision,
recall and time to detect.

For each seed, the simulator builds a platform (default: two weeks, 120 apps, 12 injected
anomalies) and its event stream. Each event's measures are costed at the example price
book's list rate per unit (the first unscoped rule of each meter: its unit price, first tier
or overage rate; docs/examples/pricebook.yaml), per app and minute. Detection is replayed
online, as the `guardrails` service sees it: every hour, each app's trailing hourly costs give
the baseline; during the hour, its cost so far is judged at every minute (the service scans
every `guardrails_interval_seconds`, 15 s, so a minute is a conservative resolution).
Consecutive anomalous hours of an app are one incident (one alert).

- an incident is a true positive when an injected anomaly of that app overlaps its hours;
- recall: injected anomalies with at least one incident overlapping them;
- time to detect: the first anomalous minute's end minus the anomaly's start (event time:
  events reach the store within seconds of being sent, bench/ingest.py).

The floor: the same replay with the trivial detector "an hour is anomalous when its full
cost is over 3x the previous hour" (no seasonality, no robust spread), for comparison.

    python -m bench.anomalies [--seeds 7 8 9] [--days 14] [--apps 120] [--anomalies 12]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from quartermaster.guardrails.anomaly import (
    AnomalyRule,
    active_history,
    baseline_of,
    incidents,
    judge,
)
from quartermaster.sim.generator import EventBatch, stream
from quartermaster.sim.model import Platform, SimConfig
from quartermaster.sim.platform import build_platform

PRICE_BOOK = Path(__file__).resolve().parents[1] / "docs" / "examples" / "pricebook.yaml"
START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
MINUTES = 60


def list_rates(path: Path = PRICE_BOOK) -> dict[str, Decimal]:
    """Meter -> list rate per unit: the first unscoped rule's unit price, first tier's unit
    price or overage unit price."""
    document = yaml.safe_load(path.read_text())
    rates: dict[str, Decimal] = {}
    for rule in document.get("prices", []):
        meter = rule["meter"]
        if meter in rates or rule.get("scope"):
            continue
        price = rule.get("unit_price")
        if price is None and rule.get("tiers"):
            price = rule["tiers"][0].get("unit_price")
        if price is None and rule.get("overage"):
            price = rule["overage"].get("unit_price")
        if price is not None:
            rates[meter] = Decimal(str(price))
    return rates


@dataclass
class CostGrid:
    """Cost per app, hour and minute of the period."""

    hours: int
    minutes: dict[str, dict[int, list[Decimal]]] = field(default_factory=dict)

    def add(self, app: str, minute_index: int, amount: Decimal) -> None:
        hour, minute = divmod(minute_index, MINUTES)
        if not 0 <= hour < self.hours:
            return
        per_hour = self.minutes.setdefault(app, {})
        row = per_hour.get(hour)
        if row is None:
            row = per_hour[hour] = [Decimal(0)] * MINUTES
        row[minute] += amount

    def hourly(self, app: str) -> list[Decimal]:
        per_hour = self.minutes.get(app, {})
        return [
            sum(per_hour[h], Decimal(0)) if h in per_hour else Decimal(0) for h in range(self.hours)
        ]


def cost_grid(platform: Platform, rates: dict[str, Decimal]) -> tuple[CostGrid, int]:
    owner = {r.resource_id: r.app_id for r in platform.resources}
    grid = CostGrid(platform.config.hours)
    start = platform.config.start
    count = 0
    for item in stream(platform, None):
        if not isinstance(item, EventBatch):
            continue
        for event in item.events:
            data: dict[str, Any] = event["data"]
            app = data.get("app_id") or owner.get(data.get("resource_id", ""))
            if app is None:
                continue
            amount = Decimal(0)
            if event["type"].endswith("invocation.usage"):
                amount += rates.get("invocations", Decimal(0))
            for name, value in data.items():
                rate = rates.get(name)
                if rate is not None and isinstance(value, int | float):
                    amount += rate * Decimal(str(value))
            moment = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
            grid.add(app, int((moment - start).total_seconds() // 60), amount)
            count += 1
    return grid, count


@dataclass(frozen=True)
class Detection:
    app: str
    start_hour: int
    end_hour: int
    detected_at: datetime


def detect_robust(grid: CostGrid, rule: AnomalyRule, start: datetime) -> list[Detection]:
    found: list[Detection] = []
    for app in grid.minutes:
        series = grid.hourly(app)
        first_minute: dict[int, int] = {}
        for hour in range(rule.min_history, grid.hours):
            history = active_history(series[:hour])
            if len(history) < rule.min_history:
                continue
            baseline, spread = baseline_of(history, rule)
            minutes = grid.minutes[app].get(hour)
            if minutes is None:
                continue
            so_far = Decimal(0)
            for minute in range(MINUTES):
                so_far += minutes[minute]
                fraction = Decimal(minute + 1) / MINUTES
                if judge(so_far, baseline, spread, fraction=fraction, rule=rule).anomalous:
                    first_minute[hour] = minute
                    break
        flags = [h in first_minute for h in range(grid.hours)]
        for run in incidents(flags):
            at = start + timedelta(hours=run.start, minutes=first_minute[run.start] + 1)
            found.append(Detection(app, run.start, run.end, at))
    return found


def detect_floor(grid: CostGrid, start: datetime) -> list[Detection]:
    found: list[Detection] = []
    for app in grid.minutes:
        series = grid.hourly(app)
        flags = [False] + [
            series[h - 1] > 0 and series[h] > 3 * series[h - 1] for h in range(1, grid.hours)
        ]
        for run in incidents(flags):
            found.append(Detection(app, run.start, run.end, start + timedelta(hours=run.end)))
    return found


@dataclass
class Scores:
    injected: int = 0
    detected: int = 0
    incidents: int = 0
    true_incidents: int = 0
    delays: list[float] = field(default_factory=list)  # minutes

    @property
    def precision(self) -> float:
        return self.true_incidents / self.incidents if self.incidents else 1.0

    @property
    def recall(self) -> float:
        return self.detected / self.injected if self.injected else 1.0


def effective_anomalies(platform: Platform) -> list[tuple[str, int, int]]:
    """(app, start hour, end hour) of each injected anomaly that is in the events: the
    generator keeps one anomaly per (app, meter), the last one drawn."""
    last = {(a.app_id, a.meter): a for a in platform.anomalies}
    start = platform.config.start
    return [
        (
            a.app_id,
            int((a.start - start) / timedelta(hours=1)),
            int((a.end - start) / timedelta(hours=1)),
        )
        for a in last.values()
    ]


def score(
    truth: Iterable[tuple[str, int, int]], found: list[Detection], start: datetime, into: Scores
) -> None:
    truth = list(truth)
    into.injected += len(truth)
    into.incidents += len(found)
    for item in found:
        if any(
            app == item.app and s < item.end_hour and item.start_hour < e for app, s, e in truth
        ):
            into.true_incidents += 1
    for app, s, e in truth:
        hits = [d for d in found if d.app == app and d.start_hour < e and s < d.end_hour]
        if hits:
            into.detected += 1
            first = min(d.detected_at for d in hits)
            into.delays.append(
                max(0.0, (first - (start + timedelta(hours=s))).total_seconds() / 60)
            )


def run(seeds: list[int], days: int, apps: int, anomalies: int) -> dict[str, Scores]:
    rates = list_rates()
    rule = AnomalyRule()
    results = {"robust (median/MAD, seasonal)": Scores(), "floor: 3x previous hour": Scores()}
    for seed in seeds:
        config = SimConfig(start=START, hours=days * 24, seed=seed, apps=apps, anomalies=anomalies)
        platform = build_platform(config)
        started = time.perf_counter()
        grid, events = cost_grid(platform, rates)
        truth = effective_anomalies(platform)
        found = detect_robust(grid, rule, config.start)
        score(truth, found, config.start, results["robust (median/MAD, seasonal)"])
        score(
            truth,
            detect_floor(grid, config.start),
            config.start,
            results["floor: 3x previous hour"],
        )
        Console().print(
            f"seed {seed}: {events:,} events, {len(truth)} anomalies in the events, "
            f"{len(found)} incidents, {time.perf_counter() - started:.1f} s"
        )
    return results


def report(results: dict[str, Scores]) -> None:
    table = Table(
        "detector", "injected", "detected", "recall", "incidents", "precision",
        "TTD median min", "TTD max min", "TTD <= 5 min", title="cost anomalies",
    )  # fmt: skip
    for name, s in results.items():
        delays = s.delays or [float("nan")]
        within = sum(1 for d in s.delays if d <= 5)
        table.add_row(
            name,
            str(s.injected),
            str(s.detected),
            f"{s.recall:.2f}",
            str(s.incidents),
            f"{s.precision:.2f}",
            f"{statistics.median(delays):.0f}",
            f"{max(delays):.0f}",
            f"{within}/{len(s.delays)}",
        )
    Console().print(table)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9])
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--apps", type=int, default=120)
    parser.add_argument("--anomalies", type=int, default=12)
    args = parser.parse_args(argv)
    report(run(args.seeds, args.days, args.apps, args.anomalies))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
