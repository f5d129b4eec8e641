"""Group commit (SQLite and PostgreSQL): batches of concurrent requests that queued while the
writer was busy share one transaction, yet each request gets its own report, only after that
transaction committed, and a batch that fails is reported to its own request alone."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from quartermaster.bus.protocol import PreparedAppend
from quartermaster.metering import service
from quartermaster.metering.service import IngestReport, IngestState, ingest_events
from quartermaster.metering.validation import collect_references
from quartermaster.runtime import Runtime
from tests.conftest import TenantHandle
from tests.metering.conftest import AppHandle, usage_event
from tests.metering.test_service import caller_of, counters, stored


def ingest_concurrently(
    runtime: Runtime, tenant: TenantHandle, batches: list[list[dict[str, Any]]]
) -> tuple[list[IngestReport | BaseException], list[int]]:
    """Ingest the batches from one thread each while the writer is held busy, so that they all
    queue; then let the writer go. Returns each batch's report (or error) and the sizes of the
    transactions that stored them."""
    state = IngestState()
    caller = caller_of(runtime, tenant)
    # Warm the lookup caches (the batches then wait for nothing but the held writer).
    refs = collect_references([event for batch in batches for event in batch])
    with service._LookupSession(runtime) as lookup:
        state.signing_keys(tenant.tenant_id, refs.key_ids, lookups=runtime, session=lookup)
        state.signature_policies(tenant.tenant_id, refs.app_ids, session=lookup)
    outcomes: list[IngestReport | BaseException | None] = [None] * len(batches)
    groups: list[int] = []
    real_write = service._write_batches

    def counting_write(jobs: list[Any], *, runtime: Runtime) -> Any:
        groups.append(len(jobs))
        return real_write(jobs, runtime=runtime)

    def run(i: int) -> None:
        try:
            outcomes[i] = ingest_events(batches[i], caller=caller, runtime=runtime, state=state)
        except BaseException as exc:
            outcomes[i] = exc

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(service, "_write_batches", counting_write)
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(batches))]
        with state.write_lock:  # the writer is busy: every batch validates and queues
            for thread in threads:
                thread.start()
            deadline = time.monotonic() + 30
            while len(state.pending) < len(batches):
                assert time.monotonic() < deadline, "the batches did not queue"
                time.sleep(0.005)
            assert all(o is None for o in outcomes), "a batch was acknowledged before its commit"
        for thread in threads:
            thread.join(timeout=30)
    assert all(o is not None for o in outcomes)
    return [o for o in outcomes if o is not None], groups


def test_queued_batches_share_one_commit_and_each_gets_its_own_report(
    runtime: Runtime, tenant: TenantHandle, make_app: Callable[..., AppHandle]
) -> None:
    bot = make_app()
    shared = bot.sign(usage_event(bot.app_id))
    changed = bot.sign({**shared, "data": {**shared["data"], "tokens": 999}})
    batches = [
        [bot.sign(usage_event(bot.app_id)) for _ in range(3)] + [shared],
        [bot.sign(usage_event(bot.app_id)), shared],  # the same event: a duplicate
        [changed, {"id": "broken"}],  # same (source, id), other content: a conflict
    ]
    outcomes, groups = ingest_concurrently(runtime, tenant, batches)
    assert groups == [3]
    reports = [o for o in outcomes if isinstance(o, IngestReport)]
    assert len(reports) == 3
    # In queue order, whichever thread queued first. The totals do not depend on it, but which
    # of `shared` and `changed` claims their (source, id) first does: `changed` first makes
    # both copies of `shared` conflicts, else one is a duplicate and `changed` the conflict.
    assert sum(r.accepted for r in reports) == 5
    duplicates = sum(r.duplicates for r in reports)
    reasons = sorted(x.reason.value for r in reports for x in r.rejected)
    assert (duplicates, reasons) in [
        (1, ["conflict", "invalid_envelope"]),
        (0, ["conflict", "conflict", "invalid_envelope"]),
    ]
    assert len(stored(runtime, tenant.tenant_id)) == 5
    stages = counters(runtime, tenant.tenant_id)["stages"]
    expected = {"received": 8, "accepted": 5, "duplicate": duplicates, "rejected": len(reasons)}
    assert {k: n for k, n in stages.items() if n} == {k: n for k, n in expected.items() if n}


def test_a_batch_that_fails_in_a_group_fails_alone(
    runtime: Runtime,
    tenant: TenantHandle,
    make_app: Callable[..., AppHandle],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bot = make_app()
    poisoned = usage_event(bot.app_id, event_id="poisoned")
    real_append = runtime.event_log.append

    def failing_append(batch: Any, *, session: Any) -> Any:
        records = batch.records if isinstance(batch, PreparedAppend) else batch
        if any(r.event_id == "poisoned" for r in records):
            raise RuntimeError("disk full (simulated)")
        return real_append(batch, session=session)

    monkeypatch.setattr(runtime.event_log, "append", failing_append)
    batches = [
        [usage_event(bot.app_id) for _ in range(2)],
        [usage_event(bot.app_id), poisoned],
        [usage_event(bot.app_id) for _ in range(3)],
    ]
    outcomes, groups = ingest_concurrently(runtime, tenant, batches)
    # the shared transaction failed as a whole; each batch was then retried on its own
    assert groups == [3, 1, 1, 1]
    errors = [o for o in outcomes if isinstance(o, BaseException)]
    assert [str(e) for e in errors] == ["disk full (simulated)"]
    assert sorted(o.accepted for o in outcomes if isinstance(o, IngestReport)) == [2, 3]
    assert "poisoned" not in {event_id for event_id, _ in stored(runtime, tenant.tenant_id)}
    assert len(stored(runtime, tenant.tenant_id)) == 5
    assert counters(runtime, tenant.tenant_id)["stages"] == {"received": 5, "accepted": 5}


class Interrupted(BaseException):
    """Not an Exception: what a KeyboardInterrupt or a thread's exit looks like to the writer."""


def test_an_interrupted_writer_fails_every_batch_of_its_group(
    runtime: Runtime,
    tenant: TenantHandle,
    make_app: Callable[..., AppHandle],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bot = make_app()

    def interrupted_append(records: Any, *, session: Any) -> Any:
        raise Interrupted("writer interrupted")

    monkeypatch.setattr(runtime.event_log, "append", interrupted_append)
    batches = [[usage_event(bot.app_id)], [usage_event(bot.app_id)]]
    outcomes, groups = ingest_concurrently(runtime, tenant, batches)
    assert groups == [2]  # no retry after an interruption, and no request left waiting
    assert all(isinstance(o, Interrupted) for o in outcomes)
    assert stored(runtime, tenant.tenant_id) == []
