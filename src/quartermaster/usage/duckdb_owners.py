"""Owner ids and day-rollup groups of raw usage rows, found in Arrow instead of by joins and
string GROUP BYs in DuckDB.

A raw row points at its owner (tenant, cost center, team, app, event type, method,
unattributed, environment, lifecycle; and the row's source and meter) in `usage_owners`.
Joining every batch on those strings, after a DISTINCT and a NOT EXISTS over the owner
table, was a tenth of the store's write cost for big batches and its biggest statement for
small ones (one per pipeline pass in steady traffic). Here each column is dictionary-encoded (or
found constant) and the codes are folded into one exact per-row code (mixed radix; renumbered
only if the product of the columns' widths would overflow); only the batch's distinct
combinations (hundreds to thousands) meet Python, against a cache of the owner table.

The same pass numbers each row's day-rollup key (tenant, cost center, team, app, meter,
unattributed) within the batch, so the day increments GROUP BY one integer and a day instead
of six columns, four of them strings (4x less CPU for 1M rows), and meet the key's strings
once per group."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from quartermaster.usage.duckdb_schema import GROUP_COLUMNS, OWNER_COLUMNS

OWNER_FIELDS = tuple(OWNER_COLUMNS.split(", "))
GROUP_FIELDS = tuple(GROUP_COLUMNS.split(", "))
KEY_FIELDS = (*OWNER_FIELDS, *(f for f in GROUP_FIELDS if f not in OWNER_FIELDS))
OwnerKey = tuple[Any, ...]
# Mixed-radix codes stay below this; past it the codes so far are renumbered densely.
_CODE_LIMIT = 1 << 62


def distinct_rows(table: pa.Table, columns: tuple[str, ...]) -> tuple[pa.Array, pa.Table]:
    """Per row, the index of its distinct combination of `columns`; and those combinations
    (one row each, in order of first appearance)."""
    if not columns:
        raise ValueError("no columns to group by")
    codes: pa.Array | None = None
    radix = 1
    # How to decode a combined code into the columns' values, last column first: a column's
    # dictionary and width, a constant column's value (most owner columns are constant in a
    # batch; comparing is 4x cheaper than hashing), or the codes dense numbers stand for.
    steps: list[tuple[str, Any, int]] = []
    for name in columns:
        column = table.column(name)
        if _constant(column):
            steps.append(("constant", column[0], 0))
            continue
        encoded = pc.dictionary_encode(column.combine_chunks())
        # null -> 0, the dictionary's values -> 1..
        column_codes = pc.add(encoded.indices.cast(pa.int64()).fill_null(_int(-1)), _int(1))
        width = len(encoded.dictionary) + 1
        if codes is None:
            codes = column_codes
        else:
            if radix * width >= _CODE_LIMIT:
                folded = pc.dictionary_encode(codes)
                steps.append(("renumbered", folded.dictionary, 0))
                codes = folded.indices.cast(pa.int64())
                radix = len(folded.dictionary)
            codes = pc.add(pc.multiply(codes, _int(width)), column_codes)
        radix *= width
        steps.append(("column", encoded.dictionary, width))
    if codes is None:
        codes = pa.nulls(table.num_rows, pa.int64()).fill_null(_int(0))
    folded = pc.dictionary_encode(codes)  # numbered by first appearance
    remaining = folded.dictionary
    decoded: list[pa.Array] = []
    for kind, values, width in reversed(steps):
        if kind == "renumbered":
            remaining = values.take(remaining)
        elif kind == "constant":
            decoded.append(pa.repeat(values, len(remaining)))
        else:
            quotient = pc.divide(remaining, _int(width))  # integer division: the codes are >= 0
            own = pc.subtract(pc.subtract(remaining, pc.multiply(quotient, _int(width))), _int(1))
            decoded.append(values.take(pc.if_else(pc.equal(own, _int(-1)), _int(None), own)))
            remaining = quotient
    schema = table.select(list(columns)).schema
    distinct = pa.Table.from_arrays(decoded[::-1], schema=schema)
    return folded.indices.cast(pa.int64()), distinct


def _int(value: int | None) -> pa.Scalar:
    # Typed scalars: pyarrow converts a bare Python int or None by trying to import pandas
    # and dateutil on every call, which failed (not installed) at ~50 us a time: for a
    # 500-row batch that was a third of the numbering's cost.
    return pa.scalar(value, pa.int64())


def _constant(column: pa.ChunkedArray) -> bool:
    if len(column) == 0:
        return False
    if column.null_count:
        return bool(column.null_count == len(column))
    return bool(pc.all(pc.equal(column, column[0])).as_py())


@dataclass(frozen=True)
class BatchKeys:
    """Per row of a batch: its owner id and its day-rollup group; and the groups' keys."""

    owner_ids: pa.Array  # int32
    group_ids: pa.Array  # int32, numbered within the batch
    groups: pa.Table  # group_id, then GROUP_FIELDS


class OwnerIds:
    """The store's owner table as a dict, loaded on first use and extended with each batch's
    new owners inside that batch's transaction (dropped when a transaction fails)."""

    def __init__(self) -> None:
        self._ids: dict[OwnerKey, int] | None = None
        self._next = 1

    def forget(self) -> None:
        self._ids = None

    def assign(self, cur: duckdb.DuckDBPyConnection, usage: pa.Table) -> BatchKeys:
        """The owner id and rollup group of each row of `usage`, inserting owners the table
        lacks."""
        ids = self._load(cur)
        codes, combos = distinct_rows(usage, KEY_FIELDS)
        columns = {n: combos.column(n).to_pylist() for n in KEY_FIELDS}
        owner_keys = list(zip(*(columns[n] for n in OWNER_FIELDS), strict=True))
        group_keys = list(zip(*(columns[n] for n in GROUP_FIELDS), strict=True))
        new_owners: dict[OwnerKey, int] = {}  # key -> its first combination
        groups: dict[OwnerKey, int] = {}
        group_rows: list[int] = []
        owner_per_combo: list[int] = []
        group_per_combo: list[int] = []
        for combo, (owner, group) in enumerate(zip(owner_keys, group_keys, strict=True)):
            owner_id = ids.get(owner)
            if owner_id is None:
                owner_id = ids[owner] = self._next
                self._next += 1
                new_owners[owner] = combo
            owner_per_combo.append(owner_id)
            group_id = groups.get(group)
            if group_id is None:
                group_id = groups[group] = len(groups)
                group_rows.append(combo)
            group_per_combo.append(group_id)
        if new_owners:
            rows = pa.array(list(new_owners.values()), pa.int64())
            added = combos.select(list(OWNER_FIELDS)).take(rows)
            added = added.add_column(
                0, "owner_id", pa.array([ids[k] for k in new_owners], pa.int32())
            )
            cur.register("batch_owners", added)
            try:
                cur.execute(
                    f"INSERT INTO usage_owners SELECT owner_id, {OWNER_COLUMNS} FROM batch_owners"
                )
            finally:
                cur.unregister("batch_owners")
        group_table = combos.select(list(GROUP_FIELDS)).take(pa.array(group_rows, pa.int64()))
        group_table = group_table.add_column(
            0, "group_id", pa.array(range(len(group_rows)), pa.int32())
        )
        return BatchKeys(
            owner_ids=pa.array(owner_per_combo, pa.int32()).take(codes),
            group_ids=pa.array(group_per_combo, pa.int32()).take(codes),
            groups=group_table,
        )

    def _load(self, cur: duckdb.DuckDBPyConnection) -> dict[OwnerKey, int]:
        if self._ids is None:
            rows = cur.execute(f"SELECT owner_id, {OWNER_COLUMNS} FROM usage_owners").fetchall()
            self._ids = {tuple(r[1:]): int(r[0]) for r in rows}
            self._next = max(self._ids.values(), default=0) + 1
        return self._ids
