"""What the demo prints (Rich tables) and the pure check that the counts reconcile."""

from __future__ import annotations

from collections import Counter
from typing import Any

from rich.console import Console
from rich.table import Table

from quartermaster.sim.driver import SendSummary
from quartermaster.sim.generator import Expectation
from quartermaster.sim.model import Platform, Registration

STAGE_ORDER = ("received", "accepted", "duplicate", "rejected")


def print_platform(console: Console, platform: Platform) -> None:
    config = platform.config
    apps = Counter(
        "ephemeral previews"
        if a.kind == "preview"
        else "ephemeral experiments"
        if a.kind == "experiment"
        else f"persistent {a.environment}"
        for a in platform.apps
    )
    resources = Counter(r.registration for r in platform.resources)
    table = Table("the simulated platform", "", show_header=True, header_style="bold")
    table.add_row(
        "period",
        f"{config.start:%Y-%m-%d %H:%M} → {config.end:%Y-%m-%d %H:%M} UTC ({config.hours} h)",
    )
    table.add_row(
        "teams / cost centers",
        f"{len(platform.teams)} / {len(platform.cost_centers)} (some shared)",
    )
    table.add_row(
        # "189 persistent production; 36 persistent staging; …": a comma inside a kind
        # ("persistent, production") read as two kinds.
        "apps",
        f"{len(platform.apps)}: " + "; ".join(f"{n} {k}" for k, n in apps.items()),
    )
    labels = {
        Registration.AT_START: "registered",
        Registration.LEASED: "leased (ephemeral)",
        Registration.LATE_WITHIN_WINDOW: "registered late, within the window",
        Registration.LATE_AFTER_WINDOW: "registered after the window",
        Registration.NEVER: "never registered",
    }
    table.add_row(
        "resources",
        f"{len(platform.resources)}: "
        + ", ".join(f"{resources[r]} {label}" for r, label in labels.items() if resources[r]),
    )
    heaviest = sorted(platform.apps, key=lambda a: -a.weight)[:5]
    total = sum(a.weight for a in platform.apps)
    table.add_row(
        "heaviest apps",
        ", ".join(f"{a.app_id} ({a.weight / total:.0%})" for a in heaviest),
    )
    for move in platform.moves:
        table.add_row(
            "ownership change",
            f"{move.app_id}: {move.from_team} → {move.to_team} at {move.at:%Y-%m-%d %H:%M}",
        )
    for anomaly in platform.anomalies:
        table.add_row(
            "injected anomaly",
            f"{anomaly.app_id}: {anomaly.meter} x{anomaly.factor} "
            f"{anomaly.start:%m-%d %H:%M} to {anomaly.end:%m-%d %H:%M}",
        )
    for late in platform.late_deliveries:
        table.add_row(
            "late delivery",
            f"{late.app_id}: events of {late.event_start:%m-%d %H:%M} to {late.event_end:%H:%M} "
            f"sent at {late.delivered_at:%m-%d %H:%M}",
        )
    for again in platform.redeliveries:
        table.add_row(
            "client retry", f"{again.app_id} re-sends its events of {again.hour:%m-%d %H:%M}"
        )
    for faulty in platform.faulty:
        table.add_row(
            "must be rejected", f"{faulty.count} events of {faulty.app_id}: {faulty.kind}"
        )
    console.print(table)


def print_summary(console: Console, summary: SendSummary) -> None:
    rejected = ", ".join(f"{n:,} {reason}" for reason, n in sorted(summary.rejected.items()))
    console.print(
        f"sent {summary.sent:,} events in {summary.requests:,} requests "
        f"({summary.rate:,.0f} events/s, {summary.retries} retries, "
        f"{summary.actions} control actions): accepted {summary.accepted:,}, "
        f"duplicates {summary.duplicates:,}, rejected {summary.rejected_total:,}"
        + (f" ({rejected})" if rejected else "")
    )


def _rejected_by_reason(reconciliation: dict[str, Any]) -> Counter[str]:
    reasons: Counter[str] = Counter()
    for hour in reconciliation["hours"]:
        reasons.update(hour.get("reasons", {}).get("rejected", {}))
    return reasons


def print_reconciliation(console: Console, reconciliation: dict[str, Any]) -> None:
    """Each stage's count and the rejections by reason (rows), per hour of receipt and in
    total (columns). The demo sends within an hour or two, so the hours are few and the
    table stays narrow: with a column per stage, ten seven-digit counts were cut to "1,9…"
    on an 80-column terminal."""
    hours = reconciliation["hours"]
    stages = [s for s in STAGE_ORDER if s != "rejected"]
    stages += sorted({s for h in hours for s in h["stages"]} - set(STAGE_ORDER))
    rejected_in_total = _rejected_by_reason(reconciliation)
    reasons = sorted(rejected_in_total)
    table = Table(title="reconciliation counters (per hour of receipt, UTC)", header_style="bold")
    table.add_column("events", overflow="fold")
    # (label, counts per stage, rejections per reason): each hour of receipt, then the total
    columns = [
        (
            hour["hour"][5:16].replace("T", " "),
            hour["stages"],
            hour.get("reasons", {}).get("rejected", {}),
        )
        for hour in hours
    ]
    columns.append(("total", reconciliation["totals"], rejected_in_total))
    for label, _, _ in columns:
        table.add_column(label, justify="right", no_wrap=True)
    table.columns[-1].style = "bold"
    for stage in [*stages, "rejected"]:
        table.add_row(stage, *(f"{counts.get(stage, 0):,}" for _, counts, _ in columns))
    for reason in reasons:
        table.add_row(
            f"  rejected: {reason}",
            *(f"{by_reason.get(reason, 0):,}" for _, _, by_reason in columns),
        )
    console.print(table)


def check_counts(
    summary: SendSummary, expected: Expectation, reconciliation: dict[str, Any]
) -> list[str]:
    """Every way the counts must agree; returns the disagreements (empty when all hold).

    Each event sent has exactly one final verdict. The server stores each valid distinct
    event exactly once, whatever was retried. Without retries the counts are exact; with
    them, a retried request that had committed adds duplicates (and re-counted rejections)."""
    problems: list[str] = []
    totals: dict[str, int] = reconciliation["totals"]
    expected_rejected = sum(expected.rejected.values())
    unique_valid = summary.sent - expected.duplicates - expected_rejected

    def want(label: str, got: int, wanted: int, *, at_least: bool = False) -> None:
        if (got < wanted) if at_least else (got != wanted):
            relation = "at least " if at_least else ""
            problems.append(f"{label}: {got:,}, expected {relation}{wanted:,}")

    verdicts = summary.accepted + summary.duplicates + summary.rejected_total
    want("accepted + duplicates + rejected (client)", verdicts, summary.sent)
    want("accepted (server)", totals.get("accepted", 0), unique_valid)
    retried = summary.retries > 0
    want("received (server)", totals.get("received", 0), summary.sent, at_least=retried)
    want("duplicates (server)", totals.get("duplicate", 0), expected.duplicates, at_least=retried)
    by_reason = _rejected_by_reason(reconciliation)
    for reason in sorted(set(by_reason) | set(expected.rejected)):
        wanted = expected.rejected.get(reason, 0)
        want(f"rejected {reason} (server)", by_reason.get(reason, 0), wanted, at_least=retried)
    if not retried:
        want("accepted (client)", summary.accepted, unique_valid)
        want("duplicates (client)", summary.duplicates, expected.duplicates)
        for reason in sorted(set(summary.rejected) | set(expected.rejected)):
            wanted = expected.rejected.get(reason, 0)
            want(f"rejected {reason} (client)", summary.rejected.get(reason, 0), wanted)
    return problems
