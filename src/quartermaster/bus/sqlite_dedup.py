"""The embedded log's dedup index on SQLite, in levels: two tables and each process's memory.

Dedup keys are random 8-byte hashes. Kept in a B-tree index that every append inserts into,
each commit rewrote about one index page per appended event in the WAL once the index
outgrew a few thousand pages, so appends slowed as the log grew (`bench.event_log_growth`).
Instead:

- `event_dedup_recent` holds (dedup_key, position) for the log after
  `event_dedup_mark.flushed_upto` up to `merged_upto`, written in key order by a bulk merge
  every `merge_at` events; a merge touches most of the table's pages, so the table is kept
  small: once it holds `flush_at` positions' keys it is moved in one pass into `event_dedup`,
  which holds the keys up to `flushed_upto` (merging straight into one table grew with the
  log: the slowest append 3 s at six million events, against 1.4 now);
- each appending process holds in memory the keys of the committed rows after the mark
  (`_recent`), read from the log itself: at the first append of each transaction, under
  SQLite's write lock, it reads the rows committed since it last looked (its own and any
  other process's), so the memory never holds a row that was rolled back and never misses
  one that was committed;
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
# rewrites at most ~1M keys' pages (~25 MB), and each move the big table's once per 1M events.
FLUSH_AT = 1_000_000
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
    def __init__(self, *, merge_at: int = MERGE_AT, flush_at: int = FLUSH_AT) -> None:
        if merge_at < 1:
            raise ValueError(f"merge_at must be at least 1, got {merge_at}")
        if flush_at < merge_at:
            raise ValueError(f"flush_at ({flush_at}) must be at least merge_at ({merge_at})")
        self._merge_at = merge_at
        self._flush_at = flush_at
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
        committed log (and merged into the table when it is full)."""
        transaction = session.get_transaction()
        if transaction is None:
            raise RuntimeError("the event log appends inside a transaction")
        pending = session.info.get(_SESSION_KEY)
        if isinstance(pending, _Pending) and pending.transaction is transaction:
            return pending
        self._catch_up(connection)
        if len(self._recent) >= self._merge_at:
            _merge(self._merged_upto, self._seen_upto, self._flush_at, connection=connection)
            # the memory forgets the merged keys when a later transaction reads the new mark,
            # which it only sees if this one commits
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
            if self._seen_upto != pending.base or pending.upto < pending.base:
                return
            recent = self._recent
            for dedup_key, positions in pending.keys.items():
                known = recent.get(dedup_key)
                if known is None:
                    recent[dedup_key] = positions
                else:
                    known.extend(positions)
            self._seen_upto = pending.upto

    def _catch_up(self, connection: Connection) -> None:
        mark_row = connection.exec_driver_sql(
            "SELECT merged_upto FROM event_dedup_mark WHERE id = 1"
        ).first()
        mark = int(mark_row[0]) if mark_row is not None else 0
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


def _merge(mark: int, upto: int, flush_at: int, *, connection: Connection) -> None:
    """Move the keys of the log's rows in (mark, upto] into the recent table, in key order;
    then the recent table into the big one if it holds `flush_at` positions' keys."""
    connection.exec_driver_sql(
        "INSERT INTO event_dedup_recent (dedup_key, position) SELECT dedup_key, position"
        " FROM event_log WHERE position > ? AND position <= ? ORDER BY dedup_key, position",
        (mark, upto),
    )
    flushed_row = connection.exec_driver_sql(
        "SELECT flushed_upto FROM event_dedup_mark WHERE id = 1"
    ).first()
    flushed = int(flushed_row[0]) if flushed_row is not None else 0
    if upto - flushed >= flush_at:
        connection.exec_driver_sql(
            "INSERT INTO event_dedup (dedup_key, position) SELECT dedup_key, position"
            " FROM event_dedup_recent ORDER BY dedup_key, position"
        )
        connection.exec_driver_sql("DELETE FROM event_dedup_recent")
        flushed = upto
    connection.exec_driver_sql(
        "INSERT INTO event_dedup_mark (id, merged_upto, flushed_upto) VALUES (1, ?, ?)"
        " ON CONFLICT (id) DO UPDATE SET merged_upto = excluded.merged_upto,"
        " flushed_upto = excluded.flushed_upto",
        (upto, flushed),
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
