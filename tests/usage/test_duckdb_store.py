"""The DuckDB usage store against brute force over the same rows: every aggregation, any
period (across day, hour, minute rollups and raw edges), as-of answers, retention."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import duckdb
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quartermaster.domain.timeutil import Period
from quartermaster.errors import InvalidInputError
from quartermaster.usage.duckdb_schema import SCHEMA_VERSION
from quartermaster.usage.duckdb_store import DuckDBUsageStore, UsageStoreInUseError
from quartermaster.usage.store import USAGE_SCHEMA, RatedBatch, StreamState, TableBuilder
from tests.usage.store_holder import held_by_another_process

T0 = datetime(2026, 4, 1, tzinfo=UTC)
SPAN = timedelta(days=3)


@dataclass(frozen=True)
class Row:
    position: int
    event_time: datetime
    billable_at: datetime
    app: str
    meter: str
    quantity: Decimal
    distinct_value: str | None = None


def write(store: DuckDBUsageStore, rows: list[Row], *, tenant: str = "t1") -> None:
    builder = TableBuilder(USAGE_SCHEMA)
    for r in rows:
        builder.append(
            r.position,
            tenant,
            f"e{r.position}",
            "src",
            "qm.invocation.usage",
            r.event_time,
            r.billable_at,
            r.billable_at,
            "cc",
            "team",
            r.app,
            r.meter,
            r.quantity,
            r.distinct_value,
            "app_id",
            False,
            False,
            None,
            "production",
            "persistent",
        )
    store.write(RatedBatch(stream=None, position=None, usage=builder.to_table()))


def brute(
    rows: list[Row], period: Period, as_of: datetime | None = None
) -> dict[tuple[str, str], tuple[int, Decimal, Decimal, Decimal, int]]:
    selected = [
        r
        for r in rows
        if period.contains(r.event_time) and (as_of is None or r.billable_at < as_of)
    ]
    result = {}
    for key in {(r.app, r.meter) for r in selected}:
        mine = [r for r in selected if (r.app, r.meter) == key]
        latest = max(mine, key=lambda r: (r.event_time, r.position))
        result[key] = (
            len(mine),
            sum((r.quantity for r in mine), Decimal(0)),
            max(r.quantity for r in mine),
            latest.quantity,
            len({r.distinct_value for r in mine if r.distinct_value is not None}),
        )
    return result


def answer(
    store: DuckDBUsageStore, period: Period, as_of: datetime | None = None, *, tenant: str = "t1"
) -> dict[tuple[str, str], tuple[int, Decimal, Decimal | None, Decimal | None, int | None]]:
    return {
        (t.app, t.meter): (
            t.event_count,
            t.quantity_sum,
            t.quantity_max,
            t.latest_quantity,
            t.distinct_count,
        )
        for t in store.quantities(tenant, period, as_of=as_of)
    }


@pytest.fixture
def store() -> Iterator[DuckDBUsageStore]:
    s = DuckDBUsageStore(":memory:")
    yield s
    s.close()


@pytest.fixture(scope="module")
def shared_store() -> Iterator[DuckDBUsageStore]:
    """One store for every hypothesis example; each example writes its own tenant."""
    s = DuckDBUsageStore(":memory:")
    yield s
    s.close()


def fresh_tenant() -> str:
    return f"t-{uuid.uuid4().hex[:10]}"


offsets = st.integers(min_value=0, max_value=int(SPAN.total_seconds()) - 1)
rows_strategy = st.lists(
    st.tuples(
        offsets,
        st.integers(min_value=0, max_value=7200),
        st.sampled_from(["a", "b"]),
        st.sampled_from(["tokens", "actors"]),
        st.integers(min_value=0, max_value=10_000).map(lambda n: Decimal(n) / 100),
        st.sampled_from(["ann", "bob", "cy", "dee"]),
    ),
    min_size=1,
    max_size=60,
)


def to_rows(specs: list[tuple[int, int, str, str, Decimal, str]]) -> list[Row]:
    return [
        Row(
            position=i + 1,
            event_time=T0 + timedelta(seconds=offset),
            billable_at=T0 + timedelta(seconds=offset + delay),
            app=app,
            meter=meter,
            quantity=quantity if meter == "tokens" else Decimal(1),
            distinct_value=actor if meter == "actors" else None,
        )
        for i, (offset, delay, app, meter, quantity, actor) in enumerate(specs)
    ]


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(specs=rows_strategy, a=offsets, b=offsets, batches=st.integers(min_value=1, max_value=4))
def test_quantities_match_brute_force_for_any_period(
    shared_store: DuckDBUsageStore,
    specs: list[tuple[int, int, str, str, Decimal, str]],
    a: int,
    b: int,
    batches: int,
) -> None:
    tenant = fresh_tenant()
    rows = to_rows(specs)
    step = max(len(rows) // batches, 1)
    for start in range(0, len(rows), step):
        write(shared_store, rows[start : start + step], tenant=tenant)
    lo, hi = sorted((a, b))
    period = Period(T0 + timedelta(seconds=lo), T0 + timedelta(seconds=hi + 1))
    assert answer(shared_store, period, tenant=tenant) == brute(rows, period)
    whole = Period(T0 - timedelta(days=1), T0 + SPAN + timedelta(days=1))
    shared_store.compact()
    assert answer(shared_store, whole, tenant=tenant) == brute(rows, whole)
    assert answer(shared_store, period, tenant=tenant) == brute(rows, period)


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(specs=rows_strategy, a=offsets, b=offsets, cut=offsets)
def test_purged_raw_rows_live_on_in_minute_hour_and_day_rollups(
    specs: list[tuple[int, int, str, str, Decimal, str]], a: int, b: int, cut: int
) -> None:
    """After a purge, every minute-aligned period still has its exact quantities."""
    store = DuckDBUsageStore(":memory:")
    try:
        rows = to_rows(specs)
        write(store, rows)
        store.purge_raw(before=T0 + timedelta(seconds=cut))
        lo, hi = sorted((a // 60, b // 60))
        period = Period(T0 + timedelta(minutes=lo), T0 + timedelta(minutes=hi + 1))
        assert answer(store, period) == brute(rows, period)
    finally:
        store.close()


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(specs=rows_strategy, cut=offsets)
def test_a_period_split_in_two_gives_the_same_summable_quantities_as_the_whole(
    shared_store: DuckDBUsageStore, specs: list[tuple[int, int, str, str, Decimal, str]], cut: int
) -> None:
    tenant = fresh_tenant()
    write(shared_store, to_rows(specs), tenant=tenant)
    start, end = T0 - timedelta(hours=1), T0 + SPAN
    middle = T0 + timedelta(seconds=cut)
    whole = answer(shared_store, Period(start, end), tenant=tenant)
    left = answer(shared_store, Period(start, middle), tenant=tenant)
    right = answer(shared_store, Period(middle, end), tenant=tenant)
    for key, (count, total, maximum, latest, _distinct) in whole.items():
        parts = [p[key] for p in (left, right) if key in p]
        assert count == sum(p[0] for p in parts)
        assert total == sum((p[1] for p in parts), Decimal(0))
        assert maximum == max(p[2] for p in parts)  # type: ignore[type-var]
        assert latest == (right[key][3] if key in right else left[key][3])


@settings(
    max_examples=20, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    specs=rows_strategy,
    a=offsets,
    b=offsets,
    cut=st.integers(min_value=0, max_value=SPAN.days * 86400 + 7200),
)
def test_as_of_answers_as_the_store_stood_then(
    shared_store: DuckDBUsageStore,
    specs: list[tuple[int, int, str, str, Decimal, str]],
    a: int,
    b: int,
    cut: int,
) -> None:
    tenant = fresh_tenant()
    rows = to_rows(specs)
    write(shared_store, rows, tenant=tenant)
    lo, hi = sorted((a, b))
    period = Period(T0 + timedelta(seconds=lo), T0 + timedelta(seconds=hi + 1))
    as_of = T0 + timedelta(seconds=cut)
    assert answer(shared_store, period, as_of, tenant=tenant) == brute(rows, period, as_of)


def test_unique_counts_merge_across_rollup_levels_without_double_counting(
    store: DuckDBUsageStore,
) -> None:
    actors = ["ann", "bob", "ann", "cy", "bob", "ann"]
    rows = [
        Row(i + 1, T0 + timedelta(hours=7 * i, seconds=13), T0, "a", "actors", Decimal(1), actor)
        for i, actor in enumerate(actors)
    ]
    for row in rows:
        write(store, [row])  # one batch per event: increments in every rollup table
    whole = Period(T0, T0 + timedelta(days=3))
    total = store.quantities("t1", whole)[0]
    assert total.event_count == 6
    assert total.distinct_count == 3
    first_day = store.quantities("t1", Period(T0, T0 + timedelta(days=1)))[0]
    assert first_day.distinct_count == 3  # at 0h, 7h, 14h, 21h: ann, bob, ann, cy


def test_purge_drops_raw_rows_and_keeps_rollups(store: DuckDBUsageStore) -> None:
    rows = [
        Row(i + 1, T0 + timedelta(hours=i), T0 + timedelta(hours=i), "a", "tokens", Decimal(i))
        for i in range(48)
    ]
    write(store, rows)
    day = Period(T0, T0 + timedelta(days=1))
    before = store.quantities("t1", day)
    assert store.top_events("t1", day, app="a", meter="tokens", limit=3)[0].quantity == 23
    edges = Period(T0 + timedelta(hours=3, minutes=30), T0 + timedelta(days=1, hours=2))
    edges_before = store.quantities("t1", edges)
    result = store.purge_raw(before=T0 + timedelta(days=1))
    assert result.usage_rows == 24
    assert store.quantities("t1", day) == before
    assert store.quantities("t1", edges) == edges_before  # hour/minute rollups took over
    assert store.top_events("t1", day, app="a", meter="tokens") == []
    assert store.purged_before() == T0 + timedelta(days=1)
    # Sums survive as-of questions; max/latest/unique need raw rows, now gone for that day.
    reproduced = store.quantities("t1", day, as_of=T0 + timedelta(days=2))[0]
    assert reproduced.quantity_sum == sum(range(24))
    assert reproduced.quantity_max is None
    assert reproduced.distinct_count is None
    with pytest.raises(InvalidInputError, match="retention boundary"):
        store.quantities("t1", day, as_of=T0 + timedelta(hours=12))


def test_an_as_of_before_retention_names_the_boundary_and_claims_no_purge(
    tmp_path: Path,
) -> None:
    # The maintenance purge moves the horizon even when it finds nothing to drop (a tenant
    # created minutes ago): the refusal said "... was purged" of usage that never existed.
    store = DuckDBUsageStore(tmp_path / "usage.duckdb")
    horizon = datetime(2026, 9, 4, 16, 32, 22, 678120, tzinfo=UTC)
    assert store.purge_raw(before=horizon).usage_rows == 0
    with pytest.raises(InvalidInputError) as caught:
        store.quantities(
            "t1",
            Period(datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)),
            as_of=datetime(2020, 1, 1, tzinfo=UTC),
        )
    message = caught.value.message
    assert "purged" not in message
    assert "usage as of 2020-01-01 00:00:00Z cannot be reproduced" in message
    assert message.endswith("the retention boundary, 2026-09-04 16:32:22Z")


def test_streams_and_replay_reset_only_the_tenant(tmp_path: Path) -> None:
    store = DuckDBUsageStore(tmp_path / "usage.duckdb")
    store.add_streams([StreamState("pipeline", "pipeline", position=0)])
    write(store, [Row(1, T0, T0, "a", "tokens", Decimal(5))], tenant="t1")
    write(store, [Row(2, T0, T0, "a", "tokens", Decimal(7))], tenant="t2")
    store.write(RatedBatch(stream="pipeline", position=2))
    state = store.start_replay("t1", main_stream="pipeline")
    assert (state.tenant_id, state.upto, state.position) == ("t1", 2, 0)
    period = Period(T0, T0 + timedelta(days=1))
    assert store.quantities("t1", period) == []
    assert store.quantities("t2", period)[0].quantity_sum == 7
    store.close()
    reopened = DuckDBUsageStore(tmp_path / "usage.duckdb")
    assert [s.name for s in reopened.streams()] == ["pipeline", state.name]
    reopened.close()


def test_daily_totals_are_the_quantities_of_each_day(store: DuckDBUsageStore) -> None:
    actors = ["ann", "bob", "cy"]
    rows = [
        Row(i + 1, T0 + timedelta(hours=5 * i, minutes=3), T0, "a", "tokens", Decimal(i))
        for i in range(20)
    ] + [
        Row(100 + i, T0 + timedelta(hours=7 * i), T0, "a", "actors", Decimal(1), actors[i % 3])
        for i in range(12)
    ]
    write(store, rows)
    period = Period(T0 + timedelta(hours=6, seconds=30), T0 + timedelta(days=3, hours=20))
    by_day: dict[datetime, list[tuple[str, int, Decimal, int | None]]] = {}
    for daily in store.daily_totals("t1", period):
        t = daily.total
        by_day.setdefault(daily.day, []).append(
            (t.meter, t.event_count, t.quantity_sum, t.distinct_count)
        )
    expected: dict[datetime, list[tuple[str, int, Decimal, int | None]]] = {}
    day = T0
    while day < period.end:
        part = Period(max(day, period.start), min(day + timedelta(days=1), period.end))
        totals = store.quantities("t1", part)
        if totals:
            expected[day] = [
                (t.meter, t.event_count, t.quantity_sum, t.distinct_count) for t in totals
            ]
        day += timedelta(days=1)
    assert by_day == expected
    assert len(expected) == 4


def test_a_store_of_another_schema_version_is_refused_with_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "usage.duckdb"
    DuckDBUsageStore(path).close()
    with duckdb.connect(str(path)) as conn:
        conn.execute("UPDATE store_meta SET value = '0' WHERE key = 'schema_version'")
    with pytest.raises(RuntimeError, match="rebuilds it from the event log"):
        DuckDBUsageStore(path)


V3_OWNERS = """CREATE TABLE usage_owners (
    owner_id INTEGER PRIMARY KEY, tenant_id VARCHAR NOT NULL, cost_center VARCHAR NOT NULL,
    team VARCHAR NOT NULL, app VARCHAR NOT NULL, event_type VARCHAR NOT NULL,
    method VARCHAR NOT NULL, unattributed BOOLEAN NOT NULL, environment VARCHAR NOT NULL,
    lifecycle VARCHAR NOT NULL)"""
V3_RAW = """CREATE TABLE usage_raw (
    position BIGINT NOT NULL, owner_id INTEGER NOT NULL, event_id VARCHAR NOT NULL,
    source VARCHAR NOT NULL, event_time TIMESTAMP NOT NULL, recorded_at TIMESTAMP NOT NULL,
    billable_at TIMESTAMP NOT NULL, processed_at TIMESTAMP NOT NULL, meter VARCHAR NOT NULL,
    quantity DECIMAL(38, 12) NOT NULL, distinct_value VARCHAR, late BOOLEAN NOT NULL,
    resource_id VARCHAR)"""
ROW_COLUMNS = (
    "position, event_id, source, event_time, recorded_at, billable_at, processed_at, meter, "
    "quantity, distinct_value, late, resource_id, tenant_id, cost_center, team, app, "
    "event_type, method, unattributed, environment, lifecycle"
)


def test_a_version_3_store_is_migrated_with_its_raw_rows_unchanged(tmp_path: Path) -> None:
    """Version 3 kept source and meter on each raw row; version 4 keeps them with the owner.
    Opening a version 3 file migrates it: the same rows read back, one owner per distinct
    combination, and later batches reuse the migrated owners."""
    path = tmp_path / "usage.duckdb"
    with duckdb.connect(str(path)) as conn:
        conn.execute("CREATE TABLE store_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)")
        conn.execute("INSERT INTO store_meta VALUES ('schema_version', '3')")
        conn.execute(V3_OWNERS)
        conn.execute(V3_RAW)
        conn.execute(
            "INSERT INTO usage_owners VALUES (1, 't1', 'cc', 'team', 'a', 'qm.invocation.usage', "
            "'app_id', false, 'prod', 'persistent'), (2, 't1', 'cc', 'team', 'b', "
            "'qm.invocation.usage', 'app_id', false, 'prod', 'persistent')"
        )
        conn.execute(
            """INSERT INTO usage_raw VALUES
            (1, 1, 'e1', 's1', '2026-11-02 10:00', '2026-11-02 10:00', '2026-11-02 10:00',
             '2026-11-02 10:01', 'tokens', 1.5, NULL, false, NULL),
            (2, 1, 'e2', 's1', '2026-11-02 11:00', '2026-11-02 11:00', '2026-11-02 11:00',
             '2026-11-02 11:01', 'requests', 2, 'u1', true, 'r1'),
            (3, 1, 'e3', 's2', '2026-11-02 12:00', '2026-11-02 12:00', '2026-11-02 12:00',
             '2026-11-02 12:01', 'tokens', 3, NULL, false, NULL),
            (4, 2, 'e4', 's1', '2026-11-02 13:00', '2026-11-02 13:00', '2026-11-02 13:00',
             '2026-11-02 13:01', 'tokens', 4, NULL, false, NULL),
            (5, 1, 'e5', 's1', '2026-11-02 14:00', '2026-11-02 14:00', '2026-11-02 14:00',
             '2026-11-02 14:01', 'tokens', 5, NULL, false, NULL)"""
        )
        conn.execute(
            """CREATE VIEW usage_rows AS SELECT r.*, o.tenant_id, o.cost_center, o.team, o.app,
                o.event_type, o.method, o.unattributed, o.environment, o.lifecycle
                FROM usage_raw r JOIN usage_owners o USING (owner_id)"""
        )
        before = conn.execute(f"SELECT {ROW_COLUMNS} FROM usage_rows ORDER BY position").fetchall()
    store = DuckDBUsageStore(path)
    cur = store._cursor()
    version = cur.execute("SELECT value FROM store_meta WHERE key = 'schema_version'").fetchone()
    assert version == (SCHEMA_VERSION,)
    after = cur.execute(f"SELECT {ROW_COLUMNS} FROM usage_rows ORDER BY position").fetchall()
    assert after == before
    owners = cur.execute("SELECT count(*) FROM usage_owners").fetchone()
    assert owners == (4,)  # (a, s1, tokens), (a, s1, requests), (a, s2, tokens), (b, s1, tokens)
    rows = TableBuilder(USAGE_SCHEMA)
    at = datetime(2026, 11, 2, 15, tzinfo=UTC)
    for position, app, meter in ((6, "a", "tokens"), (7, "c", "tokens")):
        rows.append(
            position, "t1", f"e{position}", "s1", "qm.invocation.usage", at, at, at, "cc",
            "team", app, meter, Decimal(1), None, "app_id", False, False, None, "prod",
            "persistent",
        )  # fmt: skip
    store.write(RatedBatch(None, None, usage=rows.to_table()))
    owners = cur.execute("SELECT count(*) FROM usage_owners").fetchone()
    assert owners == (5,)  # (a, s1, tokens) reused, (c, s1, tokens) added
    totals = cur.execute("SELECT app, sum(quantity) FROM usage_rows GROUP BY app ORDER BY app")
    assert totals.fetchall() == [("a", Decimal("12.5")), ("b", Decimal(4)), ("c", Decimal(1))]
    store.close()


def test_a_store_held_by_another_process_is_refused_naming_that_process(tmp_path: Path) -> None:
    path = tmp_path / "usage.duckdb"
    DuckDBUsageStore(path).close()
    with held_by_another_process(path) as pid, pytest.raises(UsageStoreInUseError) as refused:
        DuckDBUsageStore(path)
    assert f"{path} is in use by another process (process {pid})" in refused.value.message
    DuckDBUsageStore(path).close()  # free again once that process is gone
