"""The pipeline worker: read the event log, attribute, rate, and write the usage store.

Exactly once: each batch's rows and the stream's new position commit in one DuckDB
transaction, and only then is the log cursor acknowledged. On every pass a stream resumes
from max(log cursor, stored position) (a crash between the commit and the ack is acknowledged
again, never re-counted). Deterministic: attribution and meters depend only on the event and
the metadata registered before the moment it became billable, so a replay rebuilds the same
rollups.

Streams: the main stream ("pipeline") reads everything; a replay stream rebuilds one tenant
(or the whole store) from the log up to the main stream's position at the time of the request,
while the main stream carries on with newer events."""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import cast

import pyarrow as pa

from quartermaster.background import BackgroundService
from quartermaster.bus.protocol import EventLog, LoggedEvent, LogRecord
from quartermaster.config import ConfigurationError
from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import ConflictError
from quartermaster.runtime import Runtime
from quartermaster.usage.attribution import MetadataSnapshot, Outcome
from quartermaster.usage.meters import MeterSet, QuantityOutOfRangeError
from quartermaster.usage.rating import BatchRater, from_waiting, parse_logged, waiting_record
from quartermaster.usage.service import (
    any_finalized_documents,
    last_replay_request,
    record_replay_request,
    replay_requests_after,
)
from quartermaster.usage.snapshot import (
    Fingerprint,
    load_meter_set,
    load_snapshot,
    metadata_fingerprints,
)
from quartermaster.usage.store import (
    COST_SCHEMA,
    EVENT_SCHEMA,
    FAILED_SCHEMA,
    MARKER_SCHEMA,
    USAGE_SCHEMA,
    WAITING_SCHEMA,
    RatedBatch,
    StreamState,
    UsageStore,
    WaitingEvent,
)

logger = logging.getLogger("quartermaster.usage.pipeline")

MAIN_STREAM = "pipeline"
MAIN_CONSUMER = "pipeline"  # the prefix of log consumer names (main_consumer)
SERVICE_NAME = "pipeline"
# Events read, parsed and rated at a time; a pass commits up to `pipeline_batch_size` of them.
READ_CHUNK = 20_000
ACK_INTERVAL_SECONDS = 1.0


def main_consumer(store: UsageStore) -> str:
    """The log consumer of a store's main stream. One per store: the stores of several
    servers, or a store rebuilt beside an earlier one, read one log, and a shared cursor made
    each resume where another had got to (a rebuilt store skipped what the old one had
    rated)."""
    return f"{MAIN_CONSUMER}-{store.store_id()}"


def _new_consumer(stream: str) -> str:
    return f"{MAIN_CONSUMER}-{stream}-{uuid.uuid4().hex[:12]}"


def _legacy_streams(streams: Sequence[StreamState], consumer: str) -> list[StreamState]:
    """Streams of a store from before consumers were per store, given per-store consumers
    at their stored positions (a new consumer's cursor is 0, so each resumes from the
    store's own position)."""
    renamed: list[StreamState] = []
    for stream in streams:
        if stream.name == MAIN_STREAM and stream.consumer != consumer:
            renamed.append(replace(stream, consumer=consumer))
        elif stream.consumer == f"{MAIN_CONSUMER}-{stream.name}" and stream.name.startswith(
            "repair-"
        ):
            renamed.append(replace(stream, consumer=_new_consumer(stream.name)))
    return renamed


class LogMismatchError(ConfigurationError):
    """The usage store rated another event log than this database's."""


def check_log_binding(store: UsageStore, log: EventLog, *, store_name: str) -> None:
    """Refuse a usage store built from another event log, or one that has rated beyond this
    log's head, and bind a store to this one.

    The store skips log positions it has rated: kept while QM_DATABASE_URL moved to another
    database, it would skip that log's first events as rated and report the pipeline
    balanced. A database restored from a backup older than the store (the same log id) is
    the same hazard: the events it accepts next take the positions the store has already
    rated, and were never rated. Every stream counts (main, replay, repair): none can have
    read a position this log has not reached."""
    log_id = log.log_id()
    bound = store.log_binding()
    advice = (
        f"move {store_name} aside (the pipeline rebuilds usage from this database's log), "
        "or set QM_DATABASE_URL back to the database it came from"
    )
    if bound is not None and bound != log_id:
        raise LogMismatchError(
            f"the usage store {store_name} holds usage rated from another database's event "
            f"log (log {bound}; this database's is {log_id}): {advice}"
        )
    rated = store_rated_upto(store.streams())
    head = log.head()
    if rated > head:
        if bound is None:
            raise LogMismatchError(
                f"the usage store {store_name} has rated events up to log position {rated}, "
                f"but this database's event log ends at {head}: the store was built from "
                f"another database's log; {advice}"
            )
        raise LogMismatchError(
            f"the usage store {store_name} has rated events up to log position {rated}, but "
            f"this database's event log ends at {head}: the store is newer than the database "
            "(a database restored from an older backup, or the two taken at different "
            "times), and the events this database accepts next would take positions the "
            f"store has rated and never be rated. Move {store_name} aside (the pipeline "
            "rebuilds usage from this database's log; see docs/operations.md, Restore), or "
            "restore the database and the usage store from the same backup"
        )
    if bound is None:
        store.bind_log(log_id)


def store_rated_upto(streams: Iterable[StreamState]) -> int:
    """The highest log position any of a store's streams has read or is to read up to."""
    return max(
        (max(s.position, s.from_position, s.upto or 0) for s in streams),
        default=0,
    )


def _warn_new_store(head: int) -> None:
    """A new usage store rates the whole log: said when billing documents were finalized,
    since its results may differ from the store they were computed from (a restore without
    usage.duckdb, a store moved aside)."""
    if head > 0:
        logger.warning(
            "a new usage store: rating the event log from its start (positions 1..%d). Events "
            "the reconciliation window settled to the default cost center are decided again "
            "with the metadata and window in force now, so finalized billing documents may no "
            "longer reproduce: check GET /v1/billing/runs/{id}/reproduce (docs/usage.md, "
            "Replay)",
            head,
        )


@dataclass(frozen=True, slots=True)
class PassResult:
    events_read: int
    rated: int
    waiting: int
    resolved: int
    more: bool
    failed: int = 0  # events set aside (their rating failed), new or waiting


class PipelineWorker(BackgroundService):
    """One per runtime (`pipeline_worker(runtime)`): `run_once()` is one pass; the lock keeps
    passes, replays and drains from interleaving."""

    name = SERVICE_NAME

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        super().__init__(
            interval_seconds=settings.pipeline_interval_seconds,
            enabled=settings.pipeline_enabled,
        )
        self.runtime = runtime
        self.batch_size = settings.pipeline_batch_size
        self.window = timedelta(hours=settings.reconciliation_window_hours)
        self.lock = threading.RLock()
        self._streams_checked = False
        self._fingerprints: dict[str, Fingerprint] = {}
        self._acked: dict[str, int] = {}  # log cursors as last acknowledged by this worker
        self._pending_acks: dict[str, int] = {}  # committed in the store, not yet acknowledged
        self._last_ack = float("-inf")
        self.last_pass: PassResult | None = None
        self._unsubscribe: Callable[[], None] | None = None

    def start(self) -> None:
        """Also wake on every committed append of this process: polling every interval was
        most of the event-to-billable latency; the interval stays for other processes."""
        if self.enabled and self._unsubscribe is None:
            self._unsubscribe = self.runtime.event_log.on_append(self.wake)
        super().start()

    def stop(self, *, timeout: float = 30.0) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        super().stop(timeout=timeout)
        try:
            self.flush_acks()
        except Exception:  # the store has it; the next start acknowledges it again
            logger.exception("pipeline: acknowledging the log cursor at stop failed")

    @property
    def store(self) -> UsageStore:
        return self.runtime.usage_store

    # --- passes ------------------------------------------------------------------------------

    def run_once(self) -> bool:
        return self.run_pass_locked().more

    def run_pass_locked(self, *, settle_all: bool = False) -> PassResult:
        with self.lock:
            self._check_streams()
            self._apply_replay_requests()
            read = rated = waiting = resolved = failed = 0
            more = False
            for stream in self.store.streams():
                result = self._advance(stream)
                read += result.events_read
                rated += result.rated
                waiting += result.waiting
                failed += result.failed
                more = more or result.more
            settled, settle_failed = self._settle_waiting(force=settle_all)
            resolved += settled
            outcome = PassResult(
                read, rated + settled, waiting, resolved, more, failed + settle_failed
            )
            self.last_pass = outcome
            return outcome

    def _check_streams(self) -> None:
        """Once per worker: create the main stream, and repair a store that is behind the log
        (a new or restored usage file) by replaying the missing positions."""
        if self._streams_checked:
            return
        log = self.runtime.event_log
        check_log_binding(self.store, log, store_name=str(self.runtime.settings.usage_store_path))
        consumer = main_consumer(self.store)
        existing = self.store.streams()
        legacy = _legacy_streams(existing, consumer)
        if legacy:
            self.store.add_streams(legacy)
            existing = self.store.streams()
        cursor = log.position(consumer)
        main = next((s for s in existing if s.name == MAIN_STREAM), None)
        stored = main.position if main is not None else 0
        if main is None and cursor == 0 and log.head() > 0:
            with self.runtime.read_session_factory() as session:
                if any_finalized_documents(session=session):
                    _warn_new_store(log.head())
        if main is None or cursor > stored:
            streams = [StreamState(MAIN_STREAM, consumer, position=max(cursor, stored))]
            if cursor > stored:  # this store's own cursor: a copy restored from a backup
                logger.warning(
                    "usage store is behind the event log (%d < %d): rebuilding positions "
                    "(%d, %d] from the log",
                    stored,
                    cursor,
                    stored,
                    cursor,
                )
                repair = f"repair-{stored}-{cursor}"
                streams.append(
                    StreamState(
                        repair,
                        _new_consumer(repair),
                        position=0,
                        from_position=stored,
                        upto=cursor,
                        created_at=utc_now(),
                    )
                )
            self.store.add_streams(streams)
        if self.store.replay_requests_applied() is None:
            # A new store rates every event with the metadata in force now, as a replay
            # would: the requests made before it are done for it. (A store from before
            # requests were recorded has none to catch up on either.)
            with self.runtime.read_session_factory() as session:
                self.store.mark_replay_requests_applied(last_replay_request(session=session))
        self._streams_checked = True

    def _apply_replay_requests(self, *, started: int | None = None) -> None:
        """Replay what another server (or this one) was asked to since the store's last
        applied request, oldest first; `started` was replayed already (by `replay`)."""
        applied = self.store.replay_requests_applied() or 0
        with self.runtime.read_session_factory() as session:
            pending = replay_requests_after(applied, session=session)
        for request_id, tenant_id in pending:
            if request_id == started:
                self.store.mark_replay_requests_applied(request_id)
                continue
            try:
                self.store.start_replay(tenant_id, main_stream=MAIN_STREAM, request_id=request_id)
            except ConflictError:
                # A rebuild of the whole store is under way here: it rebuilds this tenant too.
                self.store.mark_replay_requests_applied(request_id)
                continue
            logger.info(
                "replaying usage of %s: replay request %d, made through another server or "
                "before a restart",
                f"tenant {tenant_id}" if tenant_id else "every tenant",
                request_id,
            )

    def _advance(self, stream: StreamState) -> PassResult:
        """Read the stream's next events in chunks of `READ_CHUNK` (each rated with the
        metadata as it stands when the chunk is read) until `batch_size` events or the end of
        the log, and commit them in one store transaction: big transactions let DuckDB write
        whole row groups (a commit per 50,000 events cost ~40% more), while only one chunk's
        parsed events are alive in Python at a time."""
        log = self.runtime.event_log
        cursor = self._acked.get(stream.consumer)
        if cursor is None:
            cursor = log.position(stream.consumer)
        self._acked[stream.consumer] = cursor
        if stream.position > cursor:  # committed (before a crash, or since the last ack)
            self._ack(stream.consumer, stream.position)
            cursor = stream.position
        after = max(cursor, stream.position)
        parts: list[RatedBatch] = []
        read = rated = waiting = failed = 0
        full = finish = False
        while not finish:
            limit = min(READ_CHUNK, self.batch_size - read)
            if limit <= 0:
                full = True
                break
            events = log.read_after(after, limit=limit)
            chunk_full = len(events) >= limit
            if stream.upto is not None:
                kept = [e for e in events if e.position <= stream.upto]
                finish = len(kept) < len(events) or (
                    kept[-1].position >= stream.upto if kept else after >= stream.upto
                )
                events = kept
            if events:
                read += len(events)
                after = events[-1].position
                wanted = [e for e in events if stream.wants(e.position, e.record.tenant_id)]
                rater = self._rater((e.record for e in wanted), [])
                part, rater = rated_batch(
                    rater, wanted, was_waiting=False, stream=stream.name, position=after
                )
                parts.append(part)
                rated += rater.outcomes[Outcome.ATTRIBUTED] + rater.outcomes[Outcome.UNATTRIBUTED]
                waiting += rater.outcomes[Outcome.WAITING]
                failed += rater.failed
            if not chunk_full:
                break
        if not parts and not finish:
            return PassResult(0, 0, 0, 0, False, 0)
        position = after
        if finish and stream.upto is not None:
            position = max(position, stream.upto)
        batch = combine_batches(
            parts,
            stream=stream.name,
            position=position,
            finish=finish,
            rerated=stream.upto is not None,  # a replay or repair stream
        )
        self.store.write(batch)
        self._ack(stream.consumer, position, now=finish)
        if finish:
            logger.info("replay stream %s finished at position %d", stream.name, position)
        return PassResult(
            events_read=read,
            rated=rated,
            waiting=waiting,
            resolved=0,
            more=full and not finish,
            failed=failed,
        )

    def _ack(self, consumer: str, position: int, *, now: bool = False) -> None:
        """Move the log cursor, at most every `ACK_INTERVAL_SECONDS` unless `now`: the stored
        stream position is what a pass resumes from, and each ack is a write transaction on
        the control plane that waited for ingestion's (the cursor only guards against a usage
        store that lost data, and a lagging cursor is acknowledged again on the next pass)."""
        self._pending_acks[consumer] = max(position, self._pending_acks.get(consumer, 0))
        if now or time.monotonic() - self._last_ack >= ACK_INTERVAL_SECONDS:
            self._ack_pending()

    def _ack_pending(self) -> None:
        for name, upto in list(self._pending_acks.items()):
            self._acked.pop(name, None)  # unknown until the ack below succeeds
            self.runtime.event_log.ack(name, upto)
            self._acked[name] = upto
            del self._pending_acks[name]
        self._last_ack = time.monotonic()

    def flush_acks(self) -> None:
        """Acknowledge what the store has committed (the end of a drain, a stop)."""
        with self.lock:
            self._ack_pending()

    def _settle_waiting(self, *, force: bool) -> tuple[int, int]:
        """Re-try waiting events of tenants whose metadata changed or whose earliest deadline
        passed; returns how many were rated, and how many were set aside."""
        summary = self.store.waiting_summary()
        if not summary:
            self._fingerprints.clear()
            return 0, 0
        now = utc_now()
        with self.runtime.read_session_factory() as session:
            prints = metadata_fingerprints(summary, session=session)
        due = [
            tenant_id
            for tenant_id, (_count, earliest) in summary.items()
            if force or earliest <= now or prints[tenant_id] != self._fingerprints.get(tenant_id)
        ]
        if not due:
            return 0, 0
        waiting = self.store.waiting_events(due)
        rater = self._rater((w for w in waiting), due)
        batch, rater = rated_batch(rater, waiting, was_waiting=True, stream=None, position=None)
        if rater.resolved:
            self.store.write(batch)
        for tenant_id in due:
            self._fingerprints[tenant_id] = prints[tenant_id]
        return rater.resolved - rater.failed, rater.failed

    def _rater(
        self, records: Iterable[LogRecord | WaitingEvent], extra_tenants: Iterable[str]
    ) -> BatchRater:
        """Snapshots and meters of the tenants in the batch, taken once for the whole batch.
        `now` is read before loading, so nothing in the snapshot is newer than it."""
        now = utc_now()
        tenants: dict[str, set[str]] = {t: set() for t in extra_tenants}
        for record in records:
            ids = tenants.setdefault(record.tenant_id, set())
            if record.resource_id is not None:
                ids.add(record.resource_id)
        snapshots: dict[str, MetadataSnapshot] = {}
        meters: dict[str, MeterSet] = {}
        with self.runtime.read_session_factory() as session:
            for tenant_id, resource_ids in tenants.items():
                snapshots[tenant_id] = load_snapshot(
                    tenant_id, resource_ids=resource_ids, session=session
                )
                meters[tenant_id] = load_meter_set(tenant_id, session=session)
        return BatchRater(snapshots=snapshots, meters=meters, now=now, window=self.window)

    # --- operations --------------------------------------------------------------------------

    def replay(self, tenant_id: str | None, *, requested_by: str = "system") -> StreamState:
        """Drop the tenant's usage (None: all tenants) and rebuild it from the log; the
        rebuild runs in the following passes. The request is recorded for the other servers
        of the database, whose pipelines replay it too (`_apply_replay_requests`)."""
        with self.lock:
            self._check_streams()
            state = self.store.start_replay(tenant_id, main_stream=MAIN_STREAM)
            with self.runtime.session_factory() as session:
                request_id = record_replay_request(tenant_id, requested_by, session=session)
            # The requests before this one the store has not applied (another server's) are
            # replayed too, in order, and this one's id is marked: its replay started above.
            self._apply_replay_requests(started=request_id)
        self.wake()
        return state

    def drain(self, *, timeout_seconds: float = 600.0, settle: bool = True) -> int:
        """Run passes until every stream has caught up with the log; returns events read."""
        deadline = time.monotonic() + timeout_seconds
        total = 0
        while True:
            result = self.run_pass_locked(settle_all=settle)
            total += result.events_read
            if not result.more and self._caught_up():
                self.flush_acks()
                return total
            if time.monotonic() > deadline:
                raise TimeoutError(f"pipeline did not drain within {timeout_seconds}s")

    def _caught_up(self) -> bool:
        head = self.runtime.event_log.head()
        for stream in self.store.streams():
            if stream.upto is not None:
                return False
            if stream.position < head:
                return False
        return True

    def close(self) -> None:
        """The store belongs to the runtime, which closes it."""


def rated_batch(
    rater: BatchRater,
    events: Sequence[LoggedEvent] | Sequence[WaitingEvent],
    *,
    was_waiting: bool,
    stream: str | None,
    position: int | None,
) -> tuple[RatedBatch, BatchRater]:
    """Rate `events` (new from the log, or waiting ones re-tried) with `rater`, setting aside
    each event whose rating raises, and the batch with the rater that made it.

    One event never stops the pipeline: it is recorded as failed (docs/usage.md) and the
    events after it are rated. Rating only computes (the rater's metadata was read before),
    so what raises here is the event's own fault or a bug, never a database outage; the
    store's write, which can meet one, raises to the pass, which is retried. Should the batch
    itself not build (a value no check foresaw), the events are tried one at a time to find
    the ones at fault."""
    if was_waiting:
        for event in events:
            _add(rater, event, was_waiting=True)
    else:  # the hot loop, inlined: one call per event fewer
        add = rater.add
        # Parsed one at a time: a chunk's data is never all alive.
        for logged in cast("Sequence[LoggedEvent]", events):
            try:
                add(parse_logged(logged))
            except MemoryError:
                raise
            except Exception as exc:
                _set_aside(rater, logged.record, logged.position, exc, was_waiting=False)
    try:
        return rater.batch(stream=stream, position=position, finish=False), rater
    except MemoryError:
        raise
    except Exception:
        logger.exception(
            "pipeline: a batch of %d event(s) did not build; rating them one at a time to set "
            "aside the ones at fault",
            len(events),
        )
    isolated = rater.fresh()
    for event in events:
        probe = rater.fresh()
        _add(probe, event, was_waiting=was_waiting)
        try:
            probe.batch(stream=stream, position=position, finish=False)
        except MemoryError:
            raise
        except Exception as exc:
            record = waiting_record(event) if isinstance(event, WaitingEvent) else event.record
            _set_aside(isolated, record, event.position, exc, was_waiting=was_waiting)
            continue
        _add(isolated, event, was_waiting=was_waiting)
    return isolated.batch(stream=stream, position=position, finish=False), isolated


def _add(rater: BatchRater, event: LoggedEvent | WaitingEvent, *, was_waiting: bool) -> None:
    """Rate one event, or set it aside when its rating raises."""
    try:
        if isinstance(event, WaitingEvent):
            rater.add(from_waiting(event), was_waiting=True)
        else:
            rater.add(parse_logged(event), was_waiting=was_waiting)
    except MemoryError:
        raise
    except Exception as exc:
        record = waiting_record(event) if isinstance(event, WaitingEvent) else event.record
        _set_aside(rater, record, event.position, exc, was_waiting=was_waiting)


def _set_aside(
    rater: BatchRater, record: LogRecord, position: int, exc: Exception, *, was_waiting: bool
) -> None:
    if isinstance(exc, QuantityOutOfRangeError):
        reason = str(exc)
        logger.warning(
            "pipeline: set aside event %s of tenant %s at log position %d: %s",
            record.event_id,
            record.tenant_id,
            position,
            reason,
        )
    else:
        reason = f"{type(exc).__name__}: {exc}"
        logger.error(
            "pipeline: set aside event %s of tenant %s at log position %d: rating it failed",
            record.event_id,
            record.tenant_id,
            position,
            exc_info=exc,
        )
    rater.set_aside(record, position, reason, was_waiting=was_waiting)


def combine_batches(
    parts: Sequence[RatedBatch],
    *,
    stream: str | None,
    position: int | None,
    finish: bool,
    rerated: bool = False,
) -> RatedBatch:
    """Several rated chunks as one batch (one store transaction), in their order; `rerated`
    for a replay or repair stream's, whose events were rated once before."""
    if len(parts) == 1:
        only = parts[0]
        return RatedBatch(
            stream=stream,
            position=position,
            events=only.events,
            usage=only.usage,
            markers=only.markers,
            costs=only.costs,
            waiting_added=only.waiting_added,
            waiting_resolved=only.waiting_resolved,
            failed=only.failed,
            finish_stream=finish,
            rerated=rerated,
        )

    def concat(name: str, schema: pa.Schema) -> pa.Table:
        tables = [getattr(p, name) for p in parts]
        return pa.concat_tables(tables) if tables else schema.empty_table()

    return RatedBatch(
        stream=stream,
        position=position,
        events=concat("events", EVENT_SCHEMA),
        usage=concat("usage", USAGE_SCHEMA),
        markers=concat("markers", MARKER_SCHEMA),
        costs=concat("costs", COST_SCHEMA),
        waiting_added=concat("waiting_added", WAITING_SCHEMA),
        waiting_resolved=tuple(i for p in parts for i in p.waiting_resolved),
        failed=concat("failed", FAILED_SCHEMA),
        finish_stream=finish,
        rerated=rerated,
    )


def rated_until(
    store: UsageStore, log: EventLog, *, clock: Callable[[], datetime] = utc_now
) -> datetime:
    """The moment before which every event the log holds was read into the store (rated,
    waiting or set aside): the `recorded_at` of the first event one of the store's streams
    (the main one, a replay or a repair) has still to read, or now when all have read the
    whole log. Appends become visible in position order, so an event recorded earlier than
    that one minus the ingest settle (`billing.sources.DEFAULT_SETTLE`) has a lower position
    and is read; the caller subtracts the settle."""
    now = clock()  # before the reads: whatever is appended after them is after `now`
    until = now
    streams = store.streams() or [StreamState(MAIN_STREAM, main_consumer(store), position=0)]
    for stream in streams:
        unread = log.read_after(max(stream.position, stream.from_position), limit=1)
        if unread and (stream.upto is None or unread[0].position <= stream.upto):
            until = min(until, unread[0].record.recorded_at)
    return until


def pipeline_worker(runtime: Runtime) -> PipelineWorker:
    """The runtime's one pipeline worker (two would read the same log cursor)."""
    return runtime.service(SERVICE_NAME, PipelineWorker, lambda: PipelineWorker(runtime))


def run_pipeline_until_drained(runtime: Runtime, *, timeout_seconds: float = 600.0) -> int:
    """Process everything in the log now (tests, the demo, `qm pipeline replay --wait`),
    including a re-try of every waiting event; returns how many log events were read."""
    return pipeline_worker(runtime).drain(timeout_seconds=timeout_seconds)
