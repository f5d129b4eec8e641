"""The demo's showback report: Rich tables and bars over a billing run's lines, the pipeline's
accounting and latency, one line explained, and the stage timings. The sums are pure
functions of the lines (tested); printing only lays them out."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from quartermaster.sim.driver import SendSummary

ZERO = Decimal(0)
CENT = Decimal("0.01")
BAR_WIDTH = 30
DEFAULT_COST_CENTER = "default"


@dataclass(frozen=True, slots=True)
class CostRow:
    name: str
    amount: Decimal
    lines: int


def totals_by(lines: Iterable[Mapping[str, Any]], key: str) -> list[CostRow]:
    """Sum of the line amounts per value of `key` (lines without one under "(none)"),
    largest first. Pure."""
    amounts: dict[str, Decimal] = defaultdict(Decimal)
    counts: dict[str, int] = defaultdict(int)
    for line in lines:
        name = line.get(key) or "(none)"
        amounts[name] += Decimal(line["amount"])
        counts[name] += 1
    return sorted(
        (CostRow(name, amount, counts[name]) for name, amount in amounts.items()),
        key=lambda row: (-row.amount, row.name),
    )


def is_unattributed(line: Mapping[str, Any]) -> bool:
    """Usage nobody could be found for: the default cost center's lines of no app."""
    return bool(line["cost_center"] == DEFAULT_COST_CENTER and line.get("app") is None)


def unattributed(lines: Iterable[Mapping[str, Any]]) -> tuple[Decimal, Decimal]:
    """(unattributed amount, total amount) of the lines. Pure."""
    part = total = ZERO
    for line in lines:
        amount = Decimal(line["amount"])
        total += amount
        if is_unattributed(line):
            part += amount
    return part, total


EXPLAINED_METERS = ("tokens", "compute_units", "cpu_seconds")  # vary by day, unlike storage


def line_to_explain(lines: Iterable[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The largest usage line of a single app, preferring a meter driven by traffic (its days
    differ and its resources have lifecycle markers): the one a reader asks about first."""
    usage = [line for line in lines if line["cost_type"] == "usage" and line.get("app")]
    for meter in EXPLAINED_METERS:
        of_meter = [line for line in usage if line.get("meter") == meter]
        if of_meter:
            return max(of_meter, key=lambda line: Decimal(line["amount"]))
    return max(usage, key=lambda line: Decimal(line["amount"]), default=None)


SPARKS = "▁▂▃▄▅▆▇█"


def sparkline(values: list[Decimal]) -> str:
    """One character per value, scaled between 0 and the largest. Pure."""
    largest = max(values, default=ZERO)
    if largest <= 0:
        return SPARKS[0] * len(values)
    top = len(SPARKS) - 1
    return "".join(SPARKS[min(top, int(v / largest * top + Decimal("0.5")))] for v in values)


def money(value: Decimal | str, currency: str = "") -> str:
    text = f"{Decimal(value).quantize(CENT):,}"
    return f"{text} {currency}".rstrip()


def bar(value: Decimal, largest: Decimal, width: int = BAR_WIDTH) -> Text:
    filled = 0 if largest <= 0 else round(float(value / largest) * width)
    return Text("█" * max(filled, 0), style="cyan")


def _cost_table(title: str, rows: list[CostRow], total: Decimal, currency: str) -> Table:
    table = Table(title=title, header_style="bold", title_justify="left")
    table.add_column("", no_wrap=True)
    table.add_column(currency, justify="right")
    table.add_column("share", justify="right")
    table.add_column("", no_wrap=True)
    largest = max((row.amount for row in rows), default=ZERO)
    for row in rows:
        share = f"{row.amount / total:.1%}" if total else "-"
        table.add_row(row.name, money(row.amount), share, bar(row.amount, largest))
    return table


def print_showback(console: Console, lines: list[dict[str, Any]], document: dict[str, Any]) -> None:
    currency = document["currency"]
    part, total = unattributed(lines)
    console.print(
        f"[bold]showback {document['period_start'][:10]} → {document['period_end'][:10]}[/]: "
        f"{money(total, currency)} in {len(lines):,} lines, run {document['id']} "
        f"({document['status']})"
    )
    console.print(
        _cost_table("cost per cost center", totals_by(lines, "cost_center"), total, currency)
    )
    console.print(_cost_table("cost per team", totals_by(lines, "team"), total, currency))
    apps = totals_by([line for line in lines if line.get("app")], "app")
    # Shares of what the apps' own lines add up to: team-wide discounts have no app.
    apps_total = sum((row.amount for row in apps), ZERO)
    console.print(_cost_table(f"top 10 of {len(apps)} apps", apps[:10], apps_total, currency))
    by_type = totals_by(lines, "cost_type")
    console.print(
        "by cost type: " + ", ".join(f"{row.name} {money(row.amount, currency)}" for row in by_type)
    )
    share = f"{part / total:.2%}" if total else "-"
    console.print(
        f"[bold]unattributed[/]: {money(part, currency)} ({share} of the period) in the default "
        "cost center: usage of resources nobody registered within the reconciliation window"
    )


def print_pipeline(
    console: Console,
    status: Mapping[str, Any],
    accounting: Mapping[str, Any],
    summary: SendSummary | None,
) -> None:
    hours = accounting["hours"]
    keys = ("accepted", "attributed", "unattributed", "rated", "waiting", "in_pipeline")
    sums = {key: sum(int(h[key]) for h in hours) for key in keys}
    # set aside because rating them failed (docs/usage.md): shown only when there are some
    sums["failed"] = sum(int(h.get("failed", 0)) for h in hours)
    # One row per count: seven counts of seven digits side by side were cut to "1,967,8…"
    # on an 80-column terminal.
    table = Table(title="reconciliation identity (all ingest hours)", header_style="bold")
    table.add_column("events")
    table.add_column("count", justify="right", no_wrap=True)
    for key, n in sums.items():
        if key != "failed" or n:
            table.add_row(key.replace("_", " "), f"{n:,}")
    identity = sums["accepted"] == (
        sums["rated"] + sums["waiting"] + sums["in_pipeline"] + sums["failed"]
    )
    table.add_section()
    table.add_row(
        "accepted = rated + waiting + in pipeline" + (" + failed" if sums["failed"] else ""),
        "[green]holds[/]" if identity and accounting["balanced"] else "[red]does not hold[/]",
    )
    console.print(table)
    latency = status["latency"]
    sent = f" of {summary.accepted:,} accepted" if summary is not None else ""
    console.print(
        f"event → billable latency over {latency['events']:,} events{sent}: "
        f"p50 {_ms(latency['p50_ms'])}, p99 {_ms(latency['p99_ms'])}, max "
        f"{_ms(latency['max_ms'])} ({latency['waited']:,} waited for metadata, not counted)"
    )


def _ms(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value / 1000:.2f} s" if value >= 1000 else f"{value:.0f} ms"


def print_run(console: Console, detail: Mapping[str, Any], timings: Mapping[str, float]) -> None:
    document = detail["document"]
    console.print(
        f"run {document['id']}: {document['line_count']:,} lines, total "
        f"{money(document['total'], document['currency'])} = the sum of its lines = the FOCUS "
        f"file's BilledCost; {document['status']} (computed in "
        f"{timings.get('billing run: compute', 0):.1f}s, finalized in "
        f"{timings.get('billing run: finalize', 0):.1f}s); running the period again: unchanged"
    )


def print_explanation(console: Console, explanation: Mapping[str, Any]) -> None:
    line = explanation["line"]
    # The allocation as `qm explain` says it: a team pool's tiers are over the pool's
    # quantity, not the line's, and read as a wrong sum without it.
    allocation = line.get("allocation_method")
    console.print(
        f"[bold]line explained[/]: {line['cost_center']} / {line['team']} / {line['app']} / "
        f"{line['item']}: {line['quantity']} {line['unit'] or ''} x {line['unit_price']} "
        f"({line['pricing_rule']}) = {money(line['amount'], line['currency'])}"
        + (f"; allocation: {allocation}" if allocation else "")
    )
    # Unwrapped, as `qm explain` prints it: the key is pasted back as an argument.
    console.print(f"audit key {line['audit_key']}", soft_wrap=True, markup=False, highlight=False)
    daily = explanation["daily"]
    values = [Decimal(d["value"]) for d in daily]
    if daily:
        console.print(
            f"1. daily rollups, {daily[0]['start'][:10]} → {daily[-1]['start'][:10]}: "
            f"{sparkline(values)}  (min {min(values):,.2f}, max {max(values):,.2f}, "
            f"total {sum(values, ZERO):,.2f}, {sum(d['events'] for d in daily):,} events)"
        )
    events = Table(title="2. top contributing events", header_style="bold", title_justify="left")
    # Ids, times and quantities are never wrapped; the rest folds, so nothing is cut to "…".
    # When an event was recorded matters only for a late one, so it goes in the method
    # column, which keeps the table within 80 columns.
    for column in ("event id", "event time", "resource", "quantity", "method"):
        whole = column in ("event id", "event time", "quantity")
        events.add_column(column, no_wrap=whole, overflow="fold")
    for event in explanation["top_events"][:5]:
        recorded = event["recorded_at"][5:16].replace("T", " ")
        events.add_row(
            event["event_id"],
            event["event_time"][5:16].replace("T", " "),
            event["resource_id"] or "",
            str(event["quantity"]),
            event["method"] + (f" (late: recorded {recorded})" if event["late"] else ""),
        )
    console.print(events)
    markers = explanation["markers"]
    console.print(
        f"3. lifecycle markers in the period: {len(markers)}"
        + (": " if markers else "")
        + ", ".join(
            f"{m['action']} {m['resource_id']} {m['event_time'][5:16]}" for m in markers[:8]
        )
    )
    for note in explanation["notes"]:
        console.print(f"[dim]{note}")


def print_alerts(console: Console, alerts: list[dict[str, Any]]) -> None:
    table = Table(title="budget alerts", header_style="bold", title_justify="left")
    for column in ("severity", "title", "message"):
        table.add_column(column, overflow="fold")
    for alert in alerts:
        table.add_row(alert["severity"], alert["title"], alert["message"])
    console.print(table)


def print_timings(console: Console, timings: Mapping[str, float], events: int | None) -> None:
    table = Table(title="timings", header_style="bold", title_justify="left")
    table.add_column("stage")
    table.add_column("seconds", justify="right")
    for title, seconds in timings.items():
        table.add_row(title, f"{seconds:.1f}")
    table.add_section()
    stages = [s for t, s in timings.items() if not t.startswith(("billing run:", "explain"))]
    table.add_row("total", f"{sum(stages):.1f}")
    console.print(table)
    if events:
        console.print(f"{events:,} events sent through POST /v1/events")
