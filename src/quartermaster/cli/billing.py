"""`qm bill` (runs, adjustments, preview, exports) and `qm explain`, over HTTP (QM_URL,
QM_API_KEY): the server process holds the usage store."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any
from zoneinfo import ZoneInfo

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from quartermaster.billing.periods import month_period
from quartermaster.cli.client import (
    ApiKeyOption,
    JsonOption,
    UrlOption,
    api_client,
    cell_text,
    check,
    counted,
    data_table,
    drop_none,
    err,
    error_message,
    grouped,
    out,
    plain,
    print_json,
    request,
    segment,
    short_id,
    show_table,
    stacked,
)
from quartermaster.domain.money import CENT, fixed_point, plain_text, quantize_to, round_line
from quartermaster.domain.timeutil import parse_timestamp
from quartermaster.pricing.rating import fmt

bill_app = typer.Typer(
    help="Billing: run periods, finalize, adjust, preview and export.", no_args_is_help=True
)

RunIdArgument = Annotated[
    str,
    typer.Argument(
        help="A run (or adjustment document) id, or a unique prefix of it (8+ characters, "
        "as `qm bill list` shows them)."
    ),
]
TOP_APPS = 10
TeamCostsOption = Annotated[
    str | None,
    typer.Option(help="Only this team's costs (a team-member's are its own team's)."),
]


def _money(value: str | Decimal | None) -> str:
    """An amount or total exactly, grouped: to the cent, with more digits (up to the 1e-6
    that lines carry, docs/pricing.md) when it has them: '1,007.005', '299.00'. Rounded to
    cents, a total of 1007.005000 read 1,007.00 over lines that sum to 1,007.005000."""
    if value is None:
        return ""
    exact = round_line(Decimal(value))
    cents = quantize_to(exact, CENT)
    return grouped(fixed_point(cents) if cents == exact else plain_text(exact))


def _estimate(value: str | Decimal) -> str:
    """A preview's month to date and forecast, in cents: a projection, not a document."""
    return f"{Decimal(value):,.2f}"


AMOUNT_COLUMNS = (
    "amount",
    "total",
    "cost",
    "month to date",
    "forecast",
    "quantity",
    "lines",
    "events",
)
# Never wrapped (`data_table`): an id stays one copyable word, a number keeps its digits on
# one line, a cost center or team its name.
WHOLE_COLUMNS = (
    *AMOUNT_COLUMNS,
    "id",
    "line",
    "adjustment",
    "unit price",
    "day",
    "cost center",
    "team",
)


def _table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Table:
    table = data_table(columns, title=title, right=AMOUNT_COLUMNS, whole=WHOLE_COLUMNS)
    for row in rows:
        table.add_row(*(plain(value) for value in row))
    return table


def _print_document(document: dict[str, Any], *, detail: dict[str, Any] | None = None) -> None:
    """The document's header. A team-member's (`detail` limited to a team; the API hides
    the document's total from members) says the total is hidden, and counts and sums the
    lines the member sees."""
    label = "adjustment" if document["document_type"] == "adjustment" else document["kind"]
    currency = document["currency"]
    if document["total"] is not None:
        total = f"total {_money(document['total'])} {currency}"
        lines = f"{counted(document['line_count'], 'line')}, "
    elif detail is not None and detail["team"]:
        total = "total hidden from team members"
        lines = (
            f"team {detail['team']}: {_money(detail['visible_total'])} {currency} in "
            f"{counted(_visible_count(detail), 'line')}; "
        )
    else:
        total, lines = "total hidden", ""
    out().print(
        # The id as the tables show it, which every command takes back (`--json` of
        # `qm bill list` gives the whole one).
        f"[bold]{label} {short_id(document['id'])}[/] {document['status']}, period "
        f"{_period_label(document['period_start'], document['period_end'])}: {total} "
        f"({escape(lines)}as of {cell_text(document['as_of'])}, price book "
        f"{escape(document['price_book'])} v{document['price_book_versions']})"
    )
    # An adjustment's note counts the whole document's lines: a team-member (total hidden)
    # sees its team's only, counted above.
    note = document.get("note")
    if document["total"] is None and document["document_type"] == "adjustment":
        note = None
    corrects = document.get("corrects_run_id")
    if corrects and corrects not in (note or ""):
        out().print(f"corrects run {corrects}")
    if note:
        out().print(note)


def _visible_count(detail: dict[str, Any]) -> int:
    """The lines the caller may see: the API's count (a server before it: those listed)."""
    count = detail.get("visible_line_count")
    return int(count) if count is not None else len(detail["lines"])


def _app_cell(app: str, team: str, cost_center: str) -> Text:
    """An app over its team and cost center: an app's name takes a column to itself, and
    three name columns side by side folded the longest mid-word at 80 columns."""
    return stacked(app, f"{team}, {cost_center}", head_style="")


def print_summary(summary: dict[str, Any], currency: str) -> None:
    """Cost per cost center, per team, and the top apps, as the API summed them
    (GET /v1/billing/runs/{id}/summary): no line is downloaded for it."""
    console = out()
    console.print(
        _table(
            f"cost per cost center ({currency})",
            ("cost center", "cost"),
            [(s["cost_center"], _money(s["amount"])) for s in summary["cost_centers"]],
        )
    )
    console.print(
        _table(
            f"cost per team ({currency})",
            ("cost center", "team", "cost"),
            [(s["cost_center"], s["team"] or "-", _money(s["amount"])) for s in summary["teams"]],
        )
    )
    top = summary["top_apps"]
    console.print(
        _table(
            f"top {len(top)} apps ({currency})" if len(top) > 1 else f"top app ({currency})",
            ("app (team, cost center)", "cost"),
            [
                (_app_cell(s["app"], s["team"] or "-", s["cost_center"]), _money(s["amount"]))
                for s in top
            ],
        )
    )


def _summary(run_id: str, *, url: str | None, api_key: str | None) -> dict[str, Any]:
    summary: dict[str, Any] = request(
        "GET",
        f"/v1/billing/runs/{segment(run_id)}/summary",
        params={"top": TOP_APPS},
        url=url,
        api_key=api_key,
    )
    return summary


# Lines per request when paging through all of them (the API's largest page).
PAGE = 5000


def _lines_page(
    run_id: str, *, limit: int | None, url: str | None, api_key: str | None
) -> list[dict[str, Any]]:
    """The first `limit` lines the caller may see (None: all of them, page by page)."""
    lines: list[dict[str, Any]] = []
    params: dict[str, Any] = {}
    while limit is None or len(lines) < limit:
        params["limit"] = PAGE if limit is None else min(PAGE, limit - len(lines))
        page = request(
            "GET",
            f"/v1/billing/runs/{segment(run_id)}/lines",
            params=params,
            url=url,
            api_key=api_key,
        )
        lines.extend(page["lines"])
        if page["next_after"] is None:
            break
        params["after"] = page["next_after"]
    return lines


def print_lines(lines: list[dict[str, Any]], *, limit: int | None, of: int | None = None) -> None:
    """The lines in three columns: the line (its id, who is charged: cost center, team and
    app, what for: cost type and item, and how it was allocated, one over the other), the
    quantity over its unit price, and the amount. The owner and what for side by side, each
    a column, folded a 32-character app name and `reserved_capacity` at 80 columns."""
    shown = lines if limit is None else lines[:limit]
    table = data_table(
        ("line: charged to, for", "quantity @ price", "amount"),
        title=f"lines ({len(shown)} of {len(lines) if of is None else of})",
        right=("quantity @ price", "amount"),
        whole=("quantity @ price", "amount"),
    )
    for line in shown:
        cost_type = (
            f"{line['adjusted_cost_type']}*" if line["adjusted_cost_type"] else line["cost_type"]
        )
        owner = f"{line['cost_center']}\n{line['team'] or '-'}\n{line['app'] or '-'}"
        # Plain notation: the API writes a small Decimal as Python does, '1.65135E-7'.
        price = f"@ {fmt(Decimal(line['unit_price']))}" if line["unit_price"] else ""
        table.add_row(
            Text.assemble(
                (short_id(line["id"]), "bold"),
                "\n",
                owner,
                "\n",
                f"{cost_type} {line['item']}",
                *(("\n", (line["allocation_method"], "dim")) if line["allocation_method"] else ()),
                overflow="fold",
            ),
            plain(f"{grouped(line['quantity'])}\n{price}".rstrip()),
            plain(line["amount"]),
        )
    show_table(table, empty="no lines")


@bill_app.command("run")
def run(
    month: Annotated[str | None, typer.Option(help="YYYY-MM in the tenant's time zone.")] = None,
    start: Annotated[str | None, typer.Option(help="Period start (RFC 3339).")] = None,
    end: Annotated[str | None, typer.Option(help="Period end, exclusive (RFC 3339).")] = None,
    kind: Annotated[str, typer.Option(help="invoice or chargeback.")] = "invoice",
    price_book: Annotated[str | None, typer.Option(help="Price book name.")] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Run a period (default: last complete month). A finalized period is left as it is."""
    body: dict[str, Any] = {"kind": kind}
    for key, value in (("month", month), ("period_start", start), ("period_end", end)):
        if value is not None:
            body[key] = value
    if price_book is not None:
        body["price_book"] = price_book
    with api_client(url=url, api_key=api_key) as client:
        response = client.request("POST", "/v1/billing/runs", json=body)
    if not response.is_success:
        # The API names its fields; the person typed --start and --end.
        err().print(
            f"[red]error {response.status_code}:[/] {escape(option_names(error_message(response)))}"
        )
        raise typer.Exit(1)
    result = response.json()
    document = result["run"]
    messages = {
        "created": "[green]computed a draft[/]",
        "recomputed": "[green]recomputed the draft[/]",
        "unchanged": "[yellow]already finalized: unchanged[/]",
    }
    out().print(messages[result["outcome"]])
    if result.get("price_book_not_used"):
        out().print(f"[yellow]{escape(result['price_book_not_used'])}[/]")
    _print_document(document)
    if document["line_count"] == 0 and document["status"] == "draft":
        # Most often the events were sent moments ago: a run counts what was recorded a few
        # seconds before it started (docs/billing.md, "as_of").
        out().print(
            f"[yellow]no usage in the period as recorded by {cell_text(document['as_of'])}[/]: "
            "events sent in the last few seconds are not in it yet; run it again to "
            "recompute the draft"
        )
        return
    print_summary(_summary(document["id"], url=url, api_key=api_key), document["currency"])


@bill_app.command("list")
def list_runs(
    kind: Annotated[str | None, typer.Option(help="invoice or chargeback.")] = None,
    status: Annotated[str | None, typer.Option(help="draft or finalized.")] = None,
    adjustments: Annotated[bool, typer.Option(help="List adjustment documents.")] = False,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """List billing runs (or adjustment documents)."""
    params = {"document_type": "adjustment" if adjustments else "run"}
    params.update({k: v for k, v in (("kind", kind), ("status", status)) if v is not None})
    documents = request("GET", "/v1/billing/runs", params=params, url=url, api_key=api_key)
    if as_json:
        print_json(documents)
        return
    # Status over kind and the total over its currency: eight columns, one per field, folded
    # `finalize|d` and the ids at 80 columns. An adjustment's id is over the run's it
    # corrects: a total to the last millionth left a column of its own too few characters.
    first = "id, corrects" if adjustments else "id"
    table = data_table(
        (first, "status", "period", "total", "lines"),
        title="adjustments" if adjustments else "billing runs",
        right=("total", "lines"),
        whole=(first, "status", "total", "lines"),
    )
    for d in documents:
        # A team-member's: the API hides the document's total (null).
        total = (
            stacked(_money(d["total"]), d["currency"], head_style="")
            if d["total"] is not None
            else plain("hidden")
        )
        ident = (
            stacked(short_id(d["id"]), short_id(d["corrects_run_id"] or ""), head_style="")
            if adjustments
            else plain(short_id(d["id"]))
        )
        table.add_row(
            ident,
            stacked(d["status"], d["kind"], head_style=""),
            plain(_period_label(d["period_start"], d["period_end"])),
            total,
            # A team-member's: the document's count is of every team's lines (nothing shown).
            plain(f"{d['line_count']:,}" if d["total"] is not None else ""),
        )
    show_table(table, empty="no adjustments" if adjustments else "no billing runs")


def _clock(moment: datetime) -> str:
    """'23:00', '23:00:30' or '23:00:00.5': the time of day, seconds only when there are."""
    text = f"{moment:%H:%M}"
    if moment.second or moment.microsecond:
        text += f":{moment:%S}"
    if moment.microsecond:
        text += "." + f"{moment.microsecond:06d}".rstrip("0")
    return text


def _day_label(start: str, end: str) -> str:
    """A day of `qm explain`'s daily tables: '2026-11-02' for a whole UTC day; a partial one
    (the first or last day of a period that does not start or end at midnight UTC, such as a
    month in Berlin) with its bounds, '2026-10-31 23:00-24:00Z'. It read '2026-10-31', as
    though a whole day of October was billed in November's run."""
    begins, ends = parse_timestamp(start), parse_timestamp(end)
    midnight = begins.replace(hour=0, minute=0, second=0, microsecond=0)
    if begins == midnight and ends == midnight + timedelta(days=1):
        return f"{begins:%Y-%m-%d}"
    until = "24:00" if ends == midnight + timedelta(days=1) else _clock(ends)
    return f"{begins:%Y-%m-%d} {_clock(begins)}-{until}Z"


_FIELD_OPTIONS = {"period_start": "--start", "period_end": "--end", "price_book": "--price-book"}
_FIELD_NAMES = re.compile(r"\b(" + "|".join(_FIELD_OPTIONS) + r")\b")
# Words that are a field only where a message names one: at its start (`kind: Input should
# be …`) or as the field of "give either month or …".
_LEADING_FIELD = re.compile(r"^(kind|month|timezone): ")
_EITHER_MONTH = "give either month or"


def option_names(message: str) -> str:
    """An API error of `qm bill run` in the options' words: `--end ... is not after
    --start ...`, where it said period_end and period_start; `--kind: …` where it said
    `kind: …`."""
    message = _FIELD_NAMES.sub(lambda match: _FIELD_OPTIONS[match[1]], message)
    message = _LEADING_FIELD.sub(lambda match: f"--{match[1]}: ", message)
    return message.replace(_EITHER_MONTH, "give either --month or")


def _day_or_time(moment: str) -> str:
    """'2026-10-01' for a period bound at midnight UTC (the usual month), else as the tables
    write moments ('2026-12-01 15:00:00Z'), with its fraction of a second when it has one
    ('2026-11-01 00:00:00.5Z': it read as midnight, and the period as a whole day)."""
    value = parse_timestamp(moment)
    if value.microsecond:
        fraction = f"{value.microsecond:06d}".rstrip("0")
        return f"{value:%Y-%m-%d %H:%M:%S}.{fraction}Z"
    if (value.hour, value.minute, value.second) == (0, 0, 0):
        return f"{value:%Y-%m-%d}"
    return cell_text(value)


def _period_label(start: str, end: str) -> str:
    """'2026-10' for a calendar month (UTC), as `qm bill run --month` names it; any other
    period as its two bounds. Two full dates made the list fold each row at 80 columns."""
    begins = parse_timestamp(start)
    month = month_period(begins.year, begins.month, ZoneInfo("UTC"))
    if (month.start, month.end) == (begins, parse_timestamp(end)):
        return begins.strftime("%Y-%m")
    return f"{_day_or_time(start)} .. {_day_or_time(end)}"


@bill_app.command("show")
def show(
    run_id: RunIdArgument,
    lines: Annotated[int, typer.Option(min=0, help="How many lines to list (0: none).")] = 30,
    all_lines: Annotated[bool, typer.Option("--all", help="List every line.")] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """A run with cost per cost center and team, top apps, its lines and adjustments."""
    # The document without its lines (a 3,000-app month is ~40,000: 26 MB), then the
    # summary the API sums and only the lines printed.
    detail = request(
        "GET",
        f"/v1/billing/runs/{segment(run_id)}",
        params={"lines": "false"},
        url=url,
        api_key=api_key,
    )
    document = detail["document"]
    _print_document(document, detail=detail)
    count = _visible_count(detail)
    if count == 0:
        whose = f" of team {detail['team']}" if detail["team"] else ""
        out().print(Text(f"no lines{whose} in this document", style="dim"))
    else:
        print_summary(_summary(document["id"], url=url, api_key=api_key), document["currency"])
        if all_lines or lines > 0:
            listed = _lines_page(
                document["id"], limit=None if all_lines else lines, url=url, api_key=api_key
            )
            print_lines(listed, limit=None, of=count)
    if detail["adjustments"]:
        rows = [
            (
                short_id(a["id"]),
                a["sequence"],
                a["as_of"],
                _money(a["total"]),
                # A team-member's: of every team's lines, so not shown.
                a["line_count"] if a["total"] is not None else "",
            )
            for a in detail["adjustments"]
        ]
        columns = ("adjustment", "#", "as of", "total", "lines")
        out().print(_table("adjustments", columns, rows))


@bill_app.command("finalize")
def finalize(run_id: RunIdArgument, url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """Finalize a draft run: it and its lines become immutable."""
    document = request(
        "POST", f"/v1/billing/runs/{segment(run_id)}/finalize", url=url, api_key=api_key
    )
    # `outcome` tells a second finalize from the first (a server before it: finalized).
    if document.get("outcome") == "unchanged":
        out().print("[yellow]already finalized: unchanged[/]")
    else:
        out().print("[green]finalized[/]")
    _print_document(document)
    waiting = document.get("events_waiting") or 0
    if waiting:
        # Finalizing does not wait for them (docs/billing.md): an adjustment bills them.
        out().print(
            f"[yellow]warning:[/] {counted(waiting, 'event')} of the period still "
            f"{'waits' if waiting == 1 else 'wait'} in the reconciliation window (owner not "
            f"known yet; settled by {cell_text(document['waiting_until'])}): not in this run; "
            f"once {'it is' if waiting == 1 else 'they are'} attributed, bill "
            f"{'it' if waiting == 1 else 'them'} with qm bill adjust {short_id(document['id'])}"
        )


@bill_app.command("discard")
def discard(run_id: RunIdArgument, url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """Discard a draft run and its lines (a finalized run is immutable: adjust it instead)."""
    request("DELETE", f"/v1/billing/runs/{segment(run_id)}", url=url, api_key=api_key)
    out().print(f"[green]discarded[/] the draft {escape(run_id)}")


@bill_app.command("adjust")
def adjust(run_id: RunIdArgument, url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """Issue an adjustment for late usage and back-dated price changes (if any)."""
    result = request(
        "POST", "/v1/billing/adjustments", json={"run_id": run_id}, url=url, api_key=api_key
    )
    if result["adjustment"] is None:
        out().print(f"[green]no adjustment needed:[/] {escape(str(result['message']))}")
        return
    detail = result["adjustment"]
    _print_document(detail["document"], detail=detail)
    print_lines(detail["lines"], limit=None)


@bill_app.command("late")
def late_usage(
    as_json: JsonOption = False, url: UrlOption = None, api_key: ApiKeyOption = None
) -> None:
    """Finalized runs whose period received usage, or back-dated prices, after they were billed.

    Each with how many events no document of the run holds yet and when they arrived, the
    versions of its price book recorded since that take effect within its period, and the
    adjustment `qm bill adjust RUN` would issue now (admin and finance keys)."""
    found = request("GET", "/v1/billing/late", url=url, api_key=api_key)
    if as_json:
        print_json(found)
        return
    table = data_table(
        ("run", "period", "late events", "arrived", "back-dated prices", "adjustment due"),
        title="late usage and back-dated prices",
        right=("late events", "adjustment due"),
        whole=("run", "late events"),
    )
    for item in found:
        due = (
            stacked(_money(item["adjustment_due"]), item["currency"], head_style="")
            if item["adjustment_due"] is not None
            else plain("no change")
        )
        table.add_row(
            stacked(short_id(item["run_id"]), item["kind"], head_style=""),
            plain(_period_label(item["period_start"], item["period_end"])),
            plain(f"{item['late_events']:,}"),
            _arrived(item["first_arrival"], item["last_arrival"]),
            plain(", ".join(f"v{version}" for version in item["back_dated_versions"])),
            due,
        )
    show_table(
        table,
        # The list is as of a few seconds ago (the preview's cutoff): a price book loaded a
        # moment ago, whose load pointed here, shows on the next look.
        empty="nothing late: every finalized run holds its period's events and prices, as of "
        "a few seconds ago (usage and price versions recorded since show on the next look)",
    )
    for item in found:
        if item["adjustment_due"] is not None:
            out().print(
                f"bill it (admin keys): qm bill adjust {short_id(item['run_id'])}", markup=False
            )


def _arrived(first: str | None, last: str | None) -> Text:
    """The first arrival over the last, or the one moment when they are the same."""
    if first is None or last is None:
        return plain("")
    first_text, last_text = (cell_text(parse_timestamp(moment)) for moment in (first, last))
    if first_text == last_text:
        return plain(first_text)
    return stacked(first_text, last_text, head_style="")


@bill_app.command("preview")
def preview(
    price_book: Annotated[str | None, typer.Option(help="Price book name.")] = None,
    team: TeamCostsOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Month-to-date cost and a forecast to the end of the month, per team and app."""
    params = drop_none({"price_book": price_book, "team": team})
    result = request("GET", "/v1/billing/preview", params=params, url=url, api_key=api_key)
    if as_json:
        print_json(result)
        return
    currency = result["currency"]
    whose = f"team {escape(str(result['team']))}, " if result.get("team") else ""
    out().print(
        f"[bold]{whose}month {_period_label(result['period_start'], result['period_end'])}[/] "
        f"({result['elapsed_days']} of {result['total_days']} days): month to date "
        f"{_estimate(result['month_to_date'])} {currency}, "
        f"forecast {_estimate(result['forecast'])} {currency}"
    )
    out().print(f"forecast method: {result['method']}")
    if result.get("note"):
        out().print(f"[yellow]note:[/] {escape(str(result['note']))}")
    if result.get("as_of"):  # the point the usage in it is complete up to (docs/billing.md)
        out().print(f"as of {cell_text(result['as_of'])}: usage recorded before then")
    waiting = result.get("events_waiting") or 0
    if waiting:
        out().print(
            f"[yellow]note:[/] {counted(waiting, 'event')} of the month "
            f"{'waits' if waiting == 1 else 'wait'} in the reconciliation window (owner not "
            f"known yet; settled by {cell_text(result['waiting_until'])}): not in these figures"
        )
    # A team's month to date is its apps' plus what is charged to the team as a whole (a
    # reserved-capacity credit or fee, a platform share): shown apart, or a team below its own
    # app reads as an error.
    on_apps: dict[tuple[str, str | None], Decimal] = {}
    for a in result["apps"]:
        key = (a["cost_center"], a["team"])
        on_apps[key] = on_apps.get(key, Decimal(0)) + Decimal(a["month_to_date"])
    columns = ("cost center", "team", "month to date", "forecast")
    rows: list[tuple[object, ...]] = []
    for t in result["teams"]:
        team_wide = Decimal(t["month_to_date"]) - on_apps.get((t["cost_center"], t["team"]), 0)
        cell: object = t["team"] or "-"
        if team_wide:
            cell = stacked(cell, f"{_estimate(team_wide)} team-wide", head_style="")
        rows.append(
            (
                t["cost_center"],
                cell,
                _estimate(t["month_to_date"]),
                _estimate(t["forecast"]),
            )
        )
    show_table(_table("per team", columns, rows), empty="no usage or platform costs this month yet")
    if any(isinstance(row[1], Text) for row in rows):
        out().print(
            "team-wide: charged to the team as a whole, not to one of its apps (reserved-"
            "capacity credits and fees, platform shares)",
            style="dim",
        )
    app_rows = [
        (
            _app_cell(a["app"], a["team"] or "-", a["cost_center"]),
            _estimate(a["month_to_date"]),
            _estimate(a["forecast"]),
        )
        for a in result["apps"][:TOP_APPS]
    ]
    if app_rows:
        app_columns = ("app (team, cost center)", "month to date", "forecast")
        out().print(_table("top apps", app_columns, app_rows))


@bill_app.command("costs")
def period_costs(
    month: Annotated[str | None, typer.Option(help="YYYY-MM in the tenant's time zone.")] = None,
    start: Annotated[str | None, typer.Option(help="Period start (RFC 3339).")] = None,
    end: Annotated[str | None, typer.Option(help="Period end, exclusive (RFC 3339).")] = None,
    price_book: Annotated[str | None, typer.Option(help="Price book name.")] = None,
    team: TeamCostsOption = None,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """What any period cost, per team and app, priced as a run of it would be (nothing is
    stored; admin, finance and a team-member for its own team).

    Examples:

      qm bill costs --start 2026-11-02T00:00:00Z --end 2026-11-09T00:00:00Z
      qm bill costs --month 2026-11 --team web
    """
    params = drop_none(
        {
            "month": month,
            "period_start": start,
            "period_end": end,
            "price_book": price_book,
            "team": team,
        }
    )
    result = request("GET", "/v1/billing/costs", params=params, url=url, api_key=api_key)
    if as_json:
        print_json(result)
        return
    currency = result["currency"]
    whose = f" (team {escape(result['team'])})" if result["team"] else ""
    out().print(
        f"[bold]{_period_label(result['period_start'], result['period_end'])}[/]{whose}: "
        f"{_money(result['total'])} {currency} (price book {escape(result['price_book'])}, "
        f"as of {cell_text(result['as_of'])})"
    )
    if not result["complete"]:
        waiting = result["events_waiting"]
        why = (
            f"{counted(waiting, 'event')} still in the reconciliation window"
            if waiting
            else "the period has not ended"
        )
        out().print(f"[yellow]note:[/] not complete: {why}; usage recorded later is not in it")
    if result.get("note"):
        out().print(f"[yellow]note:[/] {escape(str(result['note']))}")
    columns = ("cost center", "team", "amount")
    rows = [(t["cost_center"], t["team"] or "-", _money(t["amount"])) for t in result["teams"]]
    show_table(_table("per team", columns, rows), empty="no usage or platform costs in the period")
    app_rows = [
        (_app_cell(a["app"], a["team"] or "-", a["cost_center"]), _money(a["amount"]))
        for a in result["apps"][:TOP_APPS]
    ]
    if app_rows:
        out().print(_table("top apps", ("app (team, cost center)", "amount"), app_rows))


@bill_app.command("export")
def export(
    run_id: RunIdArgument,
    export_format: Annotated[
        str, typer.Option("--format", help="csv, json (chargeback) or focus (FOCUS 1.2 CSV).")
    ] = "csv",
    include_adjustments: Annotated[
        bool,
        typer.Option("--include-adjustments", help="Add the run's adjustment documents."),
    ] = False,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="File to write (default: stdout).")
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Write a chargeback file (CSV or JSON) or a FOCUS 1.2 CSV."""
    params = {"format": export_format, "include_adjustments": str(include_adjustments).lower()}
    with api_client(url=url, api_key=api_key) as client:
        response = client.get(f"/v1/billing/runs/{segment(run_id)}/export", params=params)
        if not response.is_success:
            check(response, console=err())
        text = response.text
    if output is None:
        sys.stdout.write(text)
        return
    output.write_text(text, encoding="utf-8")
    if export_format == "json":  # indented JSON: its text lines are not its lines
        written = counted(len(json.loads(text)["lines"]), "line")
    else:
        written = counted(len(text.splitlines()) - 1, "row")
    Console(stderr=True).print(f"wrote {output} ({written})")


def explain(
    line_id: Annotated[
        str,
        typer.Argument(
            help="A billing line id, a unique prefix of it (8+ characters, as `qm bill show` "
            "lists them), or its audit key."
        ),
    ],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Explain a billing line: its daily rollups, top raw events and lifecycle markers."""
    result = request(
        "GET", f"/v1/billing/lines/{segment(line_id)}/explain", url=url, api_key=api_key
    )
    line, console = result["line"], out()
    console.print(f"[bold]{escape(str(result['subject']))}[/]")
    console.print(
        f"{line['cost_type']} {line['amount']} {line['currency']} = {line['pricing_rule']} "
        f"(quantity {grouped(line['quantity'])}, allocation: {line['allocation_method']})"
    )
    console.print(f"counted as of {cell_text(result['counted_as_of'])}")
    # On a line of its own, unwrapped: Rich had split the key mid-word (comp|ute_units), and
    # it is pasted back as `qm explain`'s argument.
    console.print(f"audit key {line['audit_key']}", soft_wrap=True, markup=False, highlight=False)
    for note in result["notes"]:
        console.print(f"note: {escape(str(note))}")
    if result["daily"]:
        daily = [
            (_day_label(d["start"], d["end"]), grouped(d["value"]), grouped(d["events"]))
            for d in result["daily"]
            if d["events"]
        ]
        console.print(
            _table(
                f"1. daily usage of {line['meter']} (total {grouped(result['daily_total'])})",
                ("day", "quantity", "events"),
                daily,
            )
        )
    if result["shared_costs"]:
        shared = [
            (_day_label(d["start"], d["end"]), d["value"], grouped(d["events"]))
            for d in result["shared_costs"]
        ]
        console.print(
            _table(f"daily platform cost {line['item']}", ("day", "amount", "events"), shared)
        )
    if result["top_events"]:
        # The event over its resource, and how it was attributed over whether the document
        # counts it: six columns, one per field, took four lines an event at 80 columns.
        events = data_table(
            ("event", "time", "quantity", "attributed by"),
            title="2. top contributing raw events",
            right=("quantity",),
            whole=("quantity",),
        )
        for e in result["top_events"]:
            # Its type, source and resource say what sent it: of unattributed usage, the
            # only way to find the resources that produced it.
            origin = f"{e['event_type']} from {e['source']}"
            if e["resource_id"]:
                origin = f"{origin}\nresource {e['resource_id']}"
            events.add_row(
                stacked(e["event_id"], origin, head_style=""),
                plain(e["event_time"]),
                grouped(e["quantity"]),
                stacked(e["method"], "in the document" if e["in_document"] else "late: not in it"),
            )
        console.print(events)
    markers = [
        (m["event_time"], m["resource_id"], m["action"], m["replicas"] or "", m["environment"])
        for m in result["markers"]
    ]
    columns = ("time", "resource", "action", "replicas", "environment")
    show_table(
        _table("3. lifecycle markers of the app's resources", columns, markers),
        empty="3. no lifecycle markers of the app's resources in the period",
    )
