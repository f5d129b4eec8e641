"""How the embedded event log's append cost grows with the log, on SQLite.

Appends batches of 1,000 new events (uuid4 ids, ~550-byte payloads, as ingestion's) through
`EmbeddedEventLog.append` into a fresh database made by `qm init`, one committed transaction
per batch, the batch prepared beforehand as a validation worker does. The floor, measured in
the same run: the same rows inserted by a bare `sqlite3` connection with the server's pragmas
into a table of the same columns with no dedup index and no dedup lookup. Prints the mean
milliseconds per batch over each step of the log's growth, both, and the ratio.

    python -m bench.event_log_growth [--events 1000000] [--step 250000]
"""

from __future__ import annotations

import argparse
import sqlite3
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import cast

from rich.console import Console
from rich.progress import Progress
from rich.table import Table
from sqlalchemy import Engine

from bench.ingest import qm_command, server_env
from quartermaster.bus.embedded import EmbeddedEventLog, SqliteRowRecords
from quartermaster.bus.protocol import LogRecord, PreparedAppend, new_log_record
from quartermaster.config import Settings
from quartermaster.runtime import Runtime, build_runtime
from quartermaster.storage import create_db_engine

BATCH = 1000
_FLOOR_COLUMNS = 13  # the log's insert columns, dedup_key included


@dataclass(frozen=True)
class Step:
    """Mean ms per batch of the appends that grew the log to `rows`, and the slowest append
    (a batch that merges the dedup keys kept in memory into their table takes longer)."""

    rows: int
    append_ms: float
    floor_ms: float
    slowest_append_ms: float


def _batch(number: int, moment: datetime) -> list[LogRecord]:
    records = []
    for index in range(BATCH):
        event_id = str(uuid.uuid4())
        payload = (
            f'{{"data":{{"compute_units":3,"tokens":{number * BATCH + index}}},"id":"{event_id}",'
            f'"source":"app://acme/app-7","specversion":"1.0","time":"{moment.isoformat()}",'
            f'"type":"qm.invocation.usage","x":"{"p" * 330}"}}'
        )
        records.append(
            new_log_record(
                "acme",
                "app://acme/app-7",
                event_id,
                "qm.invocation.usage",
                None,
                moment,
                moment,
                uuid.uuid4().hex * 2,
                "app-7",
                None,
                False,
                payload,
            )
        )
    return records


def _floor_engine(path: Path) -> Engine:
    """The floor's database: a bare sqlite3 connection, opened by the server's engine for its
    pragmas (storage/engine.py), with a table of the log's insert columns and no index."""
    engine = create_db_engine(f"sqlite:///{path}")
    with engine.connect() as connection:
        columns = ", ".join(f"c{i}" for i in range(_FLOOR_COLUMNS))
        connection.exec_driver_sql(f"CREATE TABLE log (position INTEGER PRIMARY KEY, {columns})")
        connection.commit()
    return engine


def _append(log: EmbeddedEventLog, prepared: PreparedAppend, runtime: Runtime) -> float:
    started = time.perf_counter()
    with runtime.session_factory() as session:
        result = log.append(prepared, session=session)
        session.commit()
    if len(result.appended) != BATCH:
        raise RuntimeError(f"appended {len(result.appended)} of {BATCH} new events")
    return time.perf_counter() - started


def _insert_floor(connection: sqlite3.Connection, rows: list[tuple[object, ...]]) -> float:
    sql = f"INSERT INTO log VALUES (NULL, {', '.join(['?'] * _FLOOR_COLUMNS)})"
    started = time.perf_counter()
    connection.execute("BEGIN IMMEDIATE")
    connection.executemany(sql, rows)
    connection.execute("COMMIT")
    return time.perf_counter() - started


def run(*, events: int, step: int) -> list[Step]:
    with tempfile.TemporaryDirectory(prefix="qm-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp))
        subprocess.run(
            [*qm_command(), "init"], env=server_env(settings), check=True, capture_output=True
        )
        runtime = build_runtime(settings, migrate=False)
        floor_engine = _floor_engine(Path(tmp) / "floor.db")
        floor_proxy = floor_engine.raw_connection()
        floor = cast(sqlite3.Connection, floor_proxy.driver_connection)
        log = EmbeddedEventLog(runtime.session_factory)
        steps: list[Step] = []
        append_total = floor_total = slowest = 0.0
        moment = datetime.now(UTC)
        try:
            with Progress(transient=True) as progress:
                task = progress.add_task("appending", total=events)
                for number in range(events // BATCH):
                    prepared = log.prepare(_batch(number, moment))
                    rows = _rows_of(prepared)
                    took = _append(log, prepared, runtime)
                    append_total += took
                    slowest = max(slowest, took)
                    floor_total += _insert_floor(floor, rows)
                    progress.advance(task, BATCH)
                    done = (number + 1) * BATCH
                    if done % step == 0:
                        batches = step // BATCH
                        steps.append(
                            Step(
                                done,
                                1e3 * append_total / batches,
                                1e3 * floor_total / batches,
                                1e3 * slowest,
                            )
                        )
                        append_total = floor_total = slowest = 0.0
            stored = log.head()
            if stored != events:
                raise RuntimeError(f"the log holds {stored} events, {events} were appended")
        finally:
            floor_proxy.close()
            floor_engine.dispose()
            runtime.close()
        return steps


def _rows_of(prepared: PreparedAppend) -> list[tuple[object, ...]]:
    if not isinstance(prepared.records, SqliteRowRecords):
        raise RuntimeError("the log did not prepare SQLite rows")
    return prepared.records.rows


def report(steps: list[Step]) -> None:
    table = Table(title=f"Event-log append on SQLite as the log grows (batches of {BATCH:,})")
    for column in (
        "log size",
        "append ms / batch",
        "slowest append ms",
        "floor ms / batch",
        "append / floor",
    ):
        table.add_column(column, justify="right")
    for s in steps:
        table.add_row(
            f"{s.rows:,}",
            f"{s.append_ms:.1f}",
            f"{s.slowest_append_ms:.0f}",
            f"{s.floor_ms:.1f}",
            f"{s.append_ms / s.floor_ms:.2f}",
        )
    console = Console()
    console.print(table)
    console.print(
        "floor: the same rows by a bare sqlite3 connection, same pragmas, no dedup index or lookup"
    )


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=1_000_000, help="events appended")
    parser.add_argument("--step", type=int, default=250_000, help="events per reported step")
    args = parser.parse_args(argv)
    if args.step % BATCH or args.events % args.step:
        parser.error(f"--step must be a multiple of {BATCH} and divide --events")
    report(run(events=args.events, step=args.step))


if __name__ == "__main__":
    main()
