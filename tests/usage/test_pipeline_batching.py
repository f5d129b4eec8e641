"""How the pipeline reads and commits: chunks of the log rated one at a time and committed in
one store transaction, the same results whatever the chunk and batch sizes, and a worker that
wakes when ingestion appends instead of waiting for its poll interval."""

from __future__ import annotations

import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from quartermaster.domain.timeutil import Period, floor_hour, utc_now
from quartermaster.runtime import build_runtime
from quartermaster.usage import pipeline as pipeline_module
from quartermaster.usage.accounting import pipeline_accounting
from quartermaster.usage.pipeline import pipeline_worker, run_pipeline_until_drained
from quartermaster.usage.store import RatedBatch
from tests.conftest import make_settings
from tests.usage.conftest import Platform, new_platform
from tests.usage.test_pipeline import INVOCATION, totals

H = timedelta(hours=1)


def _events(platform: Platform, count: int, *, register: bool = True) -> None:
    now = utc_now()
    if register:
        platform.app("bot", team="ds", cost_center="research", created_at=now - 10 * H)
    platform.append(
        [
            platform.event(
                INVOCATION,
                # every fourth event names an app nobody registered: it waits
                {"app_id": "bot" if i % 4 else "unknown", "tokens": i + 1},
                event_time=now - H,
            )
            for i in range(count)
        ]
    )


def test_a_pass_rates_chunks_and_commits_them_in_one_transaction(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    _events(platform, 10)
    monkeypatch.setattr(pipeline_module, "READ_CHUNK", 3)
    worker = pipeline_worker(platform.runtime)
    worker.batch_size = 7
    store = platform.runtime.usage_store
    writes: list[RatedBatch] = []
    real_write = store.write

    def spy(batch: RatedBatch) -> None:
        writes.append(batch)
        real_write(batch)

    monkeypatch.setattr(store, "write", spy)
    first = worker.run_pass_locked()
    assert (first.events_read, first.more) == (7, True)
    assert len(writes) == 1  # three chunks (3 + 3 + 1), one transaction
    head = platform.runtime.event_log.head()
    assert writes[0].position == head - 3
    assert writes[0].events.num_rows == 5
    assert writes[0].waiting_added.num_rows == 2
    assert writes[0].usage.column("position").to_pylist() == sorted(
        writes[0].usage.column("position").to_pylist()
    )
    second = worker.run_pass_locked()
    assert (second.events_read, second.more) == (3, False)
    assert writes[-1].position == head
    got = totals(platform)[("research", "ds", "bot", "tokens")]
    assert (got.event_count, got.quantity_sum) == (7, sum(i + 1 for i in range(10) if i % 4))
    assert store.waiting_summary()[platform.tenant_id][0] == 3
    hour = floor_hour(utc_now())
    with platform.runtime.session_factory() as session:
        rows = pipeline_accounting(
            platform.tenant_id,
            Period(hour - 3 * H, hour + H),
            store=store,
            session=session,
        )
    assert all(h.accepted == h.rated + h.waiting for h in rows)
    assert sum(h.accepted for h in rows) == 10


@pytest.mark.parametrize(("chunk", "batch"), [(1, 1), (2, 5), (4, 4), (1000, 3)])
def test_chunk_and_batch_sizes_do_not_change_the_results(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, chunk: int, batch: int
) -> None:
    _events(platform, 13)
    run_pipeline_until_drained(platform.runtime)
    expected = totals(platform)
    monkeypatch.setattr(pipeline_module, "READ_CHUNK", chunk)
    worker = pipeline_worker(platform.runtime)
    worker.batch_size = batch
    worker.replay(platform.tenant_id)
    run_pipeline_until_drained(platform.runtime)
    assert totals(platform) == expected
    assert platform.runtime.usage_store.waiting_summary()[platform.tenant_id][0] == 4


def test_the_worker_wakes_when_ingestion_appends(tmp_path: Path, fresh_db_url: str) -> None:
    # A poll interval far longer than the test: only the append notification can wake it.
    settings = make_settings(
        tmp_path / "qm", fresh_db_url, pipeline_enabled=True, pipeline_interval_seconds=120
    )
    runtime = build_runtime(settings, migrate=False)
    worker = pipeline_worker(runtime)
    try:
        platform = new_platform(runtime)
        worker.start()
        _wait_for(lambda: worker.status().runs >= 1)
        _events(platform, 4)
        _wait_for(lambda: ("research", "ds", "bot", "tokens") in totals(platform))
        assert totals(platform)[("research", "ds", "bot", "tokens")].event_count == 3
    finally:
        worker.stop()
        runtime.close()
    # Stopped: no longer subscribed, so an append does not run a pass.
    assert worker._unsubscribe is None


def test_a_stopped_worker_is_not_woken(platform: Platform) -> None:
    worker = pipeline_worker(platform.runtime)  # pipeline_enabled=False: start() is a no-op
    worker.start()
    _events(platform, 2)
    assert worker.status().runs == 0
    assert not worker._wake.is_set()


def _wait_for(condition: Any, *, seconds: float = 20.0) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.05)


def test_the_log_cursor_is_acknowledged_at_most_once_an_interval(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(pipeline_module, "ACK_INTERVAL_SECONDS", 3600.0)
    log, store = platform.runtime.event_log, platform.runtime.usage_store
    worker = pipeline_worker(platform.runtime)
    _events(platform, 2)
    worker.run_pass_locked()
    first = log.head()
    assert log.position(pipeline_module.main_consumer(store)) == first  # the first ack is due
    _events(platform, 2, register=False)
    worker.run_pass_locked()
    main = next(s for s in store.streams() if s.name == pipeline_module.MAIN_STREAM)
    assert main.position == log.head() > first  # committed in the store ...
    assert log.position(pipeline_module.main_consumer(store)) == first  # ... acknowledged later
    assert worker.run_pass_locked().events_read == 0  # resumes from the stored position
    run_pipeline_until_drained(platform.runtime)  # a drain ends acknowledged
    assert log.position(pipeline_module.main_consumer(store)) == log.head()
    assert totals(platform)[("research", "ds", "bot", "tokens")].event_count == 2
