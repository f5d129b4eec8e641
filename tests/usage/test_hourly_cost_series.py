"""`hourly_cost_series` equals the reference built from `hourly_costs` rows
(`series_of_rows`): the same series (one per cost center, team, app and meter, hour indexes
from the period's start, float costs equal to float() of the exact ones), and the same detail
rows for the hours asked for, across an ownership move, a default rate, purged raw rows (hour
rollups) and an unpriced meter."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from quartermaster.domain.timeutil import Period
from quartermaster.usage.duckdb_store import DuckDBUsageStore
from quartermaster.usage.store import (
    USAGE_SCHEMA,
    HourlyCost,
    MeterRate,
    RatedBatch,
    TableBuilder,
    series_of_rows,
)

T0 = datetime(2026, 4, 1, tzinfo=UTC)
HOUR = timedelta(hours=1)
RATES = [
    MeterRate("", "tokens", Decimal("0.0000013")),
    MeterRate("app-b", "tokens", Decimal("0.00000097")),
    MeterRate("", "invocations", Decimal("0.0001"), per_event=True),
]


def _write(store: DuckDBUsageStore) -> None:
    """Three days of two apps; app-b moves from team-x (cc-1) to team-y (cc-2) in the middle
    of hour 31; `gpu` has no rate."""
    builder = TableBuilder(USAGE_SCHEMA)
    position = 0
    for h in range(72):
        for app in ("app-a", "app-b"):
            for k in range(1 + (h * 7 + len(app)) % 5):
                position += 1
                moment = T0 + h * HOUR + timedelta(minutes=11 * k)
                moved = app == "app-b" and moment >= T0 + 31 * HOUR + timedelta(minutes=5)
                team, center = ("team-y", "cc-2") if moved else ("team-x", "cc-1")
                for meter, quantity in (
                    ("tokens", Decimal(f"{100 + h * 13 % 97}.{k}")),
                    ("invocations", Decimal(1)),
                    ("gpu", Decimal(3)),
                ):
                    builder.append(
                        position, "t1", f"e{position}", "src", "qm.invocation.usage", moment,
                        moment + timedelta(seconds=5), moment, center, team, app, meter,
                        quantity, None, "app_id", False, False, None, "production", "persistent",
                    )  # fmt: skip
    store.write(RatedBatch(stream=None, position=None, usage=builder.to_table()))


@pytest.fixture
def store() -> DuckDBUsageStore:
    s = DuckDBUsageStore(":memory:")
    _write(s)
    return s


@pytest.mark.parametrize("purged", [False, True])
def test_series_equal_the_reference_built_from_hourly_costs(
    store: DuckDBUsageStore, purged: bool
) -> None:
    if purged:
        store.purge_raw(before=T0 + timedelta(days=1))  # the first day from hour rollups
    period = Period(T0 + 2 * HOUR, T0 + 70 * HOUR)
    detailed = [T0 + 30 * HOUR, T0 + 31 * HOUR, T0 + 69 * HOUR, T0 + 90 * HOUR]
    rows = store.hourly_costs("t1", period, rates=RATES)
    expected = series_of_rows(rows, period.start, detailed)
    found = store.hourly_cost_series("t1", period, rates=RATES, detailed=detailed)
    assert found.series == expected.series
    assert found.detail_rows() == expected.detail_rows()
    assert {r.hour for r in found.detail_rows()} == set(detailed[:3])
    # The move's hour has app-b in both teams and cost centers: two series carry it.
    moved = [s for s in found.series if s.app == "app-b" and s.meter == "tokens"]
    assert [(s.team, s.cost_center) for s in moved] == [("team-x", "cc-1"), ("team-y", "cc-2")]
    assert 29 in moved[0].hours
    assert 29 in moved[1].hours
    assert {s.meter for s in found.series} == {"tokens", "invocations"}
    for one in found.series:
        assert one.costs == [
            float(r.cost)
            for r in rows
            if (r.cost_center, r.team, r.app, r.meter)
            == (one.cost_center, one.team, one.app, one.meter)
        ]


def test_detail_rows_filter_by_hour_meter_app_and_team(store: DuckDBUsageStore) -> None:
    period = Period(T0, T0 + 72 * HOUR)
    found = store.hourly_cost_series("t1", period, rates=RATES, detailed=[T0 + 31 * HOUR])
    rows = store.hourly_costs("t1", Period(T0 + 31 * HOUR, T0 + 32 * HOUR), rates=RATES)
    assert found.detail_rows() == rows

    def only(**match: str) -> list[HourlyCost]:
        return [r for r in rows if all(getattr(r, k) == v for k, v in match.items())]

    assert found.detail_rows(hour=T0 + 31 * HOUR, meter="tokens", app="app-b") == only(
        meter="tokens", app="app-b"
    )
    assert found.detail_rows(meter="invocations", team="team-y") == only(
        meter="invocations", team="team-y"
    )
    assert found.detail_rows(hour=T0 + 30 * HOUR) == []


def test_no_rates_no_series(store: DuckDBUsageStore) -> None:
    found = store.hourly_cost_series("t1", Period(T0, T0 + HOUR), rates=[], detailed=[T0])
    assert found.series == []
    assert found.detail_rows() == []
    other = store.hourly_cost_series("t2", Period(T0, T0 + HOUR), rates=RATES, detailed=[T0])
    assert other.series == []
    assert other.detail_rows() == []


def test_a_cost_past_duckdbs_38_digits_is_exact_in_rows_and_close_in_series() -> None:
    """DECIMAL(38, 6) x DECIMAL(38, 18) holds 14 integer digits: an hour of 10^14 or more
    failed the query (and the tenant's anomaly scan). Its cost is computed exactly instead,
    and a rate of 10^10 or more per unit (which failed quantizing) is used as given."""
    store = DuckDBUsageStore(":memory:")
    builder = TableBuilder(USAGE_SCHEMA)
    quantity = Decimal("999999999999999999.999999999999")
    for n, (app, meter) in enumerate([("app-a", "tokens"), ("app-a", "gpu"), ("app-b", "tokens")]):
        builder.append(
            n, "t1", f"e{n}", "src", "qm.invocation.usage", T0, T0, T0, "cc-1", "team-x", app,
            meter, quantity, None, "app_id", False, False, None, "production", "persistent",
        )  # fmt: skip
    store.write(RatedBatch(stream=None, position=None, usage=builder.to_table()))
    rates = [
        MeterRate("", "tokens", Decimal("0.0000013")),
        MeterRate("", "gpu", Decimal("12345678901.000000000000000001")),
    ]
    period = Period(T0, T0 + HOUR)
    rows = store.hourly_costs("t1", period, rates=rates)
    priced = Decimal("1000000000000000000.000000")  # the quantity cast to 6 places
    costs = {(r.app, r.meter): r.cost for r in rows}
    assert costs == {
        ("app-a", "gpu"): Decimal("12345678901000000000000000001"),
        ("app-a", "tokens"): priced * Decimal("0.0000013"),
        ("app-b", "tokens"): priced * Decimal("0.0000013"),
    }
    found = store.hourly_cost_series("t1", period, rates=rates, detailed=[T0])
    assert found.detail_rows() == rows
    gpu = next(s for s in found.series if s.meter == "gpu")
    assert gpu.costs == pytest.approx([float(costs[("app-a", "gpu")])], rel=1e-15)
    with pytest.raises(ValueError, match="rate 100000000000000000000 of meter 'gpu'"):
        store.hourly_costs("t1", period, rates=[MeterRate("", "gpu", Decimal(10) ** 20)])
