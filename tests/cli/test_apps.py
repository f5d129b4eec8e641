"""How `qm app list` counts, pages (--limit, --all), lays out at 80 columns and searches
(--search) the API's apps."""

from __future__ import annotations

import re
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from quartermaster.cli import client as cli_client
from quartermaster.cli.apps import app_app


def _app(i: int, **kw: str) -> dict[str, Any]:
    return {
        "app_id": kw.get("app_id", f"app-{i:04d}"),
        "title": kw.get("title", f"app-{i:04d}"),
        "owner": kw.get("owner", "ann@example.com"),
        "team": "web",
        "cost_center": "cc-1",
        "lifecycle": "persistent",
        "environment": "production",
    }


@pytest.fixture
def apps(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    listed = [_app(i) for i in range(1200)]
    listed.append(_app(0, app_id="invoice-bot", title="Invoice Bot", owner="Bo@example.com"))
    monkeypatch.setattr(
        cli_client,
        "api_client",
        lambda **_: httpx.Client(
            transport=httpx.MockTransport(lambda _r: httpx.Response(200, json=listed)),
            base_url="http://qm",
        ),
    )
    return listed


def _list(*args: str) -> str:
    result = CliRunner().invoke(app_app, ["list", *args], env={"COLUMNS": "120"})
    assert result.exit_code == 0, result.output
    return result.output


@pytest.mark.usefixtures("apps")
def test_app_list_says_how_many_apps_and_pages_by_default() -> None:
    first = _list()
    assert "app-0049" in first
    assert "app-0050" not in first
    assert first.rstrip().endswith("50 of 1,201 apps shown; 1,151 more: --all")
    every = _list("--all")
    assert "app-1199" in every
    assert every.rstrip().endswith("1,201 apps")
    assert _list("--limit", "0").rstrip().endswith("1,201 apps")
    cut = _list("--limit", "10")
    assert "app-0009" in cut
    assert "app-0010" not in cut
    assert cut.rstrip().endswith("10 of 1,201 apps shown; 1,191 more: --all")


@pytest.mark.usefixtures("apps")
def test_app_list_searches_id_title_and_owner_in_any_case() -> None:
    assert _list("--search", "INVOICE").rstrip().endswith("1 app")
    assert "invoice-bot" in _list("--search", "bo@EXAMPLE")
    assert _list("--search", "app-00", "--all").rstrip().endswith("100 apps")
    assert "no apps" in _list("--search", "nothing-like-it")


def test_app_list_keeps_each_id_on_one_line_at_80_columns(monkeypatch: pytest.MonkeyPatch) -> None:
    long_id = "customer-invoice-reconciliation-bot"
    listed = [
        _app(
            0,
            app_id=long_id,
            title="Customer invoice reconciliation for the finance team",
            owner="dana.smith@example.com",
        ),
        _app(1, app_id="where2eat", title="where2eat"),
    ]
    monkeypatch.setattr(
        cli_client,
        "api_client",
        lambda **_: httpx.Client(
            transport=httpx.MockTransport(lambda _r: httpx.Response(200, json=listed)),
            base_url="http://qm",
        ),
    )
    result = CliRunner().invoke(app_app, ["list"], env={"COLUMNS": "80"})
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert all(len(line) <= 80 for line in lines), result.output
    assert re.search(rf"│ {long_id}\s+│ dana\.smith@example\.com\s+│", result.output)
    assert any("│ where2eat " in line for line in lines)
