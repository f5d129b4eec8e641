"""How `qm app list` counts, pages (--limit, --all) and searches (--search) the apps of a
live server, and lays out at 80 columns."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from quartermaster.cli import apps as apps_cli
from quartermaster.cli.apps import app_app
from tests.conftest import LiveServer, TenantHandle
from tests.tenancy.cli_support import Qm, make_qm
from tests.tenancy.support import make_app, make_cost_center, make_team


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
def qm(
    live_server: LiveServer,
    tenant: TenantHandle,
    http: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> Qm:
    """120 apps, app-0000 to app-0119, and invoice-bot, on a live server."""
    make_cost_center(http, tenant, "cc-1")
    make_team(http, tenant, "web", cost_center="cc-1")
    for i in range(120):
        make_app(http, tenant, f"app-{i:04d}", team="web")
    make_app(http, tenant, "invoice-bot", team="web", title="Invoice Bot", owner="Bo@example.com")
    # --all reads pages of 40, so three pages and a last short one cross the network.
    monkeypatch.setattr(apps_cli, "APP_PAGE", 40)
    return make_qm(live_server, tenant, monkeypatch)


def _list(qm: Qm, *args: str) -> str:
    return qm("app", "list", *args).output


def test_app_list_says_how_many_apps_and_pages_by_default(qm: Qm) -> None:
    first = _list(qm)
    assert "app-0049" in first
    assert "app-0050" not in first
    assert first.rstrip().endswith("50 of 121 apps shown; 71 more: --all")
    every = _list(qm, "--all")
    assert "app-0119" in every
    assert "invoice-bot" in every
    assert every.rstrip().endswith("121 apps")
    assert _list(qm, "--limit", "0").rstrip().endswith("121 apps")
    cut = _list(qm, "--limit", "10")
    assert "app-0009" in cut
    assert "app-0010" not in cut
    assert cut.rstrip().endswith("10 of 121 apps shown; 111 more: --all")


def test_app_list_json_is_the_apis_apps_for_scripts(qm: Qm) -> None:
    listed = json.loads(qm("app", "list", "--search", "app-011", "--json").stdout)
    assert [a["app_id"] for a in listed] == [f"app-{i:04d}" for i in range(110, 120)]
    assert set(listed[0]) >= {"app_id", "title", "owner", "team", "cost_center", "lifecycle"}
    every = json.loads(qm("app", "list", "--all", "--json").stdout)
    assert len(every) == 121


def test_app_list_searches_id_title_and_owner_in_any_case(qm: Qm) -> None:
    assert _list(qm, "--search", "INVOICE").rstrip().endswith("1 app")
    assert "invoice-bot" in _list(qm, "--search", "bo@EXAMPLE")
    assert _list(qm, "--search", "app-00", "--all").rstrip().endswith("100 apps")
    assert _list(qm, "--search", "app-00").rstrip().endswith("50 of 100 apps shown; 50 more: --all")
    assert "no apps" in _list(qm, "--search", "nothing-like-it")
    # A % or _ is itself, not a wildcard.
    assert "no apps" in _list(qm, "--search", "app%0")


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
        apps_cli,
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


def test_resource_create_and_end_say_the_interval_in_utc(
    live_server: LiveServer,
    tenant: TenantHandle,
    http: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The server answers a binding with the offset it was sent with: `over
    [2026-11-01T00:00:00+01:00, open)` was said where `qm resource list` says UTC."""
    make_cost_center(http, tenant, "cc-1")
    make_team(http, tenant, "web", cost_center="cc-1")
    make_app(http, tenant, "bot", team="web")
    qm = make_qm(live_server, tenant, monkeypatch)
    bound = qm(
        "resource", "create", "r2", "--app", "bot", "--valid-from", "2026-11-01T00:00:00+01:00"
    )
    assert bound.output == "bound r2 to bot over [2026-10-31 23:00:00Z, open)\n"
    ended = qm("resource", "end", "r2", "--at", "2999-01-01T00:00:00-05:00").output
    assert ended == "r2 is bound to bot until 2999-01-01 05:00:00Z (from 2026-10-31 23:00:00Z)\n"
    assert "from 2026-10-31 23:00:00Z" in qm("resource", "list").output


def test_a_binding_ended_now_is_listed_and_rebound_at_the_same_whole_second(
    live_server: LiveServer,
    tenant: TenantHandle,
    http: httpx.Client,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`qm resource end` without --at stored microseconds: the list said `until 04:28:03Z`,
    and binding from that instant was a 409 naming an interval that contradicted it."""
    make_cost_center(http, tenant, "cc-1")
    make_team(http, tenant, "web", cost_center="cc-1")
    make_app(http, tenant, "bot", team="web")
    make_app(http, tenant, "other", team="web")
    qm = make_qm(live_server, tenant, monkeypatch)
    qm("resource", "create", "r3", "--app", "bot", "--valid-from", "2026-01-01T00:00:00Z")
    ended = qm("resource", "end", "r3").output
    match = re.search(r"until (\d{4}-\d\d-\d\d \d\d:\d\d:\d\dZ)", ended)
    assert match is not None, ended
    assert "the soonest end: now plus the time ahead the server accepts" in " ".join(ended.split())
    listed = qm("resource", "list", "--resource-id", "r3").output
    assert f"until {match.group(1)}" in listed
    rebound = qm(
        "resource",
        "create",
        "r3",
        "--app",
        "other",
        "--valid-from",
        match.group(1).replace(" ", "T"),
    )
    assert f"bound r3 to other over [{match.group(1)}, open)" in rebound.output
