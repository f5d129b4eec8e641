"""The usage view (GET /v1/usage): filters, grouping levels and top-N, summed in the store."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from quartermaster.api.app import create_app
from quartermaster.cli.main import _register_groups
from quartermaster.cli.main import app as qm
from quartermaster.domain.timeutil import Period, floor_hour, utc_now
from quartermaster.runtime import Runtime
from quartermaster.tenancy.models import Role
from quartermaster.usage.maintenance import purge_expired_raw
from quartermaster.usage.meters import Aggregation
from quartermaster.usage.pipeline import run_pipeline_until_drained
from quartermaster.usage.service import create_meter, metered_quantities, usage_view
from quartermaster.usage.store import UsageFilter
from tests.conftest import start_live_server
from tests.usage.conftest import Platform
from tests.usage.test_api import key_for
from tests.usage.test_metering_aggregations import INVOCATION, admin, meter

H = timedelta(hours=1)
# app -> (team, cost center, tokens of each of its events)
APPS = {
    "a1": ("t1", "c1", [5, 1]),
    "a2": ("t1", "c1", [3]),
    "a3": ("t2", "c1", [40]),
    "a4": ("t3", "c2", [2, 2, 3]),
    "a5": ("t4", "c3", [1]),
}


@pytest.fixture
def client(usage_runtime: Runtime) -> Iterator[TestClient]:
    app = create_app(usage_runtime.settings, runtime=usage_runtime)
    with TestClient(app) as test_client:
        yield test_client


def _fill(platform: Platform, *, meters: bool = False) -> Period:
    """The APPS' events, in the first hour of the period."""
    now = utc_now()
    start = floor_hour(now) - 2 * H
    for app_id, (team, cost_center, _) in APPS.items():
        platform.app(app_id, team=team, cost_center=cost_center, created_at=start - 24 * H)
    if meters:
        with platform.runtime.session_factory() as session:
            for definition in (
                meter("tokens_total", "tokens", Aggregation.SUM),
                meter("calls", "count", Aggregation.COUNT),
                meter("peak_tokens", "tokens", Aggregation.MAX),
                meter("last_tokens", "tokens", Aggregation.LATEST),
                meter("actors", "actor_id", Aggregation.UNIQUE_COUNT),
            ):
                create_meter(admin(platform), definition, session=session)
    events = []
    minute = 0
    for app_id, (_, _, tokens) in APPS.items():
        for value in tokens:
            minute += 1
            data = {"app_id": app_id, "tokens": value, "actor_id": f"u{minute % 3}"}
            events.append(
                platform.event(INVOCATION, data, event_time=start + timedelta(minutes=minute))
            )
    platform.append(events)
    run_pipeline_until_drained(platform.runtime)
    return Period(start, start + 2 * H)


def test_the_detailed_view_is_metered_quantities_for_every_aggregation(
    platform: Platform,
) -> None:
    """Without `by`, the view's rows are exactly what billing reads (each aggregation applied
    per row in the store's query), also cut inside hours and as of a time."""
    period = _fill(platform, meters=True)
    odd = Period(period.start + timedelta(minutes=2, seconds=30), period.start + 50 * H / 60)
    store = platform.runtime.usage_store
    with platform.runtime.session_factory() as session:
        for window, as_of in ((period, None), (odd, None), (period, utc_now())):
            billed = metered_quantities(
                platform.tenant_id, window, store=store, as_of=as_of, session=session
            )
            view = usage_view(platform.tenant_id, window, store=store, as_of=as_of, session=session)
            assert view.rows() == billed
            assert billed


def test_groups_sum_the_billed_quantity_of_their_rows(platform: Platform) -> None:
    period = _fill(platform, meters=True)
    store = platform.runtime.usage_store
    with platform.runtime.session_factory() as session:

        def groups(**kw: Any) -> dict[tuple[str | None, str], Decimal]:
            view = usage_view(platform.tenant_id, period, store=store, session=session, **kw)
            return {(g.cost_center or g.team or g.app, g.meter): g.quantity for g in view.groups}

        by_cc = groups(by="cost-center")
        assert by_cc[("c1", "tokens_total")] == 5 + 1 + 3 + 40
        # a max meter sums each app's peak (what the apps are billed for): 5 + 3 + 40
        assert by_cc[("c1", "peak_tokens")] == 48
        assert by_cc[("c1", "calls")] == 4
        assert by_cc[("c1", "last_tokens")] == 1 + 3 + 40
        by_team = groups(by="team", filters=UsageFilter(meters=("tokens_total",)))
        assert by_team == {
            ("t1", "tokens_total"): 9,
            ("t2", "tokens_total"): 40,
            ("t3", "tokens_total"): 7,
            ("t4", "tokens_total"): 1,
        }
        by_meter = usage_view(platform.tenant_id, period, store=store, session=session, by="meter")
        attributed = {
            g.meter: g for g in by_meter.groups if not g.unattributed and g.meter == "calls"
        }
        assert attributed["calls"].quantity == 8
        assert attributed["calls"].rows == 5  # the five apps' rows, summed
        filtered = groups(
            by="app",
            filters=UsageFilter(cost_centers=("c1", "c2"), teams=("t1", "t3"), meters=("calls",)),
        )
        assert filtered == {("a4", "calls"): 3, ("a1", "calls"): 2, ("a2", "calls"): 1}


def _usage(client: TestClient, period: Period, headers: dict[str, str], **params: Any) -> Any:
    window = {"start": period.start.isoformat(), "end": period.end.isoformat()}
    return client.get("/v1/usage", params={**window, **params}, headers=headers)


def test_usage_api_groups_filters_and_cuts_to_top_n(client: TestClient, platform: Platform) -> None:
    period = _fill(platform)
    answer = _usage(client, period, platform.headers, by="app", meter="tokens", top=2)
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["by"] == "app"
    assert body["rows"] == []
    assert [(g["app"], g["quantity"], g["share"]) for g in body["groups"]] == [
        ("a3", "40", "0.7018"),
        ("a4", "7", "0.1228"),
    ]
    assert body["groups"][1]["unattributed"] is False
    assert body["groups"][0]["cost_center"] is None
    assert body["groups"][0]["team"] is None
    [tokens] = body["meters"]
    assert tokens == {
        "meter": "tokens",
        "unit": "token",
        "aggregation": "sum",
        "quantity": "57",
        "groups": 5,
        "shown": 2,
        "omitted": 3,
        "omitted_quantity": "10",
        "omitted_share": "0.1754",
    }
    # comma lists and repeated parameters combine
    both = _usage(
        client,
        period,
        platform.headers,
        by="cost-center",
        cost_center=["c1,c2", "c3"],
        meter="tokens,invocations",
    ).json()
    assert {(g["cost_center"], g["meter"]): g["quantity"] for g in both["groups"]} == {
        ("c1", "invocations"): "4",
        ("c2", "invocations"): "3",
        ("c3", "invocations"): "1",
        ("c1", "tokens"): "49",
        ("c2", "tokens"): "7",
        ("c3", "tokens"): "1",
    }
    # the detailed view filters too, and keeps its fields
    detail = _usage(client, period, platform.headers, app="a4").json()
    assert detail["groups"] == []
    assert detail["by"] is None
    assert {(r["app"], r["meter"]): r["quantity"] for r in detail["rows"]} == {
        ("a4", "invocations"): "3",
        ("a4", "tokens"): "7",
    }


def test_usage_api_keeps_its_roles(client: TestClient, platform: Platform) -> None:
    period = _fill(platform)
    finance = _usage(client, period, key_for(platform, Role.FINANCE), by="team")
    assert finance.status_code == 200, finance.text
    member = _usage(client, period, key_for(platform, Role.TEAM_MEMBER), by="team")
    assert member.status_code == 403
    assert "admin, finance" in member.json()["error"]["message"]


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"by": "owner"}, "by", "expected one of cost-center, team, app, meter"),
        ({"top": 0}, "top", "between 1 and 100000"),
        ({"top": "many"}, "top", ""),
        ({"meter": "tokns"}, "meter", "'tokns' is not a meter of the tenant"),
        ({"cost_center": "c1,,c2"}, "cost_center", "empty value"),
        ({"team": ""}, "team", "empty value"),
        # A typo answered "no usage", as if the team had used nothing.
        ({"team": "paymnets"}, "team", "unknown team 'paymnets'"),
        ({"cost_center": "reserch"}, "cost_center", "unknown cost center 'reserch'"),
        ({"app": "nope,bot-x"}, "app", "unknown app 'nope'"),
    ],
)
def test_usage_api_names_a_bad_parameter(
    client: TestClient, platform: Platform, params: dict[str, Any], field: str, words: str
) -> None:
    now = floor_hour(utc_now())
    refused = _usage(client, Period(now - H, now), platform.headers, **params)
    assert refused.status_code == 422, refused.text
    error = refused.json()["error"]
    assert error["field"] == field
    assert words in error["message"]


def test_the_spec_lists_the_levels(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    params = {p["name"]: p for p in spec["paths"]["/v1/usage"]["get"]["parameters"]}
    by = params["by"]["schema"]
    assert by.get("enum", by.get("anyOf", [{}])[0].get("enum")) == [
        "cost-center",
        "team",
        "app",
        "meter",
    ]
    assert all(p["description"] for p in params.values())


def test_usage_show_over_a_live_server(usage_runtime: Runtime, platform: Platform) -> None:
    if not any(group.name == "usage" for group in qm.registered_groups):
        _register_groups()
    period = _fill(platform)
    live = start_live_server(create_app(usage_runtime.settings, runtime=usage_runtime))
    try:
        env = {"QM_URL": live.url, "QM_API_KEY": platform.admin_token, "COLUMNS": "120"}
        window = ["--start", period.start.isoformat(), "--end", period.end.isoformat()]
        shown = CliRunner().invoke(
            qm,
            ["usage", "show", *window, "--by", "team", "--meter", "tokens", "--top", "2"],
            env=env,
        )
        assert shown.exit_code == 0, shown.output
        assert re.search(r"│ t2\s+│ tokens\s+│\s+40 token │\s+70\.2% │\s+1 │", shown.output)
        assert "2 of 4 rows shown (one per team and meter; 1 meter)" in shown.output
        assert "tokens: 2 more teams not shown, 8 token (14.0% of 57 token)" in shown.output
        by_cc = CliRunner().invoke(
            qm, ["usage", "show", *window, "--cost-center", "c2,c3", "--app", "a4"], env=env
        )
        assert by_cc.exit_code == 0, by_cc.output
        assert re.search(r"│ c2\s+│ invocations\s+│\s+3 call │ 100\.0% │", by_cc.output)
        assert "c3" not in by_cc.output
        refused = CliRunner().invoke(qm, ["usage", "show", *window, "--meter", "x"], env=env)
        assert refused.exit_code == 1
        assert "meter 'x' is not a meter of the tenant" in refused.output
    finally:
        live.server.should_exit = True
        live.thread.join(timeout=20)


def test_past_retention_sums_are_grouped_and_a_max_is_unknown(platform: Platform) -> None:
    """Before the raw-retention horizon only sums and counts are kept: grouped as of a time
    they are answered from the rollups, a max is NULL (the service refuses it, naming as_of)."""
    now = utc_now()
    old = floor_hour(now) - 100 * 24 * H
    platform.app("bot", team="ds", cost_center="research", created_at=old - 48 * H)
    data = {"app_id": "bot", "tokens": 5}
    platform.append([platform.event(INVOCATION, data, event_time=old, recorded_at=old)])
    run_pipeline_until_drained(platform.runtime)
    purge_expired_raw(platform.runtime)
    old_day = Period(old.replace(hour=0), old.replace(hour=0) + 24 * H)
    store = platform.runtime.usage_store
    with platform.runtime.session_factory() as session:
        view = usage_view(
            platform.tenant_id, old_day, store=store, by="cost-center", as_of=now, session=session
        )
    assert [(g.cost_center, g.meter, g.quantity) for g in view.groups] == [
        ("research", "invocations", 1),
        ("research", "tokens", 5),
    ]
    groups = store.usage_groups(
        platform.tenant_id,
        old_day,
        aggregations={"tokens": "max", "invocations": "count"},
        by=("team",),
        filters=UsageFilter(),
        as_of=now,
    )
    assert [(g.team, g.meter, g.quantity, g.meter_quantity) for g in groups] == [
        ("ds", "invocations", 1, 1),
        ("ds", "tokens", None, None),
    ]
