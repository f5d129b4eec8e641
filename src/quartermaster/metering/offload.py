"""Validation workers: ingest requests parsed and validated in other processes, so that `qm
serve` uses a second core for the half of ingestion that holds the GIL longest.

In one process every piece of ingestion shares one interpreter lock: parsing, the per-event
checks, the HMAC and the content hash (~half of the server's CPU per event) take turns with
the event-log append and everything else the server does. With `ingest_workers` set (by
default one worker on a machine with two CPUs or more), the route hands the request's body to
a worker process, which parses it, validates every event (validation.py, the same code) with
its own read-only sessions and lookup caches, prepares the records for the event log (keys and
encoded rows, `EventLog.prepare`), and returns them with the rejections; the server's process
then stores them (dedup, counters, commit) exactly as before. Workers never write and never
touch the usage store (DuckDB admits one process).

A worker that dies (killed, out of memory) costs nothing but time: the request it was
validating is validated in the server's process instead, and the pool is replaced.
"""

from __future__ import annotations

import asyncio
import logging
import logging.config
import multiprocessing
import os
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from datetime import datetime
from typing import Any, overload

from sqlalchemy.orm import Session, sessionmaker

from quartermaster.bus.embedded import EmbeddedEventLog
from quartermaster.bus.protocol import LogRecord, PreparedAppend
from quartermaster.config import Settings
from quartermaster.errors import PayloadTooLargeError, QMError
from quartermaster.gc_tuning import tune_gc_for_serving
from quartermaster.metering.body import MalformedBodyError, parse_events
from quartermaster.metering.service import IngestState, ValidatedBatch, validate_ingest
from quartermaster.metering.validation import AcceptedEvent, Rejection
from quartermaster.runtime import Runtime
from quartermaster.serve_logging import worker_log_config
from quartermaster.storage import create_db_engine, make_read_session_factory
from quartermaster.tenancy.service import AuthContext

logger = logging.getLogger(__name__)

SERVICE_NAME = "metering.validation_pool"
PARENT_CHECK_SECONDS = 1.0
# The body errors a worker reports by name; the server raises them again (status 400 / 413).
_BODY_ERRORS: dict[str, type[QMError]] = {
    "MalformedBodyError": MalformedBodyError,
    "PayloadTooLargeError": PayloadTooLargeError,
}

# A validated batch as it crosses the process boundary: the accepted events' indexes in the
# request and their records prepared for the log, which on SQLite pickle as their rows alone
# (bus/embedded.py): the server unpickled the records and their rows at ~5.6 us per event, the
# rows alone at ~0.7.
_WireBatch = tuple[str, datetime, int, list[int], list[Rejection], PreparedAppend]
_WireResult = tuple[str, Any]


@dataclass(frozen=True, slots=True)
class _WorkerLookups:
    """A worker's `IngestLookups`: its own engine, used for reads only."""

    settings: Settings
    server_key: bytes
    read_session_factory: sessionmaker[Session]


@dataclass(slots=True)
class _Worker:
    lookups: _WorkerLookups
    state: IngestState
    # The backend `build_runtime` uses, to prepare the records (keys, rows); never appends.
    event_log: EmbeddedEventLog


# This worker process's lookups and caches, set by `_start_worker` when the process starts
# (the pool's initializer); it exists only in worker processes.
_worker: _Worker | None = None


def _start_worker(settings: Settings, server_key: bytes) -> None:
    global _worker
    threading.Thread(
        target=_exit_with_parent, args=(os.getppid(),), name="qm-parent-watch", daemon=True
    ).start()
    logging.config.dictConfig(worker_log_config(settings.log_level))
    engine = create_db_engine(settings.resolved_database_url)
    read_sessions = make_read_session_factory(engine)
    lookups = _WorkerLookups(settings, server_key, read_sessions)
    _worker = _Worker(lookups, IngestState(), EmbeddedEventLog(read_sessions))
    tune_gc_for_serving()


def _exit_with_parent(parent_pid: int) -> None:
    """End this worker once the server that started it is gone. A server killed outright
    (SIGKILL, out of memory) cannot stop its pool, and a worker waiting for work would wait
    for ever: it holds its task queue's writing end itself, so it never reads an end of file."""
    while os.getppid() == parent_pid:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)


def validate_body(
    body: bytes, media_type: str, max_events: int, caller: AuthContext
) -> _WireResult:
    """In a worker: parse the body and validate its events. ("error", (name, message)) for a
    body that cannot be parsed, else ("ok", the batch in wire form)."""
    if _worker is None:
        raise RuntimeError("validate_body runs in a validation worker process")
    try:
        events = parse_events(body, media_type, max_events=max_events)
    except QMError as exc:
        return "error", (type(exc).__name__, exc.message)
    batch = validate_ingest(events, caller=caller, lookups=_worker.lookups, state=_worker.state)
    prepared = _worker.event_log.prepare([event.record for event in batch.accepted])
    wire: _WireBatch = (
        batch.tenant_id,
        batch.received_at,
        batch.received,
        [event.event_index for event in batch.accepted],
        batch.rejected,
        prepared,
    )
    return "ok", wire


def _from_wire(result: _WireResult) -> ValidatedBatch:
    kind, value = result
    if kind == "error":
        name, message = value
        raise _BODY_ERRORS.get(name, MalformedBodyError)(message)
    tenant_id, received_at, received, indexes, rejected, prepared = value
    accepted = _AcceptedEvents(indexes, prepared.records)
    return ValidatedBatch(tenant_id, received_at, received, accepted, rejected, prepared)


class _AcceptedEvents(Sequence[AcceptedEvent]):
    """A worker's accepted events: their indexes in the request beside the prepared records,
    paired when asked for. The server asks for the conflicting ones only; on SQLite the records
    are their rows (`EventLog.prepare`), read back one by one."""

    __slots__ = ("indexes", "records")

    def __init__(self, indexes: list[int], records: Sequence[LogRecord]) -> None:
        self.indexes = indexes
        self.records = records

    def __len__(self) -> int:
        return len(self.indexes)

    @overload
    def __getitem__(self, index: int) -> AcceptedEvent: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[AcceptedEvent]: ...
    def __getitem__(self, index: int | slice) -> AcceptedEvent | Sequence[AcceptedEvent]:
        if isinstance(index, slice):
            return _AcceptedEvents(self.indexes[index], self.records[index])
        return AcceptedEvent(self.indexes[index], self.records[index])


class ValidationPool:
    """The worker processes of one server (spawned, not forked: the server runs threads)."""

    def __init__(self, settings: Settings, server_key: bytes, *, workers: int) -> None:
        if workers < 1:
            raise ValueError(f"a validation pool needs at least one worker, got {workers}")
        self._settings = settings
        self._server_key = server_key
        self._workers = workers
        self._lock = threading.Lock()
        self._executor = self._new_executor()

    def _new_executor(self) -> ProcessPoolExecutor:
        return ProcessPoolExecutor(
            self._workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            initargs=(self._settings, self._server_key),
        )

    def warm_up(self) -> None:
        """Start the workers now rather than on the first request (importing takes seconds)."""
        for _ in range(self._workers):
            self._executor.submit(os.getpid)

    async def validate(
        self, body: bytes, media_type: str, *, caller: AuthContext, max_events: int
    ) -> ValidatedBatch | None:
        """The validated batch, or None when the worker died: the caller then validates in
        its own process (and the pool has been replaced for the next requests)."""
        executor = self._executor
        loop = asyncio.get_running_loop()
        try:
            result = await loop.run_in_executor(
                executor, validate_body, body, media_type, max_events, caller
            )
        except BrokenProcessPool:
            self._replace(executor)
            return None
        return _from_wire(result)

    def _replace(self, broken: ProcessPoolExecutor) -> None:
        with self._lock:
            if self._executor is broken:  # the first request to see it replaces it
                logger.warning("a validation worker died; starting a new pool")
                broken.shutdown(wait=False, cancel_futures=True)
                self._executor = self._new_executor()

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=True)


def start_validation_pool(runtime: Runtime) -> Callable[[], None]:
    """A `qm serve` starter: the pool in `runtime.services` when `ingest_workers` asks for
    workers; returns the stop function."""
    workers = runtime.settings.resolved_ingest_workers
    if workers == 0:
        return lambda: None
    pool = ValidationPool(runtime.settings, runtime.server_key, workers=workers)
    pool.warm_up()
    runtime.services[SERVICE_NAME] = pool

    def stop() -> None:
        runtime.services.pop(SERVICE_NAME, None)
        pool.close()

    return stop


def validation_pool(runtime: Runtime) -> ValidationPool | None:
    pool = runtime.services.get(SERVICE_NAME)
    return pool if isinstance(pool, ValidationPool) else None
