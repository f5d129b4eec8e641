"""`qm budget default-cap …` and `qm alerts high-cost …`: default hard caps for ephemeral and
non-production apps, and the preview invoices made after high-cost hours."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.text import Text

from quartermaster.cli.client import (
    ApiKeyOption,
    UrlOption,
    cell_text,
    data_table,
    drop_none,
    out,
    plain,
    print_table,
    request,
    segment,
    short_id,
    show_table,
    stacked,
)

default_cap_app = typer.Typer(
    help="Hard caps every ephemeral or non-production app without a budget gets by default.",
    no_args_is_help=True,
)
CurrencyOption = Annotated[
    str | None,
    typer.Option(help="The amount's currency (ISO 4217); default: the default price book's."),
]


def amount_text(row: dict[str, Any]) -> str:
    """A budget's or cap's amount with its currency ('2000 USD'; the amount alone for one
    made before they had a currency)."""
    return f"{row['amount']} {row.get('amount_currency') or ''}".strip()


high_cost_app = typer.Typer(
    help="Preview invoices made right after an app's high-cost hour, and their threshold.",
    no_args_is_help=True,
)


@default_cap_app.command("set")
def cap_set(
    applies_to: Annotated[str, typer.Argument(help="ephemeral | non_production")],
    amount: Annotated[str, typer.Option(help="Cap per app and period.")],
    period: Annotated[str, typer.Option(help="month | day (tenant time zone).")] = "month",
    action: Annotated[str, typer.Option(help="throttle | halt")] = "halt",
    currency: CurrencyOption = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Create or change the default cap of one kind of app.

    Example:

      qm budget default-cap set ephemeral --amount 25 --period month --action halt
    """
    body = drop_none(
        {
            "applies_to": applies_to,
            "amount": amount,
            "period": period,
            "action": action,
            "currency": currency,
        }
    )
    row = request("PUT", "/v1/default-caps", json=body, url=url, api_key=api_key)
    out().print(
        f"default cap for {row['applies_to']} apps: {amount_text(row)} per {row['period']} "
        f"each, then {row['action']} (apps with a budget of their own are not capped)"
    )


@default_cap_app.command("list")
def cap_list(url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """The tenant's default caps."""
    caps = request("GET", "/v1/default-caps", url=url, api_key=api_key)
    rows = [
        {
            "applies to": f"{cap['applies_to']} apps",
            "cap": f"{amount_text(cap)} a {cap['period']} each, then {cap['action']}",
            "set": stacked(f"by {cap['created_by']}", cap["created_at"], head_style=""),
        }
        for cap in caps
    ]
    print_table(("applies to", "cap", "set"), rows, title="default caps")


@default_cap_app.command("delete")
def cap_delete(
    applies_to: Annotated[str, typer.Argument(help="ephemeral | non_production")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Remove a default cap (enforcements it started end with it)."""
    request("DELETE", f"/v1/default-caps/{segment(applies_to)}", url=url, api_key=api_key)
    out().print(f"deleted the default cap for {applies_to}")


@high_cost_app.command("threshold")
def high_cost_threshold(
    amount: Annotated[
        str | None, typer.Argument(help="App cost in one hour that makes a preview.")
    ] = None,
    off: Annotated[bool, typer.Option("--off", help="Make no previews.")] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Show, set (AMOUNT) or turn off (--off) the high-cost threshold.

    Examples:

      qm alerts high-cost threshold 50
      qm alerts high-cost threshold --off
    """
    if amount is None and not off:
        row = request("GET", "/v1/guardrail-settings", url=url, api_key=api_key)
    else:
        body = {"high_cost_hour_amount": None if off else amount}
        row = request("PUT", "/v1/guardrail-settings", json=body, url=url, api_key=api_key)
    value = row["high_cost_hour_amount"]
    if value is not None:
        out().print(f"a preview invoice after any app-hour costing {value} or more")
    else:
        out().print("high-cost previews are off" + (" now" if off else ""))


@high_cost_app.command("list")
def high_cost_list(
    app: Annotated[str | None, typer.Option(help="Only this app.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 20,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Preview invoices made after high-cost hours."""
    params: dict[str, str | int] = {"limit": limit}
    if app is not None:
        params["app"] = app
    rows = request("GET", "/v1/cost-previews", params=params, url=url, api_key=api_key)
    # The app over the preview's id (for `show`), its team, the hour, and the three amounts
    # with their currency: eight field columns folded every one at 80 columns.
    table = data_table(
        ("preview", "hour", "hour cost", "month to date", "forecast"),
        title="cost previews",
        right=("hour cost", "month to date", "forecast"),
    )
    for row in rows:
        totals = row["preview"]["app"]
        table.add_row(
            stacked(
                f"{row['app']} ({'team ' + row['team'] if row['team'] else 'no team'})",
                short_id(row["id"]),
            ),
            plain(row["hour_start"]),
            *(
                plain(f"{amount} {row['currency']}".strip())
                for amount in (row["hour_cost"], totals["month_to_date"], totals["forecast"])
            ),
        )
    show_table(table, empty="no cost previews")


@high_cost_app.command("show")
def high_cost_show(
    preview_id: Annotated[str, typer.Argument(help="Preview id (from the alert or the list).")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """One preview: month to date and forecast of the app, its team and the tenant.

    Also the meters and top events behind the hour that raised it."""
    row = request("GET", f"/v1/cost-previews/{segment(preview_id)}", url=url, api_key=api_key)
    body = row["preview"]
    cur = row["currency"]
    out().print(
        f"app {row['app']} (team {row['team']}): {row['hour_cost']} {cur} in the hour from "
        f"{cell_text(row['hour_start'])} (threshold {row['threshold']} {cur})",
        markup=False,
    )
    totals = data_table(
        ("of", "month_to_date", "forecast"),
        title="month to date",
        right=("month_to_date", "forecast"),
    )
    scopes = [
        (f"app {body['app']['name']}", body["app"]),
        # The app's month under a team it had before it moved (not in this team's figures).
        *(
            (f"app {body['app']['name']} under team {part['team']}", part)
            for part in body.get("app_other_teams", [])
        ),
        (f"team {body['team']['name']}", body["team"]),
        # The team's largest apps, under the team: where else its month went.
        *(
            (f"  app {part['app']}", part)
            for part in body.get("team_apps", [])
            if part["app"] != body["app"]["name"]
        ),
        ("tenant", body.get("tenant", {})),  # a team-member's preview has no tenant totals
    ]
    for label, part in scopes:
        if "month_to_date" in part:
            totals.add_row(
                label, *(plain(f"{part[key]} {cur}") for key in ("month_to_date", "forecast"))
            )
    show_table(totals, empty="no month to date")
    events = data_table(
        ("meter", "event", "event_time", "quantity"), title="behind the hour", right=("quantity",)
    )
    for meter in body["meters"]:
        head = stacked(meter["meter"], f"{meter['hour_cost']} {cur}", head_style="")
        for event in meter["top_events"]:
            events.add_row(
                head,
                stacked(event["event_id"], f"{event['event_type']} from {event['source']}"),
                plain(event["event_time"]),
                plain(event["quantity"]),
            )
            head = Text("")
    show_table(events, empty="no meter cost in that hour")
