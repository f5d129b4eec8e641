"""The simulation against a real server: over loopback HTTP on SQLite and PostgreSQL (the
`live_server` fixture); the whole demo runs in test_demo_billing.py."""

from __future__ import annotations

import io
from datetime import datetime, timedelta
from pathlib import Path

import httpx
import pytest
from rich.console import Console

from quartermaster.domain.timeutil import floor_hour, parse_timestamp, utc_now
from quartermaster.sim.demo import DemoFailure, DemoOptions, run
from quartermaster.sim.driver import fetch_reconciliation, send, set_up
from quartermaster.sim.generator import expectation, stream
from quartermaster.sim.model import Registration, SimConfig
from quartermaster.sim.platform import build_platform
from quartermaster.sim.report import check_counts
from tests.conftest import LiveServer, TenantHandle


def _recent_weekday_afternoon() -> datetime:
    """An office hour in the past, so every scenario of the hour has events."""
    moment = floor_hour(utc_now()).replace(hour=14) - timedelta(days=1)
    while moment.weekday() >= 5:
        moment -= timedelta(days=1)
    return moment


def test_a_simulated_hour_reconciles_over_http(
    live_server: LiveServer, tenant: TenantHandle
) -> None:
    began = utc_now()
    platform = build_platform(
        SimConfig(start=_recent_weekday_afternoon(), hours=1, apps=5, teams=2, seed=11)
    )
    with httpx.Client(base_url=live_server.url, headers=tenant.headers, timeout=60) as client:
        credentials = set_up(client, platform)
        summary = send(client, stream(platform, credentials), hours=1, connections=2)
        counters = fetch_reconciliation(
            client, floor_hour(began), floor_hour(utc_now()) + timedelta(hours=1)
        )
        (move,) = platform.moves
        ownership = client.get(f"/v1/apps/{move.app_id}").json()["ownership"]
        late = [
            r
            for r in platform.resources
            if r.registration in (Registration.LATE_WITHIN_WINDOW, Registration.LATE_AFTER_WINDOW)
        ]
        registered = [
            client.get("/v1/resources", params={"resource_id": r.resource_id}).json() for r in late
        ]
    expected = expectation(platform)
    assert check_counts(summary, expected, counters) == []
    assert summary.retries == 0
    assert expected.duplicates > 0  # the client's re-send was deduplicated
    assert set(expected.rejected) == {"bad_signature", "invalid_data"}
    # the control actions reached the control plane, dated as simulated
    assert [(s["team"], parse_timestamp(s["valid_from"])) for s in ownership][-1] == (
        move.to_team,
        move.at,
    )
    assert [len(spans) for spans in registered] == [1] * len(late)


def test_the_demo_never_wipes_a_directory_it_did_not_make(tmp_path: Path) -> None:
    precious = tmp_path / "precious"
    precious.mkdir()
    (precious / "notes.txt").write_text("keep me")
    options = DemoOptions(hours=1, apps=4, teams=2, data_dir=precious)
    with pytest.raises(DemoFailure, match="not empty and was not made by the demo"):
        run(options, console=Console(file=io.StringIO()))
    assert (precious / "notes.txt").read_text() == "keep me"
