"""`qm meter|environment|usage|pipeline`: the usage API over HTTP (QM_URL, QM_API_KEY).

The usage store is held by the server process (DuckDB allows one), so even pipeline operations
go through the API."""

from __future__ import annotations

from decimal import Decimal
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from quartermaster.billing.periods import parse_month, tenant_zone
from quartermaster.cli.client import (
    ApiKeyOption,
    JsonOption,
    UrlOption,
    cell_text,
    data_table,
    drop_none,
    fail,
    grouped,
    hour_cell,
    hour_names,
    out,
    plain,
    print_json,
    print_table,
    request,
    segment,
    show_table,
    stacked,
)
from quartermaster.errors import QMError

meter_app = typer.Typer(help="Meters: what to measure in events, and how.", no_args_is_help=True)
environment_app = typer.Typer(
    help="Environment overrides: unclaimed usage of an environment -> a cost center.",
    no_args_is_help=True,
)
usage_app = typer.Typer(help="Metered usage per cost center, team and app.", no_args_is_help=True)
pipeline_app = typer.Typer(
    help="The attribution and rating pipeline: status, replay, accounting.", no_args_is_help=True
)


def measures_text(meter: dict[str, Any]) -> Text:
    """What a meter's quantity is, as create and list both say it: a count counts events,
    those with its field present when it names one (`count of events with tokens`, not
    `count of tokens`, which read as a sum); other aggregations take the field's values."""
    if meter["aggregation"] == "count":
        if meter["value"] == "count":
            return Text("count of events")
        return Text.assemble("count of events with ", (meter["value"], "bold"))
    return Text.assemble(f"{meter['aggregation']} of ", (meter["value"], "bold"))


def meter_table(meters: list[dict[str, Any]], *, title: str) -> Table:
    """A meter per row: its name, what it measures (the aggregation of a value, over the
    event type it reads, with its filter), its unit and whether it is built in. Seven
    columns, one per field, folded every name at 80 columns (`invocatio|ns`)."""
    columns = ("name", "measures", "unit", "built_in")
    table = data_table(columns, title=title, whole=("name", "unit"))
    for meter in meters:
        measures = measures_text(meter)
        measures.append(f"\nin {meter['event_type']}")
        if meter.get("filter_field"):
            measures.append(f"\nwhere {meter['filter_field']} = {meter['filter_value']}")
        table.add_row(
            plain(meter["name"]), measures, plain(meter["unit"]), plain(meter["built_in"])
        )
    return table


@meter_app.command("create")
def meter_create(
    name: Annotated[str, typer.Argument(help="Meter slug, e.g. gpu_seconds.")],
    event_type: Annotated[str, typer.Option("--event-type", help="e.g. qm.invocation.usage.")],
    value: Annotated[str, typer.Option(help="Data field to take, or 'count'.")],
    aggregation: Annotated[str, typer.Option(help="sum | count | max | unique_count | latest.")],
    unit: Annotated[str, typer.Option(help="Unit shown on bills, e.g. token.")],
    filter_field: Annotated[str | None, typer.Option(help="Only events whose field…")] = None,
    filter_value: Annotated[str | None, typer.Option(help="…equals this value.")] = None,
    description: Annotated[str | None, typer.Option(help="What it measures.")] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Create a meter (it rates events that become billable from now on)."""
    body = drop_none(
        {
            "name": name,
            "event_type": event_type,
            "value": value,
            "aggregation": aggregation,
            "unit": unit,
            "filter_field": filter_field,
            "filter_value": filter_value,
            "description": description,
        }
    )
    in_force = request("GET", "/v1/meters", url=url, api_key=api_key)
    defaults = [m for m in in_force if m["built_in"]]
    meter = request("POST", "/v1/meters", json=body, url=url, api_key=api_key)
    out().print(Text(f"created meter {meter['name']} ({measures_text(meter).plain})"))
    if defaults:  # the tenant's first meter: the defaults stop rating its events
        out().print(
            f"the {len(defaults)} default meters no longer apply: events that become billable "
            "from now on are rated only by the tenant's own meters (`qm meter install-defaults` "
            "creates the defaults as its own)"
        )


@meter_app.command("list")
def meter_list(url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """List the tenant's meters (the defaults when it has none)."""
    meters = request("GET", "/v1/meters", url=url, api_key=api_key)
    show_table(meter_table(meters, title="meters"), empty="no meters")


@meter_app.command("install-defaults")
def meter_install_defaults(url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """Create the default meters the tenant does not have yet."""
    created = request("POST", "/v1/meters/install-defaults", url=url, api_key=api_key)
    if not created:
        out().print("every default meter is already installed")
        return
    out().print(meter_table(created, title="installed meters"))


def override_path(environment: str) -> str:
    """The route of an environment's override, the name quoted so that any name reaches the
    route (a space, '?' or '#' would change the URL). A name the URL cannot carry in one path
    segment ('', '.', '..', or one with a '/') is no slug either: refused here, as the API
    would refuse it."""
    if environment in ("", ".", "..") or "/" in environment:
        fail(
            f"environment {environment!r} must be a slug, as an event's data.environment is: "
            "a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
        )
    return f"/v1/environment-overrides/{segment(environment, what='environment')}"


@environment_app.command("set")
def environment_set(
    environment: Annotated[str, typer.Argument(help="Environment name, e.g. staging.")],
    cost_center: Annotated[str, typer.Argument(help="Cost center slug that pays for it.")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Send an environment's usage that no app or resource claims to a cost center."""
    body = {"cost_center": cost_center}
    view = request("PUT", override_path(environment), json=body, url=url, api_key=api_key)
    out().print(f"{escape(str(view['environment']))} -> cost center {view['cost_center']}")


@environment_app.command("list")
def environment_list(url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """List environment overrides."""
    rows = request("GET", "/v1/environment-overrides", url=url, api_key=api_key)
    print_table(("environment", "cost_center", "created_at"), rows, title="environment overrides")


@environment_app.command("delete")
def environment_delete(
    environment: Annotated[str, typer.Argument(help="Environment name.")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Remove an environment override."""
    request("DELETE", override_path(environment), url=url, api_key=api_key)
    out().print(f"removed the override of {escape(str(environment))}")


USAGE_LEVELS = ("cost-center", "team", "app", "meter", "detail")
# The heading of a level's owner column, and how its groups are counted in the footer.
LEVEL_NAMES = {"cost-center": ("cost center", "cost centers"), "team": ("team", "teams")}
LEVEL_NAMES |= {"app": ("app", "apps"), "meter": ("meter", "groups")}
LEVEL_NAMES |= {"detail": ("owner", "rows")}
# What one row of a level is.
LEVEL_GRAINS = {"cost-center": "cost center and meter", "team": "team and meter"}
LEVEL_GRAINS |= {"app": "app and meter", "meter": "meter"}
LEVEL_GRAINS |= {"detail": "cost center, team, app and meter"}
DEFAULT_TOP = 50


def _only(what: str) -> Any:
    return typer.Option(help=f"Only these {what} (repeatable, or a comma-separated list).")


@usage_app.command("show")
def usage_show(
    month: Annotated[
        str | None,
        typer.Option(help="YYYY-MM in the tenant's time zone, as `qm bill run --month` takes it."),
    ] = None,
    start: Annotated[
        str | None, typer.Option(help="Period start, e.g. 2026-11-01T00:00:00Z (with --end).")
    ] = None,
    end: Annotated[str | None, typer.Option(help="Period end (exclusive).")] = None,
    as_of: Annotated[str | None, typer.Option(help="As the store stood at this time.")] = None,
    by: Annotated[
        str,
        typer.Option(
            help="Sum quantities per cost-center | team | app | meter (each meter apart), or "
            "detail: per cost center, team, app and meter."
        ),
    ] = "cost-center",
    cost_center: Annotated[list[str] | None, _only("cost center slugs")] = None,
    team: Annotated[list[str] | None, _only("team slugs")] = None,
    app: Annotated[list[str] | None, _only("app ids")] = None,
    meter: Annotated[list[str] | None, _only("meter names")] = None,
    top: Annotated[
        int, typer.Option(help="Show the N largest of each meter; 0 shows all.", min=0)
    ] = DEFAULT_TOP,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Quantities in a month or a period, summed per cost center (--by), largest first.

    Examples:

      qm usage show --month 2026-11
      qm usage show --month 2026-11 --by app --team web --meter tokens --top 10
      qm usage show --start 2026-11-01T00:00:00Z --end 2026-11-08T00:00:00Z --by detail
    """
    if month is not None and (start is not None or end is not None):
        fail("give --month, or --start and --end, not both")
    if month is None and (start is None or end is None):
        fail("give --month, or --start and --end")
    if by not in USAGE_LEVELS:
        fail(f"--by {by!r} is not a grouping level; expected one of {', '.join(USAGE_LEVELS)}")
    if month is not None:
        tenant = request("GET", "/v1/tenant", url=url, api_key=api_key)
        try:
            period = parse_month(month, tenant_zone(tenant["timezone"]))
        except QMError as exc:
            fail(exc.message)
        start, end = period.start.isoformat(), period.end.isoformat()
    params = drop_none(
        {
            "start": start,
            "end": end,
            "as_of": as_of,
            "by": None if by == "detail" else by,
            "cost_center": cost_center,
            "team": team,
            "app": app,
            "meter": meter,
            "top": top or None,
        }
    )
    usage = request("GET", "/v1/usage", params=params, url=url, api_key=api_key)
    if as_json:
        print_json(usage)
        return
    table = usage_table(usage) if by == "detail" else group_table(usage, by)
    show_table(table, empty="no usage in the period")
    for line in usage_footer(usage, by):
        out().print(Text(line, style="dim"))


def group_table(usage: dict[str, Any], by: str) -> Table:
    """A group per row, each meter's groups together, largest quantity first, with its share
    of the meter's quantity; usage no app claims marked `(unattributed)`."""
    start, end = (cell_text(usage[key]) for key in ("start", "end"))
    numbers = ("quantity", "share", "events")
    label = LEVEL_NAMES[by][0]
    columns = ("meter", *numbers) if by == "meter" else (label, "meter", *numbers)
    table = data_table(columns, title=f"usage {start} .. {end}", right=numbers, whole=numbers)
    field = by.replace("-", "_")
    for group in usage["groups"]:
        cells: list[Text | str] = [
            plain(group["meter"]),
            f"{grouped(group['quantity'])} {group['unit']}",
            f"{Decimal(group['share']) * 100:.1f}%",
            f"{group['event_count']:,}",
        ]
        if by != "meter":
            owner = Text(group[field] or "-", overflow="fold")
            if group["unattributed"]:
                owner.append(" (unattributed)", style="yellow")
            cells.insert(0, owner)
        elif group["unattributed"]:
            cells[0] = Text.assemble(group["meter"], (" (unattributed)", "yellow"))
        table.add_row(*cells)
    return table


def usage_footer(usage: dict[str, Any], by: str) -> list[str]:
    """What the table shows of how many, and per meter what --top left out: how many groups
    and their share of the meter's quantity, and how to see them."""
    plural = LEVEL_NAMES[by][1]
    meters = usage["meters"]
    if not meters:
        return []
    shown = sum(m["shown"] for m in meters)
    total = sum(m["groups"] for m in meters)
    grain = LEVEL_GRAINS[by]
    count = f"{len(meters)} meter{'s' if len(meters) > 1 else ''}"
    lines = [f"{shown:,} of {total:,} rows shown (one per {grain}; {count})"]
    for m in meters:
        if m["omitted"]:
            lines.append(
                f"{m['meter']}: {m['omitted']:,} more {plural} not shown, "
                f"{grouped(m['omitted_quantity'])} {m['unit']} "
                f"({Decimal(m['omitted_share']) * 100:.1f}% of "
                f"{grouped(m['quantity'])} {m['unit']})"
            )
    if len(lines) > 1:
        lines.append(
            "--top N shows more (--top 0: all); --cost-center, --team, --app, --meter filter"
        )
    return lines


def usage_table(usage: dict[str, Any]) -> Table:
    """Grouped by owner and app: an owner (cost center over team) on its first row, each app on
    a row of its own with its meters indented under it, a quantity with its unit, and usage no
    app claims under "unattributed". Eight columns, one per API field, folded every name into
    six-letter pieces at 80 columns; five, with the app and its meter apart, still cut names
    such as `cc-1100-finan|ce` and `compute_unit|s`."""
    start, end = (cell_text(usage[key]) for key in ("start", "end"))
    columns = ("owner", "app / meter", "quantity", "events")
    numbers = ("quantity", "events")
    table = data_table(columns, title=f"usage {start} .. {end}", right=numbers, whole=numbers)

    def order(row: dict[str, Any]) -> tuple[str, ...]:
        return (row["cost_center"], row["team"] or "", row["app"] or "", row["meter"])

    previous: tuple[str, ...] = ()
    for row in sorted(usage["rows"], key=order):
        key = order(row)
        new_owner = key[:2] != previous[:2]
        if new_owner or key[2] != previous[2]:
            app = (
                Text("unattributed", style="yellow")
                if row["unattributed"]
                else Text(row["app"], style="bold", overflow="fold")
            )
            owner = stacked(row["cost_center"], row["team"] or "-", head_style="")
            table.add_row(owner if new_owner else "", app, "", "")
        previous = key
        table.add_row(
            "",
            Text(f"  {row['meter']}", overflow="fold"),
            f"{grouped(row['quantity'])} {row['unit']}",
            f"{row['event_count']:,}",
        )
    return table


@pipeline_app.command("status")
def pipeline_status(url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """Log head, stream positions, lag, waiting and set-aside events, and latency.

    Events set aside are those whose rating failed, with the latest reasons; the latency is
    event-to-billable."""
    status = request("GET", "/v1/pipeline/status", url=url, api_key=api_key)
    console = out()
    worker = status["worker"]
    state = "running" if worker["running"] else ("disabled" if not worker["enabled"] else "idle")
    console.print(f"log head {status['log_head']}, lag {status['lag']}, worker {state}")
    if worker["last_error"]:
        at = cell_text(worker.get("last_error_at"))
        when = f" (at {at})" if at else ""
        console.print(f"[yellow]last error{when}:[/] {escape(str(worker['last_error']))}")
    elif worker.get("recovered_at"):
        console.print(
            f"recovered at {cell_text(worker['recovered_at'])} from an error at "
            f"{cell_text(worker.get('last_error_at'))} (the server log has it)"
        )
    print_table(
        ("name", "position", "upto", "lag", "tenant_id"), status["streams"], title="streams"
    )
    deadline = cell_text(status["earliest_deadline"]) or "-"
    console.print(f"waiting for metadata: {status['waiting']} (earliest deadline {deadline})")
    if status.get("failed"):  # a server from before set-aside events has no such field
        console.print(
            f"[yellow]set aside (rating failed, not rated): {status['failed']:,}[/]"
            " - see docs/usage.md, 'Events set aside'"
        )
        print_table(
            ("position", "event_id", "failed_at", "reason"),
            status.get("failed_latest", []),
            title="latest set aside",
        )
    latency = status["latency"]
    if latency["events"]:
        console.print(
            f"event-to-billable latency since {cell_text(latency['since'])}: "
            f"p50 {latency_text(latency['p50_ms'])}, "
            f"p99 {latency_text(latency['p99_ms'])} over {latency['events']:,} events "
            f"({latency['waited']} waited for metadata)"
        )


def latency_text(ms: float) -> str:
    """A latency as the demo writes it: `57 ms`, and seconds from one on (`1.53 s`,
    `536.20 s`), where `536200 ms` had to be counted to be read."""
    return f"{ms / 1000:,.2f} s" if ms >= 1000 else f"{ms:.0f} ms"


@pipeline_app.command("replay")
def pipeline_replay(
    wait: Annotated[bool, typer.Option(help="Return when the rebuild has finished.")] = True,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Replay even though finalized billing documents cover the usage it rebuilds.",
        ),
    ] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Rebuild the tenant's usage from the event log.

    Events the reconciliation window settled to the default cost center are decided again
    with today's metadata and window (the log does not record those decisions), so finalized
    bills may no longer reproduce: with finalized billing documents the server refuses
    without --force (docs/usage.md, Replay)."""
    params = {"wait": wait, "force": force}
    result = request("POST", "/v1/pipeline/replay", params=params, url=url, api_key=api_key)
    done = "rebuilt" if result["drained"] else "rebuilding"
    out().print(f"{done} usage up to log position {result['upto']} ({result['stream']})")


# The help as a string, not a docstring: typer keeps a docstring's line breaks, so its second
# paragraph read "events not" / "read by the pipeline yet" on two lines.
@pipeline_app.command(
    "accounting",
    help="Per ingest hour: accepted = rated + waiting + failed, with what is still in the "
    "pipeline (failed: set aside because rating them failed, see `qm pipeline status`).\n\n"
    "Exits 1 when an hour has more rated than accepted (an event counted twice); events not "
    "read by the pipeline yet are normal and exit 0.",
)
def pipeline_accounting(
    start: Annotated[str | None, typer.Option(help="First hour (default: 24 h ago).")] = None,
    end: Annotated[str | None, typer.Option(help="End, exclusive.")] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    params = drop_none({"start": start, "end": end})
    result = request("GET", "/v1/pipeline/accounting", params=params, url=url, api_key=api_key)
    if not result["hours"]:
        out().print(Text("no events accepted in the window", style="dim"))
        return
    out().print(accounting_table(result["hours"]))
    out().print(accounting_verdict(result["hours"]))
    if any(hour["in_pipeline"] < 0 for hour in result["hours"]):
        raise typer.Exit(1)  # more rated than accepted: a fault, for a scheduled check


def accounting_verdict(hours: list[dict[str, Any]]) -> str:
    """Whether every hour balances, and if not which hours and how: events still in the
    pipeline (it has not read them yet), or more rated than accepted (which would be a
    fault: an event counted twice)."""
    behind = [h for h in hours if h["in_pipeline"] > 0]
    over = [h for h in hours if h["in_pipeline"] < 0]
    failed = sum(h.get("failed", 0) for h in hours)
    identity = "accepted = rated + waiting + failed" if failed else "accepted = rated + waiting"
    note = (
        f" ({failed:,} event(s) set aside, rating them failed: see `qm pipeline status`)"
        if failed
        else ""
    )
    if not behind and not over:
        return f"{identity}: [green]balanced[/] in every hour{note}"
    parts = []
    if behind:
        waiting = sum(h["in_pipeline"] for h in behind)
        parts.append(
            f"[yellow]not yet balanced[/] in {_hour_list(behind)}: {waiting:,} accepted"
            " event(s) not read by the pipeline yet"
        )
    if over:
        parts.append(f"[bold red]more rated than accepted[/] in {_hour_list(over)}")
    return f"{identity}: " + "; ".join(parts) + note


def _hour_list(hours: list[dict[str, Any]]) -> str:
    """'2 hours (2026-11-01 01:00, 2026-11-01 02:00)', naming at most three."""
    names = hour_names([h["hour"] for h in hours])
    return f"{len(hours)} hour{'s' if len(hours) > 1 else ''} ({names})"


ACCOUNTING_COUNTS = ("accepted", "rated", "unattributed", "waiting", "in_pipeline")


def accounting_table(hours: list[dict[str, Any]]) -> Table:
    """An hour per row with its counts grouped, an hour that does not balance yet in yellow.
    `attributed` is left out (it is rated less unattributed): with it the seven columns needed
    86 at least and folded every header on an 80-column terminal."""
    counts: tuple[str, ...] = ACCOUNTING_COUNTS
    if any(hour.get("failed") for hour in hours):
        # Set-aside events are part of the identity, `unattributed` is only a part of `rated`:
        # it gives way, so that the table still fits 80 columns with counts in the millions.
        counts = tuple("failed" if c == "unattributed" else c for c in counts)
    table = data_table(
        ["hour (UTC)", *counts],
        title="pipeline accounting",
        right=counts,
        whole=["hour (UTC)"],
    )
    # Over two lines from the start: left to Rich, a table of seven-digit counts narrowed
    # `unattributed` as much as this one and broke it mid-word.
    table.columns[-1].header = "in\npipeline"
    if "unattributed" in counts:
        # The hour as the tables write moments (20 characters, so that it can be pasted back
        # as --start) leaves it 8 columns with counts in the millions: broken where a reader
        # expects it rather than where Rich runs out (`unattrib|uted`).
        table.columns[1 + counts.index("unattributed")].header = "unattri-\nbuted"
    for hour in hours:
        table.add_row(
            hour_cell(hour["hour"]),
            *(grouped(hour[name]) for name in counts),
            style=None if hour["balanced"] else "yellow",
        )
    return table
