"""The usage store seam: attributed raw usage, rollups, and the queries billing reads.

Backends: DuckDB (embedded, `duckdb_store.py`); ClickHouse later. The pipeline hands the store
one `RatedBatch` per transaction: Arrow tables in the schemas below (a columnar format every
OLAP backend loads in bulk), plus the stream position the batch advances to, so the rows and
the position commit together (exactly once across crashes).

Reading (billing, explain, preview) — every call is scoped to one tenant, periods are
half-open [start, end) in UTC, and `as_of=T` answers as the store stood at T: only usage that
had become billable before T (`billable_at < T`; that is `recorded_at` for every event that did
not wait in the reconciliation window, else the moment its metadata arrived or its deadline).
See docs/usage.md for the full contract."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any, Protocol

import pyarrow as pa
import pyarrow.compute as pc

from quartermaster.domain.money import fixed_point
from quartermaster.domain.timeutil import HOUR, Period, ensure_utc

QUANTITY_TYPE = pa.decimal128(38, 12)
TIME_TYPE = pa.timestamp("us")  # naive UTC: the store compares wall times in UTC only

EVENT_SCHEMA = pa.schema(
    [
        ("position", pa.int64()),
        ("tenant_id", pa.string()),
        ("event_type", pa.string()),
        ("recorded_at", TIME_TYPE),
        ("billable_at", TIME_TYPE),
        ("outcome", pa.string()),
        ("method", pa.string()),
        ("waited", pa.bool_()),
    ]
)
USAGE_SCHEMA = pa.schema(
    [
        ("position", pa.int64()),
        ("tenant_id", pa.string()),
        ("event_id", pa.string()),
        ("source", pa.string()),
        ("event_type", pa.string()),
        ("event_time", TIME_TYPE),
        ("recorded_at", TIME_TYPE),
        ("billable_at", TIME_TYPE),
        ("cost_center", pa.string()),
        ("team", pa.string()),
        ("app", pa.string()),
        ("meter", pa.string()),
        ("quantity", QUANTITY_TYPE),
        ("distinct_value", pa.string()),
        ("method", pa.string()),
        ("unattributed", pa.bool_()),
        ("late", pa.bool_()),
        ("resource_id", pa.string()),
        ("environment", pa.string()),
        ("lifecycle", pa.string()),
    ]
)
MARKER_SCHEMA = pa.schema(
    [
        ("position", pa.int64()),
        ("tenant_id", pa.string()),
        ("event_id", pa.string()),
        ("event_time", TIME_TYPE),
        ("billable_at", TIME_TYPE),
        ("resource_id", pa.string()),
        ("action", pa.string()),
        ("replicas", pa.int64()),
        ("cost_center", pa.string()),
        ("team", pa.string()),
        ("app", pa.string()),
        ("environment", pa.string()),
        ("unattributed", pa.bool_()),
    ]
)
COST_SCHEMA = pa.schema(
    [
        ("position", pa.int64()),
        ("tenant_id", pa.string()),
        ("event_id", pa.string()),
        ("source", pa.string()),
        ("event_time", TIME_TYPE),
        ("billable_at", TIME_TYPE),
        ("cost_type", pa.string()),
        ("amount", QUANTITY_TYPE),
        ("currency", pa.string()),
        ("period_start", TIME_TYPE),
        ("period_end", TIME_TYPE),
    ]
)
WAITING_SCHEMA = pa.schema(
    [
        ("position", pa.int64()),
        ("tenant_id", pa.string()),
        ("source", pa.string()),
        ("event_id", pa.string()),
        ("event_type", pa.string()),
        ("subject", pa.string()),
        ("event_time", TIME_TYPE),
        ("recorded_at", TIME_TYPE),
        ("deadline", TIME_TYPE),
        ("content_hash", pa.string()),
        ("app_id", pa.string()),
        ("resource_id", pa.string()),
        ("late", pa.bool_()),
        ("payload", pa.string()),
    ]
)

# Events the pipeline set aside: their processing failed (a quantity the store cannot hold,
# or a fault), so they are not rated and do not hold up the events after them.
FAILED_SCHEMA = pa.schema(
    [
        ("position", pa.int64()),
        ("tenant_id", pa.string()),
        ("event_id", pa.string()),
        ("source", pa.string()),
        ("event_type", pa.string()),
        ("recorded_at", TIME_TYPE),
        ("failed_at", TIME_TYPE),
        ("reason", pa.string()),
    ]
)


def naive_utc(moment: datetime) -> datetime:
    return ensure_utc(moment).replace(tzinfo=None)


class TableBuilder:
    """Collects rows for one Arrow schema: a tuple per row, transposed once at the end.
    Time values may be aware datetimes in any zone; they are stored as naive UTC."""

    def __init__(self, schema: pa.Schema) -> None:
        self.schema = schema
        self._rows: list[tuple[Any, ...]] = []

    def __len__(self) -> int:
        return len(self._rows)

    def append(self, *values: Any) -> None:
        self._rows.append(values)

    def to_table(self) -> pa.Table:
        if not self._rows:
            return self.schema.empty_table()
        # pyarrow converts aware datetimes to UTC for a naive timestamp type, at under half
        # the cost of building an aware array and casting it (tests/usage/test_store.py).
        arrays = [
            pa.array(column, type=f.type)
            for column, f in zip(zip(*self._rows, strict=True), self.schema, strict=True)
        ]
        return pa.Table.from_arrays(arrays, schema=self.schema)


def empty(schema: pa.Schema) -> pa.Table:
    return schema.empty_table()


@dataclass(frozen=True, slots=True)
class StreamState:
    """A reader of the event log. The main stream reads everything; a replay stream rebuilds
    one tenant (or all) from the positions in (from_position, upto]."""

    name: str
    consumer: str  # the event-log consumer whose cursor follows `position`
    position: int
    tenant_id: str | None = None
    from_position: int = 0
    upto: int | None = None
    created_at: datetime | None = None

    def wants(self, position: int, tenant_id: str) -> bool:
        if position <= self.from_position:
            return False
        if self.upto is not None and position > self.upto:
            return False
        return self.tenant_id is None or tenant_id == self.tenant_id


@dataclass
class RatedBatch:
    """Everything one pipeline step writes, committed in one transaction. `stream`/`position`:
    the stream whose position advances (None for a pass that only settles waiting events)."""

    stream: str | None
    position: int | None
    events: pa.Table = field(default_factory=lambda: empty(EVENT_SCHEMA))
    usage: pa.Table = field(default_factory=lambda: empty(USAGE_SCHEMA))
    markers: pa.Table = field(default_factory=lambda: empty(MARKER_SCHEMA))
    costs: pa.Table = field(default_factory=lambda: empty(COST_SCHEMA))
    waiting_added: pa.Table = field(default_factory=lambda: empty(WAITING_SCHEMA))
    waiting_resolved: Sequence[int] = ()
    failed: pa.Table = field(default_factory=lambda: empty(FAILED_SCHEMA))
    finish_stream: bool = False  # a replay stream that reached its `upto`
    # Events rated before (a replay or repair stream): they add no row to the latency ledger,
    # which measures an event's first arrival to billable, not a rebuild's.
    rerated: bool = False


@dataclass(frozen=True, slots=True)
class WaitingEvent:
    """An event waiting in the reconciliation window, with what re-attribution needs."""

    position: int
    tenant_id: str
    source: str
    event_id: str
    event_type: str
    subject: str | None
    event_time: datetime
    recorded_at: datetime
    deadline: datetime
    content_hash: str
    app_id: str | None
    resource_id: str | None
    late: bool
    payload: str


@dataclass(frozen=True, slots=True)
class FailedEvent:
    """An event the pipeline set aside (`FAILED_SCHEMA`): not rated, counted `failed`."""

    position: int
    tenant_id: str
    event_id: str
    source: str
    event_type: str
    recorded_at: datetime
    failed_at: datetime
    reason: str


@dataclass(frozen=True, slots=True)
class FailedSummary:
    """A tenant's set-aside events: how many, and the latest few (newest first)."""

    count: int
    latest: list[FailedEvent]


@dataclass(frozen=True, slots=True)
class UsageTotal:
    """Usage of one (cost center, team, app, meter) in a period, with every statistic a meter
    aggregation may need. max/latest/distinct are None when an `as_of` query reaches before
    the raw-retention horizon (they cannot be rebuilt from rollups)."""

    cost_center: str
    team: str
    app: str
    meter: str
    unattributed: bool
    event_count: int
    quantity_sum: Decimal
    quantity_max: Decimal | None
    latest_quantity: Decimal | None
    distinct_count: int | None


# The columns a usage view can group by (besides the meter and the unattributed flag, which
# every group keeps: quantities of different meters have different units).
GROUP_COLUMNS = ("cost_center", "team", "app")


@dataclass(frozen=True, slots=True)
class UsageFilter:
    """Only usage whose owner or meter is one of these (an empty tuple: any)."""

    cost_centers: tuple[str, ...] = ()
    teams: tuple[str, ...] = ()
    apps: tuple[str, ...] = ()
    meters: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class UsageGroup:
    """The meter quantities of the (cost center, team, app) rows of one group, summed: each
    row's quantity is its meter's aggregation over the period (as billing prices it), so a
    group's quantity is what its rows are billed for. A column the view does not group by is
    None. `quantity` None: a meter that cannot be answered as of that time (see `quantities`).
    `rank`: 1 for the largest quantity of its meter. `meter_groups`/`meter_quantity`: how
    many groups the meter has and their total, over every group, shown or not."""

    cost_center: str | None
    team: str | None
    app: str | None
    meter: str
    unattributed: bool
    quantity: Decimal | None
    event_count: int
    rows: int
    rank: int
    meter_groups: int
    meter_quantity: Decimal | None


@dataclass(frozen=True, slots=True)
class DailyTotal:
    """Usage of one UTC day (or the part of it inside the period asked for)."""

    day: datetime
    total: UsageTotal


@dataclass(frozen=True, slots=True)
class PlatformCostTotal:
    cost_type: str
    currency: str
    amount: Decimal
    event_count: int


@dataclass(frozen=True, slots=True)
class RawUsage:
    """One raw usage row: an event's contribution to one meter (for explain)."""

    position: int
    event_id: str
    source: str
    event_type: str
    event_time: datetime
    recorded_at: datetime
    billable_at: datetime
    cost_center: str
    team: str
    app: str
    meter: str
    quantity: Decimal
    method: str
    unattributed: bool
    late: bool
    resource_id: str | None
    environment: str


@dataclass(frozen=True, slots=True)
class LifecycleMarker:
    position: int
    event_id: str
    event_time: datetime
    resource_id: str
    action: str
    replicas: int | None
    app: str
    environment: str


@dataclass(frozen=True, slots=True)
class HourlyPipelineCounts:
    """Pipeline stages of the events recorded in one hour (the ingest hour)."""

    hour: datetime
    attributed: int
    unattributed: int
    rated: int
    waiting: int
    failed: int = 0


@dataclass(frozen=True, slots=True)
class LatencySummary:
    """recorded_at -> committed in the store, over events that did not wait for metadata."""

    events: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    waited: int


@dataclass(frozen=True, slots=True)
class MeterRate:
    """What one unit of `meter` costs an app (`app` "" = every app without its own rate), for
    hourly cost estimates. `per_event`: a count meter, priced per event, not per quantity."""

    app: str
    meter: str
    rate: Decimal
    per_event: bool = False


@dataclass(frozen=True, slots=True)
class HourlyCost:
    """Usage of one (team, app, meter) in one UTC hour of event time, priced at its rate.
    `first_recorded_at`/`last_recorded_at`: when the hour's raw rows were ingested (None once
    they were folded into the hour rollup at purge)."""

    hour: datetime
    cost_center: str
    team: str
    app: str
    meter: str
    event_count: int
    quantity: Decimal
    cost: Decimal
    first_recorded_at: datetime | None
    last_recorded_at: datetime | None


@dataclass(frozen=True, slots=True)
class HourlySeries:
    """The priced usage of one (cost center, team, app, meter) over consecutive hours: the
    hours that had usage (their index from the series' start), and for each its cost as a
    float (`float` of `HourlyCost.cost`: for scoring, not money) and its count of events."""

    cost_center: str
    team: str
    app: str
    meter: str
    hours: list[int]
    costs: list[float]
    events: list[int]


HOURLY_COST_SCHEMA = pa.schema(
    [
        ("hour", TIME_TYPE),
        ("cost_center", pa.string()),
        ("team", pa.string()),
        ("app", pa.string()),
        ("meter", pa.string()),
        ("event_count", pa.int64()),
        ("quantity", QUANTITY_TYPE),
        ("cost", pa.string()),  # exact decimal text: a cost may exceed decimal128's digits
        ("first_recorded_at", TIME_TYPE),
        ("last_recorded_at", TIME_TYPE),
    ]
)


@dataclass(frozen=True, slots=True)
class HourlyCostSeries:
    """What `UsageStore.hourly_cost_series` reads in one snapshot: every series of the period,
    ordered by team, app, cost center and meter, and the `HourlyCost` rows of the hours asked
    for in detail (`HOURLY_COST_SCHEMA`, in `hourly_costs`' order), kept columnar: a scan
    reads only the few its alerts quote."""

    series: list[HourlySeries]
    details: pa.Table

    def detail_rows(
        self,
        *,
        hour: datetime | None = None,
        meter: str | None = None,
        app: str | None = None,
        team: str | None = None,
    ) -> list[HourlyCost]:
        """The detail rows matching every filter given, in order."""
        table = self.details
        for column, value in (
            ("hour", naive_utc(hour) if hour is not None else None),
            ("meter", meter),
            ("app", app),
            ("team", team),
        ):
            if value is not None and table.num_rows:
                table = table.filter(pc.equal(table[column], pa.scalar(value, table[column].type)))

        def utc(value: datetime | None) -> datetime | None:
            return ensure_utc(value) if value is not None else None

        return [
            HourlyCost(
                hour=ensure_utc(row["hour"]),
                cost_center=row["cost_center"],
                team=row["team"],
                app=row["app"],
                meter=row["meter"],
                event_count=row["event_count"],
                quantity=row["quantity"],
                cost=Decimal(row["cost"]),
                first_recorded_at=utc(row["first_recorded_at"]),
                last_recorded_at=utc(row["last_recorded_at"]),
            )
            for row in table.to_pylist()
        ]


def series_of_rows(
    rows: Sequence[HourlyCost], start: datetime, detailed: Collection[datetime]
) -> HourlyCostSeries:
    """`hourly_costs` rows as `hourly_cost_series` returns them (the reference a store's own
    implementation is tested against; a store without one can return this)."""
    grouped: dict[tuple[str, str, str, str], HourlySeries] = {}
    for row in rows:
        key = (row.team, row.app, row.cost_center, row.meter)
        one = grouped.get(key)
        if one is None:
            one = grouped[key] = HourlySeries(
                row.cost_center, row.team, row.app, row.meter, [], [], []
            )
        one.hours.append((row.hour - start) // HOUR)
        one.costs.append(float(row.cost))
        one.events.append(row.event_count)
    wanted = set(detailed)
    builder = TableBuilder(HOURLY_COST_SCHEMA)
    for row in rows:
        if row.hour in wanted:
            builder.append(
                row.hour, row.cost_center, row.team, row.app, row.meter, row.event_count,
                row.quantity, fixed_point(row.cost), row.first_recorded_at, row.last_recorded_at,
            )  # fmt: skip
    return HourlyCostSeries([grouped[key] for key in sorted(grouped)], builder.to_table())


@dataclass(frozen=True, slots=True)
class LateArrivals:
    """Events of a period that became billable at or after a moment: usage and platform
    costs a document computed as of that moment does not hold."""

    events: int
    first_at: datetime | None  # when the first of them became billable
    last_at: datetime | None


@dataclass(frozen=True, slots=True)
class PurgeResult:
    before: datetime
    usage_rows: int
    event_rows: int


class UsageStore(Protocol):
    # --- pipeline ------------------------------------------------------------------------
    def streams(self) -> list[StreamState]:
        """Every log reader the store knows, main stream first."""
        ...

    def add_streams(self, streams: Sequence[StreamState]) -> None:
        """Register readers (first start, or repair of a gap), in one transaction."""
        ...

    def store_id(self) -> str:
        """A random id the store is given when it is created: its log consumers are named
        with it, so that stores reading one log (several servers, or a store rebuilt beside
        an old one) each resume from their own position."""
        ...

    def log_binding(self) -> str | None:
        """The id of the event log this store rates (None before its first binding)."""
        ...

    def bind_log(self, log_id: str) -> None:
        """Record the id of the event log this store rates."""
        ...

    def start_replay(
        self, tenant_id: str | None, *, main_stream: str, request_id: int | None = None
    ) -> StreamState:
        """Atomically drop the tenant's (or every tenant's) usage and add a stream that
        rebuilds it from the log up to the main stream's current position, recording
        `request_id` (a `usage.models.ReplayRequest`) as the last applied. The latency ledger
        is kept: it records each event's first rating, which a replay does not repeat."""
        ...

    def replay_requests_applied(self) -> int | None:
        """The id of the last replay request the store applied (None: none recorded yet)."""
        ...

    def mark_replay_requests_applied(self, request_id: int) -> None:
        """Record `request_id` as the last replay request applied, without replaying."""
        ...

    def write(self, batch: RatedBatch) -> None:
        """Commit a batch's rows, rollup increments and stream position in one transaction."""
        ...

    def waiting_summary(self) -> dict[str, tuple[int, datetime]]:
        """Tenant -> (events waiting, earliest deadline)."""
        ...

    def late_arrivals(
        self, tenant_id: str, period: Period, *, since: datetime, until: datetime | None = None
    ) -> LateArrivals:
        """The period's events (usage rows still kept raw, and platform costs) that became
        billable at or after `since` (and before `until`): what a document as of `since`
        misses and one as of `until` holds."""
        ...

    def waiting_events(self, tenant_ids: Collection[str]) -> list[WaitingEvent]: ...

    def failed_summary(self, tenant_id: str, *, latest: int = 10) -> FailedSummary:
        """The tenant's set-aside events: their count and the `latest` newest."""
        ...

    def purge_raw(self, *, before: datetime) -> PurgeResult:
        """Drop raw rows that became billable before `before`; rollups stay."""
        ...

    def purged_before(self) -> datetime | None: ...

    def compact(self) -> None:
        """Fold rollup increments into one row per key; every answer stays the same."""
        ...

    # --- queries (billing, explain, preview) ---------------------------------------------
    def quantities(
        self, tenant_id: str, period: Period, *, as_of: datetime | None = None
    ) -> list[UsageTotal]: ...

    def usage_groups(
        self,
        tenant_id: str,
        period: Period,
        *,
        aggregations: Mapping[str, str],
        by: Sequence[str],
        filters: UsageFilter,
        top: int | None = None,
        as_of: datetime | None = None,
    ) -> list[UsageGroup]:
        """`quantities` with each meter's aggregation applied (`aggregations`: meter name ->
        `Aggregation` value; a meter not named is a sum), filtered, summed per group of the
        `by` columns (a subset of `GROUP_COLUMNS`) with the meter and unattributed flag, and
        cut to the `top` largest groups of each meter; ordered by meter and rank."""
        ...

    def daily_totals(self, tenant_id: str, period: Period) -> list[DailyTotal]:
        """`quantities` per UTC day of the period (dashboards, previews, benchmarks)."""
        ...

    def platform_costs(
        self, tenant_id: str, period: Period, *, as_of: datetime | None = None
    ) -> list[PlatformCostTotal]: ...

    def top_events(
        self,
        tenant_id: str,
        period: Period,
        *,
        app: str,
        meter: str,
        cost_center: str | None = None,
        team: str | None = None,
        limit: int = 10,
    ) -> list[RawUsage]: ...

    def lifecycle_markers(
        self, tenant_id: str, period: Period, *, app: str
    ) -> list[LifecycleMarker]: ...

    def hourly_costs(
        self, tenant_id: str, hours: Period, *, rates: Sequence[MeterRate]
    ) -> list[HourlyCost]:
        """Attributed usage per hour, cost center, team, app and meter of event time in
        `hours` (widened to whole hours), including the hour in progress, priced with `rates`
        (a meter without a rate is left out). Raw rows and hour rollups together."""
        ...

    def hourly_cost_series(
        self,
        tenant_id: str,
        hours: Period,
        *,
        rates: Sequence[MeterRate],
        detailed: Collection[datetime] = (),
    ) -> HourlyCostSeries:
        """What `hourly_costs` returns for `hours` (whole hours), read in one snapshot and
        shaped for scoring: one `HourlySeries` per (cost center, team, app, meter), its hour
        indexes counted from `hours.start`; `HourlyCost` rows only for the `detailed` hours
        (UTC hour starts). Equal to `series_of_rows(hourly_costs(...), hours.start,
        detailed)`."""
        ...

    def touched_hours(self, *, processed_since: datetime) -> dict[str, dict[datetime, datetime]]:
        """Tenant -> event-time hour -> the latest commit stamp of its usage, for the hours
        that received usage committed at or after `processed_since` (what an incremental
        scan re-evaluates)."""
        ...

    def arrived_hours(self, *, since: datetime) -> dict[str, dict[datetime, datetime]]:
        """Tenant -> event-time hour -> the latest moment its usage became billable, for the
        hours that received usage (unattributed too) or platform costs written at or after
        `since`: where late usage for a billed period may have landed."""
        ...

    def pipeline_counts(self, tenant_id: str, hours: Period) -> list[HourlyPipelineCounts]: ...

    def latency(self, tenant_id: str | None, *, since: datetime) -> LatencySummary: ...

    def close(self) -> None: ...
