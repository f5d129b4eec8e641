"""Tables of the DuckDB usage store. Times are naive UTC `TIMESTAMP`s; quantities and amounts
are exact `DECIMAL(38, 12)`.

Day rollups take one row of increments per key per batch (append-only: no index to maintain
on the write path) and are summed when read; `compact()` folds them. Minute and hour rollups
are written when raw rows are purged: until then the raw rows are the minute- and hour-level
data (reads combine both), so sparse streams are not stored twice."""

from __future__ import annotations

SCHEMA_VERSION = "4"

ROLLUP_COLUMNS = """
    tenant_id VARCHAR NOT NULL,
    bucket TIMESTAMP NOT NULL,
    cost_center VARCHAR NOT NULL,
    team VARCHAR NOT NULL,
    app VARCHAR NOT NULL,
    meter VARCHAR NOT NULL,
    unattributed BOOLEAN NOT NULL,
    event_count BIGINT NOT NULL,
    quantity_sum DECIMAL(38, 12) NOT NULL,
    quantity_max DECIMAL(38, 12) NOT NULL,
    latest_key HUGEINT NOT NULL,
    latest_quantity DECIMAL(38, 12) NOT NULL
"""

DISTINCT_COLUMNS = """
    tenant_id VARCHAR NOT NULL,
    bucket TIMESTAMP NOT NULL,
    cost_center VARCHAR NOT NULL,
    team VARCHAR NOT NULL,
    app VARCHAR NOT NULL,
    meter VARCHAR NOT NULL,
    unattributed BOOLEAN NOT NULL,
    value VARCHAR NOT NULL
"""

# event_id is unique per row: DuckDB's dictionary/FSST analysis of it was half the raw
# insert's CPU for a 2.5x smaller column, so it is stored plainly.
RAW_TABLE = """CREATE TABLE IF NOT EXISTS {name} (
    position BIGINT NOT NULL,
    owner_id INTEGER NOT NULL,
    event_id VARCHAR USING COMPRESSION uncompressed NOT NULL,
    event_time TIMESTAMP NOT NULL,
    recorded_at TIMESTAMP NOT NULL,
    billable_at TIMESTAMP NOT NULL,
    processed_at TIMESTAMP NOT NULL,
    quantity DECIMAL(38, 12) NOT NULL,
    distinct_value VARCHAR,
    late BOOLEAN NOT NULL,
    resource_id VARCHAR
)"""

# Who a raw row belongs to and what it measured, stored once per distinct combination
# (star schema): raw rows carry an owner_id instead of eleven mostly repeated strings
# (nine halved their cost; moving source and meter here too took 15% off the rest).
OWNERS_TABLE = """CREATE TABLE IF NOT EXISTS usage_owners (
    owner_id INTEGER PRIMARY KEY,
    tenant_id VARCHAR NOT NULL,
    cost_center VARCHAR NOT NULL,
    team VARCHAR NOT NULL,
    app VARCHAR NOT NULL,
    event_type VARCHAR NOT NULL,
    method VARCHAR NOT NULL,
    unattributed BOOLEAN NOT NULL,
    environment VARCHAR NOT NULL,
    lifecycle VARCHAR NOT NULL,
    source VARCHAR NOT NULL,
    meter VARCHAR NOT NULL
)"""

GRAINS = ("minute", "hour", "day")
# Orders usage rows by (event time, log position) in one number: "latest" is the value with
# the largest key. arg_max over a single HUGEINT is ~2x faster than over a (time, position)
# struct. Positions stay below 2^40.
LATEST_KEY = "(epoch_us(event_time)::HUGEINT * 1099511627776 + position)"

DDL = [
    "CREATE TABLE IF NOT EXISTS store_meta (key VARCHAR PRIMARY KEY, value VARCHAR NOT NULL)",
    """CREATE TABLE IF NOT EXISTS pipeline_streams (
        name VARCHAR PRIMARY KEY,
        consumer VARCHAR NOT NULL,
        tenant_id VARCHAR,
        from_position BIGINT NOT NULL,
        upto BIGINT,
        position BIGINT NOT NULL,
        created_at TIMESTAMP NOT NULL
    )""",
    # One row per rated event, for the event-to-billable latency (kept as long as raw rows).
    """CREATE TABLE IF NOT EXISTS usage_events (
        position BIGINT NOT NULL,
        tenant_id VARCHAR NOT NULL,
        recorded_at TIMESTAMP NOT NULL,
        billable_at TIMESTAMP NOT NULL,
        processed_at TIMESTAMP NOT NULL,
        waited BOOLEAN NOT NULL
    )""",
    OWNERS_TABLE,
    RAW_TABLE.format(name="usage_raw"),
    # Raw rows with their owner's columns: what every read of raw usage goes through.
    """CREATE OR REPLACE VIEW usage_rows AS
        SELECT r.*, o.tenant_id, o.cost_center, o.team, o.app, o.event_type, o.method,
               o.unattributed, o.environment, o.lifecycle, o.source, o.meter
        FROM usage_raw r JOIN usage_owners o USING (owner_id)""",
    *[f"CREATE TABLE IF NOT EXISTS usage_{g} ({ROLLUP_COLUMNS})" for g in GRAINS],
    *[f"CREATE TABLE IF NOT EXISTS distinct_{g} ({DISTINCT_COLUMNS})" for g in GRAINS],
    """CREATE TABLE IF NOT EXISTS lifecycle_markers (
        position BIGINT NOT NULL,
        tenant_id VARCHAR NOT NULL,
        event_id VARCHAR NOT NULL,
        event_time TIMESTAMP NOT NULL,
        billable_at TIMESTAMP NOT NULL,
        resource_id VARCHAR NOT NULL,
        action VARCHAR NOT NULL,
        replicas BIGINT,
        cost_center VARCHAR NOT NULL,
        team VARCHAR NOT NULL,
        app VARCHAR NOT NULL,
        environment VARCHAR NOT NULL,
        unattributed BOOLEAN NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS platform_costs (
        position BIGINT NOT NULL,
        tenant_id VARCHAR NOT NULL,
        event_id VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        event_time TIMESTAMP NOT NULL,
        billable_at TIMESTAMP NOT NULL,
        cost_type VARCHAR NOT NULL,
        amount DECIMAL(38, 12) NOT NULL,
        currency VARCHAR NOT NULL,
        period_start TIMESTAMP,
        period_end TIMESTAMP
    )""",
    """CREATE TABLE IF NOT EXISTS waiting_events (
        position BIGINT PRIMARY KEY,
        tenant_id VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        event_id VARCHAR NOT NULL,
        event_type VARCHAR NOT NULL,
        subject VARCHAR,
        event_time TIMESTAMP NOT NULL,
        recorded_at TIMESTAMP NOT NULL,
        deadline TIMESTAMP NOT NULL,
        content_hash VARCHAR NOT NULL,
        app_id VARCHAR,
        resource_id VARCHAR,
        late BOOLEAN NOT NULL,
        payload VARCHAR NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS pipeline_hourly (
        tenant_id VARCHAR NOT NULL,
        hour TIMESTAMP NOT NULL,
        attributed BIGINT NOT NULL,
        unattributed BIGINT NOT NULL,
        rated BIGINT NOT NULL
    )""",
    # Events the pipeline set aside because rating them failed (store.FAILED_SCHEMA). New in
    # a store of version 4 as it is opened: nothing else changed.
    """CREATE TABLE IF NOT EXISTS failed_events (
        position BIGINT PRIMARY KEY,
        tenant_id VARCHAR NOT NULL,
        event_id VARCHAR NOT NULL,
        source VARCHAR NOT NULL,
        event_type VARCHAR NOT NULL,
        recorded_at TIMESTAMP NOT NULL,
        failed_at TIMESTAMP NOT NULL,
        reason VARCHAR NOT NULL
    )""",
]

# Tables holding a tenant's usage.
TENANT_TABLES = (
    "usage_events",
    *[f"usage_{g}" for g in GRAINS],
    *[f"distinct_{g}" for g in GRAINS],
    "lifecycle_markers",
    "platform_costs",
    "waiting_events",
    "pipeline_hourly",
    "failed_events",
)
# What a replay of a tenant clears before rebuilding: all of it but the latency ledger
# (`usage_events`), which keeps each event's first rating; a replay adds no rows to it.
REPLAYED_TABLES = tuple(t for t in TENANT_TABLES if t != "usage_events")

ROLLUP_KEYS = "tenant_id, bucket, cost_center, team, app, meter, unattributed"
OWNER_COLUMNS = (
    "tenant_id, cost_center, team, app, event_type, method, unattributed, environment, "
    "lifecycle, source, meter"
)
# A rollup key without its bucket: what a batch's rows are numbered by (duckdb_owners.py).
GROUP_COLUMNS = "tenant_id, cost_center, team, app, meter, unattributed"


def raw_insert_sql(source: str) -> str:
    """Insert a batch's raw rows; `source` carries each row's `owner_id` (duckdb_owners.py).
    Takes `processed_at` as its one parameter."""
    return f"""INSERT INTO usage_raw
        SELECT position, owner_id, event_id, event_time, recorded_at, billable_at, ?,
               quantity, distinct_value, late, resource_id
        FROM {source}"""


def delete_raw_sql(where: str) -> str:
    """Delete raw rows of the tenants matching `where` (over usage_owners)."""
    return (
        f"DELETE FROM usage_raw WHERE owner_id IN (SELECT owner_id FROM usage_owners WHERE {where})"
    )


MERGED_STATS = """
    sum(event_count)::BIGINT AS event_count, sum(quantity_sum) AS quantity_sum,
    max(quantity_max) AS quantity_max, max(latest_key) AS latest_key,
    arg_max(latest_quantity, latest_key) AS latest_quantity
"""


def _rollup_select(grain: str, source: str, where: str = "") -> str:
    return f"""
        SELECT tenant_id, date_trunc('{grain}', event_time)::TIMESTAMP AS bucket,
               cost_center, team, app, meter, unattributed,
               count(*) AS event_count, sum(quantity) AS quantity_sum,
               max(quantity) AS quantity_max, max({LATEST_KEY}) AS latest_key,
               arg_max(quantity, {LATEST_KEY}) AS latest_quantity
        FROM {source} {where} GROUP BY ALL
    """


def _distinct_select(grain: str, source: str, where: str = "") -> str:
    return f"""
        SELECT DISTINCT tenant_id, date_trunc('{grain}', event_time)::TIMESTAMP,
               cost_center, team, app, meter, unattributed, distinct_value
        FROM {source}
        WHERE distinct_value IS NOT NULL {where}
    """


def day_increment_sql(source: str, groups: str, *, with_distinct: bool) -> list[str]:
    """A batch's day rollup increments: one row per key and day (and its distinct values).
    `source` rows carry a `group_id` numbering their key (without the day) within the
    batch; `groups` holds each group's key columns (duckdb_owners.py)."""
    day = "date_trunc('day', event_time)::TIMESTAMP AS bucket"
    key = "g.tenant_id, s.bucket, g.cost_center, g.team, g.app, g.meter, g.unattributed"
    statements = [
        f"""INSERT INTO usage_day
            SELECT {key}, s.event_count, s.quantity_sum, s.quantity_max, s.latest_key,
                   s.latest_quantity
            FROM (
                SELECT group_id, {day}, count(*) AS event_count, sum(quantity) AS quantity_sum,
                       max(quantity) AS quantity_max, max({LATEST_KEY}) AS latest_key,
                       arg_max(quantity, {LATEST_KEY}) AS latest_quantity
                FROM {source} GROUP BY ALL
            ) s JOIN {groups} g USING (group_id)"""
    ]
    if with_distinct:
        statements.append(
            f"""INSERT INTO distinct_day
                SELECT {key}, s.distinct_value
                FROM (
                    SELECT DISTINCT group_id, {day}, distinct_value
                    FROM {source} WHERE distinct_value IS NOT NULL
                ) s JOIN {groups} g USING (group_id)"""
        )
    return statements


def fold_raw_sql() -> list[str]:
    """Move raw rows that became billable before the parameter into the minute and hour
    rollups (and value sets), then delete them: while kept, raw rows are the minute- and
    hour-level data; once purged, these rollups are. Takes the cutoff once per `?`."""
    cutoff, also = "WHERE billable_at < ?", "AND billable_at < ?"
    return [
        f"INSERT INTO usage_minute {_rollup_select('minute', 'usage_rows', cutoff)}",
        f"INSERT INTO usage_hour {_rollup_select('hour', 'usage_rows', cutoff)}",
        f"INSERT INTO distinct_minute {_distinct_select('minute', 'usage_rows', also)}",
        f"INSERT INTO distinct_hour {_distinct_select('hour', 'usage_rows', also)}",
    ]


def compact_rollup_sql(grain: str) -> list[str]:
    """Fold increments into one row per key (same totals; fewer rows to read)."""
    return [
        f"""CREATE OR REPLACE TEMP TABLE compacted AS
            SELECT {ROLLUP_KEYS}, {MERGED_STATS} FROM usage_{grain} GROUP BY ALL""",
        f"DELETE FROM usage_{grain}",
        f"INSERT INTO usage_{grain} SELECT * FROM compacted",
        "DROP TABLE compacted",
        f"""CREATE OR REPLACE TEMP TABLE compacted AS
            SELECT DISTINCT * FROM distinct_{grain}""",
        f"DELETE FROM distinct_{grain}",
        f"INSERT INTO distinct_{grain} SELECT * FROM compacted",
        "DROP TABLE compacted",
    ]


# Schema versions an existing store is brought from, in order: version -> statements that
# make it the next version (run in one transaction before the DDL above, which then finds
# every table in place). Version 3 kept source and meter on each raw row.
_V3_OWNERS = (
    "tenant_id, cost_center, team, app, event_type, method, unattributed, environment, lifecycle"
)
MIGRATIONS: dict[str, list[str]] = {
    "3": [
        """CREATE TEMP TABLE owner_map AS
            SELECT owner_id AS old_id, source, meter,
                   (row_number() OVER (ORDER BY owner_id, source, meter))::INTEGER AS new_id
            FROM (SELECT DISTINCT owner_id, source, meter FROM usage_raw)""",
        "DROP VIEW IF EXISTS usage_rows",
        "ALTER TABLE usage_owners RENAME TO usage_owners_v3",
        OWNERS_TABLE,
        f"""INSERT INTO usage_owners
            SELECT m.new_id, {", ".join(f"o.{c}" for c in _V3_OWNERS.split(", "))},
                   m.source, m.meter
            FROM owner_map m JOIN usage_owners_v3 o ON o.owner_id = m.old_id""",
        RAW_TABLE.format(name="usage_raw_v4"),
        """INSERT INTO usage_raw_v4
            SELECT r.position, m.new_id, r.event_id, r.event_time, r.recorded_at,
                   r.billable_at, r.processed_at, r.quantity, r.distinct_value, r.late,
                   r.resource_id
            FROM usage_raw r JOIN owner_map m
              ON m.old_id = r.owner_id AND m.source = r.source AND m.meter = r.meter""",
        "DROP TABLE usage_raw",
        "DROP TABLE usage_owners_v3",
        "ALTER TABLE usage_raw_v4 RENAME TO usage_raw",
        "DROP TABLE owner_map",
        "UPDATE store_meta SET value = '4' WHERE key = 'schema_version'",
    ],
}
