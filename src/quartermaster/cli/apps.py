"""`qm app …` and `qm resource …`: the catalog API over HTTP (QM_URL, QM_API_KEY)."""

from __future__ import annotations

from typing import Annotated, Any

import typer
from rich.text import Text

from quartermaster.cli.app_import import import_apps
from quartermaster.cli.client import (
    ApiKeyOption,
    JsonOption,
    UrlOption,
    api_client,
    cell_text,
    check,
    data_table,
    drop_none,
    err,
    fail,
    out,
    plain,
    print_fields,
    print_json,
    print_secret,
    print_table,
    request,
    segment,
    show_table,
    stacked,
    utc_moment,
)

app_app = typer.Typer(
    help="Apps: register, list, show, update, signing keys.", no_args_is_help=True
)
app_key_app = typer.Typer(
    help="An app's HMAC signing keys (at most two active).", no_args_is_help=True
)
app_app.add_typer(app_key_app, name="key")
resource_app = typer.Typer(help="Resources bound to apps, and leases.", no_args_is_help=True)

# Apps `qm app list` shows unless told otherwise (--limit N, --all): a tenant of 3,000 apps
# printed them all, screens of them, to find one (--search filters).
DEFAULT_APP_LIMIT = 50
# Apps a page of `qm app list --all` asks for.
APP_PAGE = 1000
APP_COLUMNS = ("app_id", "title", "owner", "team", "cost_center", "lifecycle", "environment")
TeamOption = Annotated[str | None, typer.Option(help="Team slug.")]
CostCenterOption = Annotated[str | None, typer.Option(help="Cost center slug.")]
LifecycleOption = Annotated[str | None, typer.Option(help="ephemeral | persistent.")]


@app_app.command("create")
def app_create(
    app_id: Annotated[str, typer.Argument(help="Stable slug, e.g. invoice-bot.")],
    owner: Annotated[str | None, typer.Option(help="Accountable person (required).")] = None,
    team: Annotated[str | None, typer.Option(help="Owning team slug (required).")] = None,
    cost_center: Annotated[
        str | None, typer.Option(help="Paying cost center (default: the team's).")
    ] = None,
    title: Annotated[str | None, typer.Option(help="Display title.")] = None,
    lifecycle: LifecycleOption = None,
    environment: Annotated[str | None, typer.Option(help="Default production.")] = None,
    require_signatures: Annotated[
        bool, typer.Option("--require-signatures", help="Refuse unsigned events of this app.")
    ] = False,
    owned_since: Annotated[
        str | None,
        typer.Option(help="Back-date the ownership (RFC 3339) for an app that ran before."),
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Register an app. The server refuses a missing owner, team or cost center by name."""
    body = drop_none(
        {
            "app_id": app_id,
            "owner": owner,
            "team": team,
            "cost_center": cost_center,
            "title": title,
            "lifecycle": lifecycle,
            "environment": environment,
            "require_signatures": require_signatures,
            "owned_since": owned_since,
        }
    )
    created = request("POST", "/v1/apps", json=body, url=url, api_key=api_key)
    out().print(
        f"registered app {created['app_id']} (team {created['team']}, "
        f"cost center {created['cost_center']})"
    )


@app_app.command("list")
def app_list(
    team: TeamOption = None,
    cost_center: CostCenterOption = None,
    lifecycle: LifecycleOption = None,
    search: Annotated[
        str | None,
        typer.Option(help="Only apps whose id, title or owner contains this (any case)."),
    ] = None,
    limit: Annotated[
        int, typer.Option(help="Show at most N apps (0: all).", min=0)
    ] = DEFAULT_APP_LIMIT,
    every: Annotated[bool, typer.Option("--all", help="Show every app (ignores --limit).")] = False,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """List apps, optionally filtered, with how many there are (the first 50 by default)."""
    params = drop_none(
        {"team": team, "cost_center": cost_center, "lifecycle": lifecycle, "search": search}
    )
    shown, total = _read_apps(params, limit=0 if every else limit, url=url, api_key=api_key)
    if as_json:
        print_json(shown)
        return
    # Three columns: the app over its title, its owner over its team and cost center, its
    # lifecycle over its environment. The app column is as wide as the longest id shown (up
    # to 40), so an id is never split over two lines at 80 columns, where a copy and paste
    # then broke it; the titles and owners fold around it.
    table = data_table(
        ("app", "owner / team / cost center", "lifecycle / environment"), title="apps"
    )
    table.columns[0].width = _app_column_width(shown, out().width)
    table.columns[2].max_width = len("environment")  # the owner gets the width left
    for found in shown:
        table.add_row(
            stacked(found["app_id"], found["title"] if found["title"] != found["app_id"] else ""),
            Text.assemble(
                cell_text(found["owner"]),
                "\n",
                (f"{cell_text(found['team'])}\n{cell_text(found['cost_center'])}", "dim"),
                overflow="fold",
            ),
            stacked(found["lifecycle"], found["environment"], head_style=""),
        )
    show_table(table, empty="no apps")
    if total:
        out().print(app_count(len(shown), total), style="dim")


def _read_apps(
    params: dict[str, Any], *, limit: int, url: str | None, api_key: str | None
) -> tuple[list[dict[str, Any]], int]:
    """The first `limit` apps (0: every one, a page of `APP_PAGE` at a time) and how many
    the filters match (the server counts them: only the apps shown cross the network)."""
    apps: list[dict[str, Any]] = []
    params = {**params, "limit": limit or APP_PAGE}
    with api_client(url=url, api_key=api_key) as client:
        while True:
            response = client.get("/v1/apps", params=params)
            apps.extend(check(response, console=err()))
            total = int(response.headers.get("X-Total-Count", len(apps)))
            cursor = response.headers.get("X-Next-After")
            if cursor is None or limit:
                return apps, total
            params = {**params, "after": cursor}


def _app_column_width(apps: list[dict[str, Any]], terminal: int) -> int:
    """The app column's width: its longest id shown (up to 40) whole, and as much of the
    longest title as leaves the owner and lifecycle columns 40 of the terminal's width."""
    longest_id = min(max((len(a["app_id"]) for a in apps), default=3), 40)
    longest_title = max((len(a["title"] or "") for a in apps), default=0)
    return max(longest_id, min(longest_title, terminal - 44))


def app_count(shown: int, total: int) -> str:
    """'3,000 apps', or '50 of 3,000 apps shown; 2,950 more: --all'."""
    noun = "app" if total == 1 else "apps"
    if shown == total:
        return f"{total:,} {noun}"
    return f"{shown:,} of {total:,} {noun} shown; {total - shown:,} more: --all"


def _print_app(detail: dict[str, Any]) -> None:
    console = out()
    print_fields(
        detail, (*APP_COLUMNS, "require_signatures", "created_by", "created_at", "updated_at")
    )
    columns = ("team", "cost_center", "valid_from", "valid_to")
    table = data_table(columns, title="ownership")
    for span in detail["ownership"]:
        table.add_row(*(plain(span[key]) for key in columns))
    console.print(table)


@app_app.command("show")
def app_show(
    app_id: Annotated[str, typer.Argument(help="The app's slug.")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Show an app with its dated ownership."""
    _print_app(request("GET", f"/v1/apps/{segment(app_id)}", url=url, api_key=api_key))


@app_app.command("update")
def app_update(
    app_id: Annotated[str, typer.Argument(help="The app's slug.")],
    title: Annotated[str | None, typer.Option(help="New title.")] = None,
    owner: Annotated[str | None, typer.Option(help="New owner.")] = None,
    lifecycle: LifecycleOption = None,
    environment: Annotated[str | None, typer.Option(help="New environment.")] = None,
    require_signatures: Annotated[
        bool | None,
        typer.Option(
            "--require-signatures/--allow-unsigned",
            help="Refuse, or accept again, unsigned events of this app.",
        ),
    ] = None,
    team: TeamOption = None,
    cost_center: CostCenterOption = None,
    effective_at: Annotated[
        str | None,
        typer.Option(help="When a team/cost center change takes effect (RFC 3339; default now)."),
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Change an app; a change of team or cost center is dated by --effective-at."""
    body = drop_none(
        {
            "title": title,
            "owner": owner,
            "lifecycle": lifecycle,
            "environment": environment,
            "require_signatures": require_signatures,
            "team": team,
            "cost_center": cost_center,
            "effective_at": effective_at,
        }
    )
    if not body:
        fail("nothing to change: pass at least one option")
    updated = request("PATCH", f"/v1/apps/{segment(app_id)}", json=body, url=url, api_key=api_key)
    _print_app(updated)
    if updated.get("rated_usage_note"):
        out().print("back-dated: " + updated["rated_usage_note"], style="yellow", markup=False)


@app_key_app.command("create")
def app_key_create(
    app_id: Annotated[str, typer.Argument(help="The app's slug.")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Create a signing key; its secret (hex) is printed once."""
    created = request("POST", f"/v1/apps/{segment(app_id)}/signing-keys", url=url, api_key=api_key)
    err().print(f"created signing key {created['key_id']} for app {created['app_id']}")
    print_secret("The signing secret", created["secret"])


@app_key_app.command("list")
def app_key_list(
    app_id: Annotated[str, typer.Argument(help="The app's slug.")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """List an app's signing keys (never their secrets)."""
    rows = request("GET", f"/v1/apps/{segment(app_id)}/signing-keys", url=url, api_key=api_key)
    columns = ("key_id", "status", "created_at", "retired_at")
    print_table(columns, rows, title=f"signing keys of {app_id}")


@app_key_app.command("retire")
def app_key_retire(
    app_id: Annotated[str, typer.Argument(help="The app's slug.")],
    key_id: Annotated[str, typer.Argument(help="Signing key id.")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Retire a signing key: events signed with it are refused from now on."""
    path = f"/v1/apps/{segment(app_id)}/signing-keys/{segment(key_id)}"
    retired = request("DELETE", path, url=url, api_key=api_key)
    out().print(f"retired signing key {retired['key_id']} at {cell_text(retired['retired_at'])}")


@resource_app.command("create")
def resource_create(
    resource_id: Annotated[str, typer.Argument(help="The resource's id as events name it.")],
    app: Annotated[str, typer.Option("--app", help="The app it belongs to.")],
    valid_from: Annotated[str | None, typer.Option(help="RFC 3339; default now.")] = None,
    valid_to: Annotated[str | None, typer.Option(help="RFC 3339, exclusive; default open.")] = None,
    environment: Annotated[str | None, typer.Option(help="Default: the app's.")] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Bind a resource to an app over [valid_from, valid_to)."""
    body = drop_none(
        {
            "resource_id": resource_id,
            "app_id": app,
            "valid_from": valid_from,
            "valid_to": valid_to,
            "environment": environment,
        }
    )
    span = request("POST", "/v1/resources", json=body, url=url, api_key=api_key)
    # The interval in UTC as `qm resource list` shows it: the server answers it with the
    # offset it was sent with (`2026-11-01T00:00:00+01:00`), which cell_text keeps.
    until = utc_moment(span["valid_to"]) if span["valid_to"] else "open"
    out().print(
        f"bound {span['resource_id']} to {span['app_id']} over "
        f"[{utc_moment(span['valid_from'])}, {until})",
        markup=False,
    )


@resource_app.command("end")
def resource_end(
    resource_id: Annotated[str, typer.Argument(help="The resource whose binding ends.")],
    at: Annotated[
        str | None,
        typer.Option(
            help="RFC 3339, no sooner than now plus the server's accepted future skew of event "
            "times (QM_MAX_FUTURE_SKEW_SECONDS, default 300 s); default that soonest moment."
        ),
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """End a resource's binding to its app (then `qm resource create` binds it to another)."""
    body = drop_none({"resource_id": resource_id, "at": at})
    span = request("POST", "/v1/resources/end", json=body, url=url, api_key=api_key)
    out().print(
        f"{span['resource_id']} is bound to {span['app_id']} until {utc_moment(span['valid_to'])}"
        f" (from {utc_moment(span['valid_from'])})",
        markup=False,
    )
    if at is None:
        err().print(
            "(the soonest end: now plus the time ahead the server accepts event times, as "
            "events stamped up to then are already rated under this binding)",
            markup=False,
        )


@resource_app.command("list")
def resource_list(
    resource_id: Annotated[str | None, typer.Option(help="Only this resource.")] = None,
    app: Annotated[str | None, typer.Option("--app", help="Only this app's.")] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """List resource bindings."""
    params = drop_none({"resource_id": resource_id, "app_id": app})
    bindings = request("GET", "/v1/resources", params=params, url=url, api_key=api_key)
    # A resource over the app and environment it is bound to, and its validity from over
    # until: six columns, two of them 32-character ids, folded every value at 80 columns.
    table = data_table(("resource", "valid", "lease id"), title="resources", whole=("lease id",))
    for binding in bindings:
        until = cell_text(binding["valid_to"]) if binding["valid_to"] else "open"
        table.add_row(
            stacked(
                binding["resource_id"],
                f"{binding['app_id']}, {binding['environment']}",
                head_style="",
            ),
            plain(f"from {cell_text(binding['valid_from'])}\nuntil {until}"),
            plain(binding["lease_id"]),
        )
    show_table(table, empty="no resources")


@resource_app.command("lease")
def resource_lease(
    resource_id: Annotated[str, typer.Argument(help="The short-lived resource's id.")],
    app: Annotated[str, typer.Option("--app", help="The app it works for.")],
    ttl: Annotated[int, typer.Option(help="Lifetime in seconds (at most 7 days).")] = 3600,
    environment: Annotated[str | None, typer.Option(help="Default: the app's.")] = None,
    issued_at: Annotated[
        str | None, typer.Option(help="Back-date the start (RFC 3339); default now.")
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Lease a resource to an app; prints the signed lease token."""
    body = drop_none(
        {
            "resource_id": resource_id,
            "app_id": app,
            "ttl_seconds": ttl,
            "environment": environment,
            "issued_at": issued_at,
        }
    )
    lease = request("POST", "/v1/resource-leases", json=body, url=url, api_key=api_key)
    err().print(
        f"leased {lease['resource_id']} to {lease['app_id']} as {lease['lease_id']} "
        f"until {utc_moment(lease['expires_at'])}",
        markup=False,
    )
    out().print(lease["token"], soft_wrap=True, markup=False)


@resource_app.command("end-lease")
def resource_end_lease(
    lease_id: Annotated[str, typer.Argument(help="The lease id.")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """End a lease now: events stamped from now on are refused, but its resource stays bound
    to the app for the time ahead the server accepts event times (then it may be bound to
    another app)."""
    lease = request("DELETE", f"/v1/resource-leases/{segment(lease_id)}", url=url, api_key=api_key)
    out().print(f"lease {lease['lease_id']} ended at {cell_text(lease['ended_at'])}")
    bindings = request(
        "GET",
        "/v1/resources",
        params={"resource_id": lease["resource_id"]},
        url=url,
        api_key=api_key,
    )
    for binding in bindings:
        if binding["lease_id"] == lease["lease_id"] and binding["valid_to"]:
            out().print(
                f"{lease['resource_id']} stays bound to {lease['app_id']} until "
                f"{utc_moment(binding['valid_to'])} for events already accepted; it may be "
                "bound to another app from then",
                markup=False,
            )


app_app.command("import")(import_apps)
