"""Owner ids of raw rows: the Arrow grouping is exact, the table never holds an owner twice,
and a failed transaction leaves no owner id behind that the table does not have."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pyarrow as pa
import pytest

from quartermaster.usage import duckdb_owners
from quartermaster.usage.duckdb_owners import OWNER_FIELDS, distinct_rows
from quartermaster.usage.duckdb_schema import _distinct_select, _rollup_select
from quartermaster.usage.duckdb_store import DuckDBUsageStore
from quartermaster.usage.store import MARKER_SCHEMA, USAGE_SCHEMA, RatedBatch

NOW = "2026-11-02 10:00:00"


def test_distinct_rows_groups_exactly_nulls_and_booleans_included() -> None:
    rows = [
        ("a", "x", True),
        ("a", "x", False),
        ("a", None, True),
        ("a", "x", True),
        ("b", "x", True),
        ("a", None, True),
        ("ax", "", True),  # no separator games: "a"+"x" is not "ax"+""
    ]
    table = pa.table(
        {
            "s": [r[0] for r in rows],
            "t": pa.array([r[1] for r in rows], pa.string()),
            "u": [r[2] for r in rows],
        }
    )
    codes, distinct = distinct_rows(table, ("s", "t", "u"))
    firsts: dict[tuple[object, ...], int] = {}
    for row in rows:
        firsts.setdefault(row, len(firsts))
    assert codes.to_pylist() == [firsts[r] for r in rows]
    assert list(zip(*distinct.to_pydict().values(), strict=True)) == list(firsts)


def _usage(rows: list[tuple[int, str, str]]) -> pa.Table:
    """Usage rows (position, app, environment) of one tenant and team."""
    columns: dict[str, list[object]] = {name: [] for name in USAGE_SCHEMA.names}
    for position, app, environment in rows:
        values = {
            "position": position,
            "tenant_id": "t1",
            "event_id": f"e{position}",
            "source": "src",
            "event_type": "qm.invocation.usage",
            "event_time": NOW,
            "recorded_at": NOW,
            "billable_at": NOW,
            "cost_center": "cc",
            "team": "team",
            "app": app,
            "meter": "tokens",
            "quantity": 1,
            "distinct_value": None,
            "method": "app_id",
            "unattributed": app == "",
            "late": False,
            "resource_id": None,
            "environment": environment,
            "lifecycle": "persistent",
        }
        for name in USAGE_SCHEMA.names:
            columns[name].append(values[name])
    table = pa.table({k: pa.array(v) for k, v in columns.items() if k not in _TIMES | {"quantity"}})
    for name in sorted(_TIMES):
        table = table.append_column(name, pa.array(columns[name]).cast(pa.timestamp("us")))
    table = table.append_column("quantity", pa.array(columns["quantity"], pa.int64()))
    return table.select(USAGE_SCHEMA.names).cast(USAGE_SCHEMA)


_TIMES = {"event_time", "recorded_at", "billable_at"}


def _owners_of(store: DuckDBUsageStore) -> dict[int, tuple[str, str]]:
    rows = (
        store._cursor()
        .execute("SELECT position, app, environment FROM usage_rows ORDER BY position")
        .fetchall()
    )
    return {int(p): (a, e) for p, a, e in rows}


def _owner_count(store: DuckDBUsageStore) -> int:
    cols = ", ".join(OWNER_FIELDS)
    total, distinct = store._cursor().execute(
        f"SELECT count(*), count(DISTINCT ({cols})) FROM usage_owners"
    ).fetchone() or (0, 0)
    assert total == distinct, "an owner is stored twice"
    return int(total)


def test_owners_are_stored_once_across_batches_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "usage.duckdb"
    store = DuckDBUsageStore(path)
    store.write(RatedBatch(None, None, usage=_usage([(1, "a", "prod"), (2, "b", "prod")])))
    store.write(RatedBatch(None, None, usage=_usage([(3, "b", "prod"), (4, "a", "dev")])))
    assert _owner_count(store) == 3
    store.close()
    reopened = DuckDBUsageStore(path)
    reopened.write(RatedBatch(None, None, usage=_usage([(5, "a", "dev"), (6, "", "prod")])))
    assert _owner_count(reopened) == 4
    assert _owners_of(reopened) == {
        1: ("a", "prod"),
        2: ("b", "prod"),
        3: ("b", "prod"),
        4: ("a", "dev"),
        5: ("a", "dev"),
        6: ("", "prod"),
    }
    reopened.close()


def test_a_failed_write_leaves_no_owner_id_behind(tmp_path: Path) -> None:
    store = DuckDBUsageStore(tmp_path / "usage.duckdb")
    broken_markers = pa.table({"position": pa.array([1], pa.int64())})  # not MARKER_SCHEMA
    assert broken_markers.schema != MARKER_SCHEMA
    with pytest.raises(Exception, match=r"lifecycle_markers|column"):
        store.write(
            RatedBatch(None, None, usage=_usage([(1, "new", "prod")]), markers=broken_markers)
        )
    assert _owner_count(store) == 0
    store.write(RatedBatch(None, None, usage=_usage([(2, "new", "prod")])))
    assert _owner_count(store) == 1
    assert _owners_of(store) == {2: ("new", "prod")}
    store.close()


def _reference_codes(rows: list[tuple[object, ...]]) -> tuple[list[int], list[tuple[object, ...]]]:
    firsts: dict[tuple[object, ...], int] = {}
    for row in rows:
        firsts.setdefault(row, len(firsts))
    return [firsts[r] for r in rows], list(firsts)


@pytest.mark.parametrize("code_limit", [1 << 62, 5])
def test_distinct_rows_with_constant_columns_and_renumbered_codes(
    monkeypatch: pytest.MonkeyPatch, code_limit: int
) -> None:
    """Constant columns (one value, or all null) skip the encoding; a tiny code limit forces
    the dense renumbering between columns. Either way the grouping is exact."""
    monkeypatch.setattr(duckdb_owners, "_CODE_LIMIT", code_limit)
    rows = [
        ("t", "a", None, 1, True, "x"),
        ("t", "b", None, 2, True, "y"),
        ("t", "a", None, 1, True, "y"),
        ("t", "c", None, 3, True, "x"),
        ("t", "a", None, 1, True, "x"),
        ("t", "b", None, 2, True, "y"),
        ("t", "", None, 1, True, "z"),
    ]
    names = ("const", "s", "nulls", "n", "flag", "u")
    table = pa.table(
        {
            "const": [r[0] for r in rows],
            "s": [r[1] for r in rows],
            "nulls": pa.array([r[2] for r in rows], pa.string()),
            "n": pa.array([r[3] for r in rows], pa.int32()),
            "flag": [r[4] for r in rows],
            "u": [r[5] for r in rows],
        }
    )
    codes, distinct = distinct_rows(table, names)
    expected_codes, expected_rows = _reference_codes(rows)
    assert codes.to_pylist() == expected_codes
    assert list(zip(*distinct.to_pydict().values(), strict=True)) == expected_rows
    assert distinct.schema == table.schema

    all_constant = table.select(["const", "nulls", "flag"])
    codes, distinct = distinct_rows(all_constant, ("const", "nulls", "flag"))
    assert codes.to_pylist() == [0] * len(rows)
    assert distinct.to_pylist() == [{"const": "t", "nulls": None, "flag": True}]


def test_day_increments_equal_a_group_by_of_the_raw_rows(tmp_path: Path) -> None:
    """The day increments group rows by a per-batch number of their rollup key: owners that
    differ only outside the key (environment) share one increment; meters and days do not."""
    usage = _usage([(1, "a", "prod"), (2, "a", "dev"), (3, "b", "prod"), (4, "a", "prod")])
    times = pa.array(
        ["2026-11-02 10:00:00", "2026-11-02 11:00:00", "2026-11-02 12:00:00", "2026-11-03 01:00"]
    ).cast(pa.timestamp("us"))
    usage = usage.set_column(usage.schema.get_field_index("event_time"), "event_time", times)
    meters = pa.array(["tokens", "tokens", "tokens", "requests"])
    usage = usage.set_column(usage.schema.get_field_index("meter"), "meter", meters)
    values = pa.array(["u1", "u2", None, "u1"], pa.string())
    usage = usage.set_column(
        usage.schema.get_field_index("distinct_value"), "distinct_value", values
    )
    quantities = pa.array([Decimal("1.5"), Decimal("2"), Decimal("3"), Decimal("4")])
    usage = usage.set_column(
        usage.schema.get_field_index("quantity"),
        "quantity",
        quantities.cast(USAGE_SCHEMA.field("quantity").type),
    )
    store = DuckDBUsageStore(tmp_path / "usage.duckdb")
    store.write(RatedBatch(None, None, usage=usage))
    cur = store._cursor()
    day = "SELECT * FROM usage_day ORDER BY ALL"
    reference = f"SELECT * FROM ({_rollup_select('day', 'usage_rows')}) ORDER BY ALL"
    assert cur.execute(day).fetchall() == cur.execute(reference).fetchall()
    assert len(cur.execute(day).fetchall()) == 3  # (a, tokens, 11-02), (b, ...), (a, requests)
    distinct = "SELECT * FROM distinct_day ORDER BY ALL"
    reference = f"SELECT * FROM ({_distinct_select('day', 'usage_rows')}) ORDER BY ALL"
    assert cur.execute(distinct).fetchall() == cur.execute(reference).fetchall()
    assert len(cur.execute(distinct).fetchall()) == 3
    store.close()
