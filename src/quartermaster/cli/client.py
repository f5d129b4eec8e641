"""The CLI's HTTP client: commands that touch a running server go through its API."""

from __future__ import annotations

import json
import os
import re
from collections.abc import Container, Iterable, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Annotated, Any, NoReturn
from urllib.parse import quote

import httpx
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from quartermaster.domain.timeutil import parse_timestamp
from quartermaster.errors import utf8_problem

DEFAULT_URL = "http://127.0.0.1:8080"

UrlOption = Annotated[
    str | None, typer.Option("--url", help="Server URL (default: QM_URL or 127.0.0.1:8080).")
]
ApiKeyOption = Annotated[
    str | None, typer.Option("--api-key", help="API key (default: QM_API_KEY).")
]


DEFAULT_TIMEOUT = 60.0


def request_timeout() -> float:
    """Seconds to wait for an answer: QM_TIMEOUT, else 60 (a month's bill run for thousands
    of apps can take longer)."""
    raw = os.environ.get("QM_TIMEOUT", "").strip()
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        seconds = float(raw)
    except ValueError:
        seconds = 0.0
    if not 0 < seconds < float("inf"):
        raise typer.BadParameter(f"QM_TIMEOUT={raw!r}: expected a number of seconds above 0")
    return seconds


def api_client(
    *, url: str | None = None, api_key: str | None = None, timeout: float | None = None
) -> httpx.Client:
    """Reads QM_URL, QM_API_KEY and QM_TIMEOUT unless given; refuses to run without a key."""
    timeout = request_timeout() if timeout is None else timeout
    base = server_url(url)
    key = api_key or os.environ.get("QM_API_KEY")
    if not key:
        raise typer.BadParameter("no API key: set QM_API_KEY or pass --api-key")
    return httpx.Client(base_url=base, headers={"Authorization": f"Bearer {key}"}, timeout=timeout)


def server_url(url: str | None = None) -> httpx.URL:
    """The server's base URL: `url` (--url), else QM_URL, else the default; `http://` when
    it names no scheme. One the CLI cannot send to ends the command naming where it came
    from and what is wrong: httpx's InvalidURL was a traceback from every client command,
    and a scheme, host or query it cannot use sent the request elsewhere or nowhere."""
    source = "--url" if url else "QM_URL"
    given = url or os.environ.get("QM_URL", DEFAULT_URL)
    # `127.0.0.1:8080`, as the help writes the default
    text = given if "://" in given else f"http://{given}"
    problem = _server_url_problem(text)
    if problem is None:
        return httpx.URL(text)
    ipv6 = " (an IPv6 address in brackets: http://[::1]:8080)" if "[" in given else ""
    fail(f"{source}={given!r} {problem}: write it as http://HOST:PORT{ipv6}")


def _server_url_problem(text: str) -> str | None:
    try:
        parsed = httpx.URL(text)
    except httpx.InvalidURL as exc:
        return f"is not a valid URL ({exc})"
    if parsed.scheme not in ("http", "https"):
        return f"has the scheme {parsed.scheme!r}; the server speaks http or https"
    if not parsed.host:
        return "names no host"
    if parsed.port is not None and parsed.port > 65535:
        return f"names the port {parsed.port}, above 65535"
    if parsed.query or parsed.fragment:
        # the routes would be added after them, and sent to another path
        return "has a query or a fragment, which a server URL cannot have"
    if parsed.path.rstrip("/").endswith("/v1"):
        # every route would be /v1/v1/…: a bare "error 404: Not Found" from every command
        return "ends with /v1, which the CLI adds to each route itself"
    return None


def check(response: httpx.Response, *, console: Console | None = None) -> Any:
    """Return the JSON body of a 2xx; otherwise print the API's error message and exit 1."""
    if response.is_success:
        return response.json() if response.content else None
    (console or err()).print(
        f"[red]error {response.status_code}:[/] {escape(error_message(response))}"
    )
    raise typer.Exit(1)


def error_message(response: httpx.Response) -> str:
    """The API's error message (its error model), else the body as it came."""
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text


def fail(message: str, *, status: int = 1) -> NoReturn:
    """End the command: `error: <message>` on stderr, shown as it is, and exit `status`.
    SystemExit rather than typer.Exit, so that it also ends `qm` outside a command."""
    err().print(f"[red]error:[/] {escape(message)}")
    raise SystemExit(status)


def utf8_text(data: bytes, *, source: str, hint: str = "") -> str:
    """`data` decoded, or the command ends naming `source` and its first byte that is not
    UTF-8, then `hint`: a file an editor saved as UTF-16 or Latin-1 is a one-line error, not
    a traceback."""
    problem = utf8_problem(data)
    if problem is not None:
        fail(f"{source} is {problem}{hint}")
    return data.decode()


def read_utf8(path: Path) -> str:
    """A text file the command reads (a policy, an input document, a price book), without
    the byte-order mark some editors write."""
    text = utf8_text(path.read_bytes(), source=str(path), hint=": save it as UTF-8")
    return text.removeprefix("\ufeff")


class LineConsole(Console):
    """A Console whose lines of text (a message, an error, a retry) are not wrapped when it
    writes to a file or a pipe: Rich wrapped them at 80 columns there, so `grep retry` in a
    log found half of each message. On a terminal they wrap at its width, as before. Other
    renderables (tables) keep the console's width either way."""

    def print(self, *objects: Any, soft_wrap: bool | None = None, **options: Any) -> None:
        if soft_wrap is None and not self.is_terminal:
            soft_wrap = all(isinstance(item, str | Text) for item in objects) or None
        super().print(*objects, soft_wrap=soft_wrap, **options)


def out() -> Console:
    return LineConsole(highlight=False)


def err() -> Console:
    return LineConsole(stderr=True, highlight=False)


def request(method: str, path: str, *, url: str | None, api_key: str | None, **kwargs: Any) -> Any:
    """One API call; a non-2xx prints the API's error message and exits 1."""
    _check_route(path)
    with api_client(url=url, api_key=api_key) as client:
        return check(client.request(method, path, **kwargs), console=err())


def segment(value: object, *, what: str = "id") -> str:
    """`value` as one path segment of an API route, quoted: an id typed as `../../keys/<id>`
    put into `f"/v1/billing/runs/{run_id}"` as it came made httpx resolve the dot segments
    and the command act on another resource (`DELETE /v1/keys/<id>`), and a `?` or `#`
    cut the route short. `.`, `..` and '' name no resource and are refused here."""
    text = str(value)
    if text in ("", ".", ".."):
        fail(f"{what} {text!r} is not valid")
    return quote(text, safe="")


def secret_route(path: str) -> str:
    """A secret path (`apps/shop/db/password`) as route segments, each quoted: a `..`
    segment would make httpx resolve it and the command read, write or destroy another
    secret than the one named. Empty, `.` and `..` segments are refused, naming the path."""
    segments = path.strip().strip("/").split("/")
    if any(part in ("", ".", "..") for part in segments):
        fail(f"secret path {path!r}: empty, '.' and '..' segments are not allowed")
    return "/".join(quote(part, safe="") for part in segments)


def _check_route(path: str) -> None:
    """The last guard before a request: a route with a dot segment left in it by a caller
    that did not quote an id would be resolved by httpx to another route."""
    route = path.split("?", 1)[0]
    if any(part in (".", "..") for part in route.split("/")):
        fail(f"refusing to send {route!r}: '.' and '..' are not valid in an id or a path")


def drop_none(values: dict[str, Any]) -> dict[str, Any]:
    return {key: value for key, value in values.items() if value is not None}


def plain(value: object) -> Text:
    """A value as a table cell, shown as it is: Rich reads `[...]` in a string cell as markup,
    so a title such as "Ops [beta]" lost its tag and an id such as "x[/y]" stopped the
    command with a markup error. A value too long for its column folds onto the next line
    instead of being cut at an ellipsis: an id or an amount is shown whole or not at all.
    Timestamps and booleans read as `cell_text` writes them; a `Text` (a cell built by the
    command, such as a `stacked` one) is kept as it is."""
    if isinstance(value, Text):
        return value
    return Text(cell_text(value), overflow="fold")


# The API's UTC timestamps, as pydantic writes them: 2026-12-03T11:40:15.663787Z.
_UTC_TIMESTAMP = re.compile(r"(\d{4}-\d{2}-\d{2})T(\d{2}:\d{2}:\d{2})(?:\.(\d+))?(?:Z|\+00:00)")


# Ids as the tables print them: like git's short hashes, the API takes any unique prefix of 8
# characters or more (storage/ids.py), and a whole id folded over two or three lines of an
# 80-column table, which a copy and paste then broke.
SHORT_ID = 12


def short_id(value: str) -> str:
    return value[:SHORT_ID]


def cell_text(value: object) -> str:
    """A value as a table shows it. A UTC timestamp loses its fraction of a second and its
    `T` (`2026-12-03 11:40:15Z`, still RFC 3339, so it can be pasted back as an option):
    the API's 27 characters made a table of five of them fold each one over two lines at
    100 columns. True and False read as yes and no."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, datetime):
        value = value.isoformat().replace("+00:00", "Z")
    if isinstance(value, str) and (stamp := _UTC_TIMESTAMP.fullmatch(value)):
        return f"{stamp[1]} {stamp[2]}Z"
    return str(value)


def moment_text(value: object) -> str:
    """A moment that bounds something (an effective_from, a period's end) as the tables write
    moments, with its fraction of a second when it has one (`2026-05-15 12:00:00.5Z`):
    cell_text's `12:00:00Z` named another instant than the one in force."""
    text = value.isoformat() if isinstance(value, datetime) else value
    if isinstance(text, str) and (stamp := _UTC_TIMESTAMP.fullmatch(text)) and stamp[3]:
        fraction = stamp[3].rstrip("0")
        if fraction:
            return f"{stamp[1]} {stamp[2]}.{fraction}Z"
    return cell_text(value)


def utc_moment(value: object) -> str:
    """A moment the API answered with the sender's offset (`2026-11-01T00:00:00+01:00`, as a
    request gave it) in UTC as the tables write moments (`2026-10-31 23:00:00Z`); anything
    that is not an RFC 3339 moment as cell_text shows it."""
    if isinstance(value, str):
        try:
            return moment_text(parse_timestamp(value))
        except ValueError:
            return cell_text(value)
    if isinstance(value, datetime) and value.tzinfo is not None:
        return moment_text(value.astimezone(UTC))
    return cell_text(value)


def hour_cell(hour: str) -> str:
    """An hour of an hourly table (`2026-12-05 03:00:00Z`) as the tables write moments, so
    that it can be pasted back as `--start`: hour_text's `2026-12-05 03:00` has no seconds
    and no offset, which the API refuses (422)."""
    return utc_moment(hour)


def counted(count: int, noun: str) -> str:
    """'1 line', '3,439 lines'."""
    return f"{count:,} {noun}" if count == 1 else f"{count:,} {noun}s"


def hour_text(hour: str) -> str:
    """'2026-10-11 10:00' for an hour as the API writes it ('2026-10-11T10:00:00Z' or
    '…+00:00'): sixteen characters, so that an hourly table of counts keeps each hour on one
    line at 80 columns."""
    return datetime.fromisoformat(hour).astimezone(UTC).strftime("%Y-%m-%d %H:%M")


def hour_names(hours: Sequence[str]) -> str:
    """'2026-11-01 01:00, 2026-11-01 02:00, 2026-11-01 03:00 and 2 more' for hours as the API
    writes them: the first three named, the rest counted."""
    names = ", ".join(hour_text(hour) for hour in hours[:3])
    return names + (f" and {len(hours) - 3} more" if len(hours) > 3 else "")


def team_or_app(team: str | None, app_id: str | None) -> str:
    """Whose a row is: 'app shop' (an app wins over its team), 'team web', or '' for neither."""
    if app_id:
        return f"app {app_id}"
    return f"team {team}" if team else ""


def grouped(number: object) -> str:
    """'458,145.261' for '458145.261': a decimal's digits as the API sent them (no rounding,
    no float), grouped in thousands; one in exponent notation ('1E-7', as Python writes some
    Decimals) in plain notation."""
    text = str(number)
    if "e" in text.lower():
        text = format(Decimal(text), "f")
    whole, dot, fraction = text.partition(".")
    sign = "-" if whole.startswith("-") else ""
    return f"{sign}{int(whole.lstrip('-') or 0):,}{dot}{fraction}"


def stacked(head: object, body: object, *, head_style: str = "bold", body_style: str = "") -> Text:
    """One cell of two parts, `head` over `body` (an alert's title over its message): one
    wide column reads better than two narrow ones that each fold into a dozen lines. A dim
    body keeps a row of two lines from reading as two rows."""
    return Text.assemble(
        (cell_text(head), head_style), "\n", (cell_text(body), body_style), overflow="fold"
    )


def data_table(
    columns: Sequence[str],
    *,
    title: str,
    right: Container[str] = (),
    whole: Container[str] = (),
) -> Table:
    """A table of API data that never hides any: a header or value too long for its column
    folds onto the next line instead of ending at an ellipsis. Columns in `whole` (ids,
    numbers) are never wrapped, so the text columns fold around them; those in `right` are
    right-justified. A column named after an API field (`created_at`) is headed in words
    (`created at`)."""
    table = Table(title=title)
    for name in columns:
        table.add_column(
            # An API field's name reads as words, and a header too long for its column then
            # wraps at a space (`principal` over `name`) instead of folding (`principa|l_name`).
            name.replace("_", " "),
            justify="right" if name in right else "left",
            no_wrap=name in whole,
            overflow="fold",
        )
    return table


def print_table(
    columns: Sequence[str],
    rows: Iterable[dict[str, Any]],
    *,
    title: str,
    empty: str | None = None,
    whole: Container[str] = (),
) -> None:
    """Rows as a table, or `empty` (default "no <title>") when there are none: an empty frame
    reads as a rendering fault. Columns fold unless named in `whole` (a name a reader
    copies, short enough to keep): keeping a 32-character id on one line left the other
    columns of an 80-column table a few letters each, or none when there were two."""
    table = data_table(columns, title=title, whole=whole)
    for row in rows:
        table.add_row(*(plain(row.get(c)) for c in columns))
    show_table(table, empty=empty or f"no {title}")


# For scripts: a list or report command prints the API's answer instead of its table.
JsonOption = Annotated[
    bool,
    typer.Option(
        "--json", help="Print the API's answer as JSON (its fields as documented) for scripts."
    ),
]


def print_json(data: Any) -> None:
    """`data` (an API answer) as JSON on stdout, never wrapped, for jq and scripts."""
    out().print_json(json.dumps(data))


def show_table(table: Table, *, empty: str) -> None:
    """The table, or `empty` in its place when it has no rows."""
    out().print(table if table.row_count else Text(empty, style="dim"))


def print_fields(record: dict[str, Any], names: Sequence[str] | None = None) -> None:
    """A record as `name: value` lines (all its fields, or `names` in that order), values as
    the tables show them: one record reads better so than as a table or as JSON."""
    console = out()
    for name in names if names is not None else list(record):
        console.print(f"[bold]{escape(name)}[/]: {escape(cell_text(record[name]))}")


def print_secret(label: str, secret: str) -> None:
    """The secret alone on stdout (so it can be redirected); the warning on stderr."""
    err().print(f"[yellow]{label} is shown once: store it now, it cannot be retrieved again.[/]")
    out().print(secret, soft_wrap=True, markup=False)
