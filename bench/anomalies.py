"""Cost-anomaly detection scored against the simulator's injected anomalies: precision,
recall and time to detect, per app and per team.

For each seed, the simulator builds a platform (default: two weeks, 120 apps, 12 injected
anomalies) and its event stream. Each event is priced with the rate card the detector uses
(guardrails.anomaly_rates: the example price book's list rate per unit of each meter, after
the app's discounts; docs/examples/pricebook.yaml), per (app, meter) and minute, and per
(team, meter). Detection is replayed online, as the `anomalies` service sees it: for every
hour, each scope's meters get their normal hour from the trailing hours
(`guardrails.anomaly.expectations`), and the hour so far is judged (`judge_scope`) at every
minute in which cost arrived (between arrivals the verdict can only relax: the expected
share grows with the clock). The service scans every `anomalies_interval_seconds` (15 s), so a
minute is a conservative resolution. Consecutive anomalous hours of a scope are one incident
(one alert), as in the service.

- an app incident is a true positive when an injected anomaly of that app overlaps its hours;
  a team incident when an injected anomaly of one of the team's apps does;
- recall: injected anomalies with at least one incident of their app (team) overlapping them;
- time to detect: the minute the first anomalous verdict is reached minus the ingestion of the
  spike's first event (event time: the simulator's events are sent as they happen, and reach
  the store within seconds, bench/ingest.py).

The floor: the same replay with the trivial detector "an app's hour is anomalous when its
full cost is over 3x the previous hour" (no seasonality, no robust spread, hours closed).

    python -m bench.anomalies [--seeds 7 8 9] [--days 14] [--apps 120] [--anomalies 12]
"""

from __future__ import annotations

import argparse
import statistics
import time
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml
from rich.console import Console
from rich.table import Table

from quartermaster.guardrails.anomaly import (
    AnomalyRule,
    Series,
    expectations,
    incidents,
    judge_scope,
)
from quartermaster.guardrails.anomaly_rates import rate_card
from quartermaster.pricing.book import Owner
from quartermaster.pricing.document import PriceBookDocument
from quartermaster.sim.generator import EventBatch, stream
from quartermaster.sim.model import Platform, SimConfig
from quartermaster.sim.platform import build_platform
from quartermaster.usage.meters import COUNT_VALUE, DEFAULT_METERS

PRICE_BOOK = Path(__file__).resolve().parents[1] / "docs" / "examples" / "pricebook.yaml"
START = datetime(2026, 3, 2, tzinfo=UTC)  # a Monday
MINUTES = 60

Scope = tuple[str, str]  # ("app" | "team", name)


def rates_for(platform: Platform) -> dict[tuple[str, str], tuple[float, bool]]:
    """(app, meter) -> (rate, per event), from the rate card the service uses."""
    document = PriceBookDocument.model_validate(yaml.safe_load(PRICE_BOOK.read_text()))
    owners = [Owner(a.cost_center, a.team, a.app_id, a.lifecycle) for a in platform.apps]
    meters = {m.name: m for m in DEFAULT_METERS}
    card = rate_card(document, owners, meters)
    return {(r.app, r.meter): (float(r.rate), r.per_event) for r in card}


@dataclass
class Grid:
    """Cost and events per scope, meter and hour; the minutes in which cost arrived."""

    hours: int
    costs: dict[Scope, dict[str, list[float]]] = field(default_factory=dict)
    events: dict[Scope, dict[str, list[int]]] = field(default_factory=dict)
    arrivals: dict[tuple[Scope, int], dict[int, dict[str, float]]] = field(default_factory=dict)

    def add(self, scope: Scope, meter: str, minute_index: int, amount: float) -> None:
        hour, minute = divmod(minute_index, MINUTES)
        if not 0 <= hour < self.hours:
            return
        costs = self.costs.setdefault(scope, {}).setdefault(meter, [0.0] * self.hours)
        counts = self.events.setdefault(scope, {}).setdefault(meter, [0] * self.hours)
        costs[hour] += amount
        counts[hour] += 1
        per_minute = self.arrivals.setdefault((scope, hour), {}).setdefault(minute, {})
        per_minute[meter] = per_minute.get(meter, 0.0) + amount

    def series(self, scope: Scope) -> dict[str, Series]:
        return {
            meter: Series(costs, self.events[scope][meter])
            for meter, costs in self.costs.get(scope, {}).items()
        }


def team_of(platform: Platform) -> dict[str, list[tuple[datetime, str]]]:
    """app -> [(from, team)], the ownership move included."""
    owners = {a.app_id: [(platform.config.start, a.team)] for a in platform.apps}
    for move in platform.moves:
        owners[move.app_id].append((move.at, move.to_team))
    return owners


def owning_team(history: list[tuple[datetime, str]], moment: datetime) -> str:
    team = history[0][1]
    for since, name in history:
        if since <= moment:
            team = name
    return team


def cost_grid(platform: Platform) -> tuple[Grid, int]:
    rates = rates_for(platform)
    by_type: dict[str, list[tuple[str, str]]] = defaultdict(list)
    for meter in DEFAULT_METERS:
        by_type[meter.event_type].append((meter.name, meter.value))
    owner = {r.resource_id: r.app_id for r in platform.resources}
    teams = team_of(platform)
    grid = Grid(platform.config.hours)
    start = platform.config.start
    count = 0
    for item in stream(platform, None):
        if not isinstance(item, EventBatch):
            continue
        for event in item.events:
            data: dict[str, Any] = event["data"]
            app = data.get("app_id") or owner.get(data.get("resource_id", ""))
            meters = by_type.get(event["type"])
            if app is None or not meters:
                continue
            moment = datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
            minute = int((moment - start).total_seconds() // 60)
            team = owning_team(teams[app], moment)
            for name, value in meters:
                rate = rates.get((app, name)) or rates.get(("", name))
                if rate is None:
                    continue
                if value == COUNT_VALUE:
                    quantity = 1.0
                else:
                    raw = data.get(value)
                    if not isinstance(raw, int | float):
                        continue
                    quantity = float(raw)
                amount = rate[0] if rate[1] else quantity * rate[0]
                grid.add(("app", app), name, minute, amount)
                grid.add(("team", team), name, minute, amount)
            count += 1
    return grid, count


@dataclass(frozen=True)
class Detection:
    scope: Scope
    start_hour: int
    end_hour: int
    detected_at: datetime
    meters: tuple[str, ...]


def detect(grid: Grid, rule: AnomalyRule, start: datetime) -> list[Detection]:
    found: list[Detection] = []
    for scope in grid.costs:
        series = grid.series(scope)
        first: dict[int, tuple[int, tuple[str, ...]]] = {}
        for hour in range(rule.min_history, grid.hours):
            arrivals = grid.arrivals.get((scope, hour))
            if not arrivals:
                continue
            normal = expectations(series, hour, rule=rule)
            if not normal:
                continue
            so_far: dict[str, float] = {}
            for minute in sorted(arrivals):
                for meter, amount in arrivals[minute].items():
                    so_far[meter] = so_far.get(meter, 0.0) + amount
                fraction = (minute + 1) / MINUTES
                verdict = judge_scope(normal, so_far, fraction=fraction, rule=rule)
                if verdict.anomalous:
                    first[hour] = (minute, tuple(m.meter for m in verdict.meters))
                    break
        flags = [h in first for h in range(grid.hours)]
        for run in incidents(flags):
            minute, meters = first[run.start]
            at = start + timedelta(hours=run.start, minutes=minute + 1)
            found.append(Detection(scope, run.start, run.end, at, meters))
    return found


def detect_floor(grid: Grid, start: datetime) -> list[Detection]:
    found: list[Detection] = []
    for scope, meters in grid.costs.items():
        if scope[0] != "app":
            continue
        totals = [sum(costs[h] for costs in meters.values()) for h in range(grid.hours)]
        flags = [False] + [
            totals[h - 1] > 0 and totals[h] > 3 * totals[h - 1] for h in range(1, grid.hours)
        ]
        for run in incidents(flags):
            at = start + timedelta(hours=run.end)
            found.append(Detection(scope, run.start, run.end, at, ()))
    return found


@dataclass
class Scores:
    injected: int = 0
    detected: int = 0
    incidents: int = 0
    true_incidents: int = 0
    meter_named: int = 0
    delays: list[float] = field(default_factory=list)  # minutes

    @property
    def precision(self) -> float:
        return self.true_incidents / self.incidents if self.incidents else 1.0

    @property
    def recall(self) -> float:
        return self.detected / self.injected if self.injected else 1.0


@dataclass(frozen=True)
class Truth:
    app: str
    team: str
    meter: str
    start: int  # hour index
    end: int
    first_event: datetime  # when the spike's first event was ingested


def ground_truth(platform: Platform, grid: Grid) -> list[Truth]:
    """Each injected anomaly that is in the events: the generator keeps one anomaly per
    (app, meter), the last one drawn."""
    last = {(a.app_id, a.meter): a for a in platform.anomalies}
    start = platform.config.start
    teams = team_of(platform)
    truth = []
    for a in last.values():
        s = int((a.start - start) / timedelta(hours=1))
        e = int((a.end - start) / timedelta(hours=1))
        minutes = grid.arrivals.get((("app", a.app_id), s), {})
        first = min((m for m, per in minutes.items() if a.meter in per), default=0)
        moment = start + timedelta(hours=s, minutes=first)
        truth.append(Truth(a.app_id, owning_team(teams[a.app_id], a.start), a.meter, s, e, moment))
    return truth


def score(truth: list[Truth], found: list[Detection], kind: str, into: Scores) -> None:
    def owner(t: Truth) -> str:
        return t.app if kind == "app" else t.team

    mine = [d for d in found if d.scope[0] == kind]
    into.injected += len(truth)
    into.incidents += len(mine)
    for item in mine:
        if any(
            owner(t) == item.scope[1] and t.start < item.end_hour and item.start_hour < t.end
            for t in truth
        ):
            into.true_incidents += 1
    for t in truth:
        hits = [
            d
            for d in mine
            if d.scope[1] == owner(t) and d.start_hour < t.end and t.start < d.end_hour
        ]
        if hits:
            into.detected += 1
            hit = min(hits, key=lambda d: d.detected_at)
            into.meter_named += t.meter in hit.meters
            delay = (hit.detected_at - t.first_event).total_seconds() / 60
            if delay > 5:
                Console().print(
                    f"  slow: {kind} {owner(t)} {t.meter} hours {t.start}-{t.end}: {delay:.0f} min"
                )
            into.delays.append(max(0.0, delay))


def run(
    seeds: list[int], days: int, apps: int, anomalies: int, rule: AnomalyRule
) -> dict[str, Scores]:
    results = {
        "per app (median/MAD per meter)": Scores(),
        "per team (median/MAD per meter)": Scores(),
        "floor: app hour > 3x previous": Scores(),
    }
    for seed in seeds:
        config = SimConfig(start=START, hours=days * 24, seed=seed, apps=apps, anomalies=anomalies)
        platform = build_platform(config)
        started = time.perf_counter()
        grid, events = cost_grid(platform)
        priced = time.perf_counter()
        truth = ground_truth(platform, grid)
        found = detect(grid, rule, config.start)
        detected = time.perf_counter()
        names = list(results)
        score(truth, found, "app", results[names[0]])
        score(truth, found, "team", results[names[1]])
        score(truth, detect_floor(grid, config.start), "app", results[names[2]])
        Console().print(
            f"seed {seed}: {events:,} events, {len(truth)} anomalies in the events, "
            f"{len(found)} incidents; priced in {priced - started:.1f} s, "
            f"replayed in {detected - priced:.1f} s"
        )
        for d in found:
            hit = any(
                (d.scope[1] == (t.app if d.scope[0] == "app" else t.team))
                and t.start < d.end_hour
                and d.start_hour < t.end
                for t in truth
            )
            if not hit:
                Console().print(
                    f"  false alarm: {d.scope[0]} {d.scope[1]} hours {d.start_hour}-{d.end_hour} "
                    f"({d.start_hour % 24:02d}:00) {','.join(d.meters)}",
                    markup=False,
                )
    return results


def report(results: dict[str, Scores]) -> None:
    table = Table(
        "detector", "injected", "detected", "recall", "incidents", "precision", "meter named",
        "TTD median min", "TTD p90 min", "TTD <= 5 min", title="cost anomalies",
    )  # fmt: skip
    for name, s in results.items():
        delays = sorted(s.delays) or [float("nan")]
        within = sum(1 for d in s.delays if d <= 5)
        p90 = delays[min(len(delays) - 1, int(0.9 * len(delays)))]
        table.add_row(
            name,
            str(s.injected),
            str(s.detected),
            f"{s.recall:.2f}",
            str(s.incidents),
            f"{s.precision:.2f}",
            f"{s.meter_named}/{s.detected}",
            f"{statistics.median(delays):.1f}",
            f"{p90:.1f}",
            f"{within}/{len(s.delays)}",
        )
    Console(width=160).print(table)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[7, 8, 9])
    parser.add_argument("--days", type=int, default=14)
    parser.add_argument("--apps", type=int, default=120)
    parser.add_argument("--anomalies", type=int, default=12)
    parser.add_argument("--k", type=float, default=AnomalyRule().k)
    parser.add_argument("--min-ratio", type=float, default=AnomalyRule().min_ratio)
    parser.add_argument("--recent-hours", type=int, default=AnomalyRule().recent_hours)
    args = parser.parse_args(argv)
    rule = AnomalyRule(k=args.k, min_ratio=args.min_ratio, recent_hours=args.recent_hours)
    report(run(args.seeds, args.days, args.apps, args.anomalies, rule))


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
