"""The SQLite log's two-level dedup index (bus/sqlite_dedup.py): each appending process keeps
the keys logged since the last merge in memory, so these tests append through several logs on
one database as several processes would, roll transactions back, and merge early."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextvars import ContextVar
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, text

from quartermaster.bus.embedded import EmbeddedEventLog, dedup_key
from quartermaster.bus.protocol import AppendResult, LogRecord
from quartermaster.bus.sqlite_dedup import SqliteDedupIndex
from quartermaster.runtime import Runtime, build_runtime
from tests.conftest import make_settings


@pytest.fixture
def sqlite_runtime(runtime: Runtime) -> Runtime:
    if runtime.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL keeps its dedup-key index")
    return runtime


_TENANT = ContextVar("tenant", default="t-dd")


@pytest.fixture(autouse=True)
def _own_tenant() -> Iterator[None]:
    """The runtime's database outlives a test: each test appends as a tenant of its own."""
    token = _TENANT.set(f"t-dd-{uuid.uuid4().hex[:8]}")
    yield
    _TENANT.reset(token)


def _record(event_id: str, content_hash: str = "h1") -> LogRecord:
    now = datetime(2026, 11, 1, 12, tzinfo=UTC)
    return LogRecord(_TENANT.get(), "src", event_id, "qm.invocation.usage", None, now, now,
                     content_hash, "a", None, False, "{}")  # fmt: skip


def _append(log: EmbeddedEventLog, runtime: Runtime, *records: LogRecord) -> AppendResult:
    with runtime.session_factory.begin() as session:
        return log.append(list(records), session=session)


def _outcome(result: AppendResult) -> tuple[list[int], list[int], list[int]]:
    return result.appended, result.duplicates, result.conflicts


def _stored(runtime: Runtime) -> list[str]:
    with runtime.session_factory() as session:
        rows = session.execute(
            text("SELECT event_id FROM event_log WHERE tenant_id = :t ORDER BY position"),
            {"t": _TENANT.get()},
        )
        return [event_id for (event_id,) in rows]


def test_a_process_sees_what_another_appended(sqlite_runtime: Runtime) -> None:
    runtime = sqlite_runtime
    first, second = (EmbeddedEventLog(runtime.session_factory) for _ in range(2))
    assert _outcome(_append(first, runtime, _record("1"), _record("2"))) == ([0, 1], [], [])
    again = _append(second, runtime, _record("1"), _record("2", "other"), _record("3"))
    assert _outcome(again) == ([2], [0], [1])
    assert _outcome(_append(first, runtime, _record("3"), _record("4"))) == ([1], [0], [])
    assert _stored(runtime) == ["1", "2", "3", "4"]


def test_a_rolled_back_append_is_not_remembered(sqlite_runtime: Runtime) -> None:
    runtime = sqlite_runtime
    log, other = (EmbeddedEventLog(runtime.session_factory) for _ in range(2))
    _append(log, runtime, _record("0"))
    with runtime.session_factory() as session:
        assert log.append([_record("1"), _record("2")], session=session).appended == [0, 1]
        session.rollback()
    # another process takes the positions the rolled-back rows had
    assert _outcome(_append(other, runtime, _record("3"), _record("4"))) == ([0, 1], [], [])
    assert _outcome(_append(log, runtime, _record("1"), _record("3"))) == ([0], [1], [])
    assert _outcome(_append(log, runtime, _record("4"), _record("2"))) == ([1], [0], [])
    assert _stored(runtime) == ["0", "3", "4", "1", "2"]


def test_batches_in_one_transaction_see_each_other(sqlite_runtime: Runtime) -> None:
    """Group commit: a later batch of the transaction compares with an earlier one's rows,
    found at the positions the inserts took."""
    runtime = sqlite_runtime
    log = EmbeddedEventLog(runtime.session_factory)
    _append(log, runtime, _record("0"))
    with runtime.session_factory.begin() as session:
        earlier = log.append([_record(str(i)) for i in range(1, 6)], session=session)
        later = log.append(
            [_record("3"), _record("6"), _record("5", "other"), _record("0")], session=session
        )
    assert _outcome(earlier) == ([0, 1, 2, 3, 4], [], [])
    assert _outcome(later) == ([1], [0, 3], [2])
    assert _stored(runtime) == ["0", "1", "2", "3", "4", "5", "6"]


def _levels(runtime: Runtime) -> tuple[int, int, int | None, list[int], list[int]]:
    """The mark (merged_upto, recent_keys, flush_next), and the positions in the recent and
    the big table."""
    with runtime.session_factory() as session:
        merged, recent_keys, flush_next = session.execute(
            text("SELECT merged_upto, recent_keys, flush_next FROM event_dedup_mark")
        ).one()
        recent = session.execute(text("SELECT position FROM event_dedup_recent")).scalars()
        big = session.execute(text("SELECT position FROM event_dedup")).scalars()
        return merged, recent_keys, flush_next, sorted(recent), sorted(big)


def test_keys_move_through_both_tables_and_are_found_after_a_restart(
    fresh_db_url: str, tmp_path: Path
) -> None:
    """merge_at 3, flush_at 6, two key ranges (negative keys, then the rest), two events a
    transaction on an empty log: a merge when the memory holds 4 keys at a transaction's
    start; once the recent table holds 6 keys, one range moves to the big table per
    transaction."""
    if not fresh_db_url.startswith("sqlite"):
        pytest.skip("PostgreSQL keeps its dedup-key index")
    _TENANT.set("t-dd-levels")  # an empty database: the positions are known
    runtime = build_runtime(make_settings(tmp_path / "qm", fresh_db_url), migrate=False)
    try:
        log = EmbeddedEventLog(
            runtime.session_factory, dedup_merge_at=3, dedup_flush_at=6, dedup_flush_slices=2
        )
        levels = []
        for start in range(0, 14, 2):
            appended = _append(log, runtime, _record(str(start)), _record(str(start + 1)))
            assert appended.appended == [0, 1]
            levels.append(_levels(runtime))
        # position p holds event p - 1
        negative = [p for p in range(1, 9) if dedup_key("t-dd-levels", "src", str(p - 1)) < 0]
        rest = [p for p in range(1, 9) if p not in negative]
        assert negative, rest  # the tenant is chosen so that both ranges hold keys
        assert rest
        assert levels == [
            (0, 0, None, [], []),
            (0, 0, None, [], []),
            (4, 4, None, [1, 2, 3, 4], []),  # merged at the third transaction's start
            (4, 4, None, [1, 2, 3, 4], []),
            (8, len(rest), 0, rest, negative),  # merged: 8 keys >= 6, the negative ones move
            (8, 0, None, [], list(range(1, 9))),  # the rest move: the move is done
            (12, 4, None, [9, 10, 11, 12], list(range(1, 9))),
        ]
        # a new process: its memory holds 13 and 14 only; 0 is in the big table, 9 in the
        # recent one
        restarted = EmbeddedEventLog(runtime.session_factory)
        everything = [_record(str(i)) for i in range(14)]
        assert _outcome(_append(restarted, runtime, *everything)) == ([], list(range(14)), [])
        conflicting = [_record("0", "x"), _record("9", "x"), _record("13", "x"), _record("14")]
        assert _outcome(_append(restarted, runtime, *conflicting)) == ([3], [], [0, 1, 2])
        assert _stored(runtime) == [str(i) for i in range(15)]
    finally:
        runtime.close()


def test_the_index_refuses_sizes_that_cannot_work() -> None:
    with pytest.raises(ValueError, match="flush_at"):
        SqliteDedupIndex(merge_at=10, flush_at=5)
    with pytest.raises(ValueError, match="flush_slices"):
        SqliteDedupIndex(flush_slices=0)


def _log_reads(runtime: Runtime) -> list[str]:
    """The statements that read the log's keys back into a process's memory, as they run."""
    reads: list[str] = []

    @event.listens_for(runtime.engine, "before_cursor_execute")
    def note(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        if statement.startswith("SELECT position, dedup_key FROM event_log"):
            reads.append(statement)

    return reads


def test_a_process_does_not_read_back_what_it_committed(sqlite_runtime: Runtime) -> None:
    runtime = sqlite_runtime
    log, other = (EmbeddedEventLog(runtime.session_factory) for _ in range(2))
    _append(log, runtime, _record("0"))
    reads = _log_reads(runtime)
    assert _outcome(_append(log, runtime, _record("1"), _record("0"))) == ([0], [1], [])
    assert _outcome(_append(log, runtime, _record("1"), _record("2"))) == ([1], [0], [])
    assert reads == []
    # another process's rows are read once, at its next transaction
    assert _outcome(_append(other, runtime, _record("3"))) == ([0], [], [])
    assert _outcome(_append(log, runtime, _record("3"), _record("2"))) == ([], [0, 1], [])
    assert len(reads) == 2  # `other` caught up with everything; `log` with `other`'s row
    assert _outcome(_append(log, runtime, _record("4"))) == ([0], [], [])
    assert len(reads) == 2


def test_a_rolled_back_savepoint_does_not_hide_another_process_rows(
    sqlite_runtime: Runtime,
) -> None:
    """The rows a savepoint discarded leave positions that another process then takes: the
    memory must read those, not take them for the committed transaction's own."""
    runtime = sqlite_runtime
    log, other = (EmbeddedEventLog(runtime.session_factory) for _ in range(2))
    _append(other, runtime, _record("0"))
    with runtime.session_factory.begin() as session:
        assert log.append([_record("1")], session=session).appended == [0]
        savepoint = session.begin_nested()
        assert log.append([_record("2"), _record("3")], session=session).appended == [0, 1]
        savepoint.rollback()
    assert _outcome(_append(other, runtime, _record("4"), _record("5"))) == ([0, 1], [], [])
    again = _append(log, runtime, _record("4"), _record("5"), _record("2"), _record("1"))
    assert _outcome(again) == ([2], [0, 1, 3], [])
    assert _stored(runtime) == ["0", "1", "4", "5", "2"]
