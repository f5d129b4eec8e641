"""The embedded log's dedup index on SQLite, in levels: two tables and each process's memory.

Dedup keys are random 8-byte hashes. Kept in a B-tree index that every append inserts into,
each commit rewrote about one index page per appended event in the WAL once the index
outgrew a few thousand pages, so appends slowed as the log grew (`bench.event_log_growth`).
Instead:

- `event_dedup_recent` receives (dedup_key, position) for the log up to
  `event_dedup_mark.merged_upto` in key order, by a bulk merge every `merge_at` events; a
  merge touches most of the table's pages, so the table is kept small: once it holds
  `flush_at` keys, they move into `event_dedup`, one key range (a `flush_slices`th of the
  hash space) per appending transaction, so that no single append waits for a pass over the
  whole big table (merging straight into one table grew with the log: the slowest append 3 s
  at six million events). A key is in one table or the other; lookups read both;
- each appending process holds in memory the keys of the committed rows after the mark
  (`_recent`): its own transactions' keys join it when they commit, and at the first append
  of each transaction, under SQLite's write lock, it reads from the log the rows committed
  since it last looked (another process's), so the memory never holds a row that was rolled
  back and never misses one that was committed;
- a transaction's own appends are looked up in its overlay (`_Pending`) until it ends; when
  it commits, its overlay joins the memory, so the next transaction need not read back the
  rows this process wrote itself (that read cost the server ~1.4 µs an event).

A lookup finds candidate positions in every level and compares each candidate's full key
(hashes may collide). Positions of committed rows never change: the log is append-only.
"""

from __future__ import annotations

import threading
from collections.abc import Container, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Connection, event
from sqlalchemy.orm import Session, SessionTransaction

EventKey = tuple[str, str, str]

# Merge the in-memory level into the recent table when it holds this many keys: ~200 bytes
# of memory each (measured: ~20 MB at the mark), and a merge writes each table page it
# touches once.
MERGE_AT = 100_000
# Move the recent table into the big one when it holds this many keys: each merge then
# rewrites at most ~1M keys' pages (~25 MB), and the moves the big table's once per 1M events.
FLUSH_AT = 1_000_000
# Key ranges the move takes, one per appending transaction: each touches ~1/16 of the big
# table's pages.
FLUSH_SLICES = 16
_KEY_MIN, _KEY_END = -(2**63), 2**63  # dedup keys are signed 64-bit
_CHUNK = 900  # parameters per IN (...) lookup, under SQLite's limit
_SESSION_KEY = "quartermaster.sqlite_dedup"
_HOOKED_KEY = "quartermaster.sqlite_dedup.hooked"


@dataclass
class _Pending:
    """One transaction's appended keys (dedup_key -> positions), visible to its later
    appends (group commit) and to nobody else."""

    transaction: SessionTransaction
    # The memory's `_seen_upto` when the transaction caught up under the write lock: every
    # row after it that the transaction sees is the transaction's own.
    base: int
    keys: dict[int, list[int]] = field(default_factory=dict)
    upto: int | None = None  # the log's head just before the commit


class SqliteDedupIndex:
    def __init__(
        self,
        *,
        merge_at: int = MERGE_AT,
        flush_at: int = FLUSH_AT,
        flush_slices: int = FLUSH_SLICES,
    ) -> None:
        if merge_at < 1:
            raise ValueError(f"merge_at must be at least 1, got {merge_at}")
        if flush_at < merge_at:
            raise ValueError(f"flush_at ({flush_at}) must be at least merge_at ({merge_at})")
        if flush_slices < 1:
            raise ValueError(f"flush_slices must be at least 1, got {flush_slices}")
        self._merge_at = merge_at
        self._flush_at = flush_at
        self._slice = -(-(_KEY_END - _KEY_MIN) // flush_slices)  # rounded up: covers the space
        self._lock = threading.Lock()
        self._recent: dict[int, list[int]] = {}
        self._merged_upto = 0
        self._seen_upto = 0  # _recent holds every committed row in (_merged_upto, _seen_upto]

    def stored(self, hashes: Mapping[EventKey, int], *, session: Session) -> dict[EventKey, str]:
        """The content hash of each key of `hashes` (key -> dedup_key) already in the log,
        this transaction's earlier appends included."""
        connection = session.connection()
        with self._lock:
            pending = self._pending(session, connection)
            wanted = sorted(set(hashes.values()))
            positions: set[int] = set()
            for table in ("event_dedup_recent", "event_dedup"):
                rows = _rows_where_in(
                    f"SELECT position FROM {table}", "dedup_key", wanted, connection=connection
                )
                positions.update(position for (position,) in rows)
            for level in (self._recent, pending.keys):
                for dedup_key in wanted:
                    found = level.get(dedup_key)
                    if found is not None:
                        positions.update(found)
        if not positions:
            return {}
        return stored_content_hashes("position", sorted(positions), hashes, connection=connection)

    def appended(self, positions: Iterable[tuple[int, int]], *, session: Session) -> None:
        """Note rows this transaction appended: (position, dedup_key) each."""
        pending = session.info[_SESSION_KEY]
        for position, dedup_key in positions:
            pending.keys.setdefault(dedup_key, []).append(position)

    def _pending(self, session: Session, connection: Connection) -> _Pending:
        """The transaction's overlay; at its first append, the memory brought up to the
        committed log, merged into the recent table when it is full, and a key range of the
        recent table moved to the big one while a move is under way."""
        transaction = session.get_transaction()
        if transaction is None:
            raise RuntimeError("the event log appends inside a transaction")
        pending = session.info.get(_SESSION_KEY)
        if isinstance(pending, _Pending) and pending.transaction is transaction:
            return pending
        mark = self._catch_up(connection)
        # the memory forgets the merged keys when a later transaction reads the new mark,
        # which it only sees if this one commits
        _maintain(
            mark,
            self._seen_upto if len(self._recent) >= self._merge_at else None,
            flush_at=self._flush_at,
            slice_width=self._slice,
            connection=connection,
        )
        pending = session.info[_SESSION_KEY] = _Pending(transaction, self._seen_upto)
        if not session.info.get(_HOOKED_KEY):
            event.listen(session, "before_commit", self._before_commit)
            event.listen(session, "after_commit", self._after_commit)
            session.info[_HOOKED_KEY] = True
        return pending

    def _before_commit(self, session: Session) -> None:
        pending = session.info.get(_SESSION_KEY)
        if isinstance(pending, _Pending) and pending.transaction is session.get_transaction():
            # Read, not taken from the last insert: a savepoint rolled back may have
            # discarded the transaction's last rows.
            head = session.connection().exec_driver_sql("SELECT max(position) FROM event_log")
            pending.upto = head.scalar() or 0

    def _after_commit(self, session: Session) -> None:
        """The committed transaction's keys join the memory, unless the memory moved on
        since the transaction caught up (another session of this process read the log)."""
        pending = session.info.pop(_SESSION_KEY, None)
        if not isinstance(pending, _Pending) or pending.upto is None:
            return
        with self._lock:
            if self._seen_upto != pending.base:
                return
            recent = self._recent
            for dedup_key, positions in pending.keys.items():
                known = recent.get(dedup_key)
                if known is None:
                    recent[dedup_key] = positions
                else:
                    known.extend(positions)
            self._seen_upto = pending.upto

    def _catch_up(self, connection: Connection) -> _Mark:
        """The tables' mark, and the memory brought up to the committed log."""
        mark_row = connection.exec_driver_sql(
            "SELECT merged_upto, recent_keys, flush_next FROM event_dedup_mark WHERE id = 1"
        ).first()
        state = _Mark(*mark_row) if mark_row is not None else _Mark(0, 0, None)
        mark = state.merged_upto
        head = connection.exec_driver_sql("SELECT max(position) FROM event_log").scalar() or 0
        if mark < self._merged_upto or head < self._seen_upto:  # another database under us
            self._recent, self._merged_upto, self._seen_upto = {}, mark, mark
        if mark > self._merged_upto:
            self._recent = {
                key: kept
                for key, positions in self._recent.items()
                if (kept := [p for p in positions if p > mark])
            }
            self._merged_upto = mark
            self._seen_upto = max(self._seen_upto, mark)
        if head > self._seen_upto:
            rows = connection.exec_driver_sql(
                "SELECT position, dedup_key FROM event_log WHERE position > ? ORDER BY position",
                (self._seen_upto,),
            )
            recent = self._recent
            for position, dedup_key in rows:
                recent.setdefault(dedup_key, []).append(position)
            self._seen_upto = head
        return state


@dataclass(frozen=True, slots=True)
class _Mark:
    """`event_dedup_mark`: the last position whose key is in a table, how many keys the recent
    table holds, and the start of the next key range to move while a move is under way."""

    merged_upto: int
    recent_keys: int
    flush_next: int | None


def _maintain(
    mark: _Mark, merge_upto: int | None, *, flush_at: int, slice_width: int, connection: Connection
) -> None:
    """Merge the keys of the log's rows in (mark, merge_upto] into the recent table (unless
    `merge_upto` is None), then move one key range of the recent table into the big one if a
    move is under way or the recent table is full; record the new mark. Nothing to do: no
    statement at all."""
    merged_upto, recent_keys, flush_next = mark.merged_upto, mark.recent_keys, mark.flush_next
    if merge_upto is None and flush_next is None and recent_keys < flush_at:
        return
    if merge_upto is not None:
        merged = connection.exec_driver_sql(
            "INSERT INTO event_dedup_recent (dedup_key, position) SELECT dedup_key, position"
            " FROM event_log WHERE position > ? AND position <= ? ORDER BY dedup_key, position",
            (merged_upto, merge_upto),
        )
        merged_upto, recent_keys = merge_upto, recent_keys + merged.rowcount
    if flush_next is None and recent_keys >= flush_at:
        flush_next = _KEY_MIN
    if flush_next is not None:
        end = flush_next + slice_width
        # the last range has no upper bound: 2**63 does not fit a signed 64-bit parameter
        where = "dedup_key >= ?" + (" AND dedup_key < ?" if end < _KEY_END else "")
        bounds = (flush_next, end) if end < _KEY_END else (flush_next,)
        connection.exec_driver_sql(
            "INSERT INTO event_dedup (dedup_key, position) SELECT dedup_key, position"
            f" FROM event_dedup_recent WHERE {where} ORDER BY dedup_key, position",
            bounds,
        )
        moved = connection.exec_driver_sql(f"DELETE FROM event_dedup_recent WHERE {where}", bounds)
        recent_keys -= moved.rowcount
        flush_next = end if end < _KEY_END else None
    connection.exec_driver_sql(
        "INSERT INTO event_dedup_mark (id, merged_upto, recent_keys, flush_next)"
        " VALUES (1, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET merged_upto ="
        " excluded.merged_upto, recent_keys = excluded.recent_keys,"
        " flush_next = excluded.flush_next",
        (merged_upto, recent_keys, flush_next),
    )


def stored_content_hashes(
    column: str, values: list[int], keys: Container[EventKey], *, connection: Connection
) -> dict[EventKey, str]:
    """The content hash of each logged row whose `column` (`position` or `dedup_key`) is one of
    `values` and whose full key is one of `keys` (a dedup-key hit may be another key's)."""
    found: dict[EventKey, str] = {}
    rows = _rows_where_in(
        "SELECT tenant_id, source, event_id, content_hash FROM event_log",
        column,
        values,
        connection=connection,
    )
    for tenant_id, source, event_id, content_hash in rows:
        key = (tenant_id, source, event_id)
        if key in keys:
            found[key] = content_hash
    return found


def _rows_where_in(
    select: str, column: str, values: Sequence[int], *, connection: Connection
) -> Iterator[Sequence[Any]]:
    """The rows of `select` whose `column` is one of `values`, `_CHUNK` values per query."""
    mark = "%s" if connection.dialect.name == "postgresql" else "?"
    for start in range(0, len(values), _CHUNK):
        chunk = values[start : start + _CHUNK]
        yield from connection.exec_driver_sql(
            f"{select} WHERE {column} IN ({', '.join([mark] * len(chunk))})", tuple(chunk)
        )
