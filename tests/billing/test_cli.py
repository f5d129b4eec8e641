"""`qm bill` and `qm explain` against a live server over real HTTP."""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from quartermaster.billing.focus import MANDATORY_COLUMNS
from quartermaster.billing.sources import pipeline_catch_up
from quartermaster.cli import billing as billing_cli
from quartermaster.cli.main import _register_groups, app
from tests.billing.platform import PIPELINE_TOTAL, Platform, event, jan
from tests.conftest import start_live_server

# The CLI only talks HTTP: one control-plane backend is enough here (test_api.py runs both).
pytestmark = pytest.mark.parametrize("fresh_db_url", ["sqlite"], indirect=True)


@pytest.fixture
def qm(
    billing_app: FastAPI, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> Iterator[CliRunner]:
    if not any(group.name == "bill" for group in app.registered_groups):
        _register_groups()
    live = start_live_server(billing_app)
    monkeypatch.setenv("QM_URL", live.url)
    monkeypatch.setenv("QM_API_KEY", platform.headers["Authorization"].removeprefix("Bearer "))
    monkeypatch.setenv("COLUMNS", "250")
    yield CliRunner()
    live.server.should_exit = True
    live.thread.join(timeout=20)


def _ok(qm: CliRunner, *args: str) -> str:
    result = qm.invoke(app, list(args))
    assert result.exit_code == 0, result.output
    return result.output


def test_bill_run_show_finalize_adjust_export_and_explain(
    qm: CliRunner, platform: Platform, tmp_path: Path
) -> None:
    ran = _ok(qm, "bill", "run", "--month", "2026-01")
    assert "computed a draft" in ran
    # The period as the month it is, the moment to the second in the tables' form.
    assert re.search(
        r"invoice \w{12} draft, period 2026-01: total 59\.5168 USD \(13 lines, as of "
        r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ, price book ",
        ran,
    )
    assert "cost per cost center" in ran
    assert "analytics" in ran
    assert "top 3 apps" in ran
    listed = _ok(qm, "bill", "list")
    # --json: the API's answer for scripts, the same fields, nothing else on stdout.
    as_json = qm.invoke(app, ["bill", "list", "--json"])
    assert as_json.exit_code == 0, as_json.output
    assert json.loads(as_json.stdout) == (
        platform.client.get("/v1/billing/runs", headers=platform.headers).json()
    )
    costs = json.loads(qm.invoke(app, ["bill", "costs", "--month", "2026-01", "--json"]).stdout)
    assert Decimal(costs["total"]) == PIPELINE_TOTAL
    preview_json = json.loads(qm.invoke(app, ["bill", "preview", "--json"]).stdout)
    assert {"month_to_date", "forecast", "teams", "apps"} <= set(preview_json)
    run_id = next(line.split()[1].strip("│ ") for line in listed.splitlines() if "draft" in line)
    assert len(run_id) == 12  # as `qm bill list` prints it; every command takes the prefix
    # A calendar month reads as `qm bill run --month` names it; the status over the kind and
    # the total over its currency.
    assert re.search(
        rf"{run_id} │ draft\s+│ 2026-01\s+│\s+59\.5168 │\s+13 │\n│\s+│ invoice", listed
    )
    assert re.search(r"│\s+USD │", listed)
    shown = _ok(qm, "bill", "show", run_id, "--all")
    assert "lines (13 of 13)" in shown
    assert "proportional to requests" in shown
    assert "already finalized" not in _ok(qm, "bill", "run", "--month", "2026-01")
    finalized = _ok(qm, "bill", "finalize", run_id)
    assert finalized.startswith("finalized\n")
    # Again: the API says nothing was done (outcome unchanged), and so does the command.
    assert _ok(qm, "bill", "finalize", run_id).startswith("already finalized: unchanged\n")
    assert "already finalized: unchanged" in _ok(qm, "bill", "run", "--month", "2026-01")

    assert "no adjustment needed" in _ok(qm, "bill", "adjust", run_id)
    assert "nothing late" in _ok(qm, "bill", "late")
    platform.send(
        [event("resource.usage", jan(20), {"resource_id": "web-pod-1", "cpu_seconds": 100})]
    )
    pipeline_catch_up(platform.runtime)()  # as the server's pipeline does in the background
    late = _ok(qm, "bill", "late")
    late_json = json.loads(qm.invoke(app, ["bill", "late", "--json"]).stdout)
    assert late_json == platform.client.get("/v1/billing/late", headers=platform.headers).json()
    assert [(item["late_events"], item["adjustment_due"]) for item in late_json] == [
        (1, "0.200000")
    ]
    assert re.search(rf"│ {run_id} │ 2026-01 │\s+1 │ \d{{4}}-[^│]+Z │\s+│\s+0\.20 │", late), late
    assert f"bill it (admin keys): qm bill adjust {run_id}" in late
    adjusted = _ok(qm, "bill", "adjust", run_id)
    assert "nothing late" in _ok(qm, "bill", "late")
    assert re.search(
        rf"corrects invoice run {run_id}\w{{20}} for the period from 2026-01-01 00:00 UTC "
        r"until 2026-02-01 00:00 UTC: 1 line \(1 with late usage, 0 re-rated",
        adjusted,
    )
    assert "0.200000" in adjusted  # 100 s more at 0.002
    assert "@ 0.002 " in adjusted  # their price: not 8.20 / 5100 s, the line re-rated

    focus_file = tmp_path / "focus.csv"
    _ok(
        qm,
        "bill",
        "export",
        run_id,
        "--format",
        "focus",
        "--include-adjustments",
        "-o",
        str(focus_file),
    )
    rows = list(csv.DictReader(io.StringIO(focus_file.read_text())))
    assert tuple(rows[0])[:21] == MANDATORY_COLUMNS
    assert sum(Decimal(r["BilledCost"]) for r in rows) == PIPELINE_TOTAL + Decimal("0.2")
    chargeback = _ok(qm, "bill", "export", run_id)
    assert chargeback.startswith("period_start,period_end,run_id")
    json_file = tmp_path / "chargeback.json"
    said = _ok(qm, "bill", "export", run_id, "--format", "json", "-o", str(json_file))
    lines = json.loads(json_file.read_text())["lines"]
    assert f"({len(lines)} line" in said, said  # its lines, not the file's text lines

    detail = platform.client.get(f"/v1/billing/runs/{run_id}", headers=platform.headers).json()
    web_cpu = next(
        line for line in detail["lines"] if (line["app"], line["item"]) == ("web", "cpu_seconds")
    )
    shown_ids = {line["id"][:12] for line in detail["lines"]}
    narrow = qm.invoke(app, ["bill", "show", run_id, "--all"], env={"COLUMNS": "80"})
    assert narrow.exit_code == 0, narrow.output
    assert "…" not in narrow.output  # folded, never cut: every id and amount whole
    assert shown_ids <= set(narrow.output.replace("│", " ").split())
    assert web_cpu["id"] not in narrow.output
    explained = _ok(qm, "explain", web_cpu["id"][:12])  # the id as `bill show` prints it
    assert "usage of cpu_seconds for app web" in explained
    assert "1. daily usage of cpu_seconds" in explained
    assert "(total 5,000)" in explained  # grouped, as every table's quantities
    assert "2. top contributing raw events" in explained
    assert "3. lifecycle markers" in explained
    assert "deploy" in explained
    assert "scale" in explained
    assert "late: not in it" in explained  # the 100 s recorded after the run
    assert "in the document" in explained
    # The audit key whole on its own line at 80 columns, so it pastes back as an argument.
    narrow_explained = qm.invoke(app, ["explain", web_cpu["id"][:12]], env={"COLUMNS": "80"})
    assert f"audit key {web_cpu['audit_key']}\n" in narrow_explained.output
    again = _ok(qm, "explain", web_cpu["audit_key"])
    assert "usage of cpu_seconds for app web" in again

    empty = _ok(qm, "bill", "run", "--month", "2026-03")  # a month nothing was sent for
    assert "no usage in the period as recorded by" in empty
    assert "run it again to recompute the draft" in empty

    previewed = _ok(qm, "bill", "preview")
    assert "forecast method: run-rate" in previewed
    assert re.search(
        r"as of \d{4}-\d\d-\d\d \d\d:\d\d:\d\d[.\d]*Z: usage recorded before", previewed
    )
    assert re.search(r"month \d{4}-\d\d \([\d.]+ of \d\d\.00 days\): month to date", previewed)
    # Nothing sent for this month: said in words instead of two empty frames.
    assert "no usage or platform costs this month yet" in previewed
    assert "top apps" not in previewed
    team_preview = " ".join(_ok(qm, "bill", "preview", "--team", "web").split())
    assert re.search(r"^team web, month \d{4}-\d\d ", team_preview), team_preview
    assert "month to date 0.00" in team_preview
    assert not previewed.startswith("team ")
    unknown = qm.invoke(app, ["bill", "preview", "--team", "nope"])
    assert unknown.exit_code == 1
    assert "unknown team 'nope'" in unknown.output


def test_a_draft_is_discarded_and_a_month_not_started_is_refused(qm: CliRunner) -> None:
    ahead = qm.invoke(app, ["bill", "run", "--month", "2099-03"])
    assert ahead.exit_code == 1
    assert "month 2099-03 has not started yet: it starts 2099-03-01 00:00 UTC" in ahead.output
    assert "2099" not in _ok(qm, "bill", "list")  # no empty draft was made

    _ok(qm, "bill", "run", "--month", "2026-01")
    run_id = next(
        line.split()[1] for line in _ok(qm, "bill", "list").splitlines() if "2026-01" in line
    )
    assert f"discarded the draft {run_id}" in _ok(qm, "bill", "discard", run_id)
    assert run_id not in _ok(qm, "bill", "list")
    gone = qm.invoke(app, ["bill", "discard", run_id])
    assert gone.exit_code == 1
    assert "not found" in gone.output

    _ok(qm, "bill", "run", "--month", "2026-01")
    run_id = next(
        line.split()[1] for line in _ok(qm, "bill", "list").splitlines() if "2026-01" in line
    )
    _ok(qm, "bill", "finalize", run_id)
    final = qm.invoke(app, ["bill", "discard", run_id])
    assert final.exit_code == 1
    assert "finalized and immutable: correct it with an adjustment" in final.output


def test_a_team_member_sees_its_teams_lines_and_no_total(qm: CliRunner, platform: Platform) -> None:
    """The API hides the document's total from members (null): the header says so, and
    counts the lines the member sees, instead of `total 0.00 USD (13 lines, …)`."""
    _ok(qm, "bill", "run", "--month", "2026-01")
    run_id = next(
        line.split()[1] for line in _ok(qm, "bill", "list").splitlines() if "2026" in line
    )
    platform.post("/v1/teams", {"slug": "ops", "cost_center": "eng"})
    for team, header in (
        ("data", "total hidden from team members (team data: 19.031212 USD in 5 lines; as of "),
        ("ops", "total hidden from team members (team ops: 0.00 USD in 0 lines; as of "),
    ):
        key = platform.key_for("team-member", team=team)["Authorization"].removeprefix("Bearer ")
        shown = _ok(qm, "bill", "show", run_id, "--api-key", key)
        assert header in shown, shown
        assert "13 lines" not in shown
        assert "59.5168" not in shown
    assert "no lines" in shown  # ops: said in words instead of empty tables
    # The JSON export's header is the API's: the invoice total hidden, the team's sum apart.
    key = platform.key_for("team-member", team="data")["Authorization"].removeprefix("Bearer ")
    exported = json.loads(_ok(qm, "bill", "export", run_id, "--format", "json", "--api-key", key))
    (document,) = exported["documents"]
    assert (document["total"], document["visible_total"], document["team"]) == (
        None,
        "19.031212",
        "data",
    )
    assert document["line_count"] == 13  # the document's, as GET /v1/billing/runs/{id} says
    assert {line["team_id"] for line in exported["lines"]} == {"data"}
    listed = _ok(qm, "bill", "list", "--api-key", key)
    # Its lines column is empty: the document's count is of every team's lines.
    assert re.search(rf"{run_id} │ draft\s+│ 2026-01\s+│ hidden │\s+│", listed), listed
    assert "USD" not in listed
    assert "cost per cost center" not in shown


def test_cli_errors_name_the_problem(qm: CliRunner) -> None:
    result = qm.invoke(app, ["bill", "show", "nope"])
    assert result.exit_code == 1
    assert "billing run 'nope' not found" in result.output
    result = qm.invoke(app, ["bill", "run", "--month", "2026-13"])
    assert result.exit_code == 1
    assert "month 13 is not within 1-12" in result.output
    # The API's field names are the options typed: period_end read as an unknown name.
    result = qm.invoke(
        app, ["bill", "run", "--start", "2026-01-02T00:00:00Z", "--end", "2026-01-01T00:00:00Z"]
    )
    assert result.exit_code == 1
    assert "--end 2026-01-01 00:00 UTC is not after --start 2026-01-02 00:00 UTC" in (
        " ".join(result.output.split())
    ), result.output
    assert "period_" not in result.output


def test_show_fetches_only_what_it_prints(
    qm: CliRunner, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`qm bill show` downloaded every line of the document (40,788 at 3,000 apps, 26 MB)
    to print 30 and sum the tables itself."""
    _ok(qm, "bill", "run", "--month", "2026-01")
    run_id = next(
        line.split()[1] for line in _ok(qm, "bill", "list").splitlines() if "2026" in line
    )
    asked: list[tuple[str, dict[str, Any]]] = []
    real = billing_cli.request

    def recording(method: str, path: str, **kwargs: Any) -> Any:
        asked.append((path, dict(kwargs.get("params") or {})))
        return real(method, path, **kwargs)

    monkeypatch.setattr(billing_cli, "request", recording)
    shown = _ok(qm, "bill", "show", run_id, "--lines", "2")
    assert "lines (2 of 13)" in shown
    assert "cost per cost center" in shown
    assert "top 3 apps" in shown
    (full,) = [
        d["id"] for d in platform.client.get("/v1/billing/runs", headers=platform.headers).json()
    ]
    assert asked == [
        (f"/v1/billing/runs/{run_id}", {"lines": "false"}),
        (f"/v1/billing/runs/{full}/summary", {"top": 10}),
        (f"/v1/billing/runs/{full}/lines", {"limit": 2}),
    ]
    asked.clear()
    assert "lines (13 of 13)" in _ok(qm, "bill", "show", run_id, "--all")
    assert asked[-1] == (f"/v1/billing/runs/{full}/lines", {"limit": 5000})
    asked.clear()
    assert "lines (" not in _ok(qm, "bill", "show", run_id, "--lines", "0")
    assert [path for path, _ in asked] == [
        f"/v1/billing/runs/{run_id}",
        f"/v1/billing/runs/{full}/summary",
    ]


def test_bill_costs_prints_a_periods_total_per_team_and_app(qm: CliRunner) -> None:
    shown = " ".join(_ok(qm, "bill", "costs", "--month", "2026-01").split())
    assert "2026-01: 59.5168 USD (price book" in shown  # PIPELINE_TOTAL, as _money writes it
    assert "per team" in shown
    assert "top apps" in shown
    assert "not complete" not in shown
    week = " ".join(
        _ok(
            qm,
            "bill",
            "costs",
            "--start",
            "2026-01-01T00:00:00Z",
            "--end",
            "2026-01-08T00:00:00Z",
            "--team",
            "data",
        ).split()
    )
    assert "2026-01-01 .. 2026-01-08 (team data):" in week
    refused = qm.invoke(app, ["bill", "costs", "--month", "2026-01", "--team", "nope"])
    assert refused.exit_code == 1
    assert "unknown team 'nope'" in refused.output
