from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pyarrow as pa

from quartermaster.usage.store import TIME_TYPE, TableBuilder

SCHEMA = pa.schema([pa.field("at", TIME_TYPE), pa.field("n", pa.int64())])


def test_times_in_any_zone_are_stored_as_naive_utc() -> None:
    builder = TableBuilder(SCHEMA)
    paris = timezone(timedelta(hours=1))
    builder.append(datetime(2026, 11, 1, 13, 30, 0, 5, tzinfo=paris), 1)
    builder.append(datetime(2026, 11, 1, 12, 30, tzinfo=UTC), 2)
    builder.append(None, 3)
    table = builder.to_table()
    assert table.schema == SCHEMA
    assert table.column("at").to_pylist() == [
        datetime(2026, 11, 1, 12, 30, 0, 5),
        datetime(2026, 11, 1, 12, 30),
        None,
    ]
    assert TableBuilder(SCHEMA).to_table().num_rows == 0
