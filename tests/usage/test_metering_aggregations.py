"""Each meter aggregation through the whole pipeline, per period, and raw retention."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal

import pytest

from quartermaster.domain.timeutil import Period, floor_hour, utc_now
from quartermaster.tenancy.models import Role
from quartermaster.tenancy.service import AuthContext
from quartermaster.usage.maintenance import UsageMaintenance, purge_expired_raw
from quartermaster.usage.meters import Aggregation, MeterDefinition
from quartermaster.usage.pipeline import run_pipeline_until_drained
from quartermaster.usage.service import (
    create_meter,
    install_default_meters,
    list_meters,
    metered_quantities,
    plain,
)
from tests.usage.conftest import Platform

H = timedelta(hours=1)
INVOCATION = "qm.invocation.usage"


def admin(platform: Platform) -> AuthContext:
    return AuthContext(
        tenant_id=platform.tenant_id,
        principal_id="p",
        principal_name="admin",
        role=Role.ADMIN,
        team_id=None,
        app_slug=None,
    )


def meter(name: str, value: str, aggregation: Aggregation, **kw: str) -> MeterDefinition:
    return MeterDefinition(
        name=name, event_type=INVOCATION, value=value, aggregation=aggregation, unit="u", **kw
    )


def test_each_aggregation_is_correct_per_period(platform: Platform) -> None:
    start = floor_hour(utc_now()) - 48 * H
    platform.app("bot", team="ds", cost_center="research", created_at=start - 48 * H)
    caller = admin(platform)
    with platform.runtime.session_factory() as session:
        # Created before the events were recorded: they rate all of them.
        for definition in (
            meter("tokens_total", "tokens", Aggregation.SUM),
            meter("calls", "count", Aggregation.COUNT),
            meter("peak_tokens", "tokens", Aggregation.MAX),
            meter("last_units", "compute_units", Aggregation.LATEST),
            meter("actors", "actor_id", Aggregation.UNIQUE_COUNT),
            meter(
                "staging_calls",
                "count",
                Aggregation.COUNT,
                filter_field="environment",
                filter_value="staging",
            ),
        ):
            create_meter(caller, definition, session=session)
    # Day 1: actors ann, bob; day 2: bob, cy. Tokens 1..8, units = tokens / 10.
    events = []
    for i in range(8):
        moment = start + timedelta(hours=6 * i, minutes=7)
        events.append(
            platform.event(
                INVOCATION,
                {
                    "app_id": "bot",
                    "tokens": i + 1,
                    "compute_units": f"{(i + 1) / 10}",
                    "actor_id": ["ann", "bob", "ann", "bob", "bob", "cy", "cy", "bob"][i],
                    "environment": "staging" if i % 2 else "production",
                },
                event_time=moment,
            )
        )
    platform.append(events)
    run_pipeline_until_drained(platform.runtime)

    def quantities(period: Period) -> dict[str, Decimal]:
        with platform.runtime.session_factory() as session:
            rows = metered_quantities(
                platform.tenant_id, period, store=platform.runtime.usage_store, session=session
            )
        return {r.meter: r.quantity for r in rows}

    day1 = quantities(Period(start, start + 24 * H))
    day2 = quantities(Period(start + 24 * H, start + 48 * H))
    whole = quantities(Period(start, start + 48 * H))
    assert day1 == {
        "tokens_total": 10,
        "calls": 4,
        "peak_tokens": 4,
        "last_units": Decimal("0.4"),
        "actors": 2,
        "staging_calls": 2,
    }
    assert day2 == {
        "tokens_total": 26,
        "calls": 4,
        "peak_tokens": 8,
        "last_units": Decimal("0.8"),
        "actors": 2,
        "staging_calls": 2,
    }
    assert whole == {
        "tokens_total": 36,
        "calls": 8,
        "peak_tokens": 8,
        "last_units": Decimal("0.8"),
        "actors": 3,  # ann, bob, cy: not 2 + 2
        "staging_calls": 4,
    }
    # A period cut inside hours and minutes (the edges come from finer rollups and raw rows).
    odd = quantities(
        Period(
            start + timedelta(hours=5, minutes=30),
            start + timedelta(hours=18, minutes=7, seconds=30),
        )
    )
    assert odd["tokens_total"] == 2 + 3 + 4
    assert odd["actors"] == 2


def test_meters_are_immutable_and_defaults_install_once(platform: Platform) -> None:
    caller = admin(platform)
    with platform.runtime.session_factory() as session:
        assert all(view.built_in for view in list_meters(platform.tenant_id, session=session))
        assert len(install_default_meters(caller, session=session)) == 10
        assert install_default_meters(caller, session=session) == []
        assert not any(view.built_in for view in list_meters(platform.tenant_id, session=session))
        with pytest.raises(Exception, match="already exists"):
            create_meter(caller, meter("tokens", "tokens", Aggregation.SUM), session=session)


def test_retention_purge_keeps_rollups(platform: Platform) -> None:
    now = utc_now()
    old = floor_hour(now) - 100 * 24 * H
    platform.app("bot", team="ds", cost_center="research", created_at=old - 48 * H)
    platform.append(
        [
            platform.event(
                INVOCATION, {"app_id": "bot", "tokens": 5}, event_time=old, recorded_at=old
            ),
            platform.event(INVOCATION, {"app_id": "bot", "tokens": 7}, event_time=now - H),
        ]
    )
    run_pipeline_until_drained(platform.runtime)
    store = platform.runtime.usage_store
    old_day = Period(old.replace(hour=0), old.replace(hour=0) + 24 * H)
    before = store.quantities(platform.tenant_id, old_day)
    result = purge_expired_raw(platform.runtime)
    assert result.usage_rows == 2  # the old event's tokens and invocations rows
    assert store.quantities(platform.tenant_id, old_day) == before
    assert store.top_events(platform.tenant_id, old_day, app="bot", meter="tokens") == []
    recent = store.top_events(
        platform.tenant_id, Period(now - 2 * H, now), app="bot", meter="tokens"
    )
    assert [r.quantity for r in recent] == [7]
    with platform.runtime.session_factory() as session:
        # Sums and counts are still answered as of a past time from the rollups ...
        rows = metered_quantities(
            platform.tenant_id, old_day, store=store, as_of=now, session=session
        )
    assert {r.meter: r.quantity for r in rows} == {"tokens": 5, "invocations": 1}
    # ... while max, latest and unique counts need the raw rows, now gone for that day.
    assert store.quantities(platform.tenant_id, old_day, as_of=now)[0].quantity_max is None


def test_the_maintenance_service_purges_and_folds(platform: Platform) -> None:
    now = utc_now()
    old = floor_hour(now) - 200 * 24 * H
    platform.app("bot", team="ds", cost_center="research", created_at=old - 48 * H)
    platform.append(
        [
            platform.event(
                INVOCATION, {"app_id": "bot", "tokens": 5}, event_time=old, recorded_at=old
            )
        ]
    )
    run_pipeline_until_drained(platform.runtime)
    service = UsageMaintenance(platform.runtime)
    assert service.run_pass() is False
    assert service.status().last_error is None
    store = platform.runtime.usage_store
    assert store.purged_before() is not None
    hour = Period(floor_hour(old), floor_hour(old) + H)
    assert [
        t.quantity_sum for t in store.quantities(platform.tenant_id, hour) if t.meter == "tokens"
    ] == [5]
    assert store.top_events(platform.tenant_id, hour, app="bot", meter="tokens") == []


def test_quantities_are_shown_without_the_stores_trailing_zeros() -> None:
    assert str(plain(Decimal("42.000000000000"))) == "42"
    assert str(plain(Decimal("1000.000000000000"))) == "1000"  # not 1E+3
    assert str(plain(Decimal("0.250000000000"))) == "0.25"
