"""Owner ids for raw usage rows, found in Arrow instead of by a nine-column join in DuckDB.

A raw row points at its owner (tenant, cost center, team, app, event type, method,
unattributed, environment, lifecycle) in `usage_owners`. Joining every batch on those nine
strings, after a DISTINCT and a NOT EXISTS over the owner table, was a tenth of the store's
write cost for big batches and its biggest statement for small ones (one per pipeline pass
in steady traffic). Here each column is dictionary-encoded and the codes are folded into one
exact per-row code (re-encoded after each column, so it never grows past the batch's row
count); only the batch's distinct owners (hundreds) meet Python, against a cache of the table."""

from __future__ import annotations

from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from quartermaster.usage.duckdb_schema import OWNER_COLUMNS

OWNER_FIELDS = tuple(OWNER_COLUMNS.split(", "))
OwnerKey = tuple[Any, ...]


def distinct_rows(table: pa.Table, columns: tuple[str, ...]) -> tuple[pa.Array, pa.Table]:
    """Per row, the index of its distinct combination of `columns`; and those combinations
    (one row each, in order of first appearance)."""
    codes: pa.Array | None = None
    distinct_codes = pa.array([], pa.int64())
    for name in columns:
        encoded = pc.dictionary_encode(table.column(name).combine_chunks())
        column_codes = encoded.indices.cast(pa.int64()).fill_null(-1)
        width = len(encoded.dictionary) + 1  # + 1: the null code, -1 -> 0
        if codes is None:
            combined = pc.add(column_codes, 1)
        else:
            combined = pc.add(pc.multiply(codes, width), pc.add(column_codes, 1))
        folded = pc.dictionary_encode(combined)
        codes = folded.indices.cast(pa.int64())
        distinct_codes = folded.dictionary
    if codes is None:
        raise ValueError("no columns to group by")
    # The first row carrying each distinct code (codes are numbered by first appearance).
    first_rows = pc.index_in(pa.array(range(len(distinct_codes)), pa.int64()), value_set=codes)
    return codes, table.select(list(columns)).take(first_rows)


class OwnerIds:
    """The store's owner table as a dict, loaded on first use and extended with each batch's
    new owners inside that batch's transaction (dropped when a transaction fails)."""

    def __init__(self) -> None:
        self._ids: dict[OwnerKey, int] | None = None
        self._next = 1

    def forget(self) -> None:
        self._ids = None

    def assign(self, cur: duckdb.DuckDBPyConnection, usage: pa.Table) -> pa.Array:
        """The owner id of each row of `usage`, inserting owners the table lacks."""
        ids = self._load(cur)
        codes, owners = distinct_rows(usage, OWNER_FIELDS)
        keys = list(zip(*(owners.column(n).to_pylist() for n in OWNER_FIELDS), strict=True))
        new_rows: list[int] = []
        per_code: list[int] = []
        for row, key in enumerate(keys):
            owner_id = ids.get(key)
            if owner_id is None:
                owner_id = ids[key] = self._next
                self._next += 1
                new_rows.append(row)
            per_code.append(owner_id)
        if new_rows:
            added = owners.take(pa.array(new_rows, pa.int64()))
            added = added.add_column(
                0, "owner_id", pa.array([per_code[r] for r in new_rows], pa.int32())
            )
            cur.register("batch_owners", added)
            try:
                cur.execute(
                    f"INSERT INTO usage_owners SELECT owner_id, {OWNER_COLUMNS} FROM batch_owners"
                )
            finally:
                cur.unregister("batch_owners")
        return pa.array(per_code, pa.int32()).take(codes)

    def _load(self, cur: duckdb.DuckDBPyConnection) -> dict[OwnerKey, int]:
        if self._ids is None:
            rows = cur.execute(f"SELECT owner_id, {OWNER_COLUMNS} FROM usage_owners").fetchall()
            self._ids = {tuple(r[1:]): int(r[0]) for r in rows}
            self._next = max(self._ids.values(), default=0) + 1
        return self._ids
