"""The billing commands' own formatting (their runs over HTTP: tests/billing/test_cli.py)."""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import httpx
import pytest

from quartermaster.billing.service import Share, summarize
from quartermaster.cli import billing as billing_cli
from quartermaster.cli.client import LineConsole


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
        # Half a second after midnight read as midnight, the period as a whole month's days.
        (
            "2026-11-01T00:00:00.500000Z",
            "2026-12-01T00:00:00Z",
            "2026-11-01 00:00:00.5Z .. 2026-12-01",
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
        ["31460f99c508", "458,145.261", "13.744358"],
        ["cc-1100-finance", "@ 0.00003", ""],
        ["finance-ops", "", ""],
        ["invoice-portal", "", ""],
        ["usage cpu_seconds", "", ""],
        ["usage", "", ""],
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
        ["0b067d04532b", "458,145.261", "13.744358"],
        ["cc-1100-finance", "", ""],
        ["finance-ops", "", ""],
        ["-", "", ""],
        ["platform lb", "", ""],
        ["proportional to requests", "", ""],
    ]


def test_the_summary_heads_one_app_as_the_top_app(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "100")
    line = {"cost_center": "cc-1", "team": "web", "app": "shop", "amount": "1.50"}
    billing_cli.print_summary(_summary([line]), "USD")
    one = capsys.readouterr().out
    assert "top app (USD)" in one
    assert "top 1 apps" not in one
    billing_cli.print_summary(_summary([line, line | {"app": "api", "amount": "2"}]), "USD")
    assert "top 2 apps (USD)" in capsys.readouterr().out


def _summary(lines: list[dict[str, Any]]) -> dict[str, Any]:
    """The API's summary of these lines (GET /v1/billing/runs/{id}/summary)."""
    summary = summarize(
        ((li["cost_center"], li["team"], li["app"], Decimal(li["amount"])) for li in lines), top=10
    )

    def shares(items: list[Share]) -> list[dict[str, Any]]:
        return [
            {"cost_center": s.cost_center, "team": s.team, "app": s.app, "amount": str(s.amount)}
            for s in items
        ]

    return {
        "cost_centers": shares(summary.cost_centers),
        "teams": shares(summary.teams),
        "top_apps": shares(summary.top_apps),
    }


# A realistic bill's longest names (the demo's 300 apps): at 80 columns each stays whole,
# where they folded mid-word (`cc-1100-financ|e`, `reserved_capac|ity`, `finalize|d`).
LONG = {
    "cost_center": "cc-7100-supply-chain",
    "team": "customer-support",
    "app": "reconciliation-classifier-pr9368",
}


def _at_80(output: str, *names: str) -> None:
    assert max(len(text) for text in output.splitlines()) <= 80
    for name in names:
        assert name in output, f"{name!r} is split:\n{output}"


def test_a_bill_reads_at_80_columns_with_every_name_whole(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    credit = {
        **LONG,
        "id": "7a39d4d9f0f8c4b0a0e1d2c3b4a59687",
        "app": None,
        "cost_type": "discount",
        "adjusted_cost_type": None,
        "item": "reserved_capacity",
        "allocation_method": "proportional to cpu_seconds: 156369.718 of 1780000.5",
        "quantity": "17673655.267",
        "unit_price": None,
        "amount": "-11.062100",
    }
    usage = credit | {
        **LONG,
        "id": "fe634fd1d1304c1e9d3e2a61c0b3d7aa",
        "cost_type": "adjustment",
        "adjusted_cost_type": "usage",
        "item": "network_bytes",
        "allocation_method": "usage",
        "quantity": "2359722170",
        "unit_price": "0.000192307692",
        "amount": "1942.078549",
    }
    billing_cli.print_summary(_summary([credit, usage]), "USD")
    billing_cli.print_lines([credit, usage], limit=None)
    shown = capsys.readouterr().out
    _at_80(shown, *LONG.values(), "reserved_capacity", "7a39d4d9f0f8", "fe634fd1d130")
    _at_80(shown, "usage* network_bytes", "2,359,722,170", "@ 0.000192307692", "1942.078549")


def test_the_run_list_and_the_preview_read_at_80_columns(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    document = {
        "id": "d780dcccdd7c435c8434eb85bcc0c4a4",
        "kind": "chargeback",
        "status": "finalized",
        "period_start": "2026-12-01T15:00:00Z",
        "period_end": "2026-12-03T15:00:00Z",
        "total": "1942078.549",
        "currency": "USD",
        "line_count": 3439,
        "corrects_run_id": "e4a0378f130d42ddbe00648874055978",
    }
    answers = {
        "/v1/billing/runs": [document],
        "/v1/billing/preview": {
            "period_start": "2026-12-01T00:00:00Z",
            "period_end": "2027-01-01T00:00:00Z",
            "elapsed_days": "2.65",
            "total_days": "31.00",
            "currency": "USD",
            "month_to_date": "1942.08",
            "forecast": "22718.64",
            "method": "run-rate",
            "teams": [LONG | {"month_to_date": "1234.56", "forecast": "14441.11"}],
            # The app above its team: a reserved-capacity credit went to the team as a whole.
            "apps": [LONG | {"month_to_date": "1264.56", "forecast": "14441.11"}],
        },
    }
    monkeypatch.setattr(billing_cli, "request", lambda _method, path, **_kw: answers[path])
    # An 80-column terminal, without colour: the preview's lines of prose are wrapped only
    # there (into a file or a pipe they stay whole, for grep).
    monkeypatch.setattr(
        billing_cli,
        "out",
        lambda: LineConsole(force_terminal=True, color_system=None, highlight=False),
    )
    billing_cli.list_runs(kind=None, status=None, adjustments=True, url=None, api_key=None)
    listed = capsys.readouterr().out
    _at_80(listed, "d780dcccdd7c", "e4a0378f130d", "chargeback", "finalized", "1,942,078.549")
    _at_80(listed, "2026-12-01", "15:00:00Z", "3,439")
    billing_cli.preview(price_book=None, url=None, api_key=None)
    previewed = capsys.readouterr().out
    _at_80(previewed, *LONG.values(), "1,234.56", "1,264.56", "14,441.11")
    assert re.search(r"│ customer-support\s+│\s+1,234\.56 │\s+14,441\.11 │", previewed)
    assert re.search(r"│ -30\.00 team-wide\s+│", previewed), previewed
    assert "team-wide: charged to the team as a whole" in " ".join(previewed.split())


@pytest.mark.parametrize(
    ("total", "shown"),
    [
        ("299.004000", "299.004"),
        ("1007.005000", "1,007.005"),
        ("59.520000", "59.52"),
        ("0", "0.00"),
        ("-0.000200", "-0.0002"),
    ],
)
def test_a_total_is_shown_exactly_as_its_lines_sum(total: str, shown: str) -> None:
    """`total 299.00 USD` was the header over lines of 299.004000 (amounts are final to
    1e-6, docs/pricing.md): cents, with the digits below them when there are."""
    assert billing_cli._money(total) == shown


def test_finalize_warns_of_events_still_waiting_and_headers_are_exact(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "200")
    document = {
        "id": "d780dcccdd7c435c8434eb85bcc0c4a4",
        "document_type": "run",
        "kind": "invoice",
        "status": "finalized",
        "outcome": "finalized",
        "period_start": "2026-11-01T00:00:00.500000Z",
        "period_end": "2026-12-01T00:00:00Z",
        "total": "299.004000",
        "currency": "USD",
        "line_count": 2,
        "as_of": "2026-12-02T10:00:00Z",
        "price_book": "internal",
        "price_book_versions": "1",
        "note": None,
        "events_waiting": 3,
        "waiting_until": "2026-12-04T09:00:00.123456Z",
    }
    monkeypatch.setattr(billing_cli, "request", lambda *_a, **_kw: document)
    billing_cli.finalize("d780dcccdd7c", url=None, api_key=None)
    shown = " ".join(capsys.readouterr().out.split())
    assert "period 2026-11-01 00:00:00.5Z .. 2026-12-01: total 299.004 USD (2 lines" in shown
    assert (
        "warning: 3 events of the period still wait in the reconciliation window (owner not "
        "known yet; settled by 2026-12-04 09:00:00Z): not in this run; once they are "
        "attributed, bill them with qm bill adjust d780dcccdd7c"
    ) in shown
    monkeypatch.setitem(document, "events_waiting", 0)
    billing_cli.finalize("d780dcccdd7c", url=None, api_key=None)
    assert "warning" not in capsys.readouterr().out


@pytest.mark.parametrize(
    ("start", "end", "label"),
    [
        ("2026-11-02T00:00:00Z", "2026-11-03T00:00:00Z", "2026-11-02"),
        # The first and last days of November in Berlin: it read 2026-10-31, a day of October.
        ("2026-10-31T23:00:00Z", "2026-11-01T00:00:00Z", "2026-10-31 23:00-24:00Z"),
        ("2026-11-30T00:00:00Z", "2026-11-30T23:00:00Z", "2026-11-30 00:00-23:00Z"),
        ("2026-11-01T00:00:00.500000Z", "2026-11-02T00:00:00Z", "2026-11-01 00:00:00.5-24:00Z"),
    ],
)
def test_explain_shows_a_partial_days_bounds(start: str, end: str, label: str) -> None:
    assert billing_cli._day_label(start, end) == label


def test_run_errors_name_the_options_typed() -> None:
    message = "period_end 2026-01-01T00:00:00+00:00 is not after period_start 2026-01-02"
    assert billing_cli.option_names(message) == (
        "--end 2026-01-01T00:00:00+00:00 is not after --start 2026-01-02"
    )
    assert billing_cli.option_names("give either month or period_start/period_end, not both") == (
        "give either --month or --start/--end, not both"
    )
    assert billing_cli.option_names("kind: Input should be 'invoice' or 'chargeback'") == (
        "--kind: Input should be 'invoice' or 'chargeback'"
    )
    # Elsewhere the words are words.
    unchanged = "the period ends after the month in progress; kind of a run"
    assert billing_cli.option_names(unchanged) == unchanged


def test_a_team_member_sees_no_whole_document_line_counts(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """A team-member sees its team's lines only; the adjustment's note counted all of the
    document's (`… 40 lines (…)`) beside the team's count."""
    monkeypatch.setenv("COLUMNS", "200")
    adjustment = {
        "id": "a780dcccdd7c435c8434eb85bcc0c4a4",
        "document_type": "adjustment",
        "kind": "invoice",
        "status": "finalized",
        "corrects_run_id": "d780dcccdd7c435c8434eb85bcc0c4a4",
        "period_start": "2026-11-01T00:00:00Z",
        "period_end": "2026-12-01T00:00:00Z",
        "total": None,
        "currency": "USD",
        "line_count": 40,
        "as_of": "2026-12-02T10:00:00Z",
        "price_book": "internal",
        "price_book_versions": "1",
        "note": "corrects invoice run d780dcccdd7c435c8434eb85bcc0c4a4 for the period from "
        "2026-11-01 00:00 UTC until 2026-12-01 00:00 UTC: 40 lines (40 with late usage, 0 "
        "re-rated by price book changes)",
    }
    detail = {"team": "data", "visible_total": "1.5", "visible_line_count": 2, "lines": []}
    billing_cli._print_document(adjustment, detail=detail)
    shown = " ".join(capsys.readouterr().out.split())
    assert "team data: 1.50 USD in 2 lines;" in shown
    assert "corrects run d780dcccdd7c435c8434eb85bcc0c4a4" in shown
    assert "40" not in shown
    # An admin's: the whole document's count, and the note.
    billing_cli._print_document(adjustment | {"total": "7.000000"})
    shown = " ".join(capsys.readouterr().out.split())
    assert "(40 lines, as of" in shown
    assert "40 with late usage" in shown


def test_a_run_names_itself_by_the_short_id_and_its_cut_off_as_times_are_shown(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The header had the whole 32-character id, where every table shows 12 (which every
    command takes back), and the empty run's time was the API's `…T02:54:24.920306Z`."""
    monkeypatch.setenv("COLUMNS", "200")
    document = {
        "id": "71ce5a2547ec4cc5a691a2375598077d",
        "document_type": "run",
        "kind": "invoice",
        "status": "draft",
        "period_start": "2026-11-01T00:00:00Z",
        "period_end": "2026-12-01T00:00:00Z",
        "total": "0.000000",
        "currency": "USD",
        "line_count": 0,
        "as_of": "2026-12-05T02:54:24.920306Z",
        "price_book": "internal",
        "price_book_versions": "1",
        "note": None,
    }
    answer = {"run": document, "outcome": "created"}

    def client(**_: Any) -> httpx.Client:
        transport = httpx.MockTransport(lambda _request: httpx.Response(201, json=answer))
        return httpx.Client(transport=transport, base_url="http://qm")

    monkeypatch.setattr(billing_cli, "api_client", client)
    billing_cli.run(month="2026-11", url=None, api_key=None)
    shown = " ".join(capsys.readouterr().out.split())
    assert "invoice 71ce5a2547ec draft, period 2026-11: total 0.00 USD" in shown
    assert document["id"] not in shown
    assert "no usage in the period as recorded by 2026-12-05 02:54:24Z: events sent" in shown
    # finalize and show print the same header
    monkeypatch.setattr(billing_cli, "request", lambda *_a, **_kw: document)
    billing_cli.finalize("71ce5a2547ec", url=None, api_key=None)
    assert "invoice 71ce5a2547ec draft" in capsys.readouterr().out
