"""Validation workers (SQLite and PostgreSQL): a batch validated in a worker process comes back
exactly as the server's own validation makes it (records, rejections, body errors); a worker
that dies is replaced and its request validated in the server's process; `qm serve`'s app
ingests through the workers."""

from __future__ import annotations

import asyncio
import gc
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

import orjson
import pytest
from fastapi.testclient import TestClient

from quartermaster.api.app import create_app
from quartermaster.config import Settings
from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import PayloadTooLargeError
from quartermaster.gc_tuning import SERVING_GC_THRESHOLDS
from quartermaster.guardrails.gate import guardrail_gate
from quartermaster.guardrails.models import Enforcement
from quartermaster.metering.body import BATCH, SINGLE, MalformedBodyError, parse_events
from quartermaster.metering.offload import (
    ValidationPool,
    start_validation_pool,
    validation_pool,
)
from quartermaster.metering.service import (
    IngestState,
    ValidatedBatch,
    refuse_gated,
    store_validated,
    validate_ingest,
)
from quartermaster.metering.validation import Rejection, RejectReason
from quartermaster.runtime import Runtime
from quartermaster.tenancy.service import AuthContext
from tests.conftest import TenantHandle
from tests.metering.conftest import AppHandle, bearer, usage_event
from tests.metering.test_service import caller_of, counters, stored


@pytest.fixture
def pool(settings: Settings, runtime: Runtime) -> Iterator[ValidationPool]:
    validation = ValidationPool(settings, runtime.server_key, workers=1)
    yield validation
    validation.close()


def mixed_batch(signed: AppHandle, strict: AppHandle) -> list[dict[str, object]]:
    """Valid events, and one event for each of six rejection reasons validation decides."""
    base = usage_event(signed.app_id)
    return [
        signed.sign(usage_event(signed.app_id)),
        usage_event(signed.app_id),  # unsigned, allowed for this app
        {**signed.sign(usage_event(signed.app_id)), "qmsignature": "00" * 32},  # bad_signature
        usage_event(strict.app_id),  # missing_signature: the app requires them
        {**base, "type": "qm.nope"},  # unknown_type
        {**base, "specversion": "0.3"},  # invalid_envelope
        usage_event(signed.app_id, time=utc_now() + timedelta(hours=2)),  # future_timestamp
        {**usage_event(signed.app_id), "data": {"app_id": signed.app_id}},  # invalid_data
        strict.sign(usage_event(strict.app_id)),
    ]


def validate(
    pool: ValidationPool, body: bytes, media_type: str, caller: AuthContext, max_events: int = 10
) -> ValidatedBatch | None:
    return asyncio.run(pool.validate(body, media_type, caller=caller, max_events=max_events))


def test_a_worker_validates_a_batch_as_the_server_does(
    runtime: Runtime,
    tenant: TenantHandle,
    make_app: Callable[..., AppHandle],
    pool: ValidationPool,
) -> None:
    signed, strict = make_app(), make_app(require_signatures=True)
    events = mixed_batch(signed, strict)
    body = orjson.dumps(events)
    caller = caller_of(runtime, tenant)

    remote = validate(pool, body, BATCH, caller, max_events=100)
    local = validate_ingest(
        parse_events(body, BATCH, max_events=100),
        caller=caller,
        lookups=runtime,
        state=IngestState(),
    )

    assert isinstance(remote, ValidatedBatch)
    assert remote.received == local.received == len(events)
    assert [e.event_index for e in remote.accepted] == [0, 1, 8]
    assert [e.event_index for e in remote.accepted] == [e.event_index for e in local.accepted]
    for mine, theirs in zip(remote.accepted, local.accepted, strict=True):
        # the same record, but for the receipt time, which each side takes on its own
        assert mine.record == replace(
            theirs.record, recorded_at=mine.record.recorded_at, late=mine.record.late
        )

    # The same rejections, but for the receipt time a future_timestamp message gives, which
    # each side takes on its own (a second apart now and then).
    def receipt_blind(rejection: Rejection) -> Rejection:
        if rejection.reason is not RejectReason.FUTURE_TIMESTAMP:
            return rejection
        return replace(rejection, message=rejection.message.split(" is ", 1)[0])

    assert [receipt_blind(r) for r in remote.rejected] == [receipt_blind(r) for r in local.rejected]
    assert [r.reason.value for r in remote.rejected] == [
        "bad_signature",
        "missing_signature",
        "unknown_type",
        "invalid_envelope",
        "future_timestamp",
        "invalid_data",
    ]


def test_a_worker_tunes_its_garbage_collector_as_the_server_does(pool: ValidationPool) -> None:
    """Parsing a batch allocates ~20,000 objects: at CPython's default thresholds the worker
    paid ~30 young collections a batch."""
    assert pool._executor.submit(gc.get_threshold).result() == SERVING_GC_THRESHOLDS
    assert pool._executor.submit(gc.get_freeze_count).result() > 0


def test_body_errors_come_back_as_the_servers_errors(
    runtime: Runtime, tenant: TenantHandle, pool: ValidationPool
) -> None:
    caller = caller_of(runtime, tenant)
    with pytest.raises(MalformedBodyError, match=r"not valid JSON: .* at line 1"):
        validate(pool, b"[{", BATCH, caller)
    with pytest.raises(MalformedBodyError, match="must be one JSON object"):
        validate(pool, b"[]", SINGLE, caller)
    with pytest.raises(PayloadTooLargeError, match="batch has 3 events; the limit is 2"):
        validate(pool, b"[{}, {}, {}]", BATCH, caller, max_events=2)


def test_a_dead_worker_is_replaced_and_its_request_validated_here(
    runtime: Runtime,
    tenant: TenantHandle,
    make_app: Callable[..., AppHandle],
    pool: ValidationPool,
) -> None:
    signed = make_app()
    body = orjson.dumps([signed.sign(usage_event(signed.app_id))])
    caller = caller_of(runtime, tenant)
    assert validate(pool, body, BATCH, caller) is not None
    worker = pool._executor.submit(os.getpid).result(timeout=60)
    os.kill(worker, signal.SIGKILL)
    deadline = time.monotonic() + 30
    outcome: ValidatedBatch | None = validate(pool, body, BATCH, caller)
    while outcome is not None:  # the pool notices the death on the next submission
        assert time.monotonic() < deadline, "the dead worker was not noticed"
        outcome = validate(pool, body, BATCH, caller)
    # replaced: the next batch is validated by a new worker
    again = validate(pool, body, BATCH, caller)
    assert isinstance(again, ValidatedBatch)
    assert len(again.accepted) == 1
    assert pool._executor.submit(os.getpid).result(timeout=60) != worker


def test_the_served_app_ingests_through_its_workers(
    settings: Settings,
    runtime: Runtime,
    tenant: TenantHandle,
    make_app: Callable[..., AppHandle],
) -> None:
    signed = make_app()
    events = [signed.sign(usage_event(signed.app_id)) for _ in range(3)]
    headers = {**bearer(tenant.admin_token), "Content-Type": BATCH}
    served = create_app(
        settings.model_copy(update={"ingest_workers": 1}),
        runtime=runtime,
        background=(start_validation_pool,),
    )
    with TestClient(served) as client:
        assert validation_pool(runtime) is not None
        first = client.post("/v1/events", content=orjson.dumps(events), headers=headers)
        again = client.post("/v1/events", content=orjson.dumps(events), headers=headers)
        broken = client.post("/v1/events", content=b"[{", headers=headers)
        pool = validation_pool(runtime)
        assert pool is not None
        os.kill(pool._executor.submit(os.getpid).result(timeout=60), signal.SIGKILL)
        late = [signed.sign(usage_event(signed.app_id)) for _ in range(2)]
        after_death = [
            client.post("/v1/events", content=orjson.dumps([event]), headers=headers)
            for event in late
        ]
    assert validation_pool(runtime) is None  # stopped with the app
    assert [r.json() for r in after_death] == [{"accepted": 1, "duplicates": 0, "rejected": []}] * 2
    assert first.status_code == 200, first.text
    assert first.json() == {"accepted": 3, "duplicates": 0, "rejected": []}
    assert again.json() == {"accepted": 0, "duplicates": 3, "rejected": []}
    assert broken.status_code == 400
    assert "not valid JSON" in broken.json()["error"]["message"]
    assert sorted(event_id for event_id, _ in stored(runtime, tenant.tenant_id)) == sorted(
        str(e["id"]) for e in [*events, *late]
    )


def test_no_workers_when_asked_for_none(
    settings: Settings, runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    runtime.settings = settings.model_copy(update={"ingest_workers": 0})
    stop = start_validation_pool(runtime)
    assert validation_pool(runtime) is None
    stop()
    monkeypatch.setattr(os, "cpu_count", lambda: 1)
    assert Settings(data_dir=settings.data_dir).resolved_ingest_workers == 0
    monkeypatch.setattr(os, "cpu_count", lambda: 2)
    assert Settings(data_dir=settings.data_dir).resolved_ingest_workers == 1
    assert Settings(data_dir=settings.data_dir, ingest_workers=3).resolved_ingest_workers == 3


def test_workers_end_with_a_killed_server(settings: Settings, runtime: Runtime) -> None:
    """A server killed outright cannot stop its pool: its workers must not outlive it."""
    script = (
        "import os, sys, time\n"
        "from quartermaster.config import Settings\n"
        "from quartermaster.metering.offload import ValidationPool\n"
        "pool = ValidationPool(Settings(data_dir=sys.argv[1], database_url=sys.argv[2]),"
        " bytes(32), workers=1)\n"
        "print(pool._executor.submit(os.getpid).result(timeout=60), flush=True)\n"
        "time.sleep(600)\n"
    )
    server = subprocess.Popen(
        [sys.executable, "-c", script, str(settings.data_dir), settings.resolved_database_url],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert server.stdout is not None
        worker = int(server.stdout.readline())
        os.kill(server.pid, signal.SIGKILL)
        server.wait(timeout=30)
        deadline = time.monotonic() + 30
        while Path(f"/proc/{worker}").exists() and b"Z" not in _state(worker):
            assert time.monotonic() < deadline, f"worker {worker} outlived its server"
            time.sleep(0.1)
    finally:
        server.kill()
        server.wait(timeout=30)
        if server.stdout is not None:
            server.stdout.close()


def _state(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/stat").read_bytes().rsplit(b")", 1)[1].split()[0]
    except OSError:
        return b"Z"


def test_a_worker_validated_batch_loses_a_throttled_apps_events_only(
    runtime: Runtime,
    tenant: TenantHandle,
    make_app: Callable[..., AppHandle],
    pool: ValidationPool,
) -> None:
    """The gate's per-app refusal on a batch a worker prepared (its records as SQLite rows):
    the throttled app's events are rejected `throttled` and counted, the others stored."""
    throttled, free = make_app(), make_app()
    with runtime.session_factory() as session:
        session.add(
            Enforcement(
                tenant_id=tenant.tenant_id,
                scope_kind="app",
                scope=throttled.app_id,
                action="throttle",
                period_start=utc_now() - timedelta(days=1),
                ends_at=utc_now() + timedelta(days=1),
                reason="app spent 2 EUR, at or over budget 'tiny': throttled until tomorrow",
            )
        )
        session.commit()
    guardrail_gate(runtime).invalidate(tenant.tenant_id)
    events = [usage_event(throttled.app_id), usage_event(free.app_id), usage_event(free.app_id)]
    caller = caller_of(runtime, tenant)
    batch = validate(pool, orjson.dumps(events), BATCH, caller)
    assert batch is not None
    assert batch.prepared is not None
    gated = refuse_gated(batch, caller=caller, runtime=runtime)
    report = store_validated(gated, runtime=runtime, state=IngestState())
    assert report.accepted == 2
    assert [(r.index, r.reason) for r in report.rejected] == [(0, RejectReason.THROTTLED)]
    assert "budget 'tiny'" in report.rejected[0].message
    assert [event_id for event_id, _ in stored(runtime, tenant.tenant_id)] == [
        str(e["id"]) for e in events[1:]
    ]
    assert counters(runtime, tenant.tenant_id)["reasons"]["rejected"] == {"throttled": 1}
