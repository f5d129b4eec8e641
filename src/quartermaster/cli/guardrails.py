"""`qm budget|quota|alerts|decide`: guardrails over the HTTP API (QM_URL, QM_API_KEY)."""

from __future__ import annotations

import json
from decimal import Decimal
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

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
    out,
    plain,
    print_fields,
    print_json,
    print_secret,
    print_table,
    request,
    segment,
    short_id,
    show_table,
    stacked,
)
from quartermaster.cli.guardrail_defaults import (
    CurrencyOption,
    amount_text,
    default_cap_app,
    high_cost_app,
)
from quartermaster.domain.money import money_text
from quartermaster.domain.timeutil import parse_timestamp, utc_now
from quartermaster.guardrails.quantities import format_quantity

budget_app = typer.Typer(
    help="Budgets: spend limits per tenant, cost center, team or app.", no_args_is_help=True
)
quota_app = typer.Typer(
    help="Quotas, limit ranges and rate limits (what work may hold and how often it may ask).",
    no_args_is_help=True,
)
alerts_app = typer.Typer(
    help="Alerts, enforcements (throttle, halt), the action log, webhooks and deliveries.",
    no_args_is_help=True,
)
decide_app = typer.Typer(
    help="The decision API: may this scope start work needing these resources?",
    no_args_is_help=True,
)

budget_app.add_typer(default_cap_app, name="default-cap")
alerts_app.add_typer(high_cost_app, name="high-cost")

ScopeKindOption = Annotated[str, typer.Option("--scope-kind", help="tenant | team | ...")]
ScopeOption = Annotated[str | None, typer.Option("--scope", help="The scope's slug or id.")]


# --- budgets ------------------------------------------------------------------------------


@budget_app.command("create")
def budget_create(
    name: Annotated[str, typer.Argument(help="Budget name (a slug).")],
    amount: Annotated[str, typer.Option(help="The period's limit.")],
    scope_kind: Annotated[
        str, typer.Option("--scope-kind", help="tenant | cost_center | team | app")
    ] = "tenant",
    scope: ScopeOption = None,
    period: Annotated[str, typer.Option(help="month | day (tenant time zone).")] = "month",
    threshold: Annotated[
        list[int] | None,
        typer.Option(
            "--threshold", "-t", help="Soft alert percentage (repeat; default 50 80 100)."
        ),
    ] = None,
    hard_percent: Annotated[int, typer.Option(help="Percent where the action applies.")] = 100,
    action: Annotated[str, typer.Option(help="notify | throttle | halt")] = "notify",
    currency: CurrencyOption = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Create a budget."""
    body = drop_none(
        {
            "name": name,
            "amount": amount,
            "scope_kind": scope_kind,
            "scope": scope,
            "period": period,
            "thresholds": threshold or None,
            "hard_percent": hard_percent,
            "action": action,
            "currency": currency,
        }
    )
    made = request("POST", "/v1/budgets", json=body, url=url, api_key=api_key)
    target = f"{made['scope_kind']} {made['scope']}" if made["scope"] else "the tenant"
    out().print(
        f"created budget {made['name']}: {amount_text(made)} per {made['period']} for "
        f"{target}, thresholds {','.join(str(t) for t in made['thresholds'])}%, "
        f"{made['action']} at {made['hard_percent']}%"
    )


def _scope(row: dict[str, Any]) -> str:
    """'team legal', or 'tenant' for a row that applies to the whole tenant."""
    return f"{row['scope_kind']} {row['scope'] or ''}".strip()


def _spent(budget: dict[str, Any]) -> str:
    """'11.12 USD (111.2 %)': the period's spend so far and its percent of the amount; spend
    in another currency than the amount's is not compared ('11.12 EUR (not compared)')."""
    if budget.get("spend") is None:
        return "-"
    spent = money_text(Decimal(budget["spend"]), budget["currency"] or "")
    if budget["percent"] is None:
        return f"{spent} (not compared)"
    return f"{spent} ({budget['percent']} %)"


@budget_app.command("list")
def budget_list(
    spend: Annotated[
        bool,
        typer.Option(
            "--spend/--no-spend", help="Price each budget's spend so far (needs a price book)."
        ),
    ] = True,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """The tenant's budgets, each with its spend so far this period and percent of its amount."""
    params = {"spend": "true"} if spend else None
    budgets = request("GET", "/v1/budgets", params=params, url=url, api_key=api_key)
    if as_json:
        print_json(budgets)
        return
    # One column per question a reader asks (whose, how much, when warned, what then), not
    # one per API field: eight field columns folded every row at 80 columns.
    rows = [
        {
            "name": budget["name"],
            "applies to": _scope(budget),
            "limit": f"{amount_text(budget)} a {budget['period']}",
            "alerts at": f"{', '.join(str(t) for t in budget['thresholds'])} %"
            if budget["thresholds"]
            else "never",
            "then": f"{budget['action']} at {budget['hard_percent']} %",
            "spent": _spent(budget),
        }
        for budget in budgets
    ]
    columns = ("name", "applies to", "limit", "alerts at", "then", "spent")
    print_table(columns, rows, title="budgets", whole=("name",))


@budget_app.command("update")
def budget_update(
    name: Annotated[str, typer.Argument(help="Budget name.")],
    amount: Annotated[str | None, typer.Option(help="The period's new limit.")] = None,
    threshold: Annotated[
        list[int] | None,
        typer.Option("--threshold", "-t", help="Soft alert percentage (repeat; replaces all)."),
    ] = None,
    hard_percent: Annotated[
        int | None, typer.Option(help="Percent where the action applies.")
    ] = None,
    action: Annotated[str | None, typer.Option(help="notify | throttle | halt")] = None,
    currency: Annotated[
        str | None,
        typer.Option(help="The amount's currency, e.g. EUR after the price book changed."),
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Change a budget's amount, currency, thresholds, hard percent or action, keeping what
    fired.

    Thresholds already alerted this period do not alert again; a throttle or halt in force
    stays (raising the amount does not lift it: `qm alerts lift ID`). A new action applies
    to it at once; `notify` ends it.
    """
    body = drop_none(
        {
            "amount": amount,
            "thresholds": threshold or None,
            "hard_percent": hard_percent,
            "action": action,
            "currency": currency,
        }
    )
    if not body:
        err().print(
            "nothing to change: give --amount, --currency, --threshold, --hard-percent or --action"
        )
        raise typer.Exit(2)
    made = request("PATCH", f"/v1/budgets/{segment(name)}", json=body, url=url, api_key=api_key)
    out().print(
        f"updated budget {made['name']}: {amount_text(made)} per {made['period']}, thresholds "
        f"{','.join(str(t) for t in made['thresholds'])}%, {made['action']} at "
        f"{made['hard_percent']}%"
    )


@budget_app.command("delete")
def budget_delete(
    name: Annotated[str, typer.Argument(help="Budget name.")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Delete a budget: a throttle or halt of it in force ends (logged, kept as history)."""
    request("DELETE", f"/v1/budgets/{segment(name)}", url=url, api_key=api_key)
    out().print(f"deleted budget {escape(str(name))}")


@budget_app.command("evaluate")
def budget_evaluate(url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """Evaluate the budgets now (after the pipeline catches up) instead of waiting."""
    result = request("POST", "/v1/budgets/evaluate", url=url, api_key=api_key)
    out().print(
        f"{len(result['alerts'])} new alert(s), {len(result['enforcements'])} new enforcement(s)"
    )
    for name in result["enforcements"]:
        out().print(f"enforcing budget {escape(str(name))}")


# --- quotas, limit ranges, rate limits ----------------------------------------------------


@quota_app.command("set")
def quota_set(
    resource: Annotated[str, typer.Argument(help="concurrency | cpu | memory | gpu | jobs")],
    hard: Annotated[str, typer.Argument(help="The limit as a quantity: 20, 500m, 50Gi.")],
    scope_kind: Annotated[str, typer.Option("--scope-kind", help="tenant | team")] = "tenant",
    scope: ScopeOption = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Create or change a quota of a namespace (the tenant or one team)."""
    body = drop_none({"scope_kind": scope_kind, "scope": scope, "resource": resource, "hard": hard})
    row = request("PUT", "/v1/quotas", json=body, url=url, api_key=api_key)
    namespace = "the tenant" if not row["scope"] else f"team {row['scope']}"
    out().print(
        f"quota {row['id']}: {row['resource']} of {namespace} hard {row['hard_text']}, "
        f"used {row['used_text']}"
    )


@quota_app.command("list")
def quota_list(url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """Quotas with what admitted work holds now."""
    quotas = request("GET", "/v1/quotas", url=url, api_key=api_key)
    # Whose, of what, how much, how much held; the id last, for `qm quota delete`. The API's
    # six fields as columns split each id over two lines at 80 columns.
    rows = [
        {
            "applies to": _scope(quota),
            "resource": quota["resource"],
            "hard": quota["hard_text"],
            "used": quota["used_text"],
            "id": quota["id"],
        }
        for quota in quotas
    ]
    print_table(("applies to", "resource", "hard", "used", "id"), rows, title="quotas")


@quota_app.command("delete")
def quota_delete(
    quota_id: Annotated[str, typer.Argument(help="Quota id (see qm quota list).")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Delete a quota."""
    request("DELETE", f"/v1/quotas/{segment(quota_id)}", url=url, api_key=api_key)
    out().print(f"deleted quota {quota_id}")


@quota_app.command("limit-range")
def limit_range_set(
    resource: Annotated[str, typer.Argument(help="concurrency | cpu | memory | gpu | runtime")],
    default_request: Annotated[
        str | None, typer.Option("--default", help="Used when a request names none.")
    ] = None,
    max_value: Annotated[
        str | None, typer.Option("--max", help="Most one request may ask.")
    ] = None,
    scope_kind: Annotated[str, typer.Option("--scope-kind", help="tenant | team")] = "tenant",
    scope: ScopeOption = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Set a limit range (default request and per-request max) of a namespace."""
    body = drop_none(
        {
            "scope_kind": scope_kind,
            "scope": scope,
            "resource": resource,
            "default_request": default_request,
            "max": max_value,
        }
    )
    row = request("PUT", "/v1/limit-ranges", json=body, url=url, api_key=api_key)
    resource = row["resource"]
    out().print(
        f"limit range {row['id']}: {resource} default "
        f"{_quantity(resource, row['default_request'])}, max {_quantity(resource, row['max'])}"
    )


@quota_app.command("limit-ranges")
def limit_range_list(url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """Limit ranges, with quantities as `qm quota limit-range` takes them (500m, 2Gi, 90s)."""
    ranges = request("GET", "/v1/limit-ranges", url=url, api_key=api_key)
    rows = [
        {
            "applies to": _scope(one),
            "resource": one["resource"],
            # As `qm quota limit-range` takes them (500m, 4, 2Gi, 90s), not in base units.
            "default request": _quantity(one["resource"], one["default_request"]),
            "max": _quantity(one["resource"], one["max"]),
            "id": one["id"],
        }
        for one in ranges
    ]
    columns = ("applies to", "resource", "default request", "max", "id")
    print_table(columns, rows, title="limit ranges")


@quota_app.command("limit-range-delete")
def limit_range_delete(
    limit_range_id: Annotated[str, typer.Argument(help="Limit range id (qm quota limit-ranges).")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Delete a limit range: requests of its namespace no longer get its default or max."""
    request("DELETE", f"/v1/limit-ranges/{segment(limit_range_id)}", url=url, api_key=api_key)
    out().print(f"deleted limit range {limit_range_id}", markup=False)


def _quantity(resource: str, value: int | None) -> str:
    return "none" if value is None else format_quantity(resource, value)


def _resources_text(resources: dict[str, int]) -> str:
    """`cpu 2, memory 4Gi`: the quantities held, as `qm decide request` takes them."""
    quantities = sorted((name, value) for name, value in resources.items() if value)
    return ", ".join(f"{name} {_quantity(name, value)}" for name, value in quantities)


@quota_app.command("rate-limit")
def rate_limit_set(
    rate: Annotated[str, typer.Argument(help="Requests per second, e.g. 5 or 0.5.")],
    burst: Annotated[int, typer.Argument(help="Requests allowed at once from idle.")],
    scope_kind: Annotated[str, typer.Option("--scope-kind", help="tenant | app | user")] = "tenant",
    scope: Annotated[
        str | None, typer.Option("--scope", help="App slug, principal id, or * (each one).")
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Set a rate limit on ingest and decision calls (GCRA)."""
    body = drop_none({"scope_kind": scope_kind, "scope": scope, "rate": rate, "burst": burst})
    row = request("PUT", "/v1/rate-limits", json=body, url=url, api_key=api_key)
    out().print(f"rate limit {row['id']}: {row['rate']}/s burst {row['burst']} for {_scope(row)}")


@quota_app.command("rate-limits")
def rate_limit_list(url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """Rate limits."""
    limits = request("GET", "/v1/rate-limits", url=url, api_key=api_key)
    rows = [
        {
            "applies to": _scope(limit),
            "rate": f"{limit['rate']}/s",
            "burst": limit["burst"],
            "id": limit["id"],
        }
        for limit in limits
    ]
    print_table(("applies to", "rate", "burst", "id"), rows, title="rate limits")


@quota_app.command("rate-limit-delete")
def rate_limit_delete(
    rate_limit_id: Annotated[str, typer.Argument(help="Rate limit id.")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Delete a rate limit."""
    request("DELETE", f"/v1/rate-limits/{segment(rate_limit_id)}", url=url, api_key=api_key)
    out().print(f"deleted rate limit {rate_limit_id}")


# --- alerts, enforcements, the action log -------------------------------------------------


# Rows per request with --all (the API's largest page).
PAGE_LIMIT = 1000

AfterOption = Annotated[
    str | None, typer.Option(help="Rows after this one (the cursor in the previous page's footer).")
]
EveryOption = Annotated[
    bool, typer.Option("--all", help="Every row, page by page (ignores --limit).")
]


def _read_pages(
    path: str, params: dict[str, Any], *, every: bool, url: str | None, api_key: str | None
) -> tuple[list[dict[str, Any]], str | None]:
    """The first page of a list paged by the X-Next-After header (with `every`, all of them)
    and the cursor of the page after (None: nothing more)."""
    rows: list[dict[str, Any]] = []
    if every:
        params = {**params, "limit": PAGE_LIMIT}
    with api_client(url=url, api_key=api_key) as client:
        while True:
            response = client.get(path, params=params)
            rows.extend(check(response, console=err()))
            cursor = response.headers.get("X-Next-After")
            if cursor is None or not every:
                return rows, cursor
            params = {**params, "after": cursor}


def _more(
    command: str,
    params: dict[str, Any],
    names: tuple[str, ...],
    cursor: str | None,
    *,
    console: Console | None = None,
) -> None:
    """The footer of a page that has more after it: the command that reads the next (on
    `console`; stderr under --json, so that stdout stays JSON)."""
    if cursor is None:
        return
    same = "".join(
        f" --{name.replace('_', '-')} {params[name]}" for name in names if name in params
    )
    (console or out()).print(f"more: {command}{same} --after {cursor} (or --all)", markup=False)


@alerts_app.command("list")
def alerts_list(
    kind: Annotated[
        str | None,
        typer.Option(
            help="budget_threshold | default_cap | anomaly | high_cost_event | late_usage"
        ),
    ] = None,
    scope: Annotated[
        str | None,
        typer.Option(help="Only alerts about this: team:NAME, app:NAME, cost_center:NAME, tenant."),
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    after: AfterOption = None,
    every: EveryOption = False,
    details: Annotated[
        bool, typer.Option("--details", help="Also print each alert's details.")
    ] = False,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Alerts, newest first; the footer says how to read the next page."""
    params = drop_none({"kind": kind, "scope": scope, "after": after, "limit": limit})
    rows, cursor = _read_pages("/v1/alerts", params, every=every, url=url, api_key=api_key)
    if as_json:
        print_json(rows)
        _more("qm alerts list", params, ("kind", "scope"), cursor, console=err())
        return
    # The title and its message in one column, the title on top: as two columns each got a
    # fifth of an 80-column terminal and folded into a dozen lines.
    table = data_table(("created_at", "severity", "kind", "alert"), title="alerts")
    for row in rows:
        alert = stacked(row["title"], row["message"])
        table.add_row(plain(row["created_at"]), row["severity"], row["kind"], alert)
    show_table(table, empty="no alerts")
    if details:
        for row in rows:
            out().print(f"{row['id']} {json.dumps(row['details'], sort_keys=True)}", markup=False)
    _more("qm alerts list", params, ("kind", "scope"), cursor)


@alerts_app.command("scan")
def alerts_scan(
    since: Annotated[
        str,
        typer.Option(
            help="First hour to score (RFC 3339 with an offset, e.g. 2026-11-01T00:00:00Z)."
        ),
    ],
    until: Annotated[str | None, typer.Option(help="End of the scan (default: now).")] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Score past hours for cost anomalies (each spike alerts once, however often scanned)."""
    body = drop_none({"since": since, "until": until})
    result = request("POST", "/v1/alerts/scan", json=body, url=url, api_key=api_key)
    out().print(f"scored {result['hours']} hours: {len(result['alerts'])} new anomaly alerts")
    for key in result["alerts"]:
        out().print(f"  {key}", markup=False)


@alerts_app.command("enforcements")
def enforcements_list(url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """Throttles and halts, in force or past."""
    found = request("GET", "/v1/enforcements", url=url, api_key=api_key)
    # The action over its id (for `lift`), whom it applies to, until when or since when it
    # ended, and why: seven field columns left the reason a few letters wide at 80 columns.
    table = data_table(("enforcement", "applies to", "state", "reason"), title="enforcements")
    for one in found:
        table.add_row(
            stacked(one["action"], short_id(one["id"])),
            plain(_scope(one)),
            plain(_enforcement_state(one)),
            plain(one["reason"]),
        )
    show_table(table, empty="no enforcements")


def _enforcement_state(one: dict[str, Any]) -> str:
    if one["lifted_at"]:
        by = f" by {one['lifted_by']}" if one["lifted_by"] else ""
        return f"lifted{by}\n{cell_text(one['lifted_at'])}"
    if parse_timestamp(one["ends_at"]) <= utc_now():
        return f"ended\n{cell_text(one['ends_at'])}"
    return f"in force until\n{cell_text(one['ends_at'])}"


@alerts_app.command("lift")
def enforcement_lift(
    enforcement_id: Annotated[str, typer.Argument(help="Enforcement id.")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """End a throttle or halt early."""
    row = request(
        "POST", f"/v1/enforcements/{segment(enforcement_id)}/lift", url=url, api_key=api_key
    )
    # Lifting is idempotent: a second lift answers the first, whose time says so.
    out().print(
        f"{row['action']} of {row['scope_kind']} {row['scope']} lifted by {row['lifted_by']} "
        f"at {cell_text(row['lifted_at'])}"
    )


@alerts_app.command("actions")
def actions_list(
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    after: AfterOption = None,
    every: EveryOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Every action a guardrail took, with why, newest first.

    The footer says how to read the next page."""
    params = drop_none({"after": after, "limit": limit})
    rows, cursor = _read_pages(
        "/v1/guardrail-actions", params, every=every, url=url, api_key=api_key
    )
    table = data_table(("at", "action", "scope", "subject and reason"), title="actions")
    for row in rows:
        why = stacked(row["subject"], row["reason"], head_style="dim")
        table.add_row(plain(row["at"]), row["action"], plain(_scope(row)), why)
    show_table(table, empty="no actions")
    _more("qm alerts actions", params, (), cursor)


# --- decisions ----------------------------------------------------------------------------


def _print_decision(result: dict[str, Any]) -> None:
    for note in result.get("audit_only", []):  # audit-mode policies: would have denied
        out().print(note, markup=False)
    subject = _decision_subject(result.get("app"), result.get("team"))
    if result["allowed"]:
        out().print(
            f"allowed: decision {result['id']} for {subject}, holds "
            f"{_resources_text(result['resources'])} until {cell_text(result['expires_at'])}",
            markup=False,
        )
        return
    out().print(f"denied for {subject}:", markup=False)
    for reason in result["reasons"]:
        out().print(f"- {reason['kind']}: {reason['message']}", markup=False)


def _decision_subject(app: str | None, team: str | None) -> str:
    """What a decision is about, as the server resolved it: `app shop of team web`, `team
    web`, or tenant-wide work (neither given: only the tenant's rules apply). It printed
    `team None app None` for the last."""
    if app and team:
        return f"app {app} of team {team}"
    if app:
        return f"app {app}"
    if team:
        return f"team {team}"
    return "tenant-wide work (no app or team)"


@decide_app.command("request")
def decide_request(
    app: Annotated[str | None, typer.Option(help="The app the work runs as.")] = None,
    team: Annotated[str | None, typer.Option(help="The team (default: the app's).")] = None,
    cpu: Annotated[str | None, typer.Option(help="e.g. 500m or 2")] = None,
    memory: Annotated[str | None, typer.Option(help="e.g. 512Mi")] = None,
    gpu: Annotated[str | None, typer.Option(help="Whole GPUs.")] = None,
    concurrency: Annotated[str | None, typer.Option(help="Slots of concurrency.")] = None,
    runtime: Annotated[str | None, typer.Option(help="Expected runtime: 90, 15m, 2h.")] = None,
    essential: Annotated[
        bool, typer.Option("--essential", help="Essential work passes a budget halt.")
    ] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Ask whether work may start; when allowed, its quota is held until released."""
    resources = drop_none(
        {"cpu": cpu, "memory": memory, "gpu": gpu, "concurrency": concurrency, "runtime": runtime}
    )
    body = drop_none({"app": app, "team": team, "resources": resources, "essential": essential})
    result = request("POST", "/v1/decisions", json=body, url=url, api_key=api_key)
    _print_decision(result)
    if not result["allowed"]:
        raise typer.Exit(2)


@decide_app.command("show")
def decide_show(
    decision_id: Annotated[
        str, typer.Argument(help="Decision id, or a unique prefix of it (8 or more).")
    ],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """A decision's reservation and its status."""
    row = request("GET", f"/v1/decisions/{segment(decision_id)}", url=url, api_key=api_key)
    print_fields(_held_quantities(row))


# A reservation's amounts (base units in the API) and the resource each is a quantity of.
_RESERVED = {
    "cpu": "cpu",
    "memory": "memory",
    "gpu": "gpu",
    "concurrency": "concurrency",
    "runtime_seconds": "runtime",
}


def _held_quantities(row: dict[str, Any]) -> dict[str, Any]:
    """A reservation with its amounts as `qm decide request` and `qm quota list` show them
    (`1500m`, `256Mi`, `3600s`), not in base units."""
    return {
        name: _quantity(_RESERVED[name], value) if name in _RESERVED else value
        for name, value in row.items()
    }


@decide_app.command("release")
def decide_release(
    decision_id: Annotated[
        str, typer.Argument(help="Decision id, or a unique prefix of it (8 or more).")
    ],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """The work finished: give its quota back (idempotent)."""
    row = request("POST", f"/v1/decisions/{segment(decision_id)}/release", url=url, api_key=api_key)
    out().print(f"decision {row['id']} {row['status']}")


@decide_app.command("renew")
def decide_renew(
    decision_id: Annotated[
        str, typer.Argument(help="Decision id, or a unique prefix of it (8 or more).")
    ],
    runtime: Annotated[
        str | None,
        typer.Option(help="How long from now it may still run: 90, 15m, 2h (default: its own)."),
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """The work still runs: keep its quota, expiring runtime from now (before it expires).

    A budget halt in force and the admission policies are asked again: refused, the work
    keeps its current expiry and the message says why (exit 1)."""
    body = drop_none({"runtime": runtime})
    row = request(
        "POST", f"/v1/decisions/{segment(decision_id)}/renew", json=body, url=url, api_key=api_key
    )
    out().print(f"decision {row['id']} {row['status']} until {cell_text(row['expires_at'])}")


# --- webhooks and deliveries --------------------------------------------------------------


@alerts_app.command("webhook-add")
def webhook_add(
    target: Annotated[str, typer.Argument(help="http(s) URL the alerts are POSTed to.")],
    fmt: Annotated[str, typer.Option("--format", help="json | slack")] = "json",
    min_severity: Annotated[str, typer.Option(help="info | warning | critical")] = "info",
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Add a webhook; prints its signing secret once (on stdout, alone)."""
    body = {"url": target, "format": fmt, "min_severity": min_severity}
    hook = request("POST", "/v1/webhooks", json=body, url=url, api_key=api_key)
    err().print(
        f"webhook {hook['id']} ({hook['format']}, {hook['min_severity']} and up) -> {hook['url']}"
    )
    print_secret("the webhook's signing secret", hook["secret"])


@alerts_app.command("webhooks")
def webhook_list(url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """Webhooks (admin only: a webhook URL may itself be a credential)."""
    hooks = request("GET", "/v1/webhooks", url=url, api_key=api_key)
    # The URL over the id, and what it is sent: five field columns split both at 80 columns.
    table = data_table(("webhook", "sends"), title="webhooks")
    for hook in hooks:
        table.add_row(
            stacked(hook["url"], hook["id"], head_style=""),
            stacked(
                f"{hook['format']}, {hook['min_severity']} and above",
                f"added {cell_text(hook['created_at'])}",
                head_style="",
            ),
        )
    show_table(table, empty="no webhooks")


@alerts_app.command("webhook-delete")
def webhook_delete(
    webhook_id: Annotated[str, typer.Argument(help="Webhook id.")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Delete a webhook with its deliveries and their log."""
    request("DELETE", f"/v1/webhooks/{segment(webhook_id)}", url=url, api_key=api_key)
    out().print(f"deleted webhook {webhook_id}")


@alerts_app.command("deliveries")
def delivery_list(
    status: Annotated[
        str | None, typer.Option(help="pending | delivered | dead (dead: the dead-letter list)")
    ] = None,
    webhook_id: Annotated[
        str | None, typer.Option(help="Only deliveries to this webhook (its id).")
    ] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 50,
    after: AfterOption = None,
    every: EveryOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Webhook deliveries with their status, attempts and last error, newest first.

    The footer says how to read the next page."""
    params = drop_none({"status": status, "webhook_id": webhook_id, "after": after, "limit": limit})
    deliveries, cursor = _read_pages(
        "/v1/webhook-deliveries", params, every=every, url=url, api_key=api_key
    )
    # The delivery's id over its webhook's, its status over its attempts: two 32-character
    # ids side by side left the other four columns a few letters each at 80 columns.
    table = data_table(
        ("delivery / webhook", "status", "next attempt at", "last error"),
        title="deliveries",
        whole=("delivery / webhook",),
    )
    for delivery in deliveries:
        table.add_row(
            stacked(delivery["id"], delivery["webhook_id"], head_style=""),
            stacked(delivery["status"], counted(delivery["attempts"], "attempt"), head_style=""),
            # Only a pending delivery has a next attempt; a dead or delivered one has none.
            plain(delivery["next_attempt_at"] if delivery["status"] == "pending" else None),
            plain(delivery["last_error"]),
        )
    show_table(table, empty="no deliveries")
    _more("qm alerts deliveries", params, ("status", "webhook_id"), cursor)


@alerts_app.command("delivery-log")
def delivery_log(
    delivery_id: Annotated[str, typer.Argument(help="Delivery id.")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Every attempt of one delivery: when, status code or error, how long."""
    path = f"/v1/webhook-deliveries/{segment(delivery_id)}/attempts"
    rows = request("GET", path, url=url, api_key=api_key)
    columns = ("attempt", "at", "status_code", "duration_ms", "error")
    print_table(columns, rows, title=f"delivery {delivery_id}", empty="no attempts yet")


@alerts_app.command("retry")
def delivery_retry(
    delivery_id: Annotated[str, typer.Argument(help="A dead delivery's id.")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Take a dead delivery off the dead-letter list and send it again."""
    path = f"/v1/webhook-deliveries/{segment(delivery_id)}/retry"
    row = request("POST", path, url=url, api_key=api_key)
    out().print(f"delivery {row['id']} is {row['status']} again")
