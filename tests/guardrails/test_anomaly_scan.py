"""The anomaly scan over the real usage store and database: a spike on one app's meter raises
one alert per spike (re-scans and the spike's later hours add none) naming the meter and the
top events; a steady diurnal history raises nothing; the hourly cost query prices per app."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select
from sqlalchemy.orm import Session

from quartermaster.domain.timeutil import Period
from quartermaster.guardrails.anomaly import AnomalyRule, Series, incident_start, score_scope
from quartermaster.guardrails.anomaly_rates import tenant_rate_card
from quartermaster.guardrails.anomaly_scan import scan_period, scan_tenant
from quartermaster.guardrails.models import Alert
from quartermaster.runtime import Runtime
from quartermaster.usage.store import USAGE_SCHEMA, MeterRate, RatedBatch, TableBuilder
from tests.conftest import TenantHandle
from tests.guardrails.support import build_world, ok

START = datetime(2026, 3, 2, tzinfo=UTC)
DAYS = 4
HOUR = timedelta(hours=1)
SPIKE = START + timedelta(days=DAYS, hours=10)  # 10:00 on the fifth day
BOOK = {
    "name": "pb",
    "currency": "USD",
    "version": 1,
    "effective_from": "2026-01-01T00:00:00Z",
    "prices": [
        {"meter": "tokens", "model": "per_unit", "unit_price": "0.001"},
        {"meter": "invocations", "model": "per_unit", "unit_price": "0.01"},
    ],
}


def _usage(runtime: Runtime, tenant_id: str, team: str, app: str, spike: int = 1) -> None:
    """An office-hours app: 20 calls of 100 tokens an hour 09-18, 2 at night, for DAYS days,
    then the fifth day up to 12:00, its 10:00 and 11:00 hours `spike` times busier."""
    builder = TableBuilder(USAGE_SCHEMA)
    position = 0
    hours = DAYS * 24 + 12
    for h in range(hours):
        hour = START + timedelta(hours=h)
        calls = 20 if 9 <= hour.hour < 18 else 2
        if hour >= SPIKE and spike > 1:
            calls *= spike
        for call in range(calls):
            position += 1
            moment = hour + timedelta(seconds=call * 3600 // calls)
            event_id = f"e-{h}-{call}"
            for meter, quantity in (("tokens", Decimal(100 + call)), ("invocations", Decimal(1))):
                builder.append(
                    position, tenant_id, event_id, "src", "qm.invocation.usage", moment,
                    moment, moment, "default", team, app, meter, quantity, None, "app_id",
                    False, False, None, "production", "persistent",
                )  # fmt: skip
    runtime.usage_store.write(RatedBatch(stream=None, position=None, usage=builder.to_table()))


def _setup(client: TestClient, runtime: Runtime, tenant: TenantHandle, spike: int) -> str:
    world = build_world(client, tenant)
    response = client.post("/v1/price-books", content=json.dumps(BOOK), headers=tenant.headers)
    assert response.status_code in (200, 201), response.text
    _usage(runtime, tenant.tenant_id, world.team, world.app, spike)
    return world.app


def _alerts(runtime: Runtime, tenant_id: str) -> list[Alert]:
    with runtime.session_factory() as session:
        return list(session.scalars(select(Alert).where(Alert.tenant_id == tenant_id)))


def test_a_spike_alerts_once_naming_its_meters_and_top_events(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    app = _setup(client, runtime, tenant, spike=8)
    now = SPIKE + timedelta(hours=2)
    with runtime.session_factory() as session:
        first = scan_tenant(
            tenant.tenant_id, [SPIKE], store=runtime.usage_store, session=session, now=now
        )
    assert first.alerts == [f"anomaly:app:{app}:{SPIKE.isoformat()}"] + [
        k for k in first.alerts if k.startswith("anomaly:team:")
    ]
    # Re-scanned, and the spike's second hour scored: the same spike, no new alert.
    for hours in ([SPIKE], [SPIKE + timedelta(hours=1)], [SPIKE, SPIKE + timedelta(hours=1)]):
        with runtime.session_factory() as session:
            again = scan_tenant(
                tenant.tenant_id, hours, store=runtime.usage_store, session=session, now=now
            )
        assert again.alerts == []
    alerts = ok(client.get("/v1/alerts?kind=anomaly", headers=tenant.headers))
    mine = [a for a in alerts if a["details"]["scope_kind"] == "app"]
    assert len(mine) == 1
    details = mine[0]["details"]
    assert details["scope"] == app
    assert details["hour"] == SPIKE.isoformat()
    assert {m["meter"] for m in details["meters"]} == {"tokens", "invocations"}
    assert abs(sum(m["share_of_excess"] for m in details["meters"]) - 1) < 0.01
    top = details["top_events"]
    assert top
    assert all(e["event_id"].startswith(f"e-{DAYS * 24 + 10}-") for e in top)
    costs = [Decimal(e["cost"]) for e in top]
    assert costs == sorted(costs, reverse=True)
    assert details["first_ingested_at"] == SPIKE.isoformat()
    assert details["seconds_to_detect"] is not None
    assert "tokens" in mine[0]["message"]
    # A past hour, scanned after it ended: its whole cost, not "so far".
    assert f"in the hour from {SPIKE:%Y-%m-%d %H}:00 UTC, " in mine[0]["message"]
    assert "so far" not in mine[0]["message"]


def test_a_steady_diurnal_history_raises_nothing(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    _setup(client, runtime, tenant, spike=1)
    with runtime.session_factory() as session:
        result = scan_period(
            tenant.tenant_id,
            Period(START, START + timedelta(days=DAYS, hours=12)),
            store=runtime.usage_store,
            session=session,
        )
    assert result.hours == DAYS * 24 + 12
    assert result.alerts == []
    assert _alerts(runtime, tenant.tenant_id) == []


def test_the_scan_route_backfills_and_checks_its_period(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    app = _setup(client, runtime, tenant, spike=8)
    body = {"since": START.isoformat(), "until": (SPIKE + timedelta(hours=2)).isoformat()}
    made = ok(client.post("/v1/alerts/scan", json=body, headers=tenant.headers))
    assert f"anomaly:app:{app}:{SPIKE.isoformat()}" in made["alerts"]
    again = ok(client.post("/v1/alerts/scan", json=body, headers=tenant.headers))
    assert again["alerts"] == []
    backwards = {"since": body["until"], "until": body["since"]}
    response = client.post("/v1/alerts/scan", json=backwards, headers=tenant.headers)
    assert response.status_code == 422
    assert "since" in response.text
    too_long = {"since": "2026-01-01T00:00:00Z", "until": "2026-06-01T00:00:00Z"}
    response = client.post("/v1/alerts/scan", json=too_long, headers=tenant.headers)
    assert response.status_code == 422
    assert "until" in response.text
    # a moment without an offset is refused, as every request's moment (it was read as UTC)
    naive = {"since": "2026-01-01T00:00:00"}
    response = client.post("/v1/alerts/scan", json=naive, headers=tenant.headers)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "since"


def test_hourly_costs_price_each_app_and_meter(runtime: Runtime) -> None:
    _usage(runtime, "t-hourly", "team-a", "app-a")
    rates = [
        MeterRate("", "tokens", Decimal("0.001")),
        MeterRate("app-a", "invocations", Decimal("0.5"), per_event=True),
    ]
    hour = START + timedelta(hours=10)
    rows = runtime.usage_store.hourly_costs(
        "t-hourly", Period(hour, hour + timedelta(minutes=30)), rates=rates
    )
    by_meter = {r.meter: r for r in rows}
    assert set(by_meter) == {"tokens", "invocations"}
    tokens = by_meter["tokens"]
    assert tokens.event_count == 20
    assert tokens.quantity == sum(Decimal(100 + c) for c in range(20))
    assert tokens.cost == tokens.quantity * Decimal("0.001")
    assert by_meter["invocations"].cost == Decimal(10)  # 20 events at 0.5
    assert tokens.first_recorded_at == hour
    assert runtime.usage_store.hourly_costs("t-hourly", Period(hour, hour + HOUR), rates=[]) == []
    touched = runtime.usage_store.touched_hours(processed_since=START)
    assert hour in touched["t-hourly"]
    assert touched["t-hourly"][hour] >= tokens.first_recorded_at


def test_the_service_scores_what_landed_and_alerts_once(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    from quartermaster.guardrails.anomaly_service import AnomalyDetector

    app = _setup(client, runtime, tenant, spike=8)  # written after the detector's watermark
    detector = AnomalyDetector(runtime)
    detector.max_hours = 40  # the 108 hours that landed take three passes
    more = detector.run_once()
    landed = sorted(detector.pending[tenant.tenant_id] | {h for _, h in detector.scored})
    # Newest first: the latest 40 hours are scored in the first pass, the backlog after.
    assert {h for _, h in detector.scored} == set(landed[-40:])
    passes = 1
    while more:
        more = detector.run_once()
        passes += 1
    assert passes == 3  # hours not scored yet go first; re-checks never ask for a pass
    keys = [a.dedup_key for a in _alerts(runtime, tenant.tenant_id)]
    assert f"anomaly:app:{app}:{SPIKE.isoformat()}" in keys
    assert len(keys) == len(set(keys))
    # Later passes look back a minute past their watermark: hours again, no new alert.
    assert detector.run_once() is False
    assert detector.run_once() is False
    assert sorted(a.dedup_key for a in _alerts(runtime, tenant.tenant_id)) == sorted(keys)


class _WatchedStore:
    """The usage store, noting whether the control-plane session held a transaction (on
    SQLite: the database's write lock) whenever the scan read usage."""

    def __init__(self, store: object, session: Session) -> None:
        self.store, self.session, self.in_transaction = store, session, []

    def hourly_cost_series(self, *args: Any, **kwargs: Any) -> Any:
        self.in_transaction.append(self.session.in_transaction())
        return self.store.hourly_cost_series(*args, **kwargs)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> Any:
        return getattr(self.store, name)


def test_the_scan_holds_no_transaction_while_it_reads_and_scores(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    app = _setup(client, runtime, tenant, spike=8)
    with runtime.session_factory() as session:
        watched = _WatchedStore(runtime.usage_store, session)
        result = scan_tenant(
            tenant.tenant_id,
            [SPIKE],
            store=watched,  # type: ignore[arg-type]
            session=session,
            now=SPIKE + timedelta(hours=2),
        )
        assert watched.in_transaction == [False]
        assert not session.in_transaction()  # each alert committed on its own
    assert f"anomaly:app:{app}:{SPIKE.isoformat()}" in result.alerts


def _credit(runtime: Runtime, tenant_id: str, team: str, app: str) -> None:
    """A small app whose usage includes a credit (a negative quantity) now and then."""
    builder = TableBuilder(USAGE_SCHEMA)
    for h in range(DAYS * 24 + 12):
        moment = START + timedelta(hours=h, minutes=7)
        quantity = Decimal(-3) if h % 29 == 0 else Decimal(4 + h % 3)
        builder.append(
            10_000_000 + h, tenant_id, f"credit-{h}", "src", "qm.invocation.usage", moment,
            moment, moment, "default", team, app, "tokens", quantity, None, "app_id", False,
            False, None, "production", "persistent",
        )  # fmt: skip
    runtime.usage_store.write(RatedBatch(stream=None, position=None, usage=builder.to_table()))


def _reference_alerts(
    runtime: Runtime, tenant_id: str, scored: list[datetime], now: datetime
) -> set[str]:
    """The alerts' dedup keys as the scan found them before it read series: every scope with
    a row in a scored hour, its series summed from `hourly_costs` rows in their order, scored
    with the pure functions (no shortcut)."""
    rule = AnomalyRule()
    with runtime.session_factory() as session:
        rates = tenant_rate_card(tenant_id, scored[-1], session=session)
    start = scored[0] - rule.window_hours * HOUR
    span = int((scored[-1] - start) / HOUR) + 1
    rows = runtime.usage_store.hourly_costs(
        tenant_id, Period(start, start + span * HOUR), rates=rates
    )
    costs: dict[tuple[str, str], dict[str, list[float]]] = {}
    events: dict[tuple[str, str], dict[str, list[int]]] = {}
    active: dict[int, set[tuple[str, str]]] = {}
    for row in rows:
        at = int((row.hour - start) / HOUR)
        for scope in (("app", row.app), ("team", row.team)):
            costs.setdefault(scope, {}).setdefault(row.meter, [0.0] * span)[at] += float(row.cost)
            events.setdefault(scope, {}).setdefault(row.meter, [0] * span)[at] += row.event_count
            active.setdefault(at, set()).add(scope)
    keys: set[str] = set()
    for hour in scored:
        at = int((hour - start) / HOUR)
        fraction = min(1.0, max((now - hour) / HOUR, 1 / 60))
        for scope in active.get(at, set()):
            series = {m: Series(c, events[scope][m]) for m, c in costs[scope].items()}
            if score_scope(series, at, fraction=fraction, rule=rule).anomalous:
                first = start + incident_start(series, at, rule=rule) * HOUR
                keys.add(f"anomaly:{scope[0]}:{scope[1]}:{first.isoformat()}")
    return keys


def test_the_scan_alerts_as_scoring_every_active_scope_from_hourly_rows_does(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    response = client.post("/v1/price-books", content=json.dumps(BOOK), headers=tenant.headers)
    assert response.status_code in (200, 201), response.text
    app = world.app
    _usage(runtime, tenant.tenant_id, world.team, app, spike=8)
    _usage(runtime, tenant.tenant_id, world.team, "app-steady", spike=1)
    _usage(runtime, tenant.tenant_id, "team-other", "app-other", spike=3)
    _credit(runtime, tenant.tenant_id, world.team, "app-credit")
    scored = [START + timedelta(hours=h) for h in range(72, DAYS * 24 + 12)]
    now = SPIKE + timedelta(minutes=90)
    expected = _reference_alerts(runtime, tenant.tenant_id, scored, now)
    with runtime.session_factory() as session:
        result = scan_tenant(
            tenant.tenant_id, scored, store=runtime.usage_store, session=session, now=now
        )
    assert f"anomaly:app:{app}:{SPIKE.isoformat()}" in expected
    assert set(result.alerts) == expected


YEAR_ONE = datetime(1, 1, 1, tzinfo=UTC)


def _one_row(runtime: Runtime, tenant_id: str, team: str, app: str, moment: datetime) -> None:
    builder = TableBuilder(USAGE_SCHEMA)
    builder.append(
        1, tenant_id, "e-year-one", "src", "qm.invocation.usage", moment,
        moment, moment, "default", team, app, "tokens", Decimal(100), None, "app_id",
        False, False, None, "production", "persistent",
    )  # fmt: skip
    runtime.usage_store.write(RatedBatch(stream=None, position=None, usage=builder.to_table()))


def test_an_hour_in_year_one_is_scored_without_overflow(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    """An accepted event at 0001-01-01: its baseline window starts at the earliest hour."""
    world = build_world(client, tenant)
    response = client.post("/v1/price-books", content=json.dumps(BOOK), headers=tenant.headers)
    assert response.status_code in (200, 201), response.text
    _one_row(runtime, tenant.tenant_id, world.team, world.app, YEAR_ONE)
    with runtime.session_factory() as session:
        # Scored with an hour of this year (whose price book rates the pass), as the
        # service's pass does: the grid then reaches back to year one.
        result = scan_tenant(
            tenant.tenant_id, [YEAR_ONE, START], store=runtime.usage_store, session=session
        )
    assert result.hours == 2
    assert result.alerts == []


def test_one_tenants_failure_does_not_stop_the_detector_for_the_others(
    client: TestClient,
    runtime: Runtime,
    make_tenant: Callable[..., TenantHandle],
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A tenant sorting first whose scan fails unexpectedly (here: its year-one event, and a
    bug) is logged and skipped; the tenants after it are still scanned."""
    from quartermaster.guardrails import anomaly_service
    from quartermaster.guardrails.anomaly_service import AnomalyDetector

    first, later = make_tenant("a"), make_tenant("z")
    world = build_world(client, first)
    _one_row(runtime, first.tenant_id, world.team, world.app, YEAR_ONE)
    app = _setup(client, runtime, later, spike=8)
    real = anomaly_service.scan_tenant

    def failing(tenant_id: str, *args: Any, **kwargs: Any) -> Any:
        if tenant_id == first.tenant_id:
            raise OverflowError("date value out of range")
        return real(tenant_id, *args, **kwargs)

    monkeypatch.setattr(anomaly_service, "scan_tenant", failing)
    detector = AnomalyDetector(runtime)
    detector.max_hours = 200
    while detector.run_pass():
        pass
    assert detector.status().last_error is None
    keys = [a.dedup_key for a in _alerts(runtime, later.tenant_id)]
    assert f"anomaly:app:{app}:{SPIKE.isoformat()}" in keys
    assert f"anomaly scan of tenant {first.tenant_id} failed" in caplog.text


def test_the_rate_card_is_read_without_a_write_transaction(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    """With a reader, the scan reads the tenant's rate card (its price book and every app)
    through it: a tenant with nothing to score never begins the write session."""
    began: list[object] = []
    hour = datetime(2026, 3, 10, 12, tzinfo=UTC)
    with runtime.session_factory() as writer, runtime.read_session_factory() as reader:
        event.listen(writer, "after_begin", lambda *args: began.append(args))
        result = scan_tenant(
            tenant.tenant_id,
            [hour],
            store=runtime.usage_store,
            session=writer,
            reader=reader,
            now=hour + timedelta(hours=2),
        )
    assert result.alerts == []
    assert began == []


HUGE_TOKENS = Decimal("999999999999999999")  # the largest quantity ingest accepts (< 10^18)


def _huge_hour(runtime: Runtime, tenant_id: str, team: str, app: str, events: int) -> None:
    """`events` events of HUGE_TOKENS tokens in the spike hour: at 0.001 a token, an hour
    of ~10^15 per event."""
    builder = TableBuilder(USAGE_SCHEMA)
    for n in range(events):
        moment = SPIKE + timedelta(minutes=30, milliseconds=n)
        builder.append(
            10_000_000 + n, tenant_id, f"e-huge-{n}", "src", "qm.invocation.usage", moment,
            moment, moment, "default", team, app, "tokens", HUGE_TOKENS, None, "app_id",
            False, False, None, "production", "persistent",
        )  # fmt: skip
    runtime.usage_store.write(RatedBatch(stream=None, position=None, usage=builder.to_table()))


@pytest.mark.parametrize("events", [1, 10_000])
def test_a_huge_hour_is_scored_and_alerted_with_its_exact_cost(
    client: TestClient, runtime: Runtime, tenant: TenantHandle, events: int
) -> None:
    """An hour of 10^14 or more made the tenant's whole scan fail (InvalidOperation quoting
    its cost to 0.0001 in the default 28-digit context). 10,000 events of the largest accepted
    quantity: an hour of ~10^19, beyond what a float holds exactly."""
    world = build_world(client, tenant)
    response = client.post("/v1/price-books", content=json.dumps(BOOK), headers=tenant.headers)
    assert response.status_code in (200, 201), response.text
    _usage(runtime, tenant.tenant_id, world.team, world.app)
    _huge_hour(runtime, tenant.tenant_id, world.team, world.app, events)
    app = world.app
    with runtime.session_factory() as session:
        result = scan_tenant(
            tenant.tenant_id,
            [SPIKE],
            store=runtime.usage_store,
            session=session,
            now=SPIKE + timedelta(hours=2),
        )
    assert f"anomaly:app:{app}:{SPIKE.isoformat()}" in result.alerts
    alert = next(
        a for a in _alerts(runtime, tenant.tenant_id) if a.dedup_key.startswith("anomaly:app:")
    )
    details = json.loads(alert.details) if isinstance(alert.details, str) else alert.details
    tokens = next(m for m in details["meters"] if m["meter"] == "tokens")
    # The hour's ordinary calls (20 of 100..119 tokens at 10:00) plus the huge events.
    ordinary = sum(Decimal(100 + call) for call in range(20)) * Decimal("0.001")
    assert Decimal(tokens["cost"]) == HUGE_TOKENS * events * Decimal("0.001") + ordinary
    top = details["top_events"][0]
    assert Decimal(top["cost"]) == HUGE_TOKENS * Decimal("0.001")
    assert "E+" not in alert.message
    assert "E+" not in json.dumps(details)


def test_the_detector_alerts_a_huge_hour_and_still_scans_the_other_tenants(
    client: TestClient, runtime: Runtime, make_tenant: Callable[..., TenantHandle]
) -> None:
    """The tenant with the huge hour sorts first; before, its scan failed every pass (logged
    and skipped) and it never got its alert."""
    from quartermaster.guardrails.anomaly_service import AnomalyDetector

    huge, later = make_tenant("a"), make_tenant("z")
    world = build_world(client, huge)
    response = client.post("/v1/price-books", content=json.dumps(BOOK), headers=huge.headers)
    assert response.status_code in (200, 201), response.text
    _usage(runtime, huge.tenant_id, world.team, world.app)
    _huge_hour(runtime, huge.tenant_id, world.team, world.app, 1)
    app = _setup(client, runtime, later, spike=8)
    detector = AnomalyDetector(runtime)
    detector.max_hours = 200
    while detector.run_pass():
        pass
    assert detector.status().last_error is None
    huge_keys = {a.dedup_key for a in _alerts(runtime, huge.tenant_id)}
    assert f"anomaly:app:{world.app}:{SPIKE.isoformat()}" in huge_keys
    assert f"anomaly:team:{world.team}:{SPIKE.isoformat()}" in huge_keys
    keys = [a.dedup_key for a in _alerts(runtime, later.tenant_id)]
    assert f"anomaly:app:{app}:{SPIKE.isoformat()}" in keys
