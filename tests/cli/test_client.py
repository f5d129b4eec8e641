"""How the CLI's tables show API values."""

from __future__ import annotations

import io
import os
import subprocess
import sys
from datetime import UTC, datetime, timedelta, timezone

import httpx
import pytest
import typer
from rich.console import Console

from quartermaster.cli.client import (
    LineConsole,
    cell_text,
    check,
    data_table,
    fail,
    grouped,
    hour_cell,
    hour_names,
    plain,
    print_table,
    stacked,
    team_or_app,
    utc_moment,
)


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("2026-12-03T11:40:15.663787Z", "2026-12-03 11:40:15Z"),
        ("2026-12-03T11:40:15Z", "2026-12-03 11:40:15Z"),
        ("2026-12-03T11:40:15+00:00", "2026-12-03 11:40:15Z"),
        (datetime(2026, 12, 3, 11, 40, 15, 5, tzinfo=UTC), "2026-12-03 11:40:15Z"),
        # Not UTC: shown as sent, so no offset is lost.
        ("2026-12-03T11:40:15+01:00", "2026-12-03T11:40:15+01:00"),
        (
            datetime(2026, 12, 3, 11, 40, tzinfo=timezone(timedelta(hours=1))),
            "2026-12-03T11:40:00+01:00",
        ),
        ("2026-12-03", "2026-12-03"),
        ("run 2026-12-03T11:40:15Z", "run 2026-12-03T11:40:15Z"),
        (True, "yes"),
        (False, "no"),
        (None, ""),
        (0, "0"),
        ("12.50", "12.50"),
    ],
)
def test_cell_text(value: object, shown: str) -> None:
    assert cell_text(value) == shown


def test_a_table_cell_is_text_not_markup_and_folds() -> None:
    table = data_table(["title"], title="apps")
    table.add_row(plain("Ops [beta] " + "x" * 30))
    console = Console(width=20, record=True)
    console.print(table)
    shown = console.export_text()
    assert "[beta]" in shown
    assert "…" not in shown
    assert "".join(line.strip("│ ") for line in shown.splitlines()).count("x") == 30


def test_a_stacked_cell_shows_its_head_over_its_body() -> None:
    cell = stacked("High-cost hour", "app web cost 204.00 USD at 2026-12-03T11:00:00Z")
    assert cell.plain == "High-cost hour\napp web cost 204.00 USD at 2026-12-03T11:00:00Z"
    assert stacked(None, True).plain == "\nyes"


def test_grouped_keeps_the_digits_as_sent() -> None:
    assert grouped("0.000001") == "0.000001"
    assert grouped("1000") == "1,000"
    assert grouped("-1234.50") == "-1,234.50"
    # A Decimal as the API may write it (str of Decimal("0.0000001") is '1E-7'): in plain
    # notation, where int('1E-7') stopped the command.
    assert grouped("1E-7") == "0.0000001"
    assert grouped("1.5E+4") == "15,000"


def test_print_table_heads_fields_in_words_and_keeps_a_built_cell(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "40")
    rows = [{"key_id": "k1", "principal_name": "an-admin-with-a-long-name", "n": stacked(1, 2)}]
    print_table(("key_id", "principal_name", "n"), rows, title="keys")
    shown = capsys.readouterr().out
    assert "key id" in shown
    assert "principal_name" not in shown
    assert "principal" in shown  # the header wraps at its space, in words
    assert "│ 2 " in shown  # a cell the command built is kept, here two lines


def test_print_table_keeps_a_whole_column_on_one_line(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`qm budget list` split a name (sales-emea-mo|nthly) at 80 columns."""
    monkeypatch.setenv("COLUMNS", "80")
    columns = ("name", "applies to", "limit", "alerts at", "then")
    row = {
        "name": "sales-emea-monthly",
        "applies to": "cost center cc-2200-sales-emea",
        "limit": "12,000.00 a month",
        "alerts at": "50, 80, 90, 100 %",
        "then": "throttle at 120 %, halt at 150 %",
    }
    print_table(columns, [row], title="budgets")
    assert "│ sales-emea-mo │" in capsys.readouterr().out
    print_table(columns, [row], title="budgets", whole=("name",))
    assert "│ sales-emea-monthly │" in capsys.readouterr().out


def test_hour_names_names_three_hours_and_counts_the_rest() -> None:
    hours = [f"2026-11-01T{h:02d}:00:00Z" for h in range(5)]
    assert hour_names(hours[:1]) == "2026-11-01 00:00"
    assert hour_names(hours[:3]) == "2026-11-01 00:00, 2026-11-01 01:00, 2026-11-01 02:00"
    assert hour_names(hours) == ("2026-11-01 00:00, 2026-11-01 01:00, 2026-11-01 02:00 and 2 more")
    assert hour_names(["2026-11-01T01:00:00+00:00"]) == "2026-11-01 01:00"


def test_team_or_app_says_whose_a_row_is_the_app_first() -> None:
    assert team_or_app("web", "shop") == "app shop"
    assert team_or_app("web", None) == "team web"
    assert team_or_app(None, None) == ""


@pytest.mark.parametrize(
    ("value", "shown"),
    [
        ("2026-11-01T00:00:00+01:00", "2026-10-31 23:00:00Z"),
        ("2026-11-01T00:00:00.250-02:30", "2026-11-01 02:30:00.25Z"),
        ("2026-11-01T00:00:00Z", "2026-11-01 00:00:00Z"),
        (datetime(2026, 11, 1, tzinfo=timezone(timedelta(hours=1))), "2026-10-31 23:00:00Z"),
        ("open", "open"),
        (None, ""),
    ],
)
def test_utc_moment_writes_any_offset_in_utc_as_the_tables_do(value: object, shown: str) -> None:
    assert utc_moment(value) == shown


def test_an_hour_cell_is_a_moment_the_api_takes_back() -> None:
    """`2026-12-05 03:00` (hour_text) was a 422 when pasted as --start."""
    assert hour_cell("2026-12-05T03:00:00Z") == "2026-12-05 03:00:00Z"
    assert hour_cell("2026-12-05T03:00:00+00:00") == "2026-12-05 03:00:00Z"


LONG = (
    "the database is locked by another process (SQLite busy timeout passed: 5.0 s); "
    "retrying [bold]not markup[/bold] in 2 s"
)


def test_a_line_console_does_not_wrap_a_message_into_a_file_or_pipe() -> None:
    file = io.StringIO()
    LineConsole(file=file, highlight=False).print(f"retry 3: {LONG}", markup=False)
    assert file.getvalue() == f"retry 3: {LONG}\n"


def test_fail_writes_a_long_message_on_one_line_as_it_is(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("FORCE_TERMINAL", raising=False)
    with pytest.raises(SystemExit) as stopped:
        fail(LONG, status=2)
    assert stopped.value.code == 2
    assert capsys.readouterr().err == f"error: {LONG}\n"  # its [bold] shown, not read


def test_a_line_console_keeps_a_table_at_its_width() -> None:
    file = io.StringIO()
    table = data_table(["id", "note"], title="notes")
    table.add_row("n1", "word " * 40)
    LineConsole(file=file, width=60).print(table)
    lines = file.getvalue().splitlines()
    assert max(len(line) for line in lines) == 60
    assert lines[0].strip() == "notes"  # centred over the table, as before


def test_an_api_error_longer_than_80_columns_is_one_line_on_a_pipe(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("COLUMNS", raising=False)
    monkeypatch.delenv("FORCE_TERMINAL", raising=False)
    response = httpx.Response(503, json={"error": {"message": LONG}})
    with pytest.raises(typer.Exit):
        check(response)
    assert capsys.readouterr().err == f"error 503: {LONG}\n"


QM = [sys.executable, "-c", "from quartermaster.cli.main import main; main()"]


def test_a_cli_error_longer_than_80_columns_is_one_line_on_stderr() -> None:
    """`qm … 2> log; grep` found half of each error: Rich wrapped stderr at 80 columns when
    it was not a terminal."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QM_")}
    env.pop("COLUMNS", None)
    env |= {"QM_API_KEY": "qm_x_y", "PYTHONPATH": os.pathsep.join(sys.path)}
    url = "http://127.0.0.1:8000/" + "a-rather-long-path/" * 4 + "v1"
    result = subprocess.run(
        [*QM, "team", "list", "--url", url],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1
    expected = (
        f"error: --url={url!r} ends with /v1, which the CLI adds to each route itself: "
        "write it as http://HOST:PORT"
    )
    assert len(expected) > 80
    assert result.stderr.splitlines() == [expected]
