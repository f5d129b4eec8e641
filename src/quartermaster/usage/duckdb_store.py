"""The DuckDB usage store: one file, one connection per process, a cursor per thread.

DuckDB lets one process hold the file (docs/FIELD-NOTES: not even read-only opens from another
process), so `qm serve` owns it and CLI commands go through the API. Writes are Arrow bulk
inserts inside one transaction per batch; reads run on their own cursor and see committed
batches only."""

from __future__ import annotations

import contextlib
import re
import threading
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from quartermaster.domain.timeutil import HOUR, Period, ensure_utc, utc_now
from quartermaster.errors import ConflictError, InvalidInputError, NotFoundError
from quartermaster.usage import duckdb_queries as q
from quartermaster.usage.duckdb_owners import OwnerIds
from quartermaster.usage.duckdb_schema import (
    DDL,
    GRAINS,
    MIGRATIONS,
    REPLAYED_TABLES,
    SCHEMA_VERSION,
    TENANT_TABLES,
    compact_rollup_sql,
    day_increment_sql,
    delete_raw_sql,
    fold_raw_sql,
    raw_insert_sql,
)
from quartermaster.usage.periods import Grain, ceil_to, floor_to
from quartermaster.usage.store import (
    HOURLY_COST_SCHEMA,
    DailyTotal,
    FailedEvent,
    FailedSummary,
    HourlyCost,
    HourlyCostSeries,
    HourlyPipelineCounts,
    LateArrivals,
    LatencySummary,
    LifecycleMarker,
    MeterRate,
    PlatformCostTotal,
    PurgeResult,
    RatedBatch,
    RawUsage,
    StreamState,
    UsageFilter,
    UsageGroup,
    UsageTotal,
    WaitingEvent,
    naive_utc,
)

# Checkpointing every 16 MB of WAL (the default) made batch commits ~3x slower; a checkpoint per
# GB of WAL keeps its cost amortized (and is what restart replays at most).
CHECKPOINT_THRESHOLD = "1GB"
PURGED_BEFORE_KEY = "purged_before"
LOG_ID_KEY = "event_log_id"
STORE_ID_KEY = "store_id"
REPLAY_REQUEST_KEY = "replay_requests_applied"


class UsageStoreInUseError(ConflictError):
    """Another process holds the usage store: DuckDB admits one process per file."""


def _connect(path: str) -> duckdb.DuckDBPyConnection:
    try:
        return duckdb.connect(path)
    except duckdb.IOException as exc:
        if "Could not set lock" not in str(exc):
            raise
        holder = re.search(r"\(PID (\d+)\)", str(exc))
        by = f" (process {holder.group(1)})" if holder else ""
        raise UsageStoreInUseError(
            f"the usage store {path} is in use by another process{by}: one `qm serve` per "
            "data directory at a time; stop that one, or give this one another data "
            "directory (QM_DATA_DIR or --data-dir)"
        ) from None


class DuckDBUsageStore:
    def __init__(self, path: Path | str) -> None:
        if isinstance(path, Path):
            path.parent.mkdir(parents=True, exist_ok=True)
        self.path = str(path)
        self._conn = _connect(self.path)
        self._conn.execute("SET GLOBAL TimeZone = 'UTC'")
        self._conn.execute(f"SET GLOBAL checkpoint_threshold = '{CHECKPOINT_THRESHOLD}'")
        # With insertion order preserved, a bulk insert's row groups are rewritten at the next
        # checkpoint (1.2 of 4.2 CPU s for 1M rows); without it they are written compressed as
        # the insert runs and the checkpoint only records them. No read depends on the order
        # rows were stored in (every listing has its ORDER BY).
        self._conn.execute("SET GLOBAL preserve_insertion_order = false")
        self._local = threading.local()
        self._write_lock = threading.Lock()
        self._owners = OwnerIds()
        self._closed = False
        self._conn.execute(DDL[0])
        found = self._conn.execute(
            "SELECT value FROM store_meta WHERE key = 'schema_version'"
        ).fetchone()
        while found is not None and found[0] in MIGRATIONS:
            self._migrate(found[0])
            found = self._conn.execute(
                "SELECT value FROM store_meta WHERE key = 'schema_version'"
            ).fetchone()
        if found is not None and found[0] != SCHEMA_VERSION:
            self._conn.close()
            raise RuntimeError(
                f"the usage store {self.path} has schema version {found[0]}, this version of "
                f"Quartermaster needs {SCHEMA_VERSION}: move the file away and restart; the "
                "pipeline rebuilds it from the event log"
            )
        for statement in DDL[1:]:
            self._conn.execute(statement)
        self._conn.execute(
            "INSERT OR IGNORE INTO store_meta VALUES ('schema_version', ?)", [SCHEMA_VERSION]
        )
        self._conn.execute(
            "INSERT OR IGNORE INTO store_meta VALUES (?, ?)", [STORE_ID_KEY, uuid.uuid4().hex[:12]]
        )

    def _migrate(self, version: str) -> None:
        """Bring a store of `version` to the next one, in one transaction."""
        self._conn.execute("BEGIN TRANSACTION")
        try:
            for statement in MIGRATIONS[version]:
                self._conn.execute(statement)
        except BaseException:
            self._conn.execute("ROLLBACK")
            self._conn.close()
            raise
        self._conn.execute("COMMIT")

    # --- connection ------------------------------------------------------------------------

    def _cursor(self) -> duckdb.DuckDBPyConnection:
        if self._closed:
            raise RuntimeError("the usage store is closed")
        cursor: duckdb.DuckDBPyConnection | None = getattr(self._local, "cursor", None)
        if cursor is None:
            cursor = self._conn.cursor()
            self._local.cursor = cursor
        return cursor

    def close(self) -> None:
        with self._write_lock:
            if not self._closed:
                self._closed = True
                self._conn.close()

    def _transaction(self, work: Any) -> Any:
        cursor = self._cursor()
        with self._write_lock:
            cursor.execute("BEGIN TRANSACTION")
            try:
                result = work(cursor)
            except BaseException:
                self._owners.forget()  # it may hold owners of the rolled-back transaction
                cursor.execute("ROLLBACK")
                raise
            cursor.execute("COMMIT")
            return result

    # --- streams ---------------------------------------------------------------------------

    def streams(self) -> list[StreamState]:
        rows = (
            self._cursor()
            .execute(
                "SELECT name, consumer, position, tenant_id, from_position, upto, created_at "
                "FROM pipeline_streams ORDER BY (upto IS NOT NULL), created_at, name"
            )
            .fetchall()
        )
        return [
            StreamState(
                name=r[0],
                consumer=r[1],
                position=r[2],
                tenant_id=r[3],
                from_position=r[4],
                upto=r[5],
                created_at=q.aware(r[6]),
            )
            for r in rows
        ]

    def store_id(self) -> str:
        row = (
            self._cursor()
            .execute("SELECT value FROM store_meta WHERE key = ?", [STORE_ID_KEY])
            .fetchone()
        )
        assert row is not None  # written when the store is opened
        return str(row[0])

    def log_binding(self) -> str | None:
        row = (
            self._cursor()
            .execute("SELECT value FROM store_meta WHERE key = ?", [LOG_ID_KEY])
            .fetchone()
        )
        return None if row is None else str(row[0])

    def bind_log(self, log_id: str) -> None:
        self._cursor().execute(
            "INSERT INTO store_meta VALUES (?, ?) ON CONFLICT DO UPDATE SET value = excluded.value",
            [LOG_ID_KEY, log_id],
        )

    def add_streams(self, streams: Sequence[StreamState]) -> None:
        def work(cur: duckdb.DuckDBPyConnection) -> None:
            for s in streams:
                cur.execute(
                    "INSERT OR REPLACE INTO pipeline_streams VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [
                        s.name,
                        s.consumer,
                        s.tenant_id,
                        s.from_position,
                        s.upto,
                        s.position,
                        naive_utc(s.created_at or utc_now()),
                    ],
                )

        self._transaction(work)

    def replay_requests_applied(self) -> int | None:
        row = (
            self._cursor()
            .execute("SELECT value FROM store_meta WHERE key = ?", [REPLAY_REQUEST_KEY])
            .fetchone()
        )
        return None if row is None else int(row[0])

    def mark_replay_requests_applied(self, request_id: int) -> None:
        self._transaction(lambda cur: _record_replay_request(cur, request_id))

    def start_replay(
        self, tenant_id: str | None, *, main_stream: str, request_id: int | None = None
    ) -> StreamState:
        replay_id = uuid.uuid4().hex[:12]

        def work(cur: duckdb.DuckDBPyConnection) -> StreamState:
            if request_id is not None:
                _record_replay_request(cur, request_id)
            main = cur.execute(
                "SELECT position FROM pipeline_streams WHERE name = ?", [main_stream]
            ).fetchone()
            if main is None:
                raise NotFoundError("the pipeline has not started yet: nothing to replay")
            full = cur.execute(
                "SELECT name FROM pipeline_streams WHERE upto IS NOT NULL AND tenant_id IS NULL"
            ).fetchone()
            if full is not None:
                raise ConflictError(
                    f"a rebuild of the whole usage store ({full[0]}) is in progress; "
                    "retry when `qm pipeline status` shows it finished"
                )
            if tenant_id is None:
                cur.execute("DELETE FROM pipeline_streams WHERE upto IS NOT NULL")
                cur.execute("DELETE FROM usage_raw")
                for table in REPLAYED_TABLES:
                    cur.execute(f"DELETE FROM {table}")
            else:
                cur.execute(
                    "DELETE FROM pipeline_streams WHERE upto IS NOT NULL AND tenant_id = ?",
                    [tenant_id],
                )
                cur.execute(delete_raw_sql("tenant_id = ?"), [tenant_id])
                for table in REPLAYED_TABLES:
                    cur.execute(f"DELETE FROM {table} WHERE tenant_id = ?", [tenant_id])
            state = StreamState(
                name=f"replay-{replay_id}",
                consumer=f"pipeline-replay-{replay_id}",
                position=0,
                tenant_id=tenant_id,
                from_position=0,
                upto=int(main[0]),
                created_at=utc_now(),
            )
            cur.execute(
                "INSERT INTO pipeline_streams VALUES (?, ?, ?, ?, ?, ?, ?)",
                [
                    state.name,
                    state.consumer,
                    tenant_id,
                    0,
                    state.upto,
                    0,
                    naive_utc(state.created_at or utc_now()),
                ],
            )
            return state

        result: StreamState = self._transaction(work)
        return result

    # --- writes ----------------------------------------------------------------------------

    def write(self, batch: RatedBatch) -> None:
        processed_at = naive_utc(utc_now())

        def work(cur: duckdb.DuckDBPyConnection) -> None:
            self._write_rows(cur, batch, processed_at, self._owners)
            if batch.stream is not None and batch.position is not None:
                if batch.finish_stream:
                    cur.execute("DELETE FROM pipeline_streams WHERE name = ?", [batch.stream])
                else:
                    cur.execute(
                        "UPDATE pipeline_streams SET position = greatest(position, ?) "
                        "WHERE name = ?",
                        [batch.position, batch.stream],
                    )

        self._transaction(work)

    @staticmethod
    def _write_rows(
        cur: duckdb.DuckDBPyConnection, batch: RatedBatch, processed_at: Any, owners: OwnerIds
    ) -> None:
        registered: list[str] = []

        def register(name: str, table: pa.Table) -> bool:
            if table.num_rows == 0:
                return False
            cur.register(name, table)
            registered.append(name)
            return True

        try:
            if register("batch_events", batch.events):
                if not batch.rerated:  # the ledger keeps the first rating's latency
                    cur.execute(
                        "INSERT INTO usage_events SELECT position, tenant_id, recorded_at, "
                        "billable_at, ?, waited FROM batch_events",
                        [processed_at],
                    )
                cur.execute(
                    "INSERT INTO pipeline_hourly SELECT tenant_id, "
                    "date_trunc('hour', recorded_at)::TIMESTAMP, "
                    "count(*) FILTER (outcome <> 'unattributed'), "
                    "count(*) FILTER (outcome = 'unattributed'), count(*) "
                    "FROM batch_events GROUP BY ALL"
                )
            if batch.usage.num_rows:
                keys = owners.assign(cur, batch.usage)
                rows = batch.usage.append_column("owner_id", keys.owner_ids)
                register("batch_raw", rows.append_column("group_id", keys.group_ids))
                register("batch_groups", keys.groups)
                cur.execute(raw_insert_sql("batch_raw"), [processed_at])
                has_distinct = pc.any(batch.usage["distinct_value"].is_valid()).as_py()
                for statement in day_increment_sql(
                    "batch_raw", "batch_groups", with_distinct=has_distinct
                ):
                    cur.execute(statement)
            if register("batch_markers", batch.markers):
                cur.execute("INSERT INTO lifecycle_markers SELECT * FROM batch_markers")
            if register("batch_costs", batch.costs):
                cur.execute("INSERT INTO platform_costs SELECT * FROM batch_costs")
            if batch.waiting_resolved:
                resolved = pa.table({"position": pa.array(batch.waiting_resolved, pa.int64())})
                register("batch_resolved", resolved)
                cur.execute(
                    "DELETE FROM waiting_events WHERE position IN "
                    "(SELECT position FROM batch_resolved)"
                )
            if register("batch_waiting", batch.waiting_added):
                cur.execute("INSERT OR IGNORE INTO waiting_events SELECT * FROM batch_waiting")
            if register("batch_failed", batch.failed):
                cur.execute("INSERT OR IGNORE INTO failed_events SELECT * FROM batch_failed")
        finally:
            # An aborted transaction refuses even an unregister; the error that aborted it is
            # the one to raise, and the next batch's register replaces the view.
            with contextlib.suppress(duckdb.Error):
                for name in registered:
                    cur.unregister(name)

    # --- waiting ---------------------------------------------------------------------------

    def waiting_summary(self) -> dict[str, tuple[int, datetime]]:
        rows = (
            self._cursor()
            .execute(
                "SELECT tenant_id, count(*), min(deadline) FROM waiting_events GROUP BY tenant_id"
            )
            .fetchall()
        )
        return {r[0]: (int(r[1]), q.aware(r[2])) for r in rows}

    def late_arrivals(
        self, tenant_id: str, period: Period, *, since: datetime, until: datetime | None = None
    ) -> LateArrivals:
        sql, params = q.late_arrivals_sql(tenant_id, period, since, until)
        row = self._cursor().execute(sql, params).fetchone()
        if row is None or not row[0]:
            return LateArrivals(0, None, None)
        return LateArrivals(int(row[0]), q.aware(row[1]), q.aware(row[2]))

    def waiting_events(self, tenant_ids: Collection[str]) -> list[WaitingEvent]:
        if not tenant_ids:
            return []
        rows = (
            self._cursor()
            .execute(
                "SELECT position, tenant_id, source, event_id, event_type, subject, event_time, "
                "recorded_at, deadline, content_hash, app_id, resource_id, late, payload "
                "FROM waiting_events WHERE list_contains(?, tenant_id) ORDER BY position",
                [list(tenant_ids)],
            )
            .fetchall()
        )
        return [
            WaitingEvent(
                position=r[0],
                tenant_id=r[1],
                source=r[2],
                event_id=r[3],
                event_type=r[4],
                subject=r[5],
                event_time=q.aware(r[6]),
                recorded_at=q.aware(r[7]),
                deadline=q.aware(r[8]),
                content_hash=r[9],
                app_id=r[10],
                resource_id=r[11],
                late=bool(r[12]),
                payload=r[13],
            )
            for r in rows
        ]

    def failed_summary(self, tenant_id: str, *, latest: int = 10) -> FailedSummary:
        cur = self._cursor()
        cur.execute("BEGIN TRANSACTION")  # the count and the rows of one snapshot
        try:
            row = cur.execute(
                "SELECT count(*) FROM failed_events WHERE tenant_id = ?", [tenant_id]
            ).fetchone()
            rows = cur.execute(
                "SELECT position, tenant_id, event_id, source, event_type, recorded_at, "
                "failed_at, reason FROM failed_events WHERE tenant_id = ? "
                "ORDER BY failed_at DESC, position DESC LIMIT ?",
                [tenant_id, latest],
            ).fetchall()
        finally:
            cur.execute("COMMIT")
        return FailedSummary(
            count=int(row[0]) if row else 0,
            latest=[
                FailedEvent(
                    position=r[0],
                    tenant_id=r[1],
                    event_id=r[2],
                    source=r[3],
                    event_type=r[4],
                    recorded_at=q.aware(r[5]),
                    failed_at=q.aware(r[6]),
                    reason=r[7],
                )
                for r in rows
            ],
        )

    # --- retention -------------------------------------------------------------------------

    def purge_raw(self, *, before: datetime) -> PurgeResult:
        cutoff = naive_utc(before)

        def work(cur: duckdb.DuckDBPyConnection) -> PurgeResult:
            for statement in fold_raw_sql():
                cur.execute(statement, [cutoff])
            usage = cur.execute("DELETE FROM usage_raw WHERE billable_at < ?", [cutoff]).fetchone()
            events = cur.execute(
                "DELETE FROM usage_events WHERE billable_at < ?", [cutoff]
            ).fetchone()
            cur.execute(
                "INSERT INTO store_meta VALUES (?, ?) ON CONFLICT DO UPDATE SET value = "
                "CASE WHEN excluded.value > value THEN excluded.value ELSE value END",
                [PURGED_BEFORE_KEY, cutoff.isoformat()],
            )
            return PurgeResult(
                before=before,
                usage_rows=int(usage[0]) if usage else 0,
                event_rows=int(events[0]) if events else 0,
            )

        result: PurgeResult = self._transaction(work)
        return result

    def purged_before(self) -> datetime | None:
        row = (
            self._cursor()
            .execute("SELECT value FROM store_meta WHERE key = ?", [PURGED_BEFORE_KEY])
            .fetchone()
        )
        return None if row is None else q.aware(datetime.fromisoformat(row[0]))

    def compact(self) -> None:
        """Fold rollup increments into one row per key; totals are unchanged."""

        def work(cur: duckdb.DuckDBPyConnection) -> None:
            for grain in GRAINS:
                for statement in compact_rollup_sql(grain):
                    cur.execute(statement)

        self._transaction(work)

    # --- queries ---------------------------------------------------------------------------

    def quantities(
        self, tenant_id: str, period: Period, *, as_of: datetime | None = None
    ) -> list[UsageTotal]:
        cur = self._cursor()
        cur.execute("BEGIN TRANSACTION")  # one snapshot for the parts of the answer
        try:
            sql, params = q.summable_sql(tenant_id, period, as_of=as_of)
            summable = cur.execute(sql, params).fetchall()
            raw_stats: dict[q.Key, tuple[Any, Any]] | None = None
            distinct: dict[q.Key, int] = {}
            known = True
            if as_of is None:
                sql, params = q.distinct_sql(tenant_id, period)
                distinct = {_key(r): int(r[5]) for r in cur.execute(sql, params).fetchall()}
            else:
                known = self._raw_kept(period, as_of)
                if known:
                    sql, params = q.raw_as_of_sql(tenant_id, period, as_of)
                    rows = cur.execute(sql, params).fetchall()
                    raw_stats = {_key(r): (r[5], r[6]) for r in rows}
                    distinct = {_key(r): int(r[7]) for r in rows}
        finally:
            cur.execute("COMMIT")
        return q.build_totals(summable, distinct, raw_stats, non_summable_known=known)

    def _raw_kept(self, period: Period, as_of: datetime) -> bool:
        """Whether the raw rows of `period` are all still kept (max, latest and unique counts
        can be answered as of `as_of`); refuses an `as_of` before the retention horizon."""
        horizon = self.purged_before()
        if horizon is not None and as_of < horizon:
            # The horizon is where retention stands, whether or not a purge found rows to
            # drop (a new tenant has none): say so, not that one was purged.
            raise InvalidInputError(
                f"usage as of {_second(as_of)} cannot be reproduced: raw usage is kept "
                "raw_retention_days after it became billable, so as_of must be at or "
                f"after the retention boundary, {_second(horizon)}",
                field="as_of",
            )
        return horizon is None or horizon <= period.start

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
        cur = self._cursor()
        cur.execute("BEGIN TRANSACTION")  # one snapshot for the horizon and the answer
        try:
            known = True if as_of is None else self._raw_kept(period, as_of)
            sql, params = q.usage_groups_sql(
                tenant_id,
                period,
                aggregations=aggregations,
                by=by,
                filters=filters,
                top=top,
                as_of=as_of,
                non_summable_known=known,
            )
            rows = cur.execute(sql, params).fetchall()
        finally:
            cur.execute("COMMIT")
        return [q.to_usage_group(row) for row in rows]

    def daily_totals(self, tenant_id: str, period: Period) -> list[DailyTotal]:
        first = ceil_to(period.start, Grain.DAY)
        last = floor_to(period.end, Grain.DAY)
        result: list[DailyTotal] = []
        if first >= last:
            return [
                DailyTotal(floor_to(period.start, Grain.DAY), t)
                for t in self.quantities(tenant_id, period)
            ]
        if period.start < first:
            edge = Period(period.start, first)
            result += [
                DailyTotal(floor_to(edge.start, Grain.DAY), t)
                for t in self.quantities(tenant_id, edge)
            ]
        sql, params = q.whole_days_sql(tenant_id, first, last)
        result += [q.to_daily(row) for row in self._cursor().execute(sql, params).fetchall()]
        if last < period.end:
            edge = Period(last, period.end)
            result += [DailyTotal(last, t) for t in self.quantities(tenant_id, edge)]
        result.sort(
            key=lambda d: (d.day, d.total.cost_center, d.total.team, d.total.app, d.total.meter)
        )
        return result

    def platform_costs(
        self, tenant_id: str, period: Period, *, as_of: datetime | None = None
    ) -> list[PlatformCostTotal]:
        sql, params = q.platform_costs_sql(tenant_id, period, as_of=as_of)
        return q.to_cost_totals(self._cursor().execute(sql, params).fetchall())

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
    ) -> list[RawUsage]:
        sql = (
            f"SELECT {q.TOP_EVENTS_COLUMNS} FROM usage_rows WHERE tenant_id = ? "
            "AND event_time >= ? AND event_time < ? AND app = ? AND meter = ?"
        )
        params: list[Any] = [
            tenant_id,
            naive_utc(period.start),
            naive_utc(period.end),
            app,
            meter,
        ]
        if cost_center is not None:
            sql += " AND cost_center = ?"
            params.append(cost_center)
        if team is not None:
            sql += " AND team = ?"
            params.append(team)
        sql += " ORDER BY quantity DESC, position LIMIT ?"
        params.append(limit)
        return [q.to_raw_usage(r) for r in self._cursor().execute(sql, params).fetchall()]

    def lifecycle_markers(
        self, tenant_id: str, period: Period, *, app: str
    ) -> list[LifecycleMarker]:
        rows = (
            self._cursor()
            .execute(
                "SELECT position, event_id, event_time, resource_id, action, replicas, app, "
                "environment FROM lifecycle_markers WHERE tenant_id = ? AND app = ? "
                "AND event_time >= ? AND event_time < ? ORDER BY event_time, position",
                [tenant_id, app, naive_utc(period.start), naive_utc(period.end)],
            )
            .fetchall()
        )
        return [q.to_marker(r) for r in rows]

    def hourly_costs(
        self, tenant_id: str, hours: Period, *, rates: Sequence[MeterRate]
    ) -> list[HourlyCost]:
        whole = Period(floor_to(hours.start, Grain.HOUR), ceil_to(hours.end, Grain.HOUR))
        if not rates:
            return []
        with self._rates_registered(rates) as (cur, name):
            sql, params = q.hourly_costs_sql(tenant_id, whole, name)
            rows = cur.execute(sql, params).fetchall()
        return [q.to_hourly_cost(r) for r in rows]

    def hourly_cost_series(
        self,
        tenant_id: str,
        hours: Period,
        *,
        rates: Sequence[MeterRate],
        detailed: Collection[datetime] = (),
    ) -> HourlyCostSeries:
        whole = Period(floor_to(hours.start, Grain.HOUR), ceil_to(hours.end, Grain.HOUR))
        if not rates:
            return HourlyCostSeries([], HOURLY_COST_SCHEMA.empty_table())
        wanted = sorted(
            {h for h in (floor_to(d, Grain.HOUR) for d in detailed) if whole.start <= h < whole.end}
        )
        details = HOURLY_COST_SCHEMA.empty_table()
        with self._rates_registered(rates) as (cur, name):
            # One snapshot: the details of a scored hour are the rows its series were read from.
            cur.execute("BEGIN TRANSACTION")
            try:
                sql, params = q.hourly_series_sql(tenant_id, whole, name)
                series = cur.execute(sql, params).fetchall()
                if wanted:
                    span = Period(wanted[0], wanted[-1] + HOUR)
                    sql, params = q.hourly_costs_sql(tenant_id, span, name, only=wanted)
                    found = cur.sql(sql, params=params).to_arrow_table()
                    details = q.cost_details(found)
            finally:
                cur.execute("COMMIT")
        return HourlyCostSeries([q.to_hourly_series(r) for r in series], details)

    @contextlib.contextmanager
    def _rates_registered(
        self, rates: Sequence[MeterRate]
    ) -> Iterator[tuple[duckdb.DuckDBPyConnection, str]]:
        """This thread's cursor with `rates` registered as a table, and the table's name."""
        table = pa.table(
            {
                "app": pa.array([r.app for r in rates], type=pa.string()),
                "meter": pa.array([r.meter for r in rates], type=pa.string()),
                "rate": pa.array([q.rate_value(r) for r in rates], type=pa.decimal128(38, 18)),
                "per_event": pa.array([r.per_event for r in rates], type=pa.bool_()),
            }
        )
        name = f"rates_{uuid.uuid4().hex}"
        cur = self._cursor()
        cur.register(name, table)
        try:
            yield cur, name
        finally:
            cur.unregister(name)

    def touched_hours(self, *, processed_since: datetime) -> dict[str, dict[datetime, datetime]]:
        rows = self._cursor().execute(q.TOUCHED_HOURS_SQL, [naive_utc(processed_since)])
        touched: dict[str, dict[datetime, datetime]] = {}
        for tenant_id, hour, latest in rows.fetchall():
            touched.setdefault(tenant_id, {})[q.aware(hour)] = q.aware(latest)
        return touched

    def arrived_hours(self, *, since: datetime) -> dict[str, dict[datetime, datetime]]:
        moment = naive_utc(since)
        rows = self._cursor().execute(q.ARRIVED_HOURS_SQL, [moment, moment])
        arrived: dict[str, dict[datetime, datetime]] = {}
        for tenant_id, hour, latest in rows.fetchall():
            hours = arrived.setdefault(tenant_id, {})
            when = q.aware(latest)
            hours[q.aware(hour)] = max(when, hours.get(q.aware(hour), when))
        return arrived

    def pipeline_counts(self, tenant_id: str, hours: Period) -> list[HourlyPipelineCounts]:
        cur = self._cursor()
        bounds = [tenant_id, naive_utc(hours.start), naive_utc(hours.end)]
        cur.execute("BEGIN TRANSACTION")
        try:
            counted = cur.execute(
                "SELECT hour, sum(attributed), sum(unattributed), sum(rated) FROM pipeline_hourly "
                "WHERE tenant_id = ? AND hour >= ? AND hour < ? GROUP BY hour",
                bounds,
            ).fetchall()
            waiting, failed = (
                cur.execute(
                    "SELECT date_trunc('hour', recorded_at)::TIMESTAMP AS hour, count(*) "
                    f"FROM {table} WHERE tenant_id = ? AND recorded_at >= ? "
                    "AND recorded_at < ? GROUP BY ALL",
                    bounds,
                ).fetchall()
                for table in ("waiting_events", "failed_events")
            )
        finally:
            cur.execute("COMMIT")
        return q.to_hourly(counted, waiting, failed)

    def latency(self, tenant_id: str | None, *, since: datetime) -> LatencySummary:
        where = "processed_at >= ?"
        params: list[Any] = [naive_utc(since)]
        if tenant_id is not None:
            where += " AND tenant_id = ?"
            params.append(tenant_id)
        cur = self._cursor()
        row = cur.execute(
            "WITH l AS (SELECT date_diff('microsecond', recorded_at, processed_at) / 1000.0 AS ms "
            f"FROM usage_events WHERE {where} AND NOT waited) "
            "SELECT count(*), quantile_cont(ms, 0.5), quantile_cont(ms, 0.99), max(ms) FROM l",
            params,
        ).fetchone()
        waited = cur.execute(
            f"SELECT count(*) FROM usage_events WHERE {where} AND waited", params
        ).fetchone()
        return q.to_latency(row, int(waited[0]) if waited else 0)

    def table_counts(self) -> dict[str, int]:
        """Row counts of every table (status and tests)."""
        cur = self._cursor()
        counts: dict[str, int] = {}
        for table in ("usage_raw", *TENANT_TABLES):
            row = cur.execute(f"SELECT count(*) FROM {table}").fetchone()
            counts[table] = int(row[0]) if row else 0
        return counts


def _second(moment: datetime) -> str:
    """A moment in a message, to the second: `2026-09-04 16:32:22Z`."""
    return ensure_utc(moment).strftime("%Y-%m-%d %H:%M:%SZ")


def _key(row: Sequence[Any]) -> q.Key:
    return (row[0], row[1], row[2], row[3], bool(row[4]))


def _record_replay_request(cur: duckdb.DuckDBPyConnection, request_id: int) -> None:
    cur.execute(
        "INSERT INTO store_meta VALUES (?, ?) ON CONFLICT DO UPDATE SET value = excluded.value",
        [REPLAY_REQUEST_KEY, str(request_id)],
    )
