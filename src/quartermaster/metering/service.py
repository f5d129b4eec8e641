"""Ingestion: validate a batch, then store it and its reconciliation counters in one transaction.

A 2xx from the API means `ingest_events` returned, which means the transaction that appended
the events (and claimed their (source, id) for dedup) and counted them has committed.
"""

from __future__ import annotations

import functools
import threading
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any, Protocol, cast

from sqlalchemy import Table, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from quartermaster.bus.models import EventLogEntry
from quartermaster.bus.protocol import AppendResult, LogRecord, PreparedAppend
from quartermaster.catalog.lease_tokens import LeaseClaims
from quartermaster.catalog.models import App, ResourceLease
from quartermaster.catalog.resources import bindings_of_resources
from quartermaster.catalog.signing_keys import (
    signature_policies_among,
    signing_keys_by_id,
    team_apps_among,
)
from quartermaster.config import Settings
from quartermaster.domain.timeutil import floor_hour, utc_now
from quartermaster.guardrails.gate import refuse_event_apps
from quartermaster.metering.models import ReconciliationCounter
from quartermaster.metering.signing import HmacSha256
from quartermaster.metering.validation import (
    AcceptedEvent,
    Rejection,
    RejectReason,
    ResourceBinding,
    ValidationContext,
    VerifyingKey,
    collect_references,
    validate_batch,
    verify_leases,
)
from quartermaster.runtime import Runtime
from quartermaster.tenancy.models import Role
from quartermaster.tenancy.service import AuthContext

# How long an unsealed signing key and an app's "requires signatures" flag are reused. A key
# retired (or a requirement switched on) takes effect for new batches within this time.
LOOKUP_CACHE_TTL_SECONDS = 5.0
_CACHE_MAX_ENTRIES = 50_000
# A write that loses a race on the dedup claim (another process committed the same key first)
# is retried from the start of the transaction; the retry then sees the event as a duplicate.
MAX_WRITE_ATTEMPTS = 5

STAGE_RECEIVED = "received"
STAGE_ACCEPTED = "accepted"
STAGE_DUPLICATE = "duplicate"
STAGE_REJECTED = "rejected"


class _TtlCache:
    def __init__(self, ttl_seconds: float, clock: Callable[[], float]) -> None:
        self._ttl = ttl_seconds
        self._clock = clock
        self._entries: dict[tuple[str, str], tuple[float, Any]] = {}

    def get(self, key: tuple[str, str]) -> tuple[bool, Any]:
        entry = self._entries.get(key)
        if entry is None or entry[0] < self._clock():
            return False, None
        return True, entry[1]

    def put(self, key: tuple[str, str], value: Any) -> None:
        if len(self._entries) >= _CACHE_MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = (self._clock() + self._ttl, value)


class IngestState:
    """Ingestion's per-application state, kept in `app.state` (never module-global): the
    short-lived lookup caches, and the lock serializing this process's event-log writes (the
    log's appends are serialized anyway; queueing here avoids SQLite's sleep-and-retry on a
    busy database and PostgreSQL lock waits holding pool connections)."""

    def __init__(
        self,
        *,
        ttl_seconds: float = LOOKUP_CACHE_TTL_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.write_lock = threading.Lock()
        # Batches validated and waiting for the writer (group commit, see `_store`).
        self.queue_lock = threading.Lock()
        self.pending: list[_WriteJob] = []
        self._lock = threading.Lock()
        self._keys = _TtlCache(ttl_seconds, clock)
        self._signature_policies = _TtlCache(ttl_seconds, clock)

    def signing_keys(
        self,
        tenant_id: str,
        key_ids: Collection[str],
        *,
        lookups: IngestLookups,
        session: _LookupSession,
    ) -> dict[str, VerifyingKey]:
        found: dict[str, VerifyingKey] = {}
        missing: list[str] = []
        with self._lock:
            for key_id in key_ids:
                hit, key = self._keys.get((tenant_id, key_id))
                if hit:
                    found[key_id] = key
                else:
                    missing.append(key_id)
        if missing:
            infos = signing_keys_by_id(
                tenant_id, missing, server_key=lookups.server_key, session=session.open()
            )
            fresh = {
                key_id: VerifyingKey(key_id, info.app_id, HmacSha256(info.secret))
                for key_id, info in infos.items()
            }
            with self._lock:
                for key_id, key in fresh.items():  # unknown ids are not cached: a new key works
                    self._keys.put((tenant_id, key_id), key)
            found.update(fresh)
        return found

    def signature_policies(
        self, tenant_id: str, app_ids: Collection[str], *, session: _LookupSession
    ) -> dict[str, bool]:
        """The registered apps among `app_ids`, each with whether it requires signed events
        (an unregistered app is cached as such too: registering it takes effect within the
        cache's lifetime)."""
        policies: dict[str, bool] = {}
        missing: list[str] = []
        with self._lock:
            for app_id in app_ids:
                hit, required = self._signature_policies.get((tenant_id, app_id))
                if not hit:
                    missing.append(app_id)
                elif required is not None:
                    policies[app_id] = required
        if missing:
            fresh = signature_policies_among(tenant_id, missing, session=session.open())
            with self._lock:
                for app_id in missing:
                    self._signature_policies.put((tenant_id, app_id), fresh.get(app_id))
            policies.update(fresh)
        return policies


class _LookupSession:
    """A read-only session for the lookups a batch needs, opened only when a cache misses.
    Read-only sessions take no lock on SQLite (a deferred transaction reading the last
    commit), so a batch's lookups never wait for the writer."""

    def __init__(self, lookups: IngestLookups) -> None:
        self._lookups = lookups
        self._session: Session | None = None

    def open(self) -> Session:
        if self._session is None:
            self._session = self._lookups.read_session_factory()
        return self._session

    def __enter__(self) -> _LookupSession:
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._session is not None:
            self._session.close()
            self._session = None


@dataclass(slots=True)
class IngestReport:
    accepted: int
    duplicates: int
    rejected: list[Rejection] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": [r.as_dict() for r in self.rejected],
        }


class IngestLookups(Protocol):
    """What validating a batch reads: the settings, the server key (lease tokens, sealed
    signing keys) and read-only sessions. A `Runtime` is one; a validation worker process
    (metering/offload.py) builds its own."""

    @property
    def settings(self) -> Settings: ...

    @property
    def server_key(self) -> bytes: ...

    @property
    def read_session_factory(self) -> sessionmaker[Session]: ...


@dataclass(slots=True)
class ValidatedBatch:
    """A request's events after validation, before storage: the valid ones as log records
    (with their index in the request) and the rejected ones with their reasons."""

    tenant_id: str
    received_at: datetime
    received: int
    accepted: Sequence[AcceptedEvent]
    rejected: list[Rejection]
    # The accepted records as `EventLog.prepare` makes them, when that was done already (by a
    # validation worker, off the server's interpreter); otherwise the append prepares them.
    prepared: PreparedAppend | None = None


def ingest_events(
    raw_events: Sequence[object],
    *,
    caller: AuthContext,
    runtime: Runtime,
    state: IngestState | None = None,
) -> IngestReport:
    """Validate each event, then append the valid ones to the event log (dedup claimed in the
    same transaction) and count every event in the reconciliation counters, and commit."""
    state = state or IngestState()
    batch = validate_ingest(raw_events, caller=caller, lookups=runtime, state=state)
    batch = refuse_gated(batch, caller=caller, runtime=runtime)
    return store_validated(batch, runtime=runtime, state=state)


def refuse_gated(batch: ValidatedBatch, *, caller: AuthContext, runtime: Runtime) -> ValidatedBatch:
    """The batch with the valid events of apps under a budget throttle or over their rate
    limit moved to its rejections (`throttled`, `rate_limited`), whoever sent them; the other
    apps' events are kept. Reads no event's app unless such a throttle or limit exists."""
    accepted = batch.accepted
    refused = refuse_event_apps(
        runtime, caller, lambda: {a for e in accepted if (a := e.record.app_id) is not None}
    )
    if not refused:
        return batch
    kept: list[AcceptedEvent] = []
    rejected = list(batch.rejected)
    for event in accepted:
        refusal = refused.get(event.record.app_id or "")
        if refusal is None:
            kept.append(event)
            continue
        rejected.append(
            Rejection(
                index=event.event_index,
                id=event.record.event_id,
                field="data.app_id",
                reason=RejectReason(refusal.reason),
                message=refusal.message,
            )
        )
    rejected.sort(key=lambda r: r.index)
    # The records prepared for the log (by a validation worker) held the refused ones: the
    # append prepares the kept ones again (only when something was refused).
    return ValidatedBatch(batch.tenant_id, batch.received_at, batch.received, kept, rejected)


def validate_ingest(
    raw_events: Sequence[object],
    *,
    caller: AuthContext,
    lookups: IngestLookups,
    state: IngestState,
) -> ValidatedBatch:
    """Check each event on its own (validation.py), with the signing keys, apps and leases
    the batch refers to looked up once."""
    settings = lookups.settings
    received_at = utc_now()
    tenant_id = caller.tenant_id
    refs = collect_references(raw_events)
    leases = verify_leases(refs.lease_tokens, server_key=lookups.server_key, tenant_id=tenant_id)
    claims = [c for c in leases.values() if isinstance(c, LeaseClaims)]
    with _LookupSession(lookups) as lookup:
        keys = state.signing_keys(tenant_id, refs.key_ids, lookups=lookups, session=lookup)
        bindings = _resource_bindings(tenant_id, refs.resources_without_app, session=lookup)
        policies = state.signature_policies(
            tenant_id,
            refs.app_ids | refs.source_apps | {c.app_id for c in claims},
            session=lookup,
        )
        revoked = _revoked_leases(tenant_id, {c.lease_id for c in claims}, session=lookup)
        team_apps = None
        if caller.role is Role.TEAM_MEMBER:
            named = refs.app_ids | {c.app_id for c in claims}
            team_apps = team_apps_among(
                tenant_id, caller.team_id or "", named, session=lookup.open()
            )
    ctx = ValidationContext(
        tenant_id=tenant_id,
        received_at=received_at,
        max_future_skew=timedelta(seconds=settings.max_future_skew_seconds),
        late_after=timedelta(seconds=settings.late_after_seconds),
        caller_role=caller.role,
        caller_app=caller.app_slug if caller.role is Role.APP else None,
        caller_team_apps=team_apps,
        signing_keys=keys,
        apps_requiring_signatures={app for app, required in policies.items() if required},
        registered_source_apps=refs.source_apps & policies.keys(),
        leases=leases,
        revoked_leases=revoked,
        resource_bindings=bindings,
    )
    accepted, rejected = validate_batch(raw_events, ctx)
    return ValidatedBatch(tenant_id, received_at, len(raw_events), accepted, rejected)


def store_validated(batch: ValidatedBatch, *, runtime: Runtime, state: IngestState) -> IngestReport:
    """Append the batch's valid events and add its counts, in a committed transaction (maybe
    shared with other requests' batches); the report of the request."""
    accepted = batch.accepted
    result = _store(
        batch.prepared or [event.record for event in accepted],
        batch.received,
        batch.rejected,
        tenant_id=batch.tenant_id,
        hour=floor_hour(batch.received_at),
        runtime=runtime,
        state=state,
    )
    conflicts = [
        Rejection(
            index=event.event_index,
            id=event.record.event_id,
            field="id",
            reason=RejectReason.CONFLICT,
            message=(
                f"an event with source {event.record.source!r} and id"
                f" {event.record.event_id!r} was already stored with different content"
            ),
        )
        for event in (accepted[i] for i in result.conflicts)
    ]
    all_rejected = sorted([*batch.rejected, *conflicts], key=lambda r: r.index)
    return IngestReport(
        accepted=len(result.appended), duplicates=len(result.duplicates), rejected=all_rejected
    )


@dataclass(slots=True)
class _WriteJob:
    """One request's validated batch, waiting for the transaction that stores it."""

    records: Sequence[LogRecord] | PreparedAppend
    counts: Counter[tuple[str, str]]
    tenant_id: str
    hour: datetime
    done: bool = False
    result: AppendResult | None = None
    error: BaseException | None = None


def _store(
    records: Sequence[LogRecord] | PreparedAppend,
    received: int,
    rejected: list[Rejection],
    *,
    tenant_id: str,
    hour: datetime,
    runtime: Runtime,
    state: IngestState,
) -> AppendResult:
    """Store one batch, possibly in a transaction shared with other requests' batches (group
    commit: the batches that queued while the previous transaction ran share the next one and
    its commit). Returns once the transaction holding this batch has committed."""
    counts: Counter[tuple[str, str]] = Counter()
    counts[(STAGE_RECEIVED, "")] = received
    for rejection in rejected:
        counts[(STAGE_REJECTED, rejection.reason.value)] += 1
    # Unprepared records are prepared by the append, under the write lock: preparing them
    # here, in the request's thread, measured slower (the threads' turns at the GIL then
    # delay the writer's return from each SQLite call).
    job = _WriteJob(records, counts, tenant_id, hour)
    with state.queue_lock:
        state.pending.append(job)
    with state.write_lock:
        if not job.done:  # nobody took it yet: lead a group of every batch waiting now
            with state.queue_lock:
                group, state.pending = state.pending, []
            _write_group(group, runtime=runtime)
    if job.error is not None:
        raise job.error
    assert job.result is not None
    return job.result


def _write_group(group: list[_WriteJob], *, runtime: Runtime) -> None:
    """Store the group's batches in one transaction; if that fails, each batch in its own
    transaction, so that one batch's failure is reported to its request only. Every job is
    done on return, or carries the error that interrupted the writer."""
    try:
        _write_group_once(group, runtime=runtime)
    except BaseException as exc:  # e.g. interrupted: no request may wait for a result
        for job in group:
            if not job.done:
                job.error = exc
                job.done = True
        raise


def _write_group_once(group: list[_WriteJob], *, runtime: Runtime) -> None:
    try:
        results = _write_batches(group, runtime=runtime)
    except Exception as exc:
        if len(group) == 1:
            group[0].error = exc
            group[0].done = True
            return
        for job in group:
            try:
                job.result = _write_batches([job], runtime=runtime)[0]
            except Exception as single_exc:
                job.error = single_exc
            job.done = True
        return
    for job, result in zip(group, results, strict=True):
        job.result = result
        job.done = True


def _write_batches(jobs: list[_WriteJob], *, runtime: Runtime) -> list[AppendResult]:
    """Append each batch in order (a later batch sees an earlier one's events as stored) and
    add every batch's counts, in one transaction; commit."""
    for attempt in range(1, MAX_WRITE_ATTEMPTS + 1):
        with runtime.session_factory() as session:
            try:
                results = []
                totals: dict[tuple[str, datetime], Counter[tuple[str, str]]] = {}
                for job in jobs:
                    result = runtime.event_log.append(job.records, session=session)
                    results.append(result)
                    counts = totals.setdefault((job.tenant_id, job.hour), Counter())
                    counts.update(job.counts)
                    counts[(STAGE_ACCEPTED, "")] += len(result.appended)
                    counts[(STAGE_DUPLICATE, "")] += len(result.duplicates)
                    counts[(STAGE_REJECTED, RejectReason.CONFLICT.value)] += len(result.conflicts)
                for (tenant_id, hour), counts in sorted(totals.items()):  # one lock order
                    add_to_counters(tenant_id, hour, counts, session=session)
                session.commit()
                return results
            except IntegrityError:
                session.rollback()
                if attempt == MAX_WRITE_ATTEMPTS:
                    raise
    raise AssertionError("unreachable: the last attempt returns or raises")


def add_to_counters(
    tenant_id: str, hour: datetime, counts: Mapping[tuple[str, str], int], *, session: Session
) -> None:
    """Add `counts` ((stage, reason) -> n) to the tenant's counters of `hour`, inside the
    caller's transaction (no commit: the counts must commit with the work they count)."""
    rows = [
        {"tenant_id": tenant_id, "hour": hour, "stage": stage, "reason": reason, "count": n}
        for (stage, reason), n in sorted(counts.items())  # one lock order for every writer
        if n
    ]
    if not rows:
        return
    session.execute(_counter_upsert(session.get_bind().dialect.name), rows)


@functools.cache
def _counter_upsert(dialect: str) -> Any:
    """The counters' upsert, one statement per dialect: executed with many parameter sets,
    SQLAlchemy compiles it once (a multi-row VALUES statement was compiled anew per write,
    ~1.7 ms of the event-log writer's ~20 per batch)."""
    table = cast(Table, ReconciliationCounter.__table__)
    if dialect == "postgresql":
        stmt: Any = postgresql.insert(table)
    elif dialect == "sqlite":
        stmt = sqlite.insert(table)
    else:
        raise RuntimeError(f"reconciliation counters do not support the {dialect} dialect")
    return stmt.on_conflict_do_update(
        index_elements=[table.c.tenant_id, table.c.hour, table.c.stage, table.c.reason],
        set_={"count": table.c.count + stmt.excluded["count"]},
    )


def _revoked_leases(
    tenant_id: str, lease_ids: Collection[str], *, session: _LookupSession
) -> dict[str, datetime]:
    if not lease_ids:
        return {}
    rows = session.open().execute(
        select(ResourceLease.id, ResourceLease.revoked_at).where(
            ResourceLease.tenant_id == tenant_id,
            ResourceLease.id.in_(sorted(lease_ids)),
            ResourceLease.revoked_at.is_not(None),
        )
    )
    return {lease_id: revoked_at for lease_id, revoked_at in rows if revoked_at is not None}


def _resource_bindings(
    tenant_id: str, resource_ids: Collection[str], *, session: _LookupSession
) -> dict[str, list[ResourceBinding]]:
    if not resource_ids:
        return {}
    bindings: dict[str, list[ResourceBinding]] = {}
    for span in bindings_of_resources(tenant_id, resource_ids, session=session.open()):
        binding = ResourceBinding(span.valid_from, span.valid_to, span.app_id)
        bindings.setdefault(span.resource_id, []).append(binding)
    return bindings


@dataclass(frozen=True, slots=True)
class HourCounts:
    """One hour of a tenant's counters: totals per stage, and per reason where one is set."""

    hour: datetime
    stages: dict[str, int]
    reasons: dict[str, dict[str, int]]

    def as_dict(self) -> dict[str, object]:
        return {"hour": self.hour, "stages": self.stages, "reasons": self.reasons}


def reconciliation(
    tenant_id: str, start: datetime, end: datetime, *, session: Session
) -> list[HourCounts]:
    """The tenant's counters for hours in [start, end), oldest first."""
    rows = session.execute(
        select(
            ReconciliationCounter.hour,
            ReconciliationCounter.stage,
            ReconciliationCounter.reason,
            ReconciliationCounter.count,
        )
        .where(
            ReconciliationCounter.tenant_id == tenant_id,
            ReconciliationCounter.hour >= start,
            ReconciliationCounter.hour < end,
        )
        .order_by(ReconciliationCounter.hour, ReconciliationCounter.stage)
    )
    hours: dict[datetime, HourCounts] = {}
    for hour, stage, reason, count in rows:
        entry = hours.get(hour)
        if entry is None:
            entry = hours[hour] = HourCounts(hour=hour, stages={}, reasons={})
        entry.stages[stage] = entry.stages.get(stage, 0) + count
        if reason:
            entry.reasons.setdefault(stage, {})[reason] = count
    return list(hours.values())


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: int
    recorded_at: datetime
    app_id: str | None
    resource_id: str | None
    late: bool
    payload: str


def recent_events(
    caller: AuthContext, *, after: int | None, limit: int, session: Session
) -> list[StoredEvent]:
    """The caller's tenant's events from the log, oldest first: those after `position`, or the
    newest `limit` when `after` is None. A team member sees only the events of its team's apps."""
    entry = EventLogEntry
    query = select(
        entry.position,
        entry.recorded_at,
        entry.app_id,
        entry.resource_id,
        entry.late,
        entry.payload,
    ).where(entry.tenant_id == caller.tenant_id)
    if caller.role is Role.TEAM_MEMBER:
        team_apps = select(App.app_id).where(
            App.tenant_id == caller.tenant_id, App.team_id == caller.team_id
        )
        query = query.where(entry.app_id.in_(team_apps))
    if after is None:
        query = query.order_by(entry.position.desc()).limit(limit)
    else:
        query = query.where(entry.position > after).order_by(entry.position).limit(limit)
    # Rows are streamed (a server-side cursor on PostgreSQL) and the page ends once its
    # payloads pass EVENTS_PAGE_BYTES, after at least one event: a thousand events of 5 MB
    # each would otherwise be read, parsed and answered as one response of gigabytes.
    events: list[StoredEvent] = []
    size = 0
    rows = session.execute(query.execution_options(yield_per=_PAGE_ROWS_PER_FETCH))
    try:
        for row in rows:
            stored = len(row.payload.encode())  # bytes, as answered: an emoji is four
            if events and size + stored > EVENTS_PAGE_BYTES:
                break
            events.append(StoredEvent(*row))
            size += stored
    finally:
        rows.close()  # the cursor of the rows not read
    return sorted(events, key=lambda e: e.position)


# The payload bytes (UTF-8) of one page of the log (`recent_events`) past which it ends.
EVENTS_PAGE_BYTES = 4 * 1024 * 1024
_PAGE_ROWS_PER_FETCH = 64
