"""The billing commands' own formatting (their runs over HTTP: tests/billing/test_cli.py)."""

from __future__ import annotations

import pytest

from quartermaster.cli import billing as billing_cli


@pytest.mark.parametrize(
    ("start", "end", "label"),
    [
        ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", "2026-11"),
        ("2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z", "2026-12"),
        ("2026-11-01T00:00:00Z", "2026-11-16T00:00:00Z", "2026-11-01 .. 2026-11-16"),
        # A month in a tenant's own zone: its UTC bounds, as the tables write moments.
        (
            "2026-10-31T23:00:00Z",
            "2026-11-30T23:00:00Z",
            "2026-10-31 23:00:00Z .. 2026-11-30 23:00:00Z",
        ),
        (
            "2026-12-01T15:00:00Z",
            "2026-12-03T15:00:00Z",
            "2026-12-01 15:00:00Z .. 2026-12-03 15:00:00Z",
        ),
    ],
)
def test_a_run_lists_its_period_as_a_month_where_it_is_one(
    start: str, end: str, label: str
) -> None:
    assert billing_cli._period_label(start, end) == label


def test_a_line_shows_who_is_charged_for_what_and_how_much(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    line = {
        "id": "31460f99c5084b0f9d3e2a61c0b3d7aa",
        "cost_center": "cc-1100-finance",
        "team": "finance-ops",
        "app": "invoice-portal",
        "cost_type": "usage",
        "adjusted_cost_type": None,
        "item": "cpu_seconds",
        "allocation_method": "usage",
        "quantity": "458145.261",
        "unit_price": "0.00003",
        "amount": "13.744358",
    }
    shared = {**line, "id": "0b067d04532b4c1e", "app": None, "cost_type": "platform"}
    shared.update(unit_price=None, item="lb", allocation_method="proportional to requests")
    billing_cli.print_lines([line, shared], limit=1)
    shown = capsys.readouterr().out
    rows = [
        [cell.strip() for cell in text.strip("│").split("│")]
        for text in shown.splitlines()
        if text.startswith("│")
    ]
    assert "lines (1 of 2)" in shown
    assert rows == [
        ["31460f99c508", "cc-1100-finance", "usage", "458,145.261", "13.744358"],
        ["", "finance-ops", "cpu_seconds", "@ 0.00003", ""],
        ["", "invoice-portal", "usage", "", ""],
    ]
    # A unit price in plain notation: the API writes Decimal's str, '1.65135E-7'.
    billing_cli.print_lines([line | {"unit_price": "1.65135E-7"}], limit=None)
    assert "@ 0.000000165135" in capsys.readouterr().out
    billing_cli.print_lines([shared], limit=None)
    rows = [
        [cell.strip() for cell in text.strip("│").split("│")]
        for text in capsys.readouterr().out.splitlines()
        if text.startswith("│")
    ]
    assert rows == [
        ["0b067d04532b", "cc-1100-finance", "platform", "458,145.261", "13.744358"],
        ["", "finance-ops", "lb", "", ""],
        ["", "-", "proportional to requests", "", ""],
    ]


def test_the_summary_heads_one_app_as_the_top_app(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    line = {"cost_center": "cc-1", "team": "web", "app": "shop", "amount": "1.50"}
    billing_cli.print_summary([line], "USD")
    one = capsys.readouterr().out
    assert "top app (USD)" in one
    assert "top 1 apps" not in one
    billing_cli.print_summary([line, line | {"app": "api", "amount": "2"}], "USD")
    assert "top 2 apps (USD)" in capsys.readouterr().out
