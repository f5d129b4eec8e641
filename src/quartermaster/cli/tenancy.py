"""`qm team|cost-center|principal|key`: the tenancy API over HTTP (QM_URL, QM_API_KEY)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Any

import typer
from rich.markup import escape

from quartermaster.cli.client import (
    ApiKeyOption,
    UrlOption,
    api_client,
    cell_text,
    counted,
    data_table,
    drop_none,
    err,
    out,
    plain,
    print_secret,
    print_table,
    request,
    segment,
    show_table,
    stacked,
    team_or_app,
)

team_app = typer.Typer(help="Teams of the tenant.", no_args_is_help=True)
cost_center_app = typer.Typer(help="Cost centers (who pays).", no_args_is_help=True)
principal_app = typer.Typer(
    help="Users and service accounts, with roles. A team-member creates app principals "
    "(--role app) of its own team's apps only.",
    no_args_is_help=True,
)
key_app = typer.Typer(
    help="API keys: create (shown once), list, revoke. A team-member manages the keys of its "
    "own team's apps' app principals only (docs/tenancy.md, 'Giving an app its own key').",
    no_args_is_help=True,
)


@team_app.command("create")
def team_create(
    slug: Annotated[str, typer.Argument(help="Team slug, e.g. data-science.")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    cost_center: Annotated[
        str | None, typer.Option(help="Default cost center for the team's apps.")
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Create a team.

    Example:

      qm team create data-science --name "Data science" --cost-center research
    """
    body = drop_none({"slug": slug, "name": name, "cost_center": cost_center})
    team = request("POST", "/v1/teams", json=body, url=url, api_key=api_key)
    default = f" (default cost center {team['cost_center']})" if team["cost_center"] else ""
    out().print(f"created team {team['slug']}{default}")


@team_app.command("list")
def team_list(url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """List teams."""
    teams = request("GET", "/v1/teams", url=url, api_key=api_key)
    print_table(("slug", "name", "cost_center", "created_at"), teams, title="teams")


@cost_center_app.command("create")
def cost_center_create(
    slug: Annotated[str, typer.Argument(help="Cost center slug, e.g. marketing.")],
    name: Annotated[str | None, typer.Option(help="Display name.")] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Create a cost center.

    Example:

      qm cost-center create marketing --name "Marketing"
    """
    body = drop_none({"slug": slug, "name": name})
    created = request("POST", "/v1/cost-centers", json=body, url=url, api_key=api_key)
    out().print(f"created cost center {created['slug']}")


@cost_center_app.command("list")
def cost_center_list(url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """List cost centers."""
    rows = request("GET", "/v1/cost-centers", url=url, api_key=api_key)
    print_table(("slug", "name", "is_default", "created_at"), rows, title="cost centers")


@principal_app.command("create")
def principal_create(
    name: Annotated[
        str,
        typer.Argument(
            help="Unique name, e.g. an email or ci-bot (not 32 hex digits, an id's shape)."
        ),
    ],
    role: Annotated[str, typer.Option(help="admin | finance | team-member | app.")],
    kind: Annotated[str, typer.Option(help="user | service-account.")] = "user",
    team: Annotated[str | None, typer.Option(help="Team slug (role team-member).")] = None,
    app: Annotated[str | None, typer.Option("--app", help="App id (role app).")] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Create a user or service account.

    An admin creates any principal. A team-member creates only an app principal of one of its
    own team's apps: `qm principal create shop-bot --role app --app shop --kind
    service-account`, then `qm key create shop-bot` gives the app a key of its own.

    Examples:

      qm principal create ann@example.com --role finance
      qm principal create web-lead@example.com --role team-member --team web
      qm principal create shop-bot --role app --app shop --kind service-account
    """
    body = drop_none({"name": name, "role": role, "kind": kind, "team": team, "app_id": app})
    created = request("POST", "/v1/principals", json=body, url=url, api_key=api_key)
    out().print(  # one line however narrow the terminal: the id is copied from it
        f"created principal {escape(str(created['name']))} ({created['role']}) id {created['id']}",
        soft_wrap=True,
    )


@principal_app.command("list")
def principal_list(url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """List principals (a team-member: its team's apps' app principals only)."""
    principals = request("GET", "/v1/principals", url=url, api_key=api_key)
    # The name over the id, the role over the kind, and whose (a team-member's team, an app
    # key's app): six field columns split every id at 80 columns.
    table = data_table(("principal", "role", "of"), title="principals")
    for one in principals:
        table.add_row(
            stacked(one["name"], one["id"], head_style="", body_style="dim"),
            stacked(one["role"], one["kind"], head_style="", body_style="dim"),
            plain(team_or_app(one["team"], one["app_id"])),
        )
    show_table(table, empty="no principals")


@key_app.command("create")
def key_create(
    principal_id: Annotated[
        str, typer.Argument(help="The principal's name or id (qm principal list).")
    ],
    expires_at: Annotated[
        str | None,
        typer.Option(
            help="RFC 3339 instant with offset, e.g. 2030-01-01T00:00:00Z. Without it an "
            "admin's key never expires, and a team-member's key expires in 90 days, the "
            "latest it may ask for."
        ),
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Issue an API key for a principal; the token is printed once.

    A team-member issues keys only of its own team's apps' app principals (role app).

    Examples:

      qm key create shop-bot --expires-at 2027-03-01T00:00:00Z
      export QM_API_KEY=$(qm key create ann@example.com)
    """
    body = drop_none({"expires_at": expires_at})
    issued = request(
        "POST", f"/v1/principals/{segment(principal_id)}/keys", json=body, url=url, api_key=api_key
    )
    # In UTC, as `qm key list` shows it: an older server answers with the offset it was sent
    # (`2030-01-01T00:00:00+01:00`), which cell_text would show as it is.
    expires = issued["expires_at"]
    expiry = cell_text(datetime.fromisoformat(expires).astimezone(UTC)) if expires else "never"
    err().print(f"created key {issued['key_id']} (expires: {expiry})")
    print_secret("The API key", issued["token"])


@key_app.command("list")
def key_list(url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """List API keys (never their secrets): a team-member's, its team's apps' keys only."""
    keys = request("GET", "/v1/keys", url=url, api_key=api_key)
    # The status with its moment under it (expires, expired, revoked): three time columns,
    # mostly empty, folded the ids and dates at 80 columns.
    rows = [
        {
            "key_id": key["key_id"],
            "principal": key["principal_name"],
            "status": _key_status(key),
            "created_at": key["created_at"],
        }
        for key in keys
    ]
    print_table(("key_id", "principal", "status", "created_at"), rows, title="API keys")


def _key_status(key: dict[str, Any]) -> str:
    """'active', 'active, expires <time>', 'expired <time>' or 'revoked <time>'."""
    if key["revoked_at"]:
        return f"revoked {cell_text(key['revoked_at'])}"
    if not key["expires_at"]:
        return str(key["status"])
    when = cell_text(key["expires_at"])
    return f"active, expires {when}" if key["status"] == "active" else f"{key['status']} {when}"


@key_app.command("revoke")
def key_revoke(
    key_id: Annotated[str, typer.Argument(help="Key id (qm key list).")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Revoke an API key now (a team-member: a key of its team's apps' app principals).

    The secrets leases obtained with it, or with identity tokens it minted, end with it
    within seconds (the lease reaper); the command says how many."""
    revoked = request("DELETE", f"/v1/keys/{segment(key_id)}", url=url, api_key=api_key)
    out().print(f"revoked key {revoked['key_id']} at {cell_text(revoked['revoked_at'])}")
    ending = _live_leases_of(revoked["key_id"], url=url, api_key=api_key)
    if ending:
        out().print(
            f"{counted(ending, 'live lease')} obtained with it "
            f"{'ends' if ending == 1 else 'end'} within seconds (the lease reaper): "
            f"qm lease list --key {revoked['key_id']}"
        )


def _live_leases_of(key_id: str, *, url: str | None, api_key: str | None) -> int:
    """How many live leases the key's revocation ends, of those the caller may list (0
    when its role lists none)."""
    with api_client(url=url, api_key=api_key) as client:
        response = client.get("/v1/leases", params={"key_id": key_id, "limit": 5000})
    if response.status_code != 200:
        return 0
    return len(response.json()["leases"])
