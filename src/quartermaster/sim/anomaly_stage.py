"""The demo's anomaly stage: the cost-anomaly alerts raised on the simulated period, set
against the anomalies the simulator injected (its ground truth).

The `anomalies` service of the server scores hours as their usage lands, so most alerts were
raised while the events streamed in; a backfill scan of the period's last days (idempotent: a
spike alerts once however often it is scored) covers the hours the service had not reached
when the events stopped. A backfill of a whole month of 300 apps takes several minutes of
scoring, too long for the demo (`qm alerts scan --since` does it when wanted)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from rich.table import Table

from quartermaster.domain.timeutil import parse_timestamp
from quartermaster.sim.context import DemoContext, DemoFailure
from quartermaster.sim.driver import request

BACKFILL = timedelta(days=2)
# The detector needs a day of history before it judges an hour; a shorter run may not alert.
HISTORY_NEEDED = timedelta(days=3)


def _short(moment: str) -> str:
    return parse_timestamp(moment).strftime("%m-%d %H:00")


def anomaly_alerts(ctx: DemoContext) -> None:
    """The anomaly alerts of the period as a table: scope, hour, cost against its usual,
    the meters behind it, the top events, whether it was injected, seconds to detect."""
    platform = ctx.need_platform()
    period = platform.period
    with ctx.client(timeout=900) as client:
        since = max(period.start, period.end - BACKFILL)
        body = {"since": since.isoformat(), "until": period.end.isoformat()}
        request(client, "POST", "/v1/alerts/scan", json=body)
        alerts = request(client, "GET", "/v1/alerts?kind=anomaly&limit=1000").json()
    app_alerts = [a for a in alerts if a["details"].get("scope_kind") == "app"]
    table = Table(title="cost anomalies (app scope)")
    for column in ("app", "hour (UTC)", "cost / usual", "meters (share of excess)", "injected?"):
        table.add_column(column, overflow="fold")  # wrapped, never cut to "…"
    table.add_column("s to detect", justify="right", no_wrap=True)
    injected = {(a.app_id, a.meter): a for a in platform.anomalies}
    on_injected: list[dict[str, Any]] = []
    for alert in sorted(app_alerts, key=lambda a: a["details"]["hour"]):
        d = alert["details"]
        hour = parse_timestamp(d["hour"])
        truth = [a for a in injected.values() if a.app_id == d["scope"] and a.start <= hour < a.end]
        if truth:
            on_injected.append(alert)
        table.add_row(
            d["scope"],
            _short(d["hour"]),
            f"{d['cost']} / {d['expected']}",
            ", ".join(f"{m['meter']} {m['share_of_excess']:.0%}" for m in d["meters"]),
            ", ".join(f"{a.meter} x{a.factor}" for a in truth) or "no",
            str(d.get("seconds_to_detect")),
        )
    ctx.console.print(table)
    for alert in sorted(app_alerts, key=lambda a: a["details"]["hour"])[:3]:
        d = alert["details"]
        ctx.console.print(f"top events of {d['scope']} at {_short(d['hour'])}:")
        for event in d["top_events"][:3]:
            ctx.console.print(
                f"  {event['event_id']}  {event['resource_id'] or event['app']}  "
                f"{event['meter']} {event['quantity']}  cost {event['cost']}",
                markup=False,
            )
    teams = [a for a in alerts if a["details"].get("scope_kind") == "team"]
    short = period.end - period.start < HISTORY_NEEDED
    ctx.console.print(
        f"{len(app_alerts)} app and {len(teams)} team anomaly alerts; "
        f"{len(injected)} anomalies injected, {len(on_injected)} app alerts on one of them"
        + (f" ({_first_delay(on_injected)})" if on_injected else "")
    )
    if short:
        ctx.console.print(
            f"the simulated period is shorter than the {HISTORY_NEEDED.days} days of history"
            " the detector needs before it judges an hour: an injected spike may pass"
            " unalerted, and an app whose only earlier usage is older (a late delivery) can be"
            " alerted on its first hour of the period",
            style="dim",
        )
    if platform.anomalies and not alerts and period.end - period.start >= HISTORY_NEEDED:
        raise DemoFailure("anomalies were injected but the detector raised no alert")


def _first_delay(alerts: list[dict[str, Any]]) -> str:
    delays = sorted(
        Decimal(str(a["details"]["seconds_to_detect"]))
        for a in alerts
        if a["details"].get("seconds_to_detect") is not None
    )
    if not delays:
        return "no ingestion times: the hours were folded into rollups"
    middle = delays[len(delays) // 2]
    return f"median {middle:.0f} s from the spike's first ingested event to its alert"
