"""`qm secret|lease|audit` over the HTTP API, `qm scan` locally, and `qm secret root-key` on
the local data dir."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Annotated, Any

import httpx
import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from quartermaster.cli.client import (
    ApiKeyOption,
    JsonOption,
    UrlOption,
    api_client,
    cell_text,
    check,
    data_table,
    err,
    error_message,
    fail,
    out,
    plain,
    print_json,
    print_table,
    request,
    secret_route,
    segment,
    show_table,
    utf8_text,
)

secret_app = typer.Typer(help="Versioned secrets in the broker.", no_args_is_help=True)
lease_app = typer.Typer(help="Leases on secret reads and credentials.", no_args_is_help=True)
audit_app = typer.Typer(help="The hash-chained audit log.", no_args_is_help=True)
root_key_app = typer.Typer(
    help="Root keys of the local data dir: rotate, rewrap, retire, status.", no_args_is_help=True
)
secret_app.add_typer(root_key_app, name="root-key")

# Leases per request when `qm lease list` pages through them.
LEASE_PAGE = 1000

PathArg = Annotated[str, typer.Argument(help="Secret path, e.g. apps/billing/db-password.")]
VersionsOption = Annotated[
    list[int] | None, typer.Option("--version", "-v", help="Version(s); default: the latest.")
]
DataDirOption = Annotated[
    Path | None, typer.Option("--data-dir", help="Data directory (default: QM_DATA_DIR or ./.qm).")
]


def _read_value(value: str | None, from_file: Path | None, *, what: str) -> str | None:
    """--value, --from-file, piped stdin, or a hidden prompt; None when nothing was given and
    there is no terminal to ask on."""
    if value is not None and from_file is not None:
        raise typer.BadParameter("give --value or --from-file, not both")
    if value is not None:
        return value
    if from_file is not None:
        return _utf8_text(from_file.read_bytes(), source=str(from_file)).rstrip("\n")
    if not sys.stdin.isatty():
        raw = sys.stdin.buffer.read() if hasattr(sys.stdin, "buffer") else sys.stdin.read()
        piped = raw if isinstance(raw, str) else _utf8_text(raw, source="stdin")
        return piped.rstrip("\n") or None
    return str(typer.prompt(what, hide_input=True))


def _utf8_text(data: bytes, *, source: str) -> str:
    """Secret values are text: `data` decoded, or the command ends saying so."""
    return utf8_text(
        data,
        source=source,
        hint=": secret values are text (UTF-8); store binary data encoded, e.g. "
        "`base64 -w0 FILE | qm secret put PATH`",
    )


@secret_app.command("put")
def secret_put(
    path: PathArg,
    value: Annotated[
        str | None, typer.Option(help="The value (visible in shell history: prefer stdin).")
    ] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, readable=True, help="Read the value from a file."
        ),
    ] = None,
    cas: Annotated[
        int | None, typer.Option(help="Write only if the current version is this (0: new).")
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Write a new version (value from --value, --from-file, stdin or a hidden prompt)."""
    secret = _read_value(value, from_file, what="value")
    if secret is None:
        raise typer.BadParameter("no value given (use --value, --from-file or stdin)")
    if not secret:
        given = "--value" if value is not None else (str(from_file) if from_file else "stdin")
        raise typer.BadParameter(f"the value from {given} is empty: a secret holds some text")
    body: dict[str, Any] = {"value": secret}
    if cas is not None:
        body["cas"] = cas
    written = request(
        "PUT", f"/v1/secrets/data/{secret_route(path)}", json=body, url=url, api_key=api_key
    )
    out().print(f"wrote {escape(str(path))} version {written['version']}")


@secret_app.command("get")
def secret_get(
    path: PathArg,
    version: Annotated[int | None, typer.Option(help="A version; default: the latest.")] = None,
    ttl: Annotated[int | None, typer.Option(help="Lease TTL in seconds.")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print value and lease as JSON.")] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Read a value under a new lease: the value alone on stdout, the lease on stderr."""
    params = {k: v for k, v in (("version", version), ("ttl_seconds", ttl)) if v is not None}
    got = request(
        "GET", f"/v1/secrets/data/{secret_route(path)}", params=params, url=url, api_key=api_key
    )
    if as_json:
        print_json(got)
        return
    lease = got["lease"]
    err().print(
        f"version {got['version']}, lease {lease['id']} (ttl {lease['ttl']}s, "
        f"max_ttl {lease['max_ttl']}s)"
    )
    sys.stdout.write(got["value"] + "\n")


@secret_app.command("list")
def secret_list(
    prefix: Annotated[str, typer.Argument(help="Path prefix, e.g. apps/billing/.")] = "",
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Paths and version metadata (never values)."""
    found = request(
        "GET", "/v1/secrets/metadata", params={"prefix": prefix}, url=url, api_key=api_key
    )
    rows = [
        {"path": s["path"], "versions": _versions_text(s), "updated_at": s["updated_at"]}
        for s in found["secrets"]
    ]
    # Three columns: with six, an 80-column terminal broke every path mid-word.
    print_table(("path", "versions", "updated_at"), rows, title="secrets", whole=("path",))


def _versions_text(secret: dict[str, Any]) -> str:
    """'v2 of 3 (1 deleted, 1 destroyed)': the version a read gets, and how many there are.
    When that version is deleted or destroyed a read is refused (404), so the text leads
    with it: 'deleted (v1 of 1)', 'deleted (v3 of 3; others: 1 destroyed)'."""
    versions = secret["versions"]
    current = secret["current_version"]
    latest = next((v for v in versions if v["version"] == current), None)
    state = None
    if latest is not None and latest["destroyed_at"]:
        state = "destroyed"
    elif latest is not None and latest["deleted_at"]:
        state = "deleted"
    others = [v for v in versions if v is not latest] if state else versions
    removed = [
        f"{n} {word}"
        for word, n in (
            ("deleted", sum(1 for v in others if v["deleted_at"] and not v["destroyed_at"])),
            ("destroyed", sum(1 for v in others if v["destroyed_at"])),
        )
        if n
    ]
    head = f"v{current} of {len(versions)}" if current else f"none of {len(versions)}"
    if state is not None:
        rest = f"; others: {', '.join(removed)}" if removed else ""
        return f"{state} ({head}{rest})"
    return f"{head} ({', '.join(removed)})" if removed else head


def _versions_call(
    action: str, path: str, versions: list[int] | None, url: str | None, api_key: str | None
) -> None:
    body = {"versions": versions} if versions else {}
    done = request(
        "POST",
        f"/v1/secrets/{segment(action)}/{secret_route(path)}",
        json=body,
        url=url,
        api_key=api_key,
    )
    numbers = ", ".join(str(v["version"]) for v in done["versions"])
    past = {"delete": "deleted", "undelete": "undeleted", "destroy": "destroyed"}[action]
    out().print(f"{past} {escape(str(path))} version {numbers}")


@secret_app.command("delete")
def secret_delete(
    path: PathArg,
    version: VersionsOption = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Soft-delete versions (reversible with undelete)."""
    _versions_call("delete", path, version, url, api_key)


@secret_app.command("undelete")
def secret_undelete(
    path: PathArg,
    version: VersionsOption = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Undo a soft-delete."""
    _versions_call("undelete", path, version, url, api_key)


@secret_app.command("destroy")
def secret_destroy(
    path: PathArg,
    version: VersionsOption = None,
    yes: Annotated[bool, typer.Option("--yes", help="Do not ask for confirmation.")] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Erase versions for good (their leases end)."""
    if not yes:
        typer.confirm(f"destroy {path} (cannot be undone)?", abort=True)
    _versions_call("destroy", path, version, url, api_key)


@secret_app.command("rotate")
def secret_rotate(
    path: PathArg,
    value: Annotated[str | None, typer.Option(help="The new value.")] = None,
    from_file: Annotated[
        Path | None,
        typer.Option(
            exists=True, dir_okay=False, readable=True, help="Read the new value from a file."
        ),
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Write a new version (random unless given) and revoke every lease on the path."""
    new_value = None
    if value is not None or from_file is not None:
        new_value = _read_value(value, from_file, what="new value")
    done = request(
        "POST",
        f"/v1/secrets/rotate/{secret_route(path)}",
        json={"value": new_value},
        url=url,
        api_key=api_key,
    )
    origin = "generated" if done["generated"] else "given"
    out().print(
        f"rotated {path} to version {done['version']['version']} ({origin} value), "
        f"revoked {done['revoked_leases']} lease(s)"
    )


@secret_app.command("creds")
def secret_creds(
    path: PathArg,
    ttl: Annotated[int | None, typer.Option(help="Lease TTL in seconds.")] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Issue a dynamic database credential (JSON on stdout)."""
    cred = request(
        "POST",
        f"/v1/secrets/creds/{secret_route(path)}",
        json={"ttl_seconds": ttl},
        url=url,
        api_key=api_key,
    )
    sys.stdout.write(json.dumps(cred) + "\n")


@lease_app.command("list")
def lease_list(
    prefix: Annotated[str, typer.Option(help="Only leases under this path prefix.")] = "",
    holder: Annotated[
        str,
        typer.Option(help="Only this holder's: app:APP, principal:NAME or principal:ID."),
    ] = "",
    key: Annotated[
        str,
        typer.Option(help="Only the leases bound to this API key id (qm key list shows them)."),
    ] = "",
    all_: Annotated[bool, typer.Option("--all", help="Include ended leases.")] = False,
    as_json: JsonOption = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Live leases you may manage.

    Yours and, for a team member, every lease on its team's paths (its apps' workload leases
    too); an admin sees every holder."""
    params: dict[str, Any] = {"prefix": prefix, "holder": holder, "key_id": key, "all": all_}
    if as_json:
        print_json(_every_lease(params, url=url, api_key=api_key))
        return
    table = data_table(("lease", "state"), title="leases")
    for lease in _every_lease(params, url=url, api_key=api_key):
        table.add_row(_lease_cell(lease), _lease_state(lease))
    show_table(table, empty="no leases")


def _every_lease(
    params: dict[str, Any], *, url: str | None, api_key: str | None
) -> list[dict[str, Any]]:
    """Every lease of the list, page by page (X-Next-After): one answer held 500 at most."""
    found: list[dict[str, Any]] = []
    params = {**params, "limit": LEASE_PAGE}
    with api_client(url=url, api_key=api_key) as client:
        while True:
            response = client.get("/v1/leases", params=params)
            found.extend(check(response, console=err())["leases"])
            cursor = response.headers.get("X-Next-After")
            if cursor is None:
                return found
            params = {**params, "after": cursor}


def _lease_cell(lease: dict[str, Any]) -> Text:
    """The lease id, over what it leases, over who holds it, over the key it ends with: seven
    columns, one per field, folded each into a strip of a few letters at 80 columns."""
    leased = lease["path"] + (f" v{lease['version']}" if lease["version"] is not None else "")
    bound = f"\nends with key {lease['key_id']}" if lease.get("key_id") else ""
    return Text.assemble(
        (lease["id"], "bold"),
        f"\n{leased}",
        f"\nheld by {lease['holder_name']}",
        bound,
        overflow="fold",
    )


def _lease_state(lease: dict[str, Any]) -> str:
    if lease["ended_at"]:
        reason = f" ({lease['end_reason']})" if lease["end_reason"] else ""
        pending = ""
        if lease.get("cleanup_pending"):
            why = escape(str(lease.get("cleanup_error") or "retrying"))
            pending = f"\ndatabase cleanup pending: {why}"
        return f"{lease['state']}{reason}\nended {cell_text(lease['ended_at'])}{pending}"
    return f"{lease['state']}, {lease['ttl']:,} s left\nexpires {cell_text(lease['expires_at'])}"


@lease_app.command("renew")
def lease_renew(
    lease_id: Annotated[str, typer.Argument(help="Lease id.")],
    increment: Annotated[int | None, typer.Option(help="Seconds from now (capped).")] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Extend a live lease (never past its max_ttl)."""
    lease = request(
        "POST",
        f"/v1/leases/{segment(lease_id)}/renew",
        json={"increment_seconds": increment},
        url=url,
        api_key=api_key,
    )
    out().print(
        f"lease {lease['id']} now expires at {cell_text(lease['expires_at'])} "
        f"(ttl {lease['ttl']:,} s)"
    )


@lease_app.command("revoke")
def lease_revoke(
    lease_id: Annotated[
        str, typer.Argument(help="Lease id, or its first 8+ characters (as `lease list` shows).")
    ],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """End a lease (its id or the first 8+ characters of it); one already ended or unknown is
    not an error."""
    done = request("POST", f"/v1/leases/{segment(lease_id)}/revoke", url=url, api_key=api_key)
    pending = " (database cleanup pending; the reaper retries)" if done["cleanup_pending"] else ""
    if done["status"] == "not_found":
        pending = " (no lease you may manage has this id or begins with it: nothing to end)"
    out().print(f"lease {done['lease_id']}: {done['status']}{pending}")


@lease_app.command("revoke-prefix")
def lease_revoke_prefix(
    prefix: Annotated[str, typer.Argument(help="Path prefix, e.g. apps/billing/.")],
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """End every live lease under a path prefix."""
    done = request(
        "POST", "/v1/leases/revoke-prefix", json={"prefix": prefix}, url=url, api_key=api_key
    )
    pending = (
        f" ({done['cleanup_pending']} with database cleanup pending; the reaper retries)"
        if done["cleanup_pending"]
        else ""
    )
    out().print(f"revoked {done['revoked']} lease(s) under {escape(str(done['prefix']))}{pending}")


@audit_app.command("verify")
def audit_verify(
    file: Annotated[
        Path | None,
        typer.Option(
            exists=True,
            dir_okay=False,
            readable=True,
            help="Verify a shipped JSONL file instead of the server's log.",
        ),
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Check the chain: names each edited, removed or reordered record; exit 1 if any."""
    from quartermaster.audit.chain import ChainRecord, ChainVerifier, VerifyReport

    reports: dict[str, VerifyReport] = {}
    if file is not None:
        verifiers: dict[str, ChainVerifier] = {}
        with file.open("rb") as fh:
            for number, raw in enumerate(fh, start=1):
                line = utf8_text(raw, source=f"{file} line {number}")
                if not line.strip():
                    continue
                try:
                    record = ChainRecord.from_json(json.loads(line))
                except (ValueError, KeyError, TypeError) as exc:
                    err().print(f"[red]line {number} is not an audit record:[/] {escape(str(exc))}")
                    raise typer.Exit(1) from None
                verifiers.setdefault(record.tenant_id, ChainVerifier()).feed(record)
        reports = {tenant: v.finish() for tenant, v in verifiers.items()}
    else:
        verifier = ChainVerifier()
        after, head_seq, head_hash, tenant = 0, None, None, "this tenant"
        with api_client(url=url, api_key=api_key) as client:
            while True:
                page = _get(client, "/v1/audit/records", {"after": after, "limit": 1000})
                for item in page["records"]:
                    tenant = item["tenant_id"]
                    verifier.feed(ChainRecord.from_json(item))
                head_seq, head_hash = page["head_seq"], page["head_hash"]
                if page["next_after"] is None:
                    break
                after = page["next_after"]
        reports = {tenant: verifier.finish(head_seq=head_seq, head_hash=head_hash)}
    failed = False
    for tenant, report in reports.items():
        if report.ok:
            out().print(
                f"[green]ok[/] {tenant}: {report.checked} records, chain head seq {report.last_seq}"
            )
            continue
        failed = True
        table = Table("seq", "problem", "detail", title=f"audit chain of {tenant}: BROKEN")
        for problem in report.problems:
            table.add_row(str(problem.seq), problem.kind, plain(problem.message))
        out().print(table)
    if failed:
        raise typer.Exit(1)


def _get(client: httpx.Client, path: str, params: dict[str, Any]) -> Any:
    from quartermaster.cli.client import check

    return check(client.get(path, params=params), console=err())


def scan(
    paths: Annotated[list[Path], typer.Argument(help="Files, directories or git work trees.")],
    offline: Annotated[
        bool, typer.Option(help="Do not compare findings with the secrets the broker holds.")
    ] = False,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Scan for secrets with detect-secrets; exit 1 when anything is found.

    Findings are compared with the broker's secrets by keyed HMAC (the text never leaves
    this machine)."""
    from quartermaster.secrets.scanning import fingerprints, scan_paths

    try:
        findings = scan_paths(paths)
    except FileNotFoundError as exc:
        fail(str(exc), status=2)
    matches: dict[int, str] = {}
    note = ""
    if findings and not offline:
        matches, note = _broker_matches(findings, fingerprints, url=url, api_key=api_key)
    if not findings:
        out().print("[green]no secrets found[/]")
        return
    table = Table("file", "line", "type", "held by the broker", title="secrets found")
    for index, finding in enumerate(findings):
        table.add_row(
            plain(finding.file), str(finding.line), finding.type, plain(matches.get(index, ""))
        )
    out().print(table)
    if note:
        err().print(note)
    # One command per path: two versions of a path found (current and old) need one rotate.
    held = sorted({label.split(" ")[0] for label in matches.values()})
    if held:
        err().print(
            "[red]leaked broker secrets:[/] rotate them now: "
            + "; ".join(f"qm secret rotate {path}" for path in held)
        )
    raise typer.Exit(1)


def _broker_matches(
    findings: list[Any], fingerprints: Any, *, url: str | None, api_key: str | None
) -> tuple[dict[int, str], str]:
    import os

    if not (api_key or os.environ.get("QM_API_KEY")):
        return {}, "not compared with the broker: no QM_API_KEY (or pass --offline)"
    client = api_client(url=url, api_key=api_key)
    try:
        with client:
            key_response = client.get("/v1/secrets/fingerprint-key")
            if not key_response.is_success:
                return {}, _not_compared(key_response)
            key_hex = key_response.json()["key"]
            if key_hex is None:
                return {}, ""
            by_fp = fingerprints(findings, bytes.fromhex(key_hex))
            found = client.post("/v1/secrets/match", json={"fingerprints": list(by_fp)})
            if not found.is_success:
                return {}, _not_compared(found)
    except httpx.HTTPError as exc:
        return {}, (
            f"not compared with the broker: cannot reach the server at {client.base_url} "
            f"({type(exc).__name__}): start `qm serve` there or set QM_URL "
            "(or pass --offline)"
        )
    index_of = {id(f): i for i, f in enumerate(findings)}
    matches: dict[int, str] = {}
    for match in found.json()["matches"]:
        state = "current" if match["is_current"] else "old version"
        label = f"{match['path']} (v{match['version']}, {state})"
        for finding in by_fp.get(match["fingerprint"], []):
            matches[index_of[id(finding)]] = label
    return matches, ""


def _not_compared(response: httpx.Response) -> str:
    """Why the broker did not compare, and what would let it: an admin key at QM_URL."""
    said = f"{response.status_code}: {error_message(response)}"
    why = {401: "the API key was refused", 403: "it needs an admin key"}.get(response.status_code)
    if why is None:
        return f"not compared with the broker: {said}"
    return (
        f"not compared with the broker: {why} ({said}); "
        "set QM_API_KEY to an admin key of the tenant (or pass --offline)"
    )


def _local_runtime(data_dir: Path | None) -> Any:
    from quartermaster.config import load_settings
    from quartermaster.runtime import build_runtime

    settings = load_settings(data_dir=data_dir) if data_dir else load_settings()
    return build_runtime(settings)


@root_key_app.command("rotate")
def root_key_rotate(data_dir: DataDirOption = None) -> None:
    """Add a new active root key to the data dir's keyring and re-wrap every data key.

    Servers keep running: they re-read the keyring and can unwrap with either key meanwhile."""
    from quartermaster.secrets.keys import FileKeyProvider, add_root_key, keyring_path

    runtime = _local_runtime(data_dir)
    try:
        if runtime.settings.secrets_key_provider != "file":
            fail(
                "with the env provider, deploy `new:hex,old:hex` first, "
                "then run `qm secret root-key rewrap`"
            )
        path = keyring_path(runtime.settings)
        new_id = add_root_key(path)
        out().print(f"new active root key {new_id}")
        _rewrap(FileKeyProvider(path), runtime)
    finally:
        runtime.close()


@root_key_app.command("rewrap")
def root_key_rewrap(data_dir: DataDirOption = None) -> None:
    """Re-wrap data keys still under an older root key (resumes an interrupted rotation)."""
    from quartermaster.secrets.keys import build_key_provider

    runtime = _local_runtime(data_dir)
    try:
        _rewrap(build_key_provider(runtime.settings), runtime)
    finally:
        runtime.close()


def _rewrap(provider: Any, runtime: Any) -> None:
    from quartermaster.secrets.context import rewrap_data_keys

    report = rewrap_data_keys(provider, session_factory=runtime.session_factory)
    out().print(f"re-wrapped {report.rewrapped} data key(s) under {report.active_key_id}")
    leftover = {k: n for k, n in report.remaining_by_key.items() if k != report.active_key_id}
    if leftover:
        err().print(f"[yellow]still under older keys:[/] {leftover} (run rewrap again)")
        raise typer.Exit(1)


@root_key_app.command("retire")
def root_key_retire(
    key_id: Annotated[str, typer.Argument(help="The old root key id.")],
    data_dir: DataDirOption = None,
) -> None:
    """Remove an old root key from the keyring, once no data key is wrapped with it.

    With the env provider the keys are in a variable this command cannot change: it checks
    that the key can go and says where to remove it."""
    from quartermaster.errors import QMError
    from quartermaster.secrets.context import count_by_root_key
    from quartermaster.secrets.keys import (
        EnvKeyProvider,
        check_retirable,
        keyring_path,
        read_keyring_file,
        remove_root_key,
    )
    from quartermaster.storage.key_checks import recorded_key

    runtime = _local_runtime(data_dir)
    try:
        settings = runtime.settings
        from_env = settings.secrets_key_provider == "env"
        # The active key, a retired or an unknown one is refused before counting: for the
        # active key `rewrap` moves nothing (data keys are already under it), `rotate` does.
        if from_env:
            variable = settings.secrets_root_key_env
            check_retirable(EnvKeyProvider(variable).keyring, key_id, source=variable)
        else:
            path = keyring_path(settings)
            check_retirable(read_keyring_file(path), key_id, source=path)
        recorded = recorded_key("root", session_factory=runtime.session_factory)
        if recorded is not None and recorded.key_id == key_id:
            fail(
                f"{key_id} is the root key this database wraps new data keys with: run "
                "`qm secret root-key rewrap` with the new key active first"
            )
        still = count_by_root_key(session_factory=runtime.session_factory).get(key_id, 0)
        if still:
            fail(
                f"{still} data key(s) are still wrapped with {key_id}: "
                "run `qm secret root-key rewrap` first"
            )
        if from_env:
            out().print(
                f"no data key is wrapped with {key_id}: remove it from {variable} on every "
                "server, then restart them"
            )
        else:
            remove_root_key(path, key_id)
            out().print(f"retired root key {key_id}")
    except QMError as exc:
        fail(exc.message)
    finally:
        runtime.close()


@root_key_app.command("status")
def root_key_status(data_dir: DataDirOption = None) -> None:
    """Root keys and how many tenant data keys each one wraps."""
    from quartermaster.secrets.context import count_by_root_key
    from quartermaster.secrets.keys import build_key_provider
    from quartermaster.storage.key_checks import recorded_key

    runtime = _local_runtime(data_dir)
    try:
        provider = build_key_provider(runtime.settings)
        counts = count_by_root_key(session_factory=runtime.session_factory)
        recorded = recorded_key("root", session_factory=runtime.session_factory)
    finally:
        runtime.close()
    database_key = None if recorded is None else recorded.key_id
    rows = [
        {
            "key": k,
            "active": k == provider.active_key_id,
            "database's": k == database_key,
            "data_keys": counts.get(k, 0),
        }
        for k in provider.key_ids()
    ]
    print_table(("key", "active", "database's", "data_keys"), rows, title="root keys")
