"""`qm budget default-cap …` and `qm alerts high-cost …` against a live server over HTTP."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from quartermaster.guardrails.models import CostPreview
from quartermaster.runtime import Runtime
from tests.conftest import LiveServer, TenantHandle
from tests.guardrails.support import build_world, key_for
from tests.tenancy.cli_support import make_qm

pytestmark = pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)
EXAMPLES = Path(__file__).resolve().parents[2] / "docs" / "examples" / "policies"


def test_default_cap_commands(
    client: TestClient,
    live_server: LiveServer,
    tenant: TenantHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    qm = make_qm(live_server, tenant, monkeypatch)
    made = qm("budget", "default-cap", "set", "ephemeral", "--amount", "25", "--period", "day")
    assert "default cap for ephemeral apps: 25 per day each, then halt" in made.output
    qm("budget", "default-cap", "set", "non_production", "--amount", "40", "--action", "throttle")
    listed = qm("budget", "default-cap", "list").output
    assert re.search(r"│ ephemeral apps\s+│ 25 a day each, then halt\s+│ by \S+", listed)
    assert re.search(r"│ non_production apps\s+│ 40 a \w+ each, then throttle\s+│", listed)
    bad = qm("budget", "default-cap", "set", "prod", "--amount", "1", expect=1)
    assert "applies_to 'prod' is not one of: ephemeral, non_production" in bad.output
    deleted = qm("budget", "default-cap", "delete", "ephemeral").output
    assert "deleted the default cap for ephemeral" in deleted
    again = qm("budget", "default-cap", "delete", "ephemeral", expect=1)
    assert "no default cap for 'ephemeral'" in again.output
    wrong = qm("budget", "default-cap", "delete", "production", expect=1)
    assert "applies_to 'production' is not one of: ephemeral, non_production" in wrong.output


def test_high_cost_commands(
    client: TestClient,
    runtime: Runtime,
    live_server: LiveServer,
    tenant: TenantHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = build_world(client, tenant)
    qm = make_qm(live_server, tenant, monkeypatch)
    assert "high-cost previews are off" in qm("alerts", "high-cost", "threshold").output
    on = qm("alerts", "high-cost", "threshold", "75").output
    assert "a preview invoice after any app-hour costing 75 or more" in on
    assert "75" in qm("alerts", "high-cost", "threshold").output
    body = {
        "app": {"name": world.app, "month_to_date": "130", "forecast": "900"},
        "team": {"name": world.team, "month_to_date": "150", "forecast": "1000"},
        "team_apps": [
            {"app": world.app, "month_to_date": "130", "forecast": "900"},
            {"app": "sibling", "month_to_date": "20", "forecast": "100"},
        ],
        "tenant": {"month_to_date": "400", "forecast": "2000"},
        # The app's part under the team it had before it moved to this one (admin, finance).
        "app_other_teams": [
            {"team": "old", "cost_center": "cc0", "month_to_date": "55", "forecast": "61"}
        ],
        "meters": [
            {
                "meter": "gpu_seconds",
                "hour_cost": "120",
                "top_events": [
                    {
                        "event_id": "evt-expensive-1",
                        "event_time": "2026-03-10T14:05:00+00:00",
                        "event_type": "qm.invocation.usage",
                        "source": "apps/trainer",
                        "quantity": "3600",
                    }
                ],
            }
        ],
        "top_event_ids": ["evt-expensive-1"],
    }
    with runtime.session_factory() as session:
        row = CostPreview(
            tenant_id=tenant.tenant_id,
            app=world.app,
            team=world.team,
            cost_center="default",
            hour_start=datetime(2026, 3, 10, 14, tzinfo=UTC),
            hour_cost=Decimal("120"),
            threshold=Decimal("75"),
            currency="EUR",
            body=orjson.dumps(body).decode(),
        )
        session.add(row)
        session.commit()
        preview_id = row.id
    listed = qm("alerts", "high-cost", "list").output
    # The app and its team over the preview's id, the hour, the amounts with their currency.
    assert re.search(
        rf"│ {world.app} \(team {world.team}\)\s+│ 2026-03-10 14:00:00Z\s+│\s+120 EUR\s+│"
        r"\s+130 EUR\s+│\s+900 EUR\s+│",
        listed,
    )
    assert re.search(rf"│ {preview_id[:12]}\s+│", listed)
    shown = qm("alerts", "high-cost", "show", preview_id[:12]).output
    assert (
        f"app {world.app} (team {world.team}): 120 EUR in the hour from 2026-03-10 14:00:00Z"
        in shown
    )
    assert re.search(rf"│ app {world.app}\s+│\s+130 EUR │\s+900 EUR │", shown), shown
    assert re.search(rf"│ team {world.team}\s+│\s+150 EUR │\s+1000 EUR │", shown)
    # The team's other apps under it; the app itself is not listed twice.
    assert re.search(r"│   app sibling\s+│\s+20 EUR │\s+100 EUR │", shown)
    assert re.search(rf"│ app {world.app} under team old\s+│\s+55 EUR │\s+61 EUR │", shown)
    assert shown.count(f"app {world.app} ") == 3  # the heading, the totals, under team old
    assert re.search(r"│ tenant\s+│\s+400 EUR │\s+2000 EUR │", shown)
    assert re.search(
        r"│ gpu_seconds\s+│ evt-expensive-1\s+│ 2026-03-10 14:05:00Z\s+│\s+3600 │", shown
    ), shown
    assert re.search(r"│ 120 EUR\s+│ qm.invocation.usage from apps/trainer\s+│", shown)
    assert "no cost preview 'nope'" in qm("alerts", "high-cost", "show", "nope", expect=1).output
    # A team-member of the app's team: the same preview without the tenant's totals.
    member = key_for(client, tenant, "team-member", team=world.team)
    monkeypatch.setenv("QM_API_KEY", member["Authorization"].removeprefix("Bearer "))
    mine = qm("alerts", "high-cost", "show", preview_id[:12]).output
    assert re.search(rf"│ team {world.team}\s+│\s+150 EUR │\s+1000 EUR │", mine), mine
    assert "tenant" not in mine
    assert "400 EUR" not in mine
    assert "under team old" not in mine
    monkeypatch.setenv("QM_API_KEY", tenant.admin_token)
    off = qm("alerts", "high-cost", "threshold", "--off").output
    assert "high-cost previews are off now" in off


def test_decide_prints_policy_reasons_and_audit_notes(
    client: TestClient,
    live_server: LiveServer,
    tenant: TenantHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    world = build_world(client, tenant)
    qm = make_qm(live_server, tenant, monkeypatch)
    source = (EXAMPLES / "admission" / "gpu-needs-exception.rego").read_text()
    upload = {"name": "gpu", "source": source, "mode": "audit"}
    assert client.post("/v1/policies", json=upload, headers=tenant.headers).status_code == 201
    audited = qm("decide", "request", "--app", world.app, "--gpu", "1").output
    assert f"[audit] gpu: team {world.team} asks for 1 GPU(s)" in audited
    assert "allowed: decision" in audited
    upload["mode"] = "enforce"
    assert client.post("/v1/policies", json=upload, headers=tenant.headers).status_code == 201
    denied = qm("decide", "request", "--app", world.app, "--gpu", "1", expect=2).output
    assert f"- policy: gpu: team {world.team} asks for 1 GPU(s) without a 'gpu' exception" in denied
