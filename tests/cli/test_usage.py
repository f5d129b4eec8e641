"""How `qm usage show`, `qm meter list` and `qm pipeline accounting` lay out the API's answers."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from rich.console import Console
from typer.testing import CliRunner

from quartermaster.cli import client as cli_client
from quartermaster.cli.usage import (
    accounting_table,
    accounting_verdict,
    environment_app,
    latency_text,
    meter_app,
    meter_table,
    pipeline_app,
    usage_app,
    usage_table,
)
from tests.conftest import LiveServer, TenantHandle
from tests.tenancy.cli_support import make_qm


def _row(cost_center: str, team: str | None, app: str | None, meter: str, **kw: Any) -> Any:
    return {
        "cost_center": cost_center,
        "team": team,
        "app": app,
        "meter": meter,
        "quantity": kw.get("quantity", "1"),
        "unit": kw.get("unit", "cpu-s"),
        "event_count": kw.get("events", 1),
        "unattributed": app is None,
    }


def _cells(usage: dict[str, Any], width: int = 120) -> list[list[str]]:
    console = Console(width=width, record=True)
    console.print(usage_table(usage))
    return [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in console.export_text().splitlines()
        if line.startswith("│")
    ]


def test_rows_are_grouped_by_owner_and_app_with_quantities_in_their_units() -> None:
    usage = {
        "start": "2026-11-01T00:00:00Z",
        "end": "2026-12-01T00:00:00Z",
        "rows": [
            _row("cc-1", "web", "shop", "requests", quantity="1234567", unit="request"),
            _row("cc-1", "web", "api", "cpu_seconds", quantity="458145.261", events=1440),
            _row("cc-1", "web", "shop", "cpu_seconds", quantity="-2.5"),
            _row("default", None, None, "cpu_seconds", quantity="12", events=2843),
        ],
    }
    assert _cells(usage) == [
        # An owner (cost center over team) on its first row; each app on a row of its own,
        # its meters indented under it.
        ["cc-1", "api", "", ""],
        ["web", "", "", ""],
        ["", "cpu_seconds", "458,145.261 cpu-s", "1,440"],
        ["", "shop", "", ""],
        ["", "cpu_seconds", "-2.5 cpu-s", "1"],
        ["", "requests", "1,234,567 request", "1"],
        ["default", "unattributed", "", ""],
        ["-", "", "", ""],
        ["", "cpu_seconds", "12 cpu-s", "2,843"],
    ]


def test_usage_keeps_long_names_whole_at_80_columns() -> None:
    usage = {
        "start": "2026-11-01T00:00:00Z",
        "end": "2026-12-01T00:00:00Z",
        "rows": [
            _row("cc-1100-finance", "finance-ops", "invoice-portal", "storage_gb_days",
                 quantity="6627.00024", unit="GB-day", events=720),
            _row("cc-1100-finance", "finance-ops", "invoice-portal", "network_bytes",
                 quantity="15449752566", unit="B", events=720),
        ],
    }  # fmt: skip
    cells = _cells(usage, width=80)
    assert cells[0][:2] == ["cc-1100-finance", "invoice-portal"]
    assert cells[2] == ["", "network_bytes", "15,449,752,566 B", "720"]
    assert cells[3] == ["", "storage_gb_days", "6,627.00024 GB-day", "720"]


def _hour(hour: int, *, accepted: int, rated: int, waiting: int = 0) -> dict[str, Any]:
    return {
        "hour": f"2026-11-01T{hour:02d}:00:00Z",
        "accepted": accepted,
        "attributed": rated - 10,
        "unattributed": 10,
        "rated": rated,
        "waiting": waiting,
        "in_pipeline": accepted - rated - waiting,
        "balanced": accepted == rated + waiting,
    }


def _accounting_cells(hours: list[dict[str, Any]], width: int = 80) -> list[list[str]]:
    """The table's header and body lines as cells, every line checked to fit `width`."""
    console = Console(width=width, record=True)
    console.print(accounting_table(hours))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= width
    return [
        [cell.strip() for cell in re.split("[│┃]", line)[1:-1]]
        for line in lines
        if line.startswith(("│", "┃"))
    ]


def test_pipeline_accounting_fits_80_columns_with_its_counts_grouped_and_whole() -> None:
    hours = [
        _hour(0, accepted=1_234_567, rated=1_234_000, waiting=567),
        _hour(1, accepted=3, rated=2),
    ]
    assert _accounting_cells(hours) == [
        ["", "", "", "unattri-", "", "in"],
        ["hour (UTC)", "accepted", "rated", "buted", "waiting", "pipeline"],
        ["2026-11-01 00:00:00Z", "1,234,567", "1,234,000", "10", "567", "0"],
        ["2026-11-01 01:00:00Z", "3", "2", "10", "0", "1"],
    ]


def test_pipeline_accounting_names_the_hours_that_do_not_balance_and_why() -> None:
    balanced = [_hour(0, accepted=5, rated=4, waiting=1)]
    assert "balanced[/] in every hour" in accounting_verdict(balanced)
    behind = [_hour(h, accepted=10, rated=8) for h in range(5)]
    verdict = accounting_verdict([*balanced, *behind])
    assert "not yet balanced[/] in 5 hours (2026-11-01 00:00, 2026-11-01 01:00, " in verdict
    assert "2026-11-01 02:00 and 2 more): 10 accepted event(s) not read" in verdict
    assert "more rated" not in verdict
    # More rated than accepted would be an event counted twice: said apart, in red.
    over = accounting_verdict([_hour(3, accepted=2, rated=3)])
    assert over.endswith("[bold red]more rated than accepted[/] in 1 hour (2026-11-01 03:00)")
    assert "not yet" not in over


def test_set_aside_events_get_a_column_and_a_note_and_balance() -> None:
    hours = [
        _hour(0, accepted=1_234_567, rated=1_234_000, waiting=565),
        _hour(1, accepted=3, rated=3),
    ]
    hours[0].update(failed=2, in_pipeline=0, balanced=True)
    hours[1].update(failed=0)
    assert _accounting_cells(hours) == [  # failed in the place of unattributed
        ["", "", "", "", "", "in"],
        ["hour (UTC)", "accepted", "rated", "failed", "waiting", "pipeline"],
        ["2026-11-01 00:00:00Z", "1,234,567", "1,234,000", "2", "565", "0"],
        ["2026-11-01 01:00:00Z", "3", "3", "0", "0", "0"],
    ]
    verdict = accounting_verdict(hours)
    assert verdict.startswith("accepted = rated + waiting + failed: [green]balanced[/]")
    assert verdict.endswith("(2 event(s) set aside, rating them failed: see `qm pipeline status`)")


def test_a_meter_reads_as_what_it_measures_in_four_columns_at_80() -> None:
    meters = [
        {
            "name": "invocations",
            "event_type": "qm.invocation.usage",
            "value": "count",
            "aggregation": "count",
            "unit": "call",
            "filter_field": None,
            "filter_value": None,
            "built_in": True,
        },
        {
            "name": "staging_memory_gb_hours",
            "event_type": "qm.resource.usage",
            "value": "memory_gb_hours",
            "aggregation": "sum",
            "unit": "GB-h",
            "filter_field": "environment",
            "filter_value": "staging",
            "built_in": False,
        },
    ]
    console = Console(width=80, record=True)
    console.print(meter_table(meters, title="meters"))
    lines = console.export_text().splitlines()
    assert max(len(line) for line in lines) <= 80
    cells = [[c.strip() for c in re.split("[│┃]", line)[1:-1]] for line in lines if "│" in line]
    assert cells == [
        ["invocations", "count of events", "call", "yes"],
        ["", "in qm.invocation.usage", "", ""],
        ["staging_memory_gb_hours", "sum of memory_gb_hours", "GB-h", "no"],
        ["", "in qm.resource.usage", "", ""],
        ["", "where environment = staging", "", ""],
    ]
    # A long name stays whole: gpu_seconds_for_infe|rence_workloads_prod was split.
    long = {**meters[1], "name": "gpu_seconds_for_inference_workloads_prod"}
    console = Console(width=80, record=True)
    console.print(meter_table([long], title="meters"))
    shown = console.export_text()
    assert "│ gpu_seconds_for_inference_workloads_prod │" in shown, shown
    assert max(len(line) for line in shown.splitlines()) <= 80


def test_pipeline_accounting_exits_1_only_when_more_is_rated_than_accepted(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    def serving(hours: list[dict[str, Any]]) -> Any:
        body = {"start": "", "end": "", "hours": hours, "balanced": False}
        return lambda **_: httpx.Client(
            transport=httpx.MockTransport(lambda _r: httpx.Response(200, json=body)),
            base_url="http://qm",
        )

    runner = CliRunner()
    # Not read by the pipeline yet: normal, status 0.
    monkeypatch.setattr(cli_client, "api_client", serving([_hour(0, accepted=5, rated=3)]))
    behind = runner.invoke(pipeline_app, ["accounting"], env={"COLUMNS": "100"})
    assert behind.exit_code == 0, behind.output
    assert "not yet balanced" in behind.output
    # More rated than accepted: an event counted twice, status 1.
    monkeypatch.setattr(cli_client, "api_client", serving([_hour(0, accepted=3, rated=5)]))
    over = runner.invoke(pipeline_app, ["accounting"], env={"COLUMNS": "100"})
    assert over.exit_code == 1
    assert "more rated than accepted" in over.output


def test_pipeline_status_shows_set_aside_events_with_their_reasons(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    body = {
        "log_head": 9,
        "streams": [{"name": "pipeline", "position": 9, "upto": None, "lag": 0, "tenant_id": None}],
        "lag": 0,
        "waiting": 0,
        "earliest_deadline": None,
        "failed": 2,
        "failed_latest": [
            {
                "position": 7,
                "event_id": "f4",
                "source": "lunchbot",
                "event_type": "qm.invocation.usage",
                "recorded_at": "2026-11-01T12:00:00Z",
                "failed_at": "2026-11-01T12:00:01Z",
                "reason": "compute_units 1E+20 is outside 0 .. 1000000000000000000 (10^18)",
            }
        ],
        "worker": {
            "enabled": True,
            "running": True,
            "runs": 3,
            "failures": 0,
            "last_success_at": None,
            "last_error": None,
        },
        "latency": {
            "since": "2026-11-01T11:00:00Z",
            "events": 0,
            "p50_ms": None,
            "p99_ms": None,
            "max_ms": None,
            "waited": 0,
        },
    }
    monkeypatch.setattr(
        cli_client,
        "api_client",
        lambda **_: httpx.Client(
            transport=httpx.MockTransport(lambda _r: httpx.Response(200, json=body)),
            base_url="http://qm",
        ),
    )
    shown = CliRunner().invoke(pipeline_app, ["status"], env={"COLUMNS": "120"})
    assert shown.exit_code == 0, shown.output
    assert "set aside (rating failed, not rated): 2" in shown.output
    assert "f4" in shown.output
    assert "compute_units 1E+20 is outside 0 .. 1000000000000000000" in shown.output
    body["failed"], body["failed_latest"] = 0, []
    quiet = CliRunner().invoke(pipeline_app, ["status"], env={"COLUMNS": "120"})
    assert "set aside" not in quiet.output


def test_environment_names_are_quoted_into_the_path_or_refused_before_sending(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    paths: list[str] = []

    def answer(r: httpx.Request) -> httpx.Response:
        paths.append(r.url.raw_path.decode())
        if r.method == "DELETE":
            return httpx.Response(204)
        body = {"environment": "x", "cost_center": "cc", "created_at": "2026-11-01T00:00:00Z"}
        return httpx.Response(201, json=body)

    monkeypatch.setattr(
        cli_client,
        "api_client",
        lambda **_: httpx.Client(transport=httpx.MockTransport(answer), base_url="http://qm"),
    )
    runner = CliRunner()
    # A name the API refuses (422, naming the slug rule) still reaches its route whole.
    runner.invoke(environment_app, ["set", "Bad Env?x#y", "cc"])
    runner.invoke(environment_app, ["delete", "Bad Env"])
    assert paths == [
        "/v1/environment-overrides/Bad%20Env%3Fx%23y",
        "/v1/environment-overrides/Bad%20Env",
    ]
    # One no URL path segment can carry ('' was a 307, 'a/b' a 404): refused, never sent.
    for name in ("", "a/b", ".."):
        for args in (["set", name, "cc"], ["delete", name]):
            refused = runner.invoke(environment_app, args)
            assert refused.exit_code == 1
            assert "must be a slug" in refused.output
    assert len(paths) == 2


def _count_meter(value: str, *, built_in: bool = False) -> dict[str, Any]:
    return {
        "name": "m12",
        "event_type": "qm.invocation.usage",
        "value": value,
        "aggregation": "count",
        "unit": "t",
        "filter_field": None,
        "filter_value": None,
        "built_in": built_in,
    }


@pytest.mark.parametrize("had_defaults", [True, False])
def test_meter_create_says_what_it_counts_as_list_does_and_when_defaults_stop(
    monkeypatch: pytest.MonkeyPatch, had_defaults: bool
) -> None:
    listed = [_count_meter("count", built_in=had_defaults)] * 10

    def answer(r: httpx.Request) -> httpx.Response:
        if r.method == "GET":
            return httpx.Response(200, json=listed)
        return httpx.Response(201, json=_count_meter("tokens"))

    monkeypatch.setattr(
        cli_client,
        "api_client",
        lambda **_: httpx.Client(transport=httpx.MockTransport(answer), base_url="http://qm"),
    )
    args = ["create", "m12", "--event-type", "qm.invocation.usage", "--value", "tokens"]
    created = CliRunner().invoke(
        meter_app, [*args, "--aggregation", "count", "--unit", "t"], env={"COLUMNS": "200"}
    )
    assert created.exit_code == 0, created.output
    # A count with a field counts the events that carry it; "count of tokens" read as a sum.
    assert "created meter m12 (count of events with tokens)" in created.output
    console = Console(width=80, record=True)
    console.print(meter_table([_count_meter("tokens")], title="meters"))
    assert "count of events with tokens" in console.export_text()
    assert ("the 10 default meters no longer apply" in created.output) is had_defaults


def test_latencies_read_in_seconds_from_one_second_as_the_demo_writes_them() -> None:
    assert [latency_text(ms) for ms in (57.4, 999, 1530, 38673, 536200)] == [
        "57 ms",
        "999 ms",
        "1.53 s",
        "38.67 s",
        "536.20 s",
    ]


def test_pipeline_accounting_help_keeps_each_paragraph_on_one_line() -> None:
    shown = CliRunner().invoke(pipeline_app, ["accounting", "--help"], env={"COLUMNS": "300"})
    assert shown.exit_code == 0, shown.output
    assert "events not read by the pipeline yet are normal and exit 0" in shown.output


USAGE_BODY: dict[str, Any] = {
    "start": "2026-12-01T00:00:00Z",
    "end": "2027-01-01T00:00:00Z",
    "as_of": None,
    "rows": [],
    "by": "cost-center",
    "groups": [
        {
            "cost_center": "cc-1",
            "team": None,
            "app": None,
            "meter": "tokens",
            "unit": "token",
            "aggregation": "sum",
            "quantity": "1200000",
            "event_count": 4000,
            "rows": 900,
            "unattributed": False,
            "share": "0.6",
        },
        {
            "cost_center": "default",
            "team": None,
            "app": None,
            "meter": "tokens",
            "unit": "token",
            "aggregation": "sum",
            "quantity": "500000",
            "event_count": 12,
            "rows": 1,
            "unattributed": True,
            "share": "0.25",
        },
    ],
    "meters": [
        {
            "meter": "tokens",
            "unit": "token",
            "aggregation": "sum",
            "quantity": "2000000",
            "groups": 30,
            "shown": 2,
            "omitted": 28,
            "omitted_quantity": "300000",
            "omitted_share": "0.15",
        },
    ],
}


def test_usage_show_sums_per_cost_center_by_default_with_a_footer_of_what_is_left_out(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[httpx.URL] = []

    def answer(r: httpx.Request) -> httpx.Response:
        asked.append(r.url)
        return httpx.Response(200, json=USAGE_BODY)

    monkeypatch.setattr(
        cli_client,
        "api_client",
        lambda **_: httpx.Client(transport=httpx.MockTransport(answer), base_url="http://qm"),
    )
    runner = CliRunner()  # `usage show`, its group's only command, is the group itself
    window = ["--start", "2026-12-01T00:00:00Z", "--end", "2027-01-01T00:00:00Z"]
    shown = runner.invoke(usage_app, [*window], env={"COLUMNS": "100"})
    assert shown.exit_code == 0, shown.output
    assert asked[-1].params.get_list("by") == ["cost-center"]
    assert asked[-1].params.get_list("top") == ["50"]
    assert re.search(
        r"│ cc-1\s+│ tokens\s+│\s+1,200,000 token │\s+60\.0% │\s+4,000 │", shown.output
    )
    assert "default (unattributed)" in shown.output
    assert "2 of 30 rows shown (one per cost center and meter; 1 meter)" in shown.output
    assert (
        "tokens: 28 more cost centers not shown, 300,000 token (15.0% of 2,000,000 token)"
        in shown.output
    )
    assert "--top N shows more (--top 0: all)" in shown.output
    # Filters go to the API as given (repeated, or comma lists the API splits); --top 0: all.
    args = [*window, "--by", "app", "--team", "web,data", "--team", "ops", "--top", "0"]
    runner.invoke(usage_app, [*args, "--meter", "tokens"], env={"COLUMNS": "100"})
    params = asked[-1].params
    assert params.get_list("team") == ["web,data", "ops"]
    assert (params.get_list("by"), params.get_list("meter")) == (["app"], ["tokens"])
    assert "top" not in params
    runner.invoke(usage_app, [*window, "--by", "detail"], env={"COLUMNS": "100"})
    assert "by" not in asked[-1].params
    bad = runner.invoke(usage_app, [*window, "--by", "owner"])
    assert bad.exit_code == 1
    assert "--by 'owner' is not a grouping level; expected one of cost-center" in bad.output


def test_an_accounting_hour_pasted_back_as_start_is_taken(
    live_server: LiveServer,
    tenant: TenantHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`qm pipeline accounting --start "2026-11-01 00:00"`, pasted from the table, was a 422:
    a request's moment needs its seconds and an offset."""
    hour = _accounting_cells([_hour(0, accepted=3, rated=3)])[-1][0]
    qm = make_qm(live_server, tenant, monkeypatch)
    pasted = qm("pipeline", "accounting", "--start", hour)
    assert "no events accepted in the window" in pasted.output
    qm("pipeline", "accounting", "--start", hour.removesuffix(":00Z"), expect=1)
