"""`explain` of a line of usage of no app (the default cost center's unattributed usage) lists
its top raw events, with their source, type and resource, as for an app's line: finance could
not find which resources produced unattributed usage (no raw events, "no single app's
events")."""

from __future__ import annotations

from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI
from typer.testing import CliRunner

from quartermaster.cli.main import _register_groups, app
from quartermaster.runtime import Runtime, build_runtime
from tests.billing.platform import JANUARY_MONTH, Platform, event, jan
from tests.conftest import make_settings, start_live_server


@pytest.fixture
def billing_runtime(tmp_path: Path, fresh_db_url: str) -> Iterator[Runtime]:
    # No reconciliation window: an event nobody owns is unattributed as soon as it is rated.
    settings = make_settings(
        tmp_path / "qm", fresh_db_url, pipeline_enabled=False, reconciliation_window_hours=0
    )
    runtime = build_runtime(settings, migrate=False)
    yield runtime
    runtime.close()


def _lines(platform: Platform) -> list[dict[str, Any]]:
    ran = platform.client.post(
        "/v1/billing/runs", json={"month": JANUARY_MONTH}, headers=platform.headers
    )
    assert ran.status_code in (200, 201), ran.text
    run = ran.json()["run"]
    detail = platform.client.get(f"/v1/billing/runs/{run['id']}", headers=platform.headers)
    lines: list[dict[str, Any]] = detail.json()["lines"]
    return lines


STRAY = [
    event("resource.usage", jan(8), {"resource_id": "stray-vm", "cpu_seconds": 700}),
    event("resource.usage", jan(9), {"resource_id": "stray-vm", "cpu_seconds": 900}),
    event("resource.usage", jan(20), {"resource_id": "old-cron", "cpu_seconds": 400}),
]


def _unattributed(lines: list[dict[str, Any]]) -> dict[str, Any]:
    stray = [
        line
        for line in lines
        if (line["cost_center"], line["app"], line["item"]) == ("default", None, "cpu_seconds")
    ]
    assert len(stray) == 1, lines
    return stray[0]


def test_an_unattributed_line_lists_its_top_raw_events(platform: Platform) -> None:
    platform.send(STRAY)
    lines = _lines(platform)
    line = _unattributed(lines)
    assert Decimal(line["quantity"]) == 2000
    response = platform.client.get(
        f"/v1/billing/lines/{line['id']}/explain", headers=platform.headers
    )
    assert response.status_code == 200, response.text
    explained = response.json()
    top = [
        (e["source"], e["event_type"], e["resource_id"], Decimal(e["quantity"]), e["method"])
        for e in explained["top_events"]
    ]
    assert top == [
        ("tests/billing", "qm.resource.usage", "stray-vm", Decimal(900), "default"),
        ("tests/billing", "qm.resource.usage", "stray-vm", Decimal(700), "default"),
        ("tests/billing", "qm.resource.usage", "old-cron", Decimal(400), "default"),
    ]
    assert all(e["in_document"] for e in explained["top_events"])
    # the days come from the raw rows as of the document, as an app's line's do
    assert Decimal(explained["daily_total"]) == 2000
    busy = [(d["start"][:10], Decimal(d["value"])) for d in explained["daily"] if d["events"]]
    assert busy == [
        ("2026-01-08", Decimal(700)),
        ("2026-01-09", Decimal(900)),
        ("2026-01-20", Decimal(400)),
    ]
    notes = explained["notes"]
    assert not any("no single app's events" in note for note in notes), notes
    assert not any("from the rollups" in note for note in notes), notes
    assert explained["markers"] == []
    # a line of a team as a whole still has no events of its own; an app's line is unchanged
    web_cpu = next(line for line in lines if (line["app"], line["item"]) == ("web", "cpu_seconds"))
    web = platform.client.get(
        f"/v1/billing/lines/{web_cpu['id']}/explain", headers=platform.headers
    ).json()
    assert {e["resource_id"] for e in web["top_events"]} == {"web-pod-1"}


@pytest.mark.parametrize("fresh_db_url", ["sqlite"], indirect=True)  # the CLI only talks HTTP
def test_qm_explain_shows_each_events_type_source_and_resource(
    billing_app: FastAPI, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    platform.send(STRAY)
    line = _unattributed(_lines(platform))
    if not any(group.name == "bill" for group in app.registered_groups):
        _register_groups()
    live = start_live_server(billing_app)
    try:
        monkeypatch.setenv("QM_URL", live.url)
        monkeypatch.setenv("QM_API_KEY", platform.headers["Authorization"].split()[1])
        result = CliRunner().invoke(app, ["explain", line["id"][:12]], env={"COLUMNS": "100"})
    finally:
        live.server.should_exit = True
        live.thread.join(timeout=20)
    assert result.exit_code == 0, result.output
    shown = result.output
    assert "2. top contributing raw events" in shown
    assert "qm.resource.usage from tests/billing" in shown
    assert "resource stray-vm" in shown
    assert "resource old-cron" in shown
    assert "no single app's events" not in shown
