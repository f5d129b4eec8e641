"""Read queries of the DuckDB usage store (SQL builders and row mapping)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from quartermaster.domain.money import fixed_point, money_context, quantize_to
from quartermaster.domain.timeutil import Period
from quartermaster.usage.duckdb_schema import LATEST_KEY
from quartermaster.usage.periods import Grain, Segment, decompose
from quartermaster.usage.store import (
    GROUP_COLUMNS,
    HOURLY_COST_SCHEMA,
    DailyTotal,
    HourlyCost,
    HourlyPipelineCounts,
    HourlySeries,
    LatencySummary,
    LifecycleMarker,
    MeterRate,
    PlatformCostTotal,
    RawUsage,
    UsageFilter,
    UsageGroup,
    UsageTotal,
    naive_utc,
)

INT64_MAX = 2**63 - 1

KEYS = "cost_center, team, app, meter, unattributed"
Key = tuple[str, str, str, str, bool]


def aware(value: datetime) -> datetime:
    return value.replace(tzinfo=UTC)


def _ranges(column: str, segments: Sequence[Segment]) -> tuple[str, list[Any]]:
    clauses = " OR ".join(f"({column} >= ? AND {column} < ?)" for _ in segments)
    params: list[Any] = []
    for segment in segments:
        params += [naive_utc(segment.start), naive_utc(segment.end)]
    return f"({clauses})", params


def _by_grain(period: Period) -> dict[Grain, list[Segment]]:
    grouped: dict[Grain, list[Segment]] = {}
    for segment in decompose(period.start, period.end):
        grouped.setdefault(segment.grain, []).append(segment)
    return grouped


def summable_sql(
    tenant_id: str, period: Period, *, as_of: datetime | None
) -> tuple[str, list[Any]]:
    """Count, sum, max and latest per key from the coarsest rollups covering the period: day
    rollups for whole days; for edge hours and minutes the hour/minute rollups (raw rows
    folded at purge) plus the raw rows still kept; raw rows for sub-minute edges. With
    `as_of`, minus what became billable at or after it."""
    parts: list[str] = []
    params: list[Any] = []
    for grain, segments in _by_grain(period).items():
        if grain is not Grain.RAW:
            where, values = _ranges("bucket", segments)
            parts.append(
                f"SELECT {KEYS}, event_count AS n, quantity_sum AS s, quantity_max AS m, "
                f"latest_key AS lk, latest_quantity AS lq "
                f"FROM usage_{grain.value} WHERE tenant_id = ? AND {where}"
            )
            params += [tenant_id, *values]
        if grain is not Grain.DAY:  # raw rows not yet folded into minute/hour rollups
            where, values = _ranges("event_time", segments)
            parts.append(
                f"SELECT {KEYS}, 1 AS n, quantity AS s, quantity AS m, {LATEST_KEY} AS lk, "
                f"quantity AS lq FROM usage_rows WHERE tenant_id = ? AND {where}"
            )
            params += [tenant_id, *values]
    if as_of is not None:
        parts.append(
            f"SELECT {KEYS}, -1 AS n, -quantity AS s, NULL AS m, NULL AS lk, "
            "NULL AS lq FROM usage_rows WHERE tenant_id = ? AND event_time >= ? "
            "AND event_time < ? AND billable_at >= ?"
        )
        params += [tenant_id, naive_utc(period.start), naive_utc(period.end), naive_utc(as_of)]
    union = " UNION ALL ".join(parts)
    sql = (
        f"SELECT {KEYS}, sum(n)::BIGINT AS n, sum(s) AS s, max(m) AS m, arg_max(lq, lk) AS lq "
        f"FROM ({union}) GROUP BY ALL HAVING sum(n) <> 0"
    )
    return sql, params


def whole_days_sql(tenant_id: str, start: datetime, end: datetime) -> tuple[str, list[Any]]:
    """Per day and key, from the day rollups (with unique counts from the day sets)."""
    bounds = [tenant_id, naive_utc(start), naive_utc(end)]
    sql = f"""
        WITH totals AS (
            SELECT bucket, {KEYS}, sum(event_count)::BIGINT AS n, sum(quantity_sum) AS s,
                   max(quantity_max) AS m, arg_max(latest_quantity, latest_key) AS lq
            FROM usage_day WHERE tenant_id = ? AND bucket >= ? AND bucket < ? GROUP BY ALL
        ), sets AS (
            SELECT bucket, {KEYS}, count(DISTINCT value) AS d
            FROM distinct_day WHERE tenant_id = ? AND bucket >= ? AND bucket < ? GROUP BY ALL
        )
        SELECT {KEYS}, n, s, m, lq, coalesce(d, 0), bucket
        FROM totals LEFT JOIN sets USING (bucket, {KEYS})
    """
    return sql, bounds + bounds


def to_daily(row: Sequence[Any]) -> DailyTotal:
    """A row of `whole_days_sql`."""
    return DailyTotal(
        aware(row[10]),
        UsageTotal(
            cost_center=row[0],
            team=row[1],
            app=row[2],
            meter=row[3],
            unattributed=bool(row[4]),
            event_count=int(row[5]),
            quantity_sum=row[6],
            quantity_max=row[7],
            latest_quantity=row[8],
            distinct_count=int(row[9]),
        ),
    )


def distinct_sql(tenant_id: str, period: Period) -> tuple[str, list[Any]]:
    parts: list[str] = []
    params: list[Any] = []
    for grain, segments in _by_grain(period).items():
        if grain is not Grain.RAW:
            where, values = _ranges("bucket", segments)
            parts.append(
                f"SELECT {KEYS}, value FROM distinct_{grain.value} WHERE tenant_id = ? AND {where}"
            )
            params += [tenant_id, *values]
        if grain is not Grain.DAY:
            where, values = _ranges("event_time", segments)
            parts.append(
                f"SELECT {KEYS}, distinct_value AS value FROM usage_rows "
                f"WHERE tenant_id = ? AND distinct_value IS NOT NULL AND {where}"
            )
            params += [tenant_id, *values]
    union = " UNION ALL ".join(parts)
    return f"SELECT {KEYS}, count(DISTINCT value) AS d FROM ({union}) GROUP BY ALL", params


def raw_as_of_sql(tenant_id: str, period: Period, as_of: datetime) -> tuple[str, list[Any]]:
    """max, latest and distinct count from raw rows billable before `as_of`."""
    sql = (
        f"SELECT {KEYS}, max(quantity) AS m, arg_max(quantity, {LATEST_KEY}) AS lq, "
        "count(DISTINCT distinct_value) AS d FROM usage_rows WHERE tenant_id = ? "
        "AND event_time >= ? AND event_time < ? AND billable_at < ? GROUP BY ALL"
    )
    return sql, [tenant_id, naive_utc(period.start), naive_utc(period.end), naive_utc(as_of)]


def build_totals(
    summable: Sequence[tuple[Any, ...]],
    distinct: dict[Key, int],
    raw_stats: dict[Key, tuple[Decimal | None, Decimal | None]] | None,
    *,
    non_summable_known: bool,
) -> list[UsageTotal]:
    totals: list[UsageTotal] = []
    for row in summable:
        key: Key = (row[0], row[1], row[2], row[3], bool(row[4]))
        count, total, maximum, latest = int(row[5]), row[6], row[7], row[8]
        if raw_stats is not None:
            maximum, latest = raw_stats.get(key, (None, None))
        distinct_count: int | None = distinct.get(key, 0)
        if not non_summable_known:
            maximum, latest, distinct_count = None, None, None
        totals.append(
            UsageTotal(
                cost_center=key[0],
                team=key[1],
                app=key[2],
                meter=key[3],
                unattributed=key[4],
                event_count=count,
                quantity_sum=Decimal(total),
                quantity_max=maximum,
                latest_quantity=latest,
                distinct_count=distinct_count,
            )
        )
    totals.sort(key=lambda t: (t.cost_center, t.team, t.app, t.meter, t.unattributed))
    return totals


def usage_groups_sql(
    tenant_id: str,
    period: Period,
    *,
    aggregations: Mapping[str, str],
    by: Sequence[str],
    filters: UsageFilter,
    top: int | None,
    as_of: datetime | None,
    non_summable_known: bool,
) -> tuple[str, list[Any]]:
    """Each key's quantity under its meter's aggregation (as `build_totals` and
    `service.meter_quantity` make it; NULL where it cannot be known as of `as_of`), filtered,
    summed per group of `by` (+ meter, unattributed), ranked by quantity within each meter
    and cut to `top` per meter, with each meter's group count and total."""
    unknown = [c for c in by if c not in GROUP_COLUMNS]
    if unknown:
        raise ValueError(f"cannot group usage by {unknown}")
    totals, params = summable_sql(tenant_id, period, as_of=as_of)
    if as_of is None:
        stats, stat_params = distinct_sql(tenant_id, period)
        m, lq, d = "t.m", "t.lq", "coalesce(x.d, 0)"
    else:
        stats, stat_params = raw_as_of_sql(tenant_id, period, as_of)
        m, lq, d = "x.m", "x.lq", "coalesce(x.d, 0)"
    if not non_summable_known:
        m, lq, d = "NULL", "NULL", "NULL"
    params += stat_params
    params += [list(aggregations), list(aggregations.values())]
    where: list[str] = []
    for column, values in (
        ("cost_center", filters.cost_centers),
        ("team", filters.teams),
        ("app", filters.apps),
        ("meter", filters.meters),
    ):
        if values:
            where.append(f"list_contains(?::VARCHAR[], t.{column})")
            params.append(list(values))
    condition = f"WHERE {' AND '.join(where)}" if where else ""
    quantity = "DECIMAL(38, 12)"
    columns = "".join(f"{c}, " for c in by)
    keys = ", ".join(f"{c} NULLS FIRST" for c in (*by, "unattributed"))
    missing = ", ".join(f"NULL::VARCHAR AS {c}" for c in GROUP_COLUMNS if c not in by)
    sql = f"""
        WITH t AS ({totals}), x AS ({stats}),
        a AS (SELECT unnest(?::VARCHAR[]) AS meter, unnest(?::VARCHAR[]) AS aggregation),
        detail AS (
            SELECT t.cost_center, t.team, t.app, t.meter, t.unattributed, t.n,
                   CASE coalesce(a.aggregation, 'sum')
                       WHEN 'sum' THEN t.s::{quantity}
                       WHEN 'count' THEN t.n::{quantity}
                       WHEN 'max' THEN ({m})::{quantity}
                       WHEN 'latest' THEN ({lq})::{quantity}
                       ELSE ({d})::{quantity}
                   END AS q
            FROM t LEFT JOIN x USING ({KEYS}) LEFT JOIN a ON a.meter = t.meter
            {condition}
        ), grouped AS (
            SELECT {columns}meter, unattributed, sum(n)::BIGINT AS n, sum(q) AS q,
                   count(*)::BIGINT AS detail_rows, bool_or(q IS NULL) AS unknown
            FROM detail GROUP BY ALL
        ), ranked AS (
            SELECT *, row_number() OVER (
                       PARTITION BY meter ORDER BY q DESC NULLS LAST, {keys}
                   ) AS rank,
                   count(*) OVER (PARTITION BY meter) AS meter_groups,
                   CASE WHEN bool_or(unknown) OVER (PARTITION BY meter) THEN NULL
                        ELSE sum(q) OVER (PARTITION BY meter) END AS meter_quantity
            FROM grouped
        )
        SELECT {", ".join(GROUP_COLUMNS)}, meter, unattributed,
               CASE WHEN unknown THEN NULL ELSE q END, n, detail_rows, rank, meter_groups,
               meter_quantity
        FROM (SELECT *{", " if missing else ""}{missing} FROM ranked)
        WHERE rank <= ? ORDER BY meter, rank
    """
    params.append(top if top is not None else INT64_MAX)
    return sql, params


def to_usage_group(row: Sequence[Any]) -> UsageGroup:
    """A row of `usage_groups_sql`."""
    return UsageGroup(
        cost_center=row[0],
        team=row[1],
        app=row[2],
        meter=row[3],
        unattributed=bool(row[4]),
        quantity=Decimal(row[5]) if row[5] is not None else None,
        event_count=int(row[6]),
        rows=int(row[7]),
        rank=int(row[8]),
        meter_groups=int(row[9]),
        meter_quantity=Decimal(row[10]) if row[10] is not None else None,
    )


def platform_costs_sql(
    tenant_id: str, period: Period, *, as_of: datetime | None
) -> tuple[str, list[Any]]:
    sql = (
        "SELECT cost_type, currency, sum(amount), count(*) FROM platform_costs "
        "WHERE tenant_id = ? AND coalesce(period_start, event_time) >= ? "
        "AND coalesce(period_start, event_time) < ?"
    )
    params: list[Any] = [tenant_id, naive_utc(period.start), naive_utc(period.end)]
    if as_of is not None:
        sql += " AND billable_at < ?"
        params.append(naive_utc(as_of))
    return sql + " GROUP BY ALL ORDER BY cost_type, currency", params


def to_cost_totals(rows: Sequence[tuple[Any, ...]]) -> list[PlatformCostTotal]:
    return [
        PlatformCostTotal(cost_type=r[0], currency=r[1], amount=Decimal(r[2]), event_count=r[3])
        for r in rows
    ]


TOP_EVENTS_COLUMNS = (
    "position, event_id, source, event_type, event_time, recorded_at, billable_at, cost_center, "
    "team, app, meter, quantity, method, unattributed, late, resource_id, environment"
)


def to_raw_usage(row: Sequence[Any]) -> RawUsage:
    return RawUsage(
        position=row[0],
        event_id=row[1],
        source=row[2],
        event_type=row[3],
        event_time=aware(row[4]),
        recorded_at=aware(row[5]),
        billable_at=aware(row[6]),
        cost_center=row[7],
        team=row[8],
        app=row[9],
        meter=row[10],
        quantity=Decimal(row[11]),
        method=row[12],
        unattributed=bool(row[13]),
        late=bool(row[14]),
        resource_id=row[15],
        environment=row[16],
    )


def to_marker(row: Sequence[Any]) -> LifecycleMarker:
    return LifecycleMarker(
        position=row[0],
        event_id=row[1],
        event_time=aware(row[2]),
        resource_id=row[3],
        action=row[4],
        replicas=row[5],
        app=row[6],
        environment=row[7],
    )


def to_hourly(
    counted: Sequence[tuple[Any, ...]],
    waiting: Sequence[tuple[Any, ...]],
    failed: Sequence[tuple[Any, ...]] = (),
) -> list[HourlyPipelineCounts]:
    merged: dict[datetime, list[int]] = {}
    for hour, attributed, unattributed, rated in counted:
        merged[hour] = [int(attributed), int(unattributed), int(rated), 0, 0]
    for hour, count in waiting:
        merged.setdefault(hour, [0, 0, 0, 0, 0])[3] = int(count)
    for hour, count in failed:
        merged.setdefault(hour, [0, 0, 0, 0, 0])[4] = int(count)
    return [HourlyPipelineCounts(aware(hour), *values) for hour, values in sorted(merged.items())]


def to_latency(row: Sequence[Any] | None, waited: int) -> LatencySummary:
    if row is None or not row[0]:
        return LatencySummary(events=0, p50_ms=None, p99_ms=None, max_ms=None, waited=waited)
    return LatencySummary(
        events=int(row[0]),
        p50_ms=float(row[1]),
        p99_ms=float(row[2]),
        max_ms=float(row[3]),
        waited=waited,
    )


# A rate per byte is ~1e-10: kept to 18 places. The product with a quantity cast to 6 places
# has scale 24, leaving 14 integer digits of cost: a larger one (an accepted event of 10^17
# units at 0.001) overflowed and failed the tenant's anomaly scan. Such a cost is NULL in the
# query (try) and computed exactly from the priced quantity and the rate (`exact_cost`).
RATE_QUANTUM = Decimal("1e-18")


MAX_RATE = Decimal(10) ** 20  # exclusive: DECIMAL(38, 18) holds 20 integer digits


def rate_value(rate: MeterRate) -> Decimal:
    """The rate as the rates table holds it (to 1e-18); a rate of 10^20 or more per unit is
    refused naming it (quantizing in the default context failed from 10^10 on)."""
    if rate.rate.copy_abs() >= MAX_RATE:
        raise ValueError(
            f"rate {fixed_point(rate.rate)} of meter {rate.meter!r} (app {rate.app!r}) is not "
            "below 10^20 per unit, the largest an hourly cost estimate can use"
        )
    return quantize_to(rate.rate, RATE_QUANTUM, what=f"rate of meter {rate.meter!r}")


def exact_cost(cost: Decimal | None, priced: Decimal, rate: Decimal) -> Decimal:
    """The query's cost, or where DuckDB's 38 digits could not hold it, the same product
    (quantity cast to 6 places, half away from zero, times the rate) computed exactly."""
    if cost is not None:
        return cost
    with money_context():
        return priced * rate


def _priced_hours_sql(tenant_id: str, hours: Period, rates_table: str) -> tuple[str, list[Any]]:
    """Per hour and (cost center, team, app, meter): events, quantity, cost at the app's rate
    (else the meter's, app ''), ingestion span. Raw rows plus the hour rollups of purged rows.
    Quantities are cast to 6 decimals before pricing (DuckDB's decimals stop at 38 digits);
    `cost` is NULL where the product does not fit them, `priced` and `rate` give it."""
    bounds = [tenant_id, naive_utc(hours.start), naive_utc(hours.end)]
    sql = f"""
        WITH usage AS (
            SELECT date_trunc('hour', event_time)::TIMESTAMP AS hour, cost_center, team, app,
                   meter, count(*)::BIGINT AS n, sum(quantity) AS s, min(recorded_at) AS r0,
                   max(recorded_at) AS r1
            FROM usage_rows WHERE tenant_id = ? AND NOT unattributed
                AND event_time >= ? AND event_time < ?
            GROUP BY ALL
            UNION ALL
            SELECT bucket, cost_center, team, app, meter, event_count, quantity_sum, NULL, NULL
            FROM usage_hour WHERE tenant_id = ? AND NOT unattributed
                AND bucket >= ? AND bucket < ?
        ), merged AS (
            SELECT hour, cost_center, team, app, meter, sum(n)::BIGINT AS n, sum(s) AS s,
                   min(r0) AS r0, max(r1) AS r1
            FROM usage GROUP BY ALL
        )
        SELECT hour, cost_center, team, app, meter, n, s, try(priced * rate) AS cost, r0, r1,
               priced, rate
        FROM (
            SELECT m.hour AS hour, m.cost_center AS cost_center, m.team AS team, m.app AS app,
                   m.meter AS meter, m.n AS n, m.s AS s,
                   CASE WHEN coalesce(a.per_event, d.per_event) THEN m.n::DECIMAL(38, 6)
                        ELSE m.s::DECIMAL(38, 6) END AS priced,
                   coalesce(a.rate, d.rate) AS rate, m.r0 AS r0, m.r1 AS r1
            FROM merged m
            LEFT JOIN {rates_table} a ON a.app = m.app AND a.meter = m.meter
            LEFT JOIN {rates_table} d ON d.app = '' AND d.meter = m.meter
            WHERE coalesce(a.rate, d.rate) IS NOT NULL
        )
    """
    return sql, bounds + bounds


def hourly_costs_sql(
    tenant_id: str,
    hours: Period,
    rates_table: str,
    *,
    only: Sequence[datetime] | None = None,
) -> tuple[str, list[Any]]:
    """The priced hours (`_priced_hours_sql`) as `HourlyCost` rows, in hour, team, app and
    meter order; `only`: just those hours (UTC hour starts) of the period."""
    sql, params = _priced_hours_sql(tenant_id, hours, rates_table)
    if only is not None:
        sql = f"SELECT * FROM ({sql}) WHERE list_contains(?::TIMESTAMP[], hour)"
        params = [*params, [naive_utc(h) for h in only]]
    return f"{sql} ORDER BY hour, team, app, meter", params


def cost_details(found: pa.Table) -> pa.Table:
    """`hourly_costs_sql`'s rows as a `HOURLY_COST_SCHEMA` table: the cost as exact text,
    computed here where the query's was NULL (see `exact_cost`)."""
    cost = found.column(7)
    if cost.null_count:
        priced, rate = found.column(10).to_pylist(), found.column(11).to_pylist()
        text = pa.array(
            [
                fixed_point(exact_cost(c, p, r))
                for c, p, r in zip(cost.to_pylist(), priced, rate, strict=True)
            ],
            pa.string(),
        )
    else:
        text = pc.cast(cost, pa.string())
    table = found.select(range(10)).set_column(7, "cost", text)
    return table.rename_columns(HOURLY_COST_SCHEMA.names).cast(HOURLY_COST_SCHEMA)


def hourly_series_sql(tenant_id: str, hours: Period, rates_table: str) -> tuple[str, list[Any]]:
    """The priced hours as one row per (cost center, team, app, meter): the lists of its
    hours (index from `hours.start`), costs and event counts, in hour order. The cost goes to
    DOUBLE through its decimal text: correctly rounded, so equal to Python's float() of the
    Decimal `hourly_costs` returns (a direct DECIMAL to DOUBLE cast rounds twice). A cost of
    10^14 or more (NULL in the query) is the product of the two DOUBLEs: within a few units
    of the last place of it, which is all a score needs."""
    sql, params = _priced_hours_sql(tenant_id, hours, rates_table)
    series = f"""
        SELECT cost_center, team, app, meter,
               list(date_diff('hour', ?::TIMESTAMP, hour) ORDER BY hour),
               list(coalesce(cost::VARCHAR::DOUBLE,
                             priced::VARCHAR::DOUBLE * rate::VARCHAR::DOUBLE) ORDER BY hour),
               list(n ORDER BY hour)
        FROM ({sql}) GROUP BY ALL ORDER BY team, app, cost_center, meter
    """
    return series, [naive_utc(hours.start), *params]


def to_hourly_series(row: Sequence[Any]) -> HourlySeries:
    return HourlySeries(
        cost_center=row[0],
        team=row[1],
        app=row[2],
        meter=row[3],
        hours=row[4],
        costs=row[5],
        events=row[6],
    )


def to_hourly_cost(row: Sequence[Any]) -> HourlyCost:
    return HourlyCost(
        hour=aware(row[0]),
        cost_center=row[1],
        team=row[2],
        app=row[3],
        meter=row[4],
        event_count=int(row[5]),
        quantity=Decimal(row[6]),
        cost=exact_cost(row[7], row[10], row[11]),
        first_recorded_at=aware(row[8]) if row[8] is not None else None,
        last_recorded_at=aware(row[9]) if row[9] is not None else None,
    )


ARRIVED_HOURS_SQL = """
    SELECT tenant_id, date_trunc('hour', event_time)::TIMESTAMP AS hour, max(billable_at)
    FROM usage_rows WHERE processed_at >= ? GROUP BY ALL
    UNION ALL
    SELECT tenant_id, date_trunc('hour', coalesce(period_start, event_time))::TIMESTAMP,
        max(billable_at)
    FROM platform_costs WHERE billable_at >= ? GROUP BY ALL
"""

TOUCHED_HOURS_SQL = """
    SELECT tenant_id, date_trunc('hour', event_time)::TIMESTAMP, max(processed_at)
    FROM usage_rows WHERE processed_at >= ? AND NOT unattributed GROUP BY ALL
"""


def late_arrivals_sql(
    tenant_id: str, period: Period, since: datetime, until: datetime | None = None
) -> tuple[str, list[Any]]:
    """Events (by log position: one event may carry several meters) of the period billable at
    or after `since` (and before `until`), with the first and last moment one became
    billable."""
    bounds: list[Any] = [tenant_id, naive_utc(period.start), naive_utc(period.end)]
    bounds.append(naive_utc(since))
    upper = ""
    if until is not None:
        bounds.append(naive_utc(until))
        upper = " AND billable_at < ?"
    sql = (
        "SELECT count(*), min(b), max(b) FROM ("
        "SELECT position, min(billable_at) AS b FROM usage_rows WHERE tenant_id = ? "
        f"AND event_time >= ? AND event_time < ? AND billable_at >= ?{upper} GROUP BY position "
        "UNION ALL SELECT position, billable_at FROM platform_costs WHERE tenant_id = ? "
        "AND coalesce(period_start, event_time) >= ? AND coalesce(period_start, event_time) < ? "
        f"AND billable_at >= ?{upper})"
    )
    return sql, bounds + bounds
