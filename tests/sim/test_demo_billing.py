"""The whole demo on a small platform (`qm serve` as a subprocess): it runs every stage, the
billing run's total is the sum of its lines, and the showback adds up; plus the pure parts
of the showback and the default period."""

from __future__ import annotations

import io
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from rich.console import Console

from quartermaster.sim.billing_stages import check_run
from quartermaster.sim.demo import STAGES, DemoOptions, parse_args, previous_month, run
from quartermaster.sim.showback import line_to_explain, sparkline, totals_by, unattributed


def _line(amount: str, cost_center: str, team: str | None, app: str | None, **extra: str) -> dict:
    return {
        "id": f"{cost_center}/{team}/{app}/{amount}",
        "amount": amount,
        "cost_center": cost_center,
        "team": team,
        "app": app,
        "cost_type": extra.get("cost_type", "usage"),
    }


LINES = [
    _line("10.50", "cc-a", "alpha", "one"),
    _line("2.25", "cc-a", "alpha", "two", cost_type="platform"),
    _line("4.00", "cc-b", "beta", "three"),
    _line("0.75", "default", None, None),
]


def test_totals_per_key_are_sorted_and_add_up() -> None:
    rows = totals_by(LINES, "cost_center")
    assert [(r.name, r.amount, r.lines) for r in rows] == [
        ("cc-a", Decimal("12.75"), 2),
        ("cc-b", Decimal("4.00"), 1),
        ("default", Decimal("0.75"), 1),
    ]
    assert [r.name for r in totals_by(LINES, "team")] == ["alpha", "beta", "(none)"]


def test_unattributed_is_the_default_cost_centers_usage_of_no_app() -> None:
    assert unattributed(LINES) == (Decimal("0.75"), Decimal("17.50"))


def test_the_line_explained_is_the_largest_usage_line_of_an_app() -> None:
    chosen = line_to_explain(LINES)
    assert chosen is not None
    assert chosen["app"] == "one"
    assert line_to_explain([LINES[1], LINES[3]]) is None


def test_a_traffic_meter_is_explained_before_a_larger_storage_line() -> None:
    storage = {**_line("99.00", "cc-a", "alpha", "one"), "meter": "storage_gb_days"}
    tokens = {**_line("5.00", "cc-a", "alpha", "two"), "meter": "tokens"}
    assert line_to_explain([storage, tokens]) == tokens
    assert line_to_explain([storage]) == storage


def test_sparkline_scales_to_the_largest_value() -> None:
    assert sparkline([Decimal(0), Decimal(4), Decimal(8)]) == "▁▅█"
    assert sparkline([Decimal(0), Decimal(0)]) == "▁▁"
    assert sparkline([]) == ""


def test_check_run_names_each_disagreement() -> None:
    detail = {"document": {"total": "17.50"}, "lines": LINES}
    focus = "BilledCost,ChargeCategory\n17.00,Usage\n0.50,Usage\n"
    assert check_run(detail, focus) == []
    wrong = {"document": {"total": "18.00"}, "lines": LINES}
    problems = check_run(wrong, "BilledCost\n17.50\n")
    assert problems == [
        "sum of the 4 lines 17.50 != total 18.00",
        "FOCUS BilledCost of 1 rows sums to 17.50 != total 18.00",
    ]


def test_the_default_period_is_the_previous_calendar_month() -> None:
    assert previous_month(datetime(2026, 11, 23, 18, tzinfo=UTC)) == (
        datetime(2026, 10, 1, tzinfo=UTC),
        31 * 24,
    )
    assert previous_month(datetime(2026, 3, 1, tzinfo=UTC)) == (
        datetime(2026, 2, 1, tzinfo=UTC),
        28 * 24,
    )
    assert previous_month(datetime(2027, 1, 5, tzinfo=UTC))[0] == datetime(2026, 12, 1, tzinfo=UTC)
    options = parse_args([])
    assert options.start is not None
    assert options.start.day == 1
    assert options.events_per_day is not None
    small = parse_args(["--days", "2"])
    assert (small.hours, small.start, small.events_per_day) == (48, None, None)


@pytest.mark.parametrize(
    ("argv", "said"),
    [
        (["--apps", "3"], "apps must be at least 4, got 3"),
        (["--teams", "1"], "teams must be at least 2, got 1"),
        (["--days", "0"], "hours must be at least 1, got 0"),
        (["--hours", "2", "--events-per-day", "0"], "events_per_day must be at least 100"),
        (["--hours", "2", "--start", "2026-11-01T00:30:00Z"], "must be on the hour"),
        (["--hours", "2", "--start", "2099-01-01T00:00:00Z"], "in the future"),
        (["--connections", "0"], "--connections must be at least 1, got 0"),
        (["--price-book", "/no/such/book.yaml"], "--price-book /no/such/book.yaml: no such file"),
    ],
)
def test_options_the_demo_cannot_run_are_refused_before_it_starts(
    argv: list[str], said: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """Each was found only after the data dir was wiped and a server started (or never:
    --connections 0 waited for ever)."""
    with pytest.raises(SystemExit) as stopped:
        parse_args(argv)
    assert stopped.value.code == 2
    assert said in capsys.readouterr().err


def test_the_small_demo_bills_and_reports(tmp_path: Path) -> None:
    output = io.StringIO()
    data_dir, jsonl = tmp_path / "demo", tmp_path / "events.jsonl"
    options = DemoOptions(hours=30, apps=8, teams=3, data_dir=data_dir, jsonl=jsonl)
    ctx = run(options, console=Console(file=output, width=160))
    assert ctx.summary is not None
    assert ctx.summary.sent > 0
    assert ctx.server is not None
    assert ctx.server.returncode is not None
    assert not data_dir.exists()  # removed without --keep
    events = jsonl.read_bytes().splitlines()
    assert len(events) == ctx.summary.sent
    assert all(orjson.loads(event)["specversion"] == "1.0" for event in events)
    ran = [title for title in ctx.timings if title in dict(STAGES)]
    assert ran == [title for title, _ in STAGES]  # every stage, in order
    assert ctx.run is not None
    document, lines = ctx.run["document"], ctx.run["lines"]
    assert document["status"] == "finalized"
    assert Decimal(document["total"]) == sum(Decimal(line["amount"]) for line in lines)
    assert Decimal(document["total"]) > 0
    assert len(lines) == document["line_count"]
    assert ctx.accounting is not None
    assert ctx.accounting["balanced"]
    assert ctx.pipeline is not None
    assert ctx.pipeline["waiting"] == 0
    assert ctx.explanation is not None
    assert ctx.explanation["daily"]
    assert ctx.alerts
    assert ctx.alerts[0]["kind"] == "budget_threshold"
    # Late usage of the finalized period: billed by an adjustment that corrects the run.
    assert ctx.adjustment is not None
    adjustment = ctx.adjustment["document"]
    assert adjustment["corrects_run_id"] == document["id"]
    assert Decimal(adjustment["total"]) > 0
    text = output.getvalue()
    assert "`qm bill late` lists 24 late events and an adjustment of" in " ".join(text.split())
    assert "reconciled:" in text
    for heading in ("cost per cost center", "cost per team", "top 10 of", "unattributed"):
        assert heading in text
    assert "accepted = rated + waiting" in text
    assert "event → billable latency" in text
    assert "line explained" in text
    assert "1. daily rollups" in text
    # 30 hours are less than the detector's three days of history: said, not implied away.
    assert "shorter than the 3 days of history the detector needs" in " ".join(text.split())


def test_a_closed_month_demo_still_crosses_a_budget_with_usage_sent_now(tmp_path: Path) -> None:
    output = io.StringIO()
    start, _ = previous_month(datetime.now(UTC))
    options = DemoOptions(hours=30, apps=8, teams=3, start=start, data_dir=tmp_path / "demo")
    ctx = run(options, console=Console(file=output, width=160))
    text = output.getvalue()
    assert "one app sends a burst of usage now" in text
    assert "priced into the current month" in text
    assert ctx.alerts
    assert {a["kind"] for a in ctx.alerts} == {"budget_threshold"}
