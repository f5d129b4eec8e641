"""`qm app validate|publish|search|versions|deprecate|quarantine`, `qm policy …` and
`qm approvals …`.

`qm app validate DIR` runs offline by default: the manifest schema, data-scope, secret, PII
and bandit checks, exactly as the server runs them (usable in CI without a server). Policies
and the tenant's teams live on the server: `--server` sends the manifest and package to the
server's dry run instead, which adds what submitting checks (the app's team and cost center:
`references`) and every policy's verdict (nothing is stored). Exit status 1 when anything
blocks.

The app commands join the existing `qm app` group (cli/apps.py) when this module is imported,
which cli/main.py does through COMMAND_GROUPS."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from quartermaster.catalog.checks import (
    CheckResult,
    blocking_failures,
    check_package,
    run_checks,
    zip_directory,
)
from quartermaster.catalog.manifest import parse_manifest, read_manifest_file
from quartermaster.cli.apps import app_app
from quartermaster.cli.client import (
    ApiKeyOption,
    UrlOption,
    api_client,
    cell_text,
    check,
    counted,
    data_table,
    err,
    fail,
    out,
    plain,
    print_table,
    read_utf8,
    request,
    segment,
    short_id,
    show_table,
    stacked,
    team_or_app,
)
from quartermaster.errors import QMError

policy_app = typer.Typer(help="Rego policies, the decision log, exceptions.", no_args_is_help=True)
exception_app = typer.Typer(help="Time-limited policy exceptions.", no_args_is_help=True)
policy_app.add_typer(exception_app, name="exception")
approvals_app = typer.Typer(help="Approval requests of app versions.", no_args_is_help=True)

DirArgument = Annotated[Path, typer.Argument(help="App directory with qm-app.json or .yaml.")]
ICON = {"pass": "[green]pass[/]", "fail": "[red]FAIL[/]", "flag": "[yellow]flag[/]"}


def _load_dir(directory: Path) -> Any:
    if not directory.is_dir():
        fail(f"{directory} is not a directory", status=2)
    try:
        return read_manifest_file(directory)
    except QMError as exc:
        fail(exc.message)


def _print_checks(checks: list[dict[str, Any]]) -> None:
    for item in checks:
        mark = ICON.get(item["outcome"], item["outcome"])
        out().print(f"{mark:>20}  {item['name']:<11} {escape(str(item['summary']))}")
        for finding in item["findings"][:20]:
            out().print(f"{'':>22}- {_finding_text(finding)}", markup=False)


def _finding_text(finding: dict[str, Any]) -> str:
    """One finding on a line: a field's as `field: message`, or the message alone when it
    names the field itself (`version 1.0.0 of 'lunchbot' exists …`, not `version version …`);
    a file's as `file:line kind text`."""
    if finding.get("field") and finding.get("message"):
        field, message = str(finding["field"]), str(finding["message"])
        return message if message.startswith(f"{field} ") else f"{field}: {message}"
    where = finding.get("field") or finding.get("where") or finding.get("file", "")
    line = f":{finding['line']}" if "line" in finding else ""
    what = finding.get("message") or finding.get("kind") or finding.get("type") or ""
    extra = finding.get("text", "")
    return f"{where}{line} {what} {extra}".strip()


@app_app.command("validate")
def app_validate(
    directory: DirArgument,
    server: Annotated[
        bool, typer.Option("--server", help="Also evaluate the tenant's policies on the server.")
    ] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Dry-run every publish check on an app directory; exit 1 if anything would block."""
    document = _load_dir(directory)
    if server:
        body = {
            "manifest": document,
            "package_zip_b64": base64.b64encode(zip_directory(directory)).decode(),
        }
        report = request("POST", "/v1/apps/validate", json=body, url=url, api_key=api_key)
        _print_checks(report["checks"])
        for reason in report["deny"]:
            out().print(f"[red]policy denies:[/] {escape(str(reason))}")
        for reason in report["require_approval"]:
            out().print(f"[yellow]needs approval:[/] {escape(str(reason))}")
        for reason in report["audit_only"]:
            out().print(f"[dim]{escape(str(reason))}[/]")
        ok = bool(report["ok"])
    else:
        manifest, errors = parse_manifest(document)
        if manifest is None:
            schema = CheckResult(
                "schema",
                "fail",
                True,
                f"{len(errors)} field error(s)",
                [{"field": e.field, "message": e.message} for e in errors],
            )
            _print_checks([schema.as_dict()])
            raise typer.Exit(1)
        results = [*_package_result(directory), *run_checks(manifest, directory)]
        _print_checks([r.as_dict() for r in results])
        ok = not blocking_failures(results)
        out().print(
            "[dim]policies, team and cost center not checked offline: add --server to include"
            " them[/]"
        )
    out().print("[green]ok: would publish[/]" if ok else "[red]blocked: would not publish[/]")
    if not ok:
        raise typer.Exit(1)


def _package_result(directory: Path) -> list[CheckResult]:
    """The package `qm app publish` would upload, refused as the server would refuse it (too
    many files, too large unpacked): a blocking result, or none."""
    try:
        check_package(zip_directory(directory))
    except QMError as exc:
        finding = {"field": "package", "message": exc.message}
        return [CheckResult("package", "fail", True, "the server would refuse it", [finding])]
    return []


@app_app.command("publish")
def app_publish(
    directory: DirArgument,
    draft: Annotated[
        bool,
        typer.Option(
            help="Store as a draft without publishing; the same command without --draft, on "
            "the same files, publishes it (the server needs the package again)."
        ),
    ] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Submit the directory's manifest and package and publish it (checks, then policies)."""
    document = _load_dir(directory)
    app_id = document.get("app_id") if isinstance(document, dict) else None
    if not app_id:
        fail("the manifest has no app_id")
    body = {
        "manifest": document,
        "package_zip_b64": base64.b64encode(zip_directory(directory)).decode(),
        "publish": not draft,
    }
    version = request(
        "POST", f"/v1/apps/{segment(app_id)}/versions", json=body, url=url, api_key=api_key
    )
    _print_checks(version["checks"])
    reason = f": {version['state_reason']}" if version.get("state_reason") else ""
    out().print(f"{app_id}@{version['version']} is {version['state']}{reason}", markup=False)
    for objection in (version.get("decision") or {}).get("audit_only", []):
        # An audit-mode policy's objection: not enforced yet, told to the builder early.
        out().print(f"{objection} (audit mode: not enforced)", markup=False, style="yellow")
    if version["state"] in ("rejected", "quarantined"):
        raise typer.Exit(1)


@app_app.command("versions")
def app_versions(app_id: str, url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """List an app's versions and states."""
    rows = request("GET", f"/v1/apps/{segment(app_id)}/versions", url=url, api_key=api_key)
    columns = ("version", "state", "state_reason", "published_at")
    print_table(columns, rows, title=app_id, empty=f"no versions of {app_id}")


@app_app.command("search")
def app_search(
    query: Annotated[str, typer.Argument(help="Words to look for (prefixes match).")] = "",
    tag: Annotated[str | None, typer.Option(help="Only apps with this tag.")] = None,
    team: Annotated[str | None, typer.Option(help="Only this team's apps.")] = None,
    limit: Annotated[int, typer.Option(help="How many hits.")] = 10,
    explain: Annotated[bool, typer.Option(help="Show each score's components.")] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Search the published catalog."""
    params = {k: v for k, v in {"q": query, "tag": tag, "team": team}.items() if v is not None}
    result = request(
        "GET", "/v1/apps/search", params={**params, "limit": limit}, url=url, api_key=api_key
    )
    rows = [{**h, "score": f"{h['score']:.3f}"} for h in result["hits"]]
    print_table(
        ("app_id", "title", "team", "score"),
        rows,
        title=f"{result['total']} match(es)",
        # Registered apps are not searchable until published: say so, or a catalog of
        # hundreds of unpublished apps answers "no matches" to every word in their names.
        empty="no published app matches: search covers each app's latest published version"
        " (qm app publish); qm app list shows every registered app",
    )
    if explain and result["hits"]:
        out().print(_score_parts(result["hits"]))


def _score_parts(hits: list[dict[str, Any]]) -> Table:
    """Each hit's score as 0.70 text + 0.20 behaviour + 0.10 trust (docs/catalog.md), each part
    over the signals it came from."""
    table = data_table(
        ("app_id", "text", "behaviour", "trust"),
        title="score parts",
        right=("text", "behaviour", "trust"),
    )
    for hit in hits:
        parts = hit["components"]
        table.add_row(
            stacked(hit["app_id"], f"score {hit['score']:.3f}", head_style=""),
            stacked(f"{parts['text']:.3f}", f"relevance {parts['text_relevance']:.3g}"),
            stacked(
                f"{parts['behaviour']:.3f}",
                f"{parts['invocations_30d']:,.0f} calls 30d\n"
                f"{parts['invocations_7d']:,.0f} calls 7d\n"
                f"{parts['users_30d']:,.0f} users 30d",
            ),
            stacked(
                f"{parts['trust']:.3f}",
                f"owner {'verified' if parts['verified_owner'] else 'not verified'}\n"
                f"policies {'passed' if parts['policy_pass'] else 'objected'}\n"
                f"scanned {parts['scan_age_days']:,.1f} d ago",
            ),
        )
    return table


@app_app.command("deprecate")
def app_deprecate(
    app_id: str,
    version: str,
    reason: Annotated[str | None, typer.Option(help="Why.")] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Deprecate a published version (it leaves search)."""
    path = f"/v1/apps/{segment(app_id)}/versions/{segment(version)}/deprecate"
    done = request("POST", path, json={"reason": reason}, url=url, api_key=api_key)
    out().print(f"{app_id}@{version} is {done['state']}")


@app_app.command("quarantine")
def app_quarantine(
    app_id: str,
    version: str,
    reason: Annotated[str, typer.Option(help="Why (required).")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Quarantine a version from any state (admin)."""
    path = f"/v1/apps/{segment(app_id)}/versions/{segment(version)}/quarantine"
    done = request("POST", path, json={"reason": reason}, url=url, api_key=api_key)
    out().print(f"{app_id}@{version} is {done['state']}: {done['state_reason']}", markup=False)


# --- policies --------------------------------------------------------------------------------


@policy_app.command("upload")
def policy_upload(
    name: str,
    file: Annotated[
        Path, typer.Argument(exists=True, dir_okay=False, readable=True, help="A .rego file.")
    ],
    audit: Annotated[
        bool,
        typer.Option(
            help="Audit mode: log decisions, never block (beside an enforced version in "
            "force: a trial, the enforced version goes on deciding)."
        ),
    ] = False,
    disabled: Annotated[
        bool,
        typer.Option(
            "--disabled",
            help="Store it as a draft: the versions in force go on deciding until "
            "qm policy enable NAME.",
        ),
    ] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Upload a policy as its next version (refused with the parser's message if it is bad).

    The same source in the same mode as the latest version stores nothing: that version is
    answered again. The answer says which versions are in force."""
    body = {
        "name": name,
        "source": read_utf8(file),
        "mode": "audit" if audit else "enforce",
        "enabled": not disabled,
    }
    stored = request("POST", "/v1/policies", json=body, url=url, api_key=api_key)
    _print_policy(stored)


def _print_policy(stored: dict[str, Any]) -> None:
    state = ", draft" if stored.get("draft") else "" if stored["enabled"] else ", disabled"
    out().print(
        f"policy {escape(str(stored['name']))} v{stored['version']} ({stored['mode']}{state});"
        f" in force: {_in_force_text(stored)}"
    )


def _in_force_text(stored: dict[str, Any]) -> str:
    """`v1 (enforce), v3 (audit)`, or `none (disabled)`."""
    versions = stored.get("in_force", [])
    return ", ".join(f"v{v['version']} ({v['mode']})" for v in versions) or "none (disabled)"


@policy_app.command("disable")
def policy_disable(
    name: Annotated[str, typer.Argument(help="Policy name (qm policy list).")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Stop evaluating a policy (its latest version again, disabled, as the next version)."""
    _print_policy(
        request("POST", f"/v1/policies/{segment(name)}/disable", url=url, api_key=api_key)
    )


@policy_app.command("enable")
def policy_enable(
    name: Annotated[str, typer.Argument(help="Policy name (qm policy list).")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Evaluate a disabled policy again (its latest version again, enabled, as the next one)."""
    _print_policy(request("POST", f"/v1/policies/{segment(name)}/enable", url=url, api_key=api_key))


@policy_app.command("list")
def policy_list(url: UrlOption = None, api_key: ApiKeyOption = None) -> None:
    """The latest version of each policy, and the versions in force."""
    rows = request("GET", "/v1/policies", url=url, api_key=api_key)
    # Three columns of two lines (the name over its package, the latest version over the
    # versions in force, when over by whom): the API's seven fields as columns folded every
    # one of them, the package and the moment into three or four pieces, at 80 columns.
    table = data_table(
        ("policy", "latest / in force", "created"), title="policies", whole=("created",)
    )
    for row in rows:
        state = "draft" if row.get("draft") else "enabled" if row["enabled"] else "disabled"
        table.add_row(
            stacked(row["name"], row["package"]),
            stacked(
                f"v{row['version']} {row['mode']} ({state})",
                f"in force: {_in_force_text(row)}",
                head_style="",
            ),
            stacked(row["created_at"], f"by {row['created_by']}", head_style=""),
        )
    show_table(table, empty="no policies")


@policy_app.command("versions")
def policy_versions(
    name: Annotated[str, typer.Argument(help="Policy name (qm policy list).")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """A policy's versions, newest first: in force, draft, off or superseded."""
    rows = request("GET", f"/v1/policies/{segment(name)}/versions", url=url, api_key=api_key)
    print_table(
        ("version", "state", "mode", "package", "created_by", "created_at"),
        rows,
        title=f"policy {name}",
    )


@policy_app.command("rollback")
def policy_rollback(
    name: Annotated[str, typer.Argument(help="Policy name (qm policy list).")],
    to: Annotated[int, typer.Option("--to", help="The version to go back to.")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Upload version N's source and mode again as the policy's next version, enabled."""
    path = f"/v1/policies/{segment(name)}/rollback"
    _print_policy(request("POST", path, json={"to": to}, url=url, api_key=api_key))


# A verdict's rule sets, in the order their results take precedence, and how each shows.
_RULE_STYLES = {
    "quarantine": "bold red",
    "deny": "bold red",
    "require_approval": "yellow",
    "warn": "yellow",
}


@policy_app.command("test")
def policy_test(
    policy: Annotated[
        str,
        typer.Argument(
            help="A .rego file to try, or the name of a stored policy (its latest version).",
            metavar="FILE|NAME",
        ),
    ],
    input_file: Annotated[
        Path,
        typer.Option(
            "--input", exists=True, dir_okay=False, readable=True, help="JSON input document."
        ),
    ],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Evaluate a policy file, or a stored policy, against an input on the server (nothing
    stored); exit 1 on deny.

    A stored policy is checked as upload checks a new one: one stored before a check was
    added shows what upload would now refuse in it."""
    try:
        document = json.loads(read_utf8(input_file))
    except json.JSONDecodeError as exc:
        fail(f"{input_file} is not JSON: {exc}")
    file = Path(policy)
    if file.is_file():
        body: dict[str, Any] = {"source": read_utf8(file), "input": document}
        label = file.name
    elif file.suffix == ".rego" or "/" in policy:
        fail(f"no policy file {policy}")
    else:
        body, label = {"name": policy, "input": document}, policy
    verdict = request("POST", "/v1/policies/test", json=body, url=url, api_key=api_key)
    table = data_table(("rule", "message"), title=f"{label} on {input_file.name}")
    for rule, style in _RULE_STYLES.items():
        for message in verdict[rule]:
            table.add_row(Text(rule, style=style), message)
    show_table(table, empty="no rule fired")
    result = verdict["result"]
    out().print(Text.assemble("result: ", (result, _RULE_STYLES.get(result, "green"))))
    if result in ("deny", "quarantine"):
        raise typer.Exit(1)


# Decisions per request with --all (the API's largest page).
DECISIONS_PAGE = 1000


@policy_app.command("decisions")
def policy_decisions(
    subject: Annotated[str | None, typer.Option(help="e.g. where2eat@1.0.0")] = None,
    app_id: Annotated[
        str | None, typer.Option("--app", help="Only decisions about this app's versions.")
    ] = None,
    result: Annotated[
        str | None,
        typer.Option(help="allow | deny | require_approval | quarantine | error"),
    ] = None,
    policy: Annotated[
        str | None, typer.Option("--policy", help="Only decisions by this policy.")
    ] = None,
    point: Annotated[str | None, typer.Option(help="publish | admission")] = None,
    limit: Annotated[int, typer.Option(help="At most this many, newest first.")] = 100,
    after: Annotated[
        str | None, typer.Option(help="Decisions after this one (the previous page's footer).")
    ] = None,
    every: Annotated[
        bool, typer.Option("--all", help="Every decision, page by page (ignores --limit).")
    ] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """The decision log (newest first); the footer says how to read the next page."""
    filters = {
        "subject": subject,
        "app": app_id,
        "result": result,
        "policy": policy,
        "point": point,
    }
    params: dict[str, Any] = {key: value for key, value in filters.items() if value}
    params["limit"] = DECISIONS_PAGE if every else limit
    if after:
        params["after"] = after
    decisions: list[dict[str, Any]] = []
    with api_client(url=url, api_key=api_key) as client:
        while True:
            response = client.get("/v1/policy-decisions", params=params)
            decisions.extend(check(response, console=err()))
            cursor = response.headers.get("X-Next-After")
            if cursor is None or not every:
                break
            params["after"] = cursor
    table = data_table(("decided", "subject", "result"), title="decisions")
    for decision in decisions:
        by = f"by {decision['policy_name']} v{decision['policy_version']} ({decision['mode']})"
        if decision.get("caller_name"):
            by += f"\nfor {decision['caller_name']}"
        table.add_row(
            stacked(decision["decided_at"], by, head_style=""),
            stacked(decision["subject"], f"at {decision['point']}", head_style=""),
            _result_cell(decision),
        )
    show_table(table, empty="no decisions")
    if cursor is not None:
        same = "".join(
            f" --{name} {params[name]}"
            for name in ("subject", "result", "policy", "point")
            if name in params
        )
        same += f" --app {app_id}" if app_id else ""
        out().print(f"more: qm policy decisions{same} --after {cursor} (or --all)", markup=False)


def _result_cell(decision: dict[str, Any]) -> Text:
    """The result over the policy's reasons: why a deny is a deny is what a reader of the log
    looks for, and six field columns had left no room to say it at 80 columns."""
    style = "bold red" if decision["result"] == "deny" else "green"
    cell = Text(decision["result"], style=style, overflow="fold")
    if not decision["enforced"]:
        cell.append(" (not enforced)")
    for reason in decision["reasons"]:
        cell.append(f"\n{reason}")
    return cell


# Apps per audit request by default: a page is a bounded piece of work on the server.
AUDIT_PAGE = 200
_AUDIT_STYLES = {**_RULE_STYLES, "error": "bold magenta", "allow": "green"}


@policy_app.command("audit")
def policy_audit(
    page_size: Annotated[
        int, typer.Option(min=1, max=1000, help="Apps per request (the server's page).")
    ] = AUDIT_PAGE,
    no_fail: Annotated[
        bool, typer.Option("--no-fail", help="Exit 0 even when there are violations or errors.")
    ] = False,
    all_apps: Annotated[
        bool, typer.Option("--all-apps", help="List every app, allowed ones too.")
    ] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Check every app's published version against the policies enabled now (admin).

    Nothing is changed. Lists the apps a publish would now refuse, hold or quarantine, those
    a policy fails on, those with an exception in force and what audit-mode policies object
    to, then the totals. Exit 1 when there are violations or errors (like conftest), 0 with
    --no-fail."""
    params: dict[str, Any] = {"limit": page_size}
    apps: list[dict[str, Any]] = []
    totals: dict[str, int] = {}
    policies: list[str] | None = None
    progress = Progress(
        TextColumn("auditing apps"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err(),
        transient=True,
    )
    with api_client(url=url, api_key=api_key) as client, progress:
        task = progress.add_task("apps", total=None)
        while True:
            page = check(client.post("/v1/policies/audit", params=params), console=err())
            if policies is None:
                policies = page["policies"]
            elif page["policies"] != policies:
                err().print(
                    "[yellow]warning:[/] the policies changed during the audit: apps after "
                    f"{escape(str(params.get('after')))} were evaluated against "
                    f"{escape(', '.join(page['policies']) or 'none')}"
                )
                policies = page["policies"]
            apps += page["apps"]
            for name, count in page["totals"].items():
                totals[name] = totals.get(name, 0) + count
            progress.update(task, total=page["published_apps"], advance=len(page["apps"]))
            if page["next_after"] is None:
                break
            params["after"] = page["next_after"]
    if not policies:
        out().print("no enabled publish policy: nothing to audit against", style="dim")
    shown = [a for a in apps if all_apps or _audit_objects(a)]
    table = data_table(("app", "result", "reasons"), title="policy audit")
    for app in shown:
        table.add_row(
            stacked(app["app_id"], f"{app['team']} @ {app['version']}", head_style=""),
            _audit_result_cell(app),
            _audit_reasons_cell(app),
        )
    show_table(table, empty="no violations" if apps else "no published apps")
    out().print(_audit_summary(totals, policies or []), markup=False)
    if not no_fail and (totals.get("violations", 0) or totals.get("error", 0)):
        raise typer.Exit(1)


def _audit_objects(app: dict[str, Any]) -> bool:
    """Whether an app belongs in the list: not allowed, excepted (what is waived is worth
    seeing), or an audit-mode policy objects."""
    return (
        app["result"] != "allow"
        or app["excepted"]
        or any(not f["enforced"] and f["result"] != "allow" for f in app["findings"])
    )


def _audit_result_cell(app: dict[str, Any]) -> Text:
    cell = Text(app["result"], style=_AUDIT_STYLES.get(app["result"], ""))
    if app["excepted"]:
        cell.append(f"\nexcepted: {', '.join(app['exceptions'])}", style="cyan")
    return cell


def _audit_reasons_cell(app: dict[str, Any]) -> Text:
    """The enforced reasons, then each audit-mode objection and warning, by policy."""
    cell = Text(overflow="fold")
    lines = list(app["reasons"])
    for finding in app["findings"]:
        enforced = finding["enforced"]
        for message in finding["messages"]:
            if enforced and message in app["reasons"]:
                continue
            label = "" if enforced else "[audit] "
            lines.append(f"{label}{finding['policy']} v{finding['version']}: {message}")
    cell.append("\n".join(lines))
    return cell


def _audit_summary(totals: dict[str, int], policies: list[str]) -> str:
    get = totals.get
    return (
        f"{counted(get('apps', 0), 'app')} audited against {len(policies)} "
        f"{'policy' if len(policies) == 1 else 'policies'}"
        f"{' (' + ', '.join(policies) + ')' if policies else ''}: "
        f"{get('allow', 0):,} allowed, {counted(get('violations', 0), 'violation')} "
        f"({get('deny', 0):,} deny, {get('require_approval', 0):,} require_approval, "
        f"{get('quarantine', 0):,} quarantine), {counted(get('error', 0), 'error')}; "
        f"{get('excepted', 0):,} excepted, "
        f"{get('audit_only', 0):,} with audit-mode objections"
    )


@exception_app.command("grant")
def exception_grant(
    key: str,
    reason: Annotated[str, typer.Option(help="Why (required).")],
    days: Annotated[int, typer.Option(help="Lapses after this many days.")],
    team: Annotated[str | None, typer.Option(help="For this team's apps.")] = None,
    app_id: Annotated[str | None, typer.Option("--app", help="For one app.")] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Grant a time-limited exception (policies see its key in input.exceptions)."""
    body = {"key": key, "reason": reason, "days": days, "team": team, "app_id": app_id}
    made = request("POST", "/v1/policy-exceptions", json=body, url=url, api_key=api_key)
    out().print(f"exception {short_id(made['id'])} ({key}) until {cell_text(made['expires_at'])}")


@exception_app.command("list")
def exception_list(
    all_: Annotated[bool, typer.Option("--all", help="Include lapsed and revoked.")] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Exceptions in force (or all)."""
    params = {"include_lapsed": "true"} if all_ else {}
    found = request("GET", "/v1/policy-exceptions", params=params, url=url, api_key=api_key)
    # The key over the id, whom it is for, its state over its moment, and why: seven field
    # columns split every id and reason at 80 columns.
    table = data_table(("exception", "for", "state", "reason"), title="exceptions")
    for one in found:
        table.add_row(
            stacked(one["key"], short_id(one["id"])),
            plain(team_or_app(one["team"], one["app_id"]) or "the tenant"),
            plain(_exception_state(one)),
            stacked(one["reason"], f"granted by {one['granted_by']}", head_style=""),
        )
    show_table(table, empty="no exceptions in force" if not all_ else "no exceptions")


def _exception_state(one: dict[str, Any]) -> str:
    if one["revoked_at"]:
        return f"revoked\n{cell_text(one['revoked_at'])}"
    if one["active"]:
        return f"in force until\n{cell_text(one['expires_at'])}"
    return f"lapsed\n{cell_text(one['expires_at'])}"


@exception_app.command("revoke")
def exception_revoke(
    exception_id: Annotated[str, typer.Argument(help="Exception id (qm policy exception list).")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """End an exception before it lapses (admin); policies stop seeing its key at once."""
    revoked = request(
        "DELETE", f"/v1/policy-exceptions/{segment(exception_id)}", url=url, api_key=api_key
    )
    out().print(
        f"revoked exception {short_id(revoked['id'])} ({escape(revoked['key'])}) at "
        f"{cell_text(revoked['revoked_at'])}"
    )


# --- approvals -------------------------------------------------------------------------------


@approvals_app.command("list")
def approvals_list(
    status: Annotated[
        str | None, typer.Option(help="pending | approved | rejected | expired")
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Approval requests."""
    params = {"status": status} if status else {}
    found = request("GET", "/v1/approvals", params=params, url=url, api_key=api_key)
    # The id (for approve/reject) over the version it is for and where that version stands,
    # the status over when it expires (pending) or who decided it and when, and the policies'
    # reasons with the reviewer's comment: six field columns split ids and reasons at 80.
    table = data_table(("approval", "status", "reasons"), title="approvals")
    for one in found:
        if one["status"] == "pending":
            when = f"expires {cell_text(one['expires_at'])}"
        elif one.get("decided_at"):
            when = f"by {one['reviewer']} {cell_text(one['decided_at'])}"
        else:  # lapsed undecided
            when = f"at {cell_text(one['expires_at'])}"
        reasons = list(one["reasons"])
        if one.get("comment"):
            reasons.append(f"review: {one['comment']}")
        table.add_row(
            stacked(
                short_id(one["id"]),
                f"{one['app_id']}@{one['version']}\n{one['version_state']}",
                head_style="",
            ),
            stacked(one["status"], when, head_style=""),
            plain("\n".join(reasons)),
        )
    show_table(table, empty="no approvals")


def _review(approval_id: str, verb: str, comment: str, url: str | None, key: str | None) -> None:
    done = request(
        "POST",
        f"/v1/approvals/{segment(approval_id)}/{segment(verb)}",
        json={"comment": comment},
        url=url,
        api_key=key,
    )
    subject = f"{done['app_id']}@{done['version']}"
    reason = f": {done['version_state_reason']}" if done.get("version_state_reason") else ""
    out().print(
        f"approval {done['status']}; {subject} is {done['version_state']}{reason}", markup=False
    )
    if verb == "approve" and done["version_state"] != "published":
        raise typer.Exit(1)


@approvals_app.command("approve")
def approvals_approve(
    approval_id: str,
    comment: Annotated[str, typer.Option(help="Why (required).")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Approve: the policies run again with the approval; says how the version ended."""
    _review(approval_id, "approve", comment, url, api_key)


@approvals_app.command("reject")
def approvals_reject(
    approval_id: str,
    comment: Annotated[str, typer.Option(help="Why (required).")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Reject: the version is rejected with the comment as reason."""
    _review(approval_id, "reject", comment, url, api_key)
