"""The pipeline end to end on both control-plane backends: log -> attribution -> rating ->
usage store, the reconciliation window, dated ownership, leases, crashes, accounting."""

from __future__ import annotations

import shutil
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest
from sqlalchemy import delete, update

from quartermaster.bus.models import ConsumerCursor, EventLogEntry
from quartermaster.domain.timeutil import Period, floor_hour, utc_now
from quartermaster.runtime import Runtime, build_runtime
from quartermaster.usage.accounting import pipeline_accounting
from quartermaster.usage.pipeline import (
    MAIN_CONSUMER,
    MAIN_STREAM,
    LogMismatchError,
    check_log_binding,
    main_consumer,
    pipeline_worker,
    run_pipeline_until_drained,
)
from quartermaster.usage.store import StreamState, UsageTotal
from tests.conftest import _new_database
from tests.usage.conftest import Platform
from tests.usage.test_api import finalize_a_document

INVOCATION = "qm.invocation.usage"
RESOURCE = "qm.resource.usage"
H = timedelta(hours=1)


def totals(platform: Platform, period: Period | None = None) -> dict[tuple[str, ...], UsageTotal]:
    now = utc_now()
    period = period or Period(now - timedelta(days=200), now + timedelta(days=1))
    rows = platform.runtime.usage_store.quantities(platform.tenant_id, period)
    return {(t.cost_center, t.team, t.app, t.meter): t for t in rows}


def test_attribution_priorities_through_the_pipeline(platform: Platform) -> None:
    now = utc_now()
    t = now - 3 * H
    platform.app("bot", team="ds", cost_center="research", created_at=now - 48 * H)
    platform.app("web", team="front", cost_center="ops", created_at=now - 48 * H)
    platform.resource("vm-1", app_id="web", valid_from=now - 48 * H, created_at=now - 48 * H)
    platform.override("staging", cost_center="sandbox", created_at=now - 48 * H)
    platform.append(
        [
            platform.event(INVOCATION, {"app_id": "bot", "tokens": 5}, event_time=t),
            platform.event(RESOURCE, {"resource_id": "vm-1", "cpu_seconds": "2.5"}, event_time=t),
            platform.event(
                RESOURCE,
                {"resource_id": "vm-9", "environment": "staging", "cpu_seconds": 4},
                event_time=t,
            ),
            platform.event(RESOURCE, {"resource_id": "vm-x", "cpu_seconds": 1}, event_time=t),
        ]
    )
    assert run_pipeline_until_drained(platform.runtime) == 4
    got = totals(platform)
    assert got[("research", "ds", "bot", "tokens")].quantity_sum == 5
    assert got[("ops", "front", "web", "cpu_seconds")].quantity_sum == Decimal("2.5")
    assert got[("sandbox", "", "", "cpu_seconds")].quantity_sum == 4
    assert ("default", "", "", "cpu_seconds") not in got  # vm-x waits for its metadata
    assert platform.runtime.usage_store.waiting_summary()[platform.tenant_id][0] == 1
    explained = platform.runtime.usage_store.top_events(
        platform.tenant_id, Period(t, t + H), app="web", meter="cpu_seconds"
    )
    assert [(e.method, e.resource_id) for e in explained] == [("resource", "vm-1")]


def test_reconciliation_window(platform: Platform) -> None:
    now = utc_now()
    waiting = platform.event(INVOCATION, {"app_id": "newbie", "tokens": 7}, event_time=now - H)
    expired = platform.event(
        INVOCATION,
        {"app_id": "ghost", "tokens": 3},
        event_time=now - 30 * H,
        recorded_at=now - 25 * H,
        late=True,
    )
    platform.append([waiting, expired])
    run_pipeline_until_drained(platform.runtime)
    store = platform.runtime.usage_store
    got = totals(platform)
    unattributed = got[("default", "", "", "tokens")]
    assert (unattributed.quantity_sum, unattributed.unattributed) == (3, True)
    assert store.waiting_summary()[platform.tenant_id][0] == 1
    # The metadata arrives within the window: the event is attributed from that moment.
    arrived = utc_now()
    platform.app("newbie", team="ds", cost_center="research", created_at=arrived)
    run_pipeline_until_drained(platform.runtime)
    got = totals(platform)
    assert got[("research", "ds", "newbie", "tokens")].quantity_sum == 7
    assert store.waiting_summary() == {}
    rows = store.top_events(
        platform.tenant_id,
        Period(now - 2 * H, now),
        app="newbie",
        meter="tokens",
    )
    assert rows[0].billable_at == arrived
    assert rows[0].recorded_at == waiting.recorded_at
    latency = store.latency(platform.tenant_id, since=now - 48 * H)
    assert latency.waited == 2  # the two events that waited are kept out of the percentiles


def test_dated_ownership_splits_a_period_between_owners(platform: Platform) -> None:
    now = utc_now()
    start = floor_hour(now) - 10 * H
    platform.app("bot", team="ds", cost_center="research", created_at=start - 48 * H)
    moved = start + 5 * H
    platform.move("bot", team="front", cost_center="ops", at=moved)
    platform.append(
        [
            platform.event(INVOCATION, {"app_id": "bot", "tokens": 1}, event_time=start + i * H)
            for i in range(10)
        ]
    )
    run_pipeline_until_drained(platform.runtime)
    got = totals(platform, Period(start, start + 10 * H))
    assert got[("research", "ds", "bot", "tokens")].quantity_sum == 5
    assert got[("ops", "front", "bot", "tokens")].quantity_sum == 5


def test_lease_attributed_usage_after_the_resource_is_gone(platform: Platform) -> None:
    now = utc_now()
    platform.app("tmp", team="ds", cost_center="research", created_at=now - 10 * H)
    platform.resource(
        "pod-7", app_id="tmp", valid_from=now - 9 * H, valid_to=now - 8 * H, created_at=now - 9 * H
    )
    # Ingestion put the lease's verified app into LogRecord.app_id; the data names no app.
    record = platform.event(
        RESOURCE,
        {"resource_id": "pod-7", "cpu_seconds": 9},
        event_time=now - 2 * H,
        app_id="tmp",
        lease="lease-token",
    )
    platform.append([record])
    run_pipeline_until_drained(platform.runtime)
    rows = platform.runtime.usage_store.top_events(
        platform.tenant_id, Period(now - 3 * H, now), app="tmp", meter="cpu_seconds"
    )
    assert [(r.method, r.cost_center, r.quantity) for r in rows] == [("lease_token", "research", 9)]


def test_lifecycle_markers_and_platform_costs(platform: Platform) -> None:
    now = utc_now()
    platform.app("bot", team="ds", cost_center="research", created_at=now - 10 * H)
    platform.resource("vm-1", app_id="bot", valid_from=now - 10 * H, created_at=now - 10 * H)
    lifecycle = "qm.resource.lifecycle"
    platform.append(
        [
            platform.event(
                lifecycle, {"resource_id": "vm-1", "action": "deploy"}, event_time=now - 3 * H
            ),
            platform.event(
                lifecycle,
                {"resource_id": "vm-1", "action": "scale", "replicas": 3},
                event_time=now - 2 * H,
            ),
            platform.event(
                "qm.platform.cost", {"cost_type": "lb", "amount": "12.50"}, event_time=now - H
            ),
        ]
    )
    run_pipeline_until_drained(platform.runtime)
    store = platform.runtime.usage_store
    period = Period(now - 5 * H, now)
    markers = store.lifecycle_markers(platform.tenant_id, period, app="bot")
    assert [(m.action, m.replicas) for m in markers] == [("deploy", None), ("scale", 3)]
    costs = store.platform_costs(platform.tenant_id, period)
    assert [(c.cost_type, c.amount, c.currency) for c in costs] == [("lb", Decimal("12.5"), "USD")]


def test_crash_between_commit_and_ack_does_not_double_count(
    platform: Platform, usage_runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = utc_now()
    platform.app("bot", team="ds", cost_center="research", created_at=now - 10 * H)
    platform.append(
        [
            platform.event(INVOCATION, {"app_id": "bot", "tokens": 2}, event_time=now - H)
            for _ in range(2)
        ]
    )
    log = usage_runtime.event_log

    def crash(consumer: str, position: int) -> None:
        raise ConnectionError("the process died before acknowledging")

    monkeypatch.setattr(log, "ack", crash)
    worker = pipeline_worker(usage_runtime)
    assert worker.run_pass() is False  # logged and retried, never raised
    assert worker.status().last_error == "ConnectionError: the process died before acknowledging"
    assert log.position(main_consumer(usage_runtime.usage_store)) == 0
    monkeypatch.undo()
    usage_runtime.close()  # the "process" ends; a new one opens the same files
    restarted = build_runtime(usage_runtime.settings, migrate=False)
    try:
        platform.runtime = restarted
        run_pipeline_until_drained(restarted)
        got = totals(platform)
        assert got[("research", "ds", "bot", "tokens")].quantity_sum == 4
        assert got[("research", "ds", "bot", "tokens")].event_count == 2
        consumer = main_consumer(restarted.usage_store)
        assert restarted.event_log.position(consumer) == restarted.event_log.head()
    finally:
        restarted.close()


def test_a_lost_usage_store_is_rebuilt_from_the_log(
    platform: Platform, usage_runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    now = utc_now()
    platform.app("bot", team="ds", cost_center="research", created_at=now - 10 * H)
    platform.append(
        [
            platform.event(INVOCATION, {"app_id": "bot", "tokens": i}, event_time=now - H)
            for i in range(1, 6)
        ]
    )
    run_pipeline_until_drained(usage_runtime)
    before = totals(platform)
    # a month billed and finalized from the store about to be lost
    finalize_a_document(platform, now - 30 * 24 * H, now - 29 * 24 * H)
    usage_runtime.close()
    usage_runtime.settings.usage_store_path.unlink()
    restarted = build_runtime(usage_runtime.settings, migrate=False)
    try:
        platform.runtime = restarted
        with caplog.at_level("WARNING", logger="quartermaster.usage.pipeline"):
            run_pipeline_until_drained(restarted)
        assert totals(platform) == before
        # the settle decisions are not in the log: the operator is told to check reproduce
        assert "a new usage store: rating the event log from its start (positions 1..5)" in (
            caplog.text
        )
        assert "finalized billing documents may no longer reproduce" in caplog.text
    finally:
        restarted.close()


def test_a_usage_store_of_another_databases_log_is_refused_not_skipped(
    platform: Platform, usage_runtime: Runtime, tmp_path: Path
) -> None:
    # The laptop-to-production move: the data dir kept, QM_DATABASE_URL pointed at a new
    # database. The store had rated positions 1-5 of the old log; the new log's first five
    # events were skipped as rated, and accounting said balanced.
    now = utc_now()
    platform.app("bot", team="ds", cost_center="research", created_at=now - 10 * H)
    platform.append(
        [
            platform.event(INVOCATION, {"app_id": "bot", "tokens": i}, event_time=now - H)
            for i in range(5)
        ]
    )
    run_pipeline_until_drained(usage_runtime)
    old_log = usage_runtime.event_log.log_id()
    assert usage_runtime.usage_store.log_binding() == old_log
    usage_runtime.close()
    store_path = usage_runtime.settings.usage_store_path
    backend = "sqlite" if usage_runtime.engine.dialect.name == "sqlite" else "postgresql"
    (tmp_path / "moved").mkdir()
    url, drop = _new_database(backend, tmp_path / "moved")
    moved = build_runtime(
        usage_runtime.settings.model_copy(update={"database_url": url}), migrate=False
    )
    try:
        assert moved.event_log.log_id() != old_log
        with pytest.raises(LogMismatchError) as refused:
            check_log_binding(moved.usage_store, moved.event_log, store_name=str(store_path))
        assert f"the usage store {store_path} holds usage rated from another database's" in str(
            refused.value
        )
        assert "QM_DATABASE_URL back to the database it came from" in str(refused.value)
        # the pipeline refuses it too, rather than rate from the wrong position
        with pytest.raises(LogMismatchError):
            run_pipeline_until_drained(moved)
        # moved aside, the store is rebuilt from the new log and bound to it
        moved.close()
        store_path.rename(store_path.with_suffix(".old"))
        moved = build_runtime(moved.settings, migrate=False)
        check_log_binding(moved.usage_store, moved.event_log, store_name=str(store_path))
        assert moved.usage_store.log_binding() == moved.event_log.log_id()
    finally:
        moved.close()
        drop()


def test_a_store_from_before_log_ids_is_refused_when_it_is_ahead_of_the_log(
    platform: Platform, usage_runtime: Runtime
) -> None:
    # Stores written before they recorded their log: a store that has rated beyond this
    # log's head cannot have been built from it.
    store = usage_runtime.usage_store
    store.add_streams([StreamState(MAIN_STREAM, MAIN_CONSUMER, position=50)])
    with pytest.raises(LogMismatchError, match="rated events up to log position 50, but this"):
        check_log_binding(store, usage_runtime.event_log, store_name="usage.duckdb")
    assert store.log_binding() is None
    platform.app("bot", team="ds", cost_center="research", created_at=utc_now() - H)
    platform.append(
        [
            platform.event(INVOCATION, {"app_id": "bot", "tokens": i}, event_time=utc_now())
            for i in range(50)
        ]
    )
    check_log_binding(store, usage_runtime.event_log, store_name="usage.duckdb")
    assert store.log_binding() == usage_runtime.event_log.log_id()


def test_a_usage_store_newer_than_a_restored_database_is_refused_and_an_older_one_repaired(
    platform: Platform, usage_runtime: Runtime, tmp_path: Path
) -> None:
    # The restore of an older database dump with a newer usage.duckdb (one log id: the same
    # database, earlier). The store had rated positions the restored log had not reached; the
    # events accepted next took those positions and were skipped as rated, never billed.
    now = utc_now()
    platform.app("bot", team="ds", cost_center="research", created_at=now - 10 * H)
    settings = usage_runtime.settings
    store_path = settings.usage_store_path

    def send(count: int) -> None:
        platform.append(
            [
                platform.event(INVOCATION, {"app_id": "bot", "tokens": 1}, event_time=now - H)
                for _ in range(count)
            ]
        )

    def copy_store(name: str) -> Path:
        kept = tmp_path / name
        kept.mkdir()
        for file in store_path.parent.glob(store_path.name + "*"):
            shutil.copy(file, kept / file.name)
        return kept

    def put_back(kept: Path) -> None:
        for file in store_path.parent.glob(store_path.name + "*"):
            file.unlink()
        for file in kept.iterdir():
            shutil.copy(file, store_path.parent / file.name)

    send(3)
    run_pipeline_until_drained(usage_runtime)
    backup_head = usage_runtime.event_log.head()
    usage_runtime.close()
    older = copy_store("older")
    runtime = build_runtime(settings, migrate=False)
    try:
        platform.runtime = runtime
        send(4)
        run_pipeline_until_drained(runtime)
        head = runtime.event_log.head()
    finally:
        runtime.close()
    newer = copy_store("newer")

    # behind the log (any restored store): repaired, every event rated once
    put_back(older)
    runtime = build_runtime(settings, migrate=False)
    try:
        platform.runtime = runtime
        check_log_binding(runtime.usage_store, runtime.event_log, store_name=str(store_path))
        run_pipeline_until_drained(runtime)
        assert totals(platform)[("research", "ds", "bot", "tokens")].event_count == 7
        # the database as the older backup held it: the log ends where the backup's did
        with runtime.session_factory.begin() as session:
            session.execute(delete(EventLogEntry).where(EventLogEntry.position > backup_head))
            session.execute(update(ConsumerCursor).values(position=backup_head))
    finally:
        runtime.close()

    # ahead of the log: refused at start, and by the pipeline, naming both positions
    put_back(newer)
    runtime = build_runtime(settings, migrate=False)
    try:
        platform.runtime = runtime
        assert runtime.usage_store.log_binding() == runtime.event_log.log_id()
        with pytest.raises(LogMismatchError) as refused:
            check_log_binding(runtime.usage_store, runtime.event_log, store_name=str(store_path))
        message = str(refused.value)
        assert (
            f"the usage store {store_path} has rated events up to log position {head}, but "
            f"this database's event log ends at {backup_head}: the store is newer than the "
            "database"
        ) in message
        assert f"Move {store_path} aside" in message
        assert "restore the database and the usage store from the same backup" in message
        with pytest.raises(LogMismatchError):
            run_pipeline_until_drained(runtime)
    finally:
        runtime.close()

    # moved aside: rebuilt from this database's log, and new events are rated
    for file in store_path.parent.glob(store_path.name + "*"):
        file.unlink()
    runtime = build_runtime(settings, migrate=False)
    try:
        platform.runtime = runtime
        send(2)
        run_pipeline_until_drained(runtime)
        assert totals(platform)[("research", "ds", "bot", "tokens")].event_count == 5
    finally:
        runtime.close()


def test_a_replay_stream_beyond_the_log_is_refused_too(
    platform: Platform, usage_runtime: Runtime
) -> None:
    store = usage_runtime.usage_store
    store.bind_log(usage_runtime.event_log.log_id())
    store.add_streams(
        [StreamState("replay-x", "pipeline-replay-x", position=0, upto=9, created_at=utc_now())]
    )
    with pytest.raises(LogMismatchError, match="rated events up to log position 9, but this"):
        check_log_binding(store, usage_runtime.event_log, store_name="usage.duckdb")


def test_a_store_rebuilt_twice_and_the_stores_of_two_servers_each_rate_every_event(
    platform: Platform, usage_runtime: Runtime, caplog: pytest.LogCaptureFixture
) -> None:
    # One log, several stores: each reads from its own position. With one shared cursor a
    # rebuilt store resumed where another store had got to (a second rebuild of the same
    # range rated nothing; a second server's store skipped what the first had rated).
    now = utc_now()
    platform.app("bot", team="ds", cost_center="research", created_at=now - 10 * H)

    def send(count: int) -> None:
        platform.append(
            [
                platform.event(INVOCATION, {"app_id": "bot", "tokens": 1}, event_time=now - H)
                for _ in range(count)
            ]
        )

    def rated(runtime: Runtime) -> int:
        run_pipeline_until_drained(runtime)
        platform.runtime = runtime
        return totals(platform)[("research", "ds", "bot", "tokens")].event_count

    send(5)
    assert rated(usage_runtime) == 5
    settings = usage_runtime.settings
    usage_runtime.close()
    for _ in range(2):  # moved aside, twice
        settings.usage_store_path.unlink()
        rebuilt = build_runtime(settings, migrate=False)
        with caplog.at_level("WARNING", logger="quartermaster.usage.pipeline"):
            assert rated(rebuilt) == 5
        assert "a new usage store" not in caplog.text  # nothing finalized: nothing to say
        rebuilt.close()
    second_dir = settings.data_dir.parent / "second"
    second_dir.mkdir(mode=0o700)
    shutil.copy(settings.data_dir / "server.key", second_dir / "server.key")
    second_server = build_runtime(
        settings.model_copy(update={"data_dir": second_dir}), migrate=False
    )
    first_server = build_runtime(settings, migrate=False)
    # The platform still holds the last rebuilt runtime, closed above: appending through it
    # opened a connection on its disposed engine that nothing closed (psycopg warned when it
    # was garbage-collected, in whichever later test that happened).
    platform.runtime = first_server
    try:
        send(3)
        assert rated(first_server) == 8  # ahead of the second server's store
        assert rated(second_server) == 8
        send(2)
        assert rated(second_server) == 10
        assert rated(first_server) == 10
    finally:
        second_server.close()
        first_server.close()


def test_a_store_from_before_per_store_consumers_resumes_from_its_own_position(
    platform: Platform, usage_runtime: Runtime
) -> None:
    now = utc_now()
    platform.app("bot", team="ds", cost_center="research", created_at=now - 10 * H)
    store, log = usage_runtime.usage_store, usage_runtime.event_log
    platform.append(
        [
            platform.event(INVOCATION, {"app_id": "bot", "tokens": 1}, event_time=now - H)
            for _ in range(4)
        ]
    )
    run_pipeline_until_drained(usage_runtime)
    # as such a store was: its main stream on the shared consumer, acknowledged there
    main = next(s for s in store.streams() if s.name == MAIN_STREAM)
    store.add_streams([StreamState(MAIN_STREAM, MAIN_CONSUMER, position=main.position)])
    log.ack(MAIN_CONSUMER, main.position)
    platform.append(
        [
            platform.event(INVOCATION, {"app_id": "bot", "tokens": 1}, event_time=now - H)
            for _ in range(3)
        ]
    )
    usage_runtime.close()  # the upgraded server starts
    restarted = build_runtime(usage_runtime.settings, migrate=False)
    try:
        platform.runtime = restarted
        run_pipeline_until_drained(restarted)
        got = totals(platform)[("research", "ds", "bot", "tokens")]
        assert got.event_count == 7  # nothing re-rated, nothing skipped
        store, log = restarted.usage_store, restarted.event_log
        main = next(s for s in store.streams() if s.name == MAIN_STREAM)
        assert main.consumer == main_consumer(store) != MAIN_CONSUMER
        assert log.position(main_consumer(store)) == log.head()
    finally:
        restarted.close()


def test_accepted_equals_rated_plus_waiting_in_every_hour(platform: Platform) -> None:
    now = utc_now()
    hour = floor_hour(now)
    platform.app("bot", team="ds", cost_center="research", created_at=now - 50 * H)
    earlier = hour - 2 * H + timedelta(minutes=5)
    platform.append(
        [
            platform.event(
                INVOCATION, {"app_id": "bot", "tokens": 1}, event_time=earlier, recorded_at=earlier
            ),
            platform.event(
                INVOCATION,
                {"app_id": "nobody", "tokens": 1},
                event_time=earlier,
                recorded_at=earlier,
            ),
            platform.event(INVOCATION, {"app_id": "bot", "tokens": 1}, event_time=now),
            platform.event(INVOCATION, {"app_id": "later", "tokens": 1}, event_time=now),
            platform.event(
                INVOCATION,
                {"app_id": "expired", "tokens": 1},
                event_time=now - 30 * H,
                recorded_at=now - 26 * H,
            ),
        ]
    )
    hours = Period(hour - 30 * H, hour + H)
    runtime = platform.runtime
    with runtime.session_factory() as session:
        pending = pipeline_accounting(
            platform.tenant_id, hours, store=runtime.usage_store, session=session
        )
    assert sum(h.accepted for h in pending) == 5
    assert not all(h.balanced for h in pending)
    run_pipeline_until_drained(runtime)
    with runtime.session_factory() as session:
        rows = pipeline_accounting(
            platform.tenant_id, hours, store=runtime.usage_store, session=session
        )
    assert all(h.accepted == h.rated + h.waiting for h in rows)
    by_hour = {h.hour: h for h in rows}
    assert (by_hour[hour].rated, by_hour[hour].waiting) == (1, 1)
    assert (by_hour[floor_hour(earlier)].attributed, by_hour[floor_hour(earlier)].waiting) == (1, 1)
    assert by_hour[floor_hour(now - 26 * H)].unattributed == 1


def test_waiting_events_are_retried_only_when_their_tenants_metadata_changed(
    platform: Platform,
) -> None:
    """A pass settles only waiting events whose tenant's metadata changed or whose deadline
    passed; an unchanged tenant is not re-tried on every poll."""
    now = utc_now()
    platform.append([platform.event(INVOCATION, {"app_id": "x", "tokens": 1}, event_time=now)])
    worker = pipeline_worker(platform.runtime)
    worker.run_pass_locked()
    assert worker.run_pass_locked().resolved == 0
    platform.app("x", team="ds", cost_center="research", created_at=utc_now())
    assert worker.run_pass_locked().resolved == 1
