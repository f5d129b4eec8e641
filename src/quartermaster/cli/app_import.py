"""`qm app import FILE`: register many apps from a CSV or JSON-lines file over the API.

Platform teams bring their inventory of hundreds or thousands of apps at once; one `qm app
create` per app paid the CLI's start-up each time (~2 s an app, two hours for 3,000). Each
record is registered on its own: a refused one is listed with its line and the server's
reason and the others go on; an app that exists already is left as it is, so a file can be
imported again after fixing the refused lines.
"""

from __future__ import annotations

import csv
import io
import json
import os
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TextIO

import httpx
import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from quartermaster.cli.client import (
    ApiKeyOption,
    UrlOption,
    api_client,
    err,
    error_message,
    fail,
    out,
    print_table,
    read_utf8,
    segment,
)
from quartermaster.cli.events import backoff_seconds

# The fields of POST /v1/apps a file may give (docs/catalog.md); any other column is refused.
FIELDS = (
    "app_id",
    "owner",
    "team",
    "cost_center",
    "title",
    "lifecycle",
    "environment",
    "require_signatures",
    "owned_since",
)
SHOWN_REFUSALS = 20
# Transient answers are retried; the rest refuse the record.
RETRIED_STATUSES = frozenset({429, 502, 503, 504})
ATTEMPTS = 4


@dataclass(frozen=True, slots=True)
class AppRecord:
    line: int
    body: dict[str, Any] | None
    problem: str | None = None
    app_id: str = ""  # of a refused record too, when it names one (the report shows it)


@dataclass
class ImportReport:
    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)
    refused: list[tuple[int, str, str]] = field(default_factory=list)  # line, app_id, reason
    keys: int = 0


def read_records(path: Path) -> list[AppRecord]:
    """Every record of the file with its line number; a record that cannot be read carries the
    problem instead of a body."""
    handle = io.StringIO(read_utf8(path), newline="")
    if path.suffix.lower() == ".csv":
        return list(_csv_records(handle))
    return list(_json_records(handle))


def _csv_records(handle: TextIO) -> Iterator[AppRecord]:
    reader = csv.DictReader(handle)
    unknown = [name for name in reader.fieldnames or () if name not in FIELDS]
    if unknown:
        raise typer.BadParameter(
            f"unknown column(s) {', '.join(unknown)}; the columns are: {', '.join(FIELDS)}"
        )
    for row in reader:
        body: dict[str, Any] = {k: v.strip() for k, v in row.items() if k and v and v.strip()}
        if "require_signatures" in body:
            flag = body["require_signatures"].lower()
            if flag not in ("true", "false"):
                yield AppRecord(
                    reader.line_num,
                    None,
                    "require_signatures must be true or false",
                    _named_app(body),
                )
                continue
            body["require_signatures"] = flag == "true"
        yield _checked(reader.line_num, body)


def _json_records(handle: TextIO) -> Iterator[AppRecord]:
    for number, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            body = json.loads(text)
        except ValueError as exc:
            yield AppRecord(number, None, f"not JSON: {exc}")
            continue
        if not isinstance(body, dict):
            yield AppRecord(number, None, "a line must be a JSON object")
            continue
        unknown = [name for name in body if name not in FIELDS]
        if unknown:
            yield AppRecord(
                number, None, f"unknown field(s) {', '.join(unknown)}", _named_app(body)
            )
            continue
        yield _checked(number, body)


def _named_app(body: dict[str, Any]) -> str:
    app_id = body.get("app_id")
    return app_id if isinstance(app_id, str) else ""


def _checked(line: int, body: dict[str, Any]) -> AppRecord:
    if not isinstance(body.get("app_id"), str) or not body["app_id"]:
        return AppRecord(line, None, "app_id is missing")
    return AppRecord(line, body)


def _post(client: httpx.Client, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
    """The answer to one call, retrying a busy or restarting server with `qm events send`'s
    backoff. A registration whose answer was lost comes back as "already exists" on retry,
    and is counted with the existing apps."""
    for attempt in range(1, ATTEMPTS + 1):
        last = attempt == ATTEMPTS
        try:
            response = client.post(path, json=body)
        except httpx.TransportError:
            if last:
                raise
            time.sleep(backoff_seconds(attempt))
            continue
        if last or response.status_code not in RETRIED_STATUSES:
            return response
        time.sleep(backoff_seconds(attempt, response.headers.get("Retry-After")))
    raise httpx.TransportError(f"no answer after {ATTEMPTS} attempts")  # ATTEMPTS is >= 1


def _open_key_file(path: Path) -> TextIO:
    # The secrets are shown nowhere else: a private file, never one that exists already.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    return os.fdopen(fd, "w", encoding="utf-8")


def import_apps(
    file: Annotated[
        Path,
        typer.Argument(
            help="A .csv with a header row, or JSON lines (one app object a line); fields as "
            "for `qm app create`: app_id, owner, team, cost_center, title, lifecycle, "
            "environment, require_signatures, owned_since.",
            exists=True,
            dir_okay=False,
        ),
    ],
    signing_keys: Annotated[
        Path | None,
        typer.Option(
            help="Create a signing key for each app registered now and write the secrets to "
            "this new file (JSON lines: app_id, key_id, secret; mode 600).",
        ),
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Register apps from a CSV or JSON-lines file; existing apps are left as they are."""
    records = read_records(file)
    if not records:
        fail(f"{file} holds no app")
    if signing_keys is not None and signing_keys.exists():
        fail(f"{signing_keys} exists: the signing secrets go to a new file")
    report = ImportReport()
    keys_out = _open_key_file(signing_keys) if signing_keys is not None else None
    progress = Progress(
        TextColumn("registering apps"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=err(),
        transient=True,
    )
    try:
        with api_client(url=url, api_key=api_key) as client, progress:
            task = progress.add_task("apps", total=len(records))
            for record in records:
                _import_one(client, record, report, keys_out)
                progress.advance(task)
    finally:
        if keys_out is not None:
            keys_out.close()
    _print_report(report, signing_keys)
    if report.refused:
        raise typer.Exit(1)


def _import_one(
    client: httpx.Client, record: AppRecord, report: ImportReport, keys_out: TextIO | None
) -> None:
    if record.body is None:
        report.refused.append((record.line, record.app_id, record.problem or "unreadable"))
        return
    app_id = str(record.body["app_id"])
    response = _post(client, "/v1/apps", record.body)
    if response.status_code == 409 and "already exists" in error_message(response):
        report.existing.append(app_id)
        return
    if not response.is_success:
        report.refused.append((record.line, app_id, error_message(response)))
        return
    report.created.append(app_id)
    if keys_out is None:
        return
    key = _post(client, f"/v1/apps/{segment(app_id)}/signing-keys")
    if not key.is_success:
        reason = f"registered, but its signing key was refused: {error_message(key)}"
        report.refused.append((record.line, app_id, reason))
        return
    created = key.json()
    keys_out.write(
        json.dumps({"app_id": app_id, "key_id": created["key_id"], "secret": created["secret"]})
        + "\n"
    )
    keys_out.flush()
    report.keys += 1


def _print_report(report: ImportReport, signing_keys: Path | None) -> None:
    rows = [
        {"outcome": "registered", "apps": len(report.created)},
        {"outcome": "existed already (left as they are)", "apps": len(report.existing)},
        {"outcome": "refused", "apps": len(report.refused)},
    ]
    print_table(("outcome", "apps"), rows, title="qm app import")
    if signing_keys is not None:
        out().print(f"{report.keys} signing key(s) written to {signing_keys}")
    if report.refused:
        shown = [
            {"line": line, "app_id": app_id, "reason": reason}
            for line, app_id, reason in report.refused[:SHOWN_REFUSALS]
        ]
        print_table(("line", "app_id", "reason"), shown, title="refused")
        if len(report.refused) > SHOWN_REFUSALS:
            err().print(f"... and {len(report.refused) - SHOWN_REFUSALS} more refused")
