"""Runs and adjustments are computed outside the write transaction: on SQLite the database's
one write lock is held only while the document and its lines are stored, so every other
writer (event ingestion, background services) goes on while a large bill computes; what the
computing depended on is checked again when storing."""

from __future__ import annotations

import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import text

from quartermaster.billing import adjustments, service
from quartermaster.billing.models import DocumentStatus, RunKind
from quartermaster.billing.router import get_calculator
from quartermaster.domain.timeutil import Period
from quartermaster.errors import ConflictError
from quartermaster.runtime import Runtime
from tests.billing.support import (
    JANUARY,
    SMALL_TOTAL,
    MemoryCalculator,
    admin,
    small_calculator,
    usage,
)
from tests.conftest import TenantHandle


@dataclass
class PausingCalculator(MemoryCalculator):
    """Stops in its computing phase (reading the inputs) until released, when `pause` is set."""

    pause: bool = False
    computing: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    def inputs(self, *args: Any, **kwargs: Any) -> Any:
        if self.pause:
            self.computing.set()
            assert self.release.wait(20), "the test never released the computation"
        return super().inputs(*args, **kwargs)


def _pausing() -> PausingCalculator:
    base = small_calculator()
    return PausingCalculator(versions=base.versions, usage=base.usage, costs=base.costs)


def _other_write_seconds(runtime: Runtime, tenant_id: str) -> float:
    """How long another write session takes to commit (infinite: not within 2 s)."""
    done: list[float] = []

    def write() -> None:
        started = time.monotonic()
        with runtime.session_factory() as session:
            session.execute(
                text("UPDATE tenants SET name = :name WHERE id = :id"),
                {"name": "renamed meanwhile", "id": tenant_id},
            )
            session.commit()
        done.append(time.monotonic() - started)

    thread = threading.Thread(target=write)
    thread.start()
    thread.join(2)
    return done[0] if done else float("inf")


def _paused(calc: PausingCalculator, pool: ThreadPoolExecutor, call: Any) -> Future[httpx.Response]:
    calc.pause = True
    calc.computing.clear()
    calc.release.clear()
    future: Future[httpx.Response] = pool.submit(call)
    assert calc.computing.wait(10), "the request never started computing"
    return future


def _app(app: FastAPI, calc: PausingCalculator) -> FastAPI:
    app.dependency_overrides[get_calculator] = lambda: calc
    return app


def test_other_writes_commit_while_a_run_and_an_adjustment_compute(
    app: FastAPI, runtime: Runtime, tenant: TenantHandle
) -> None:
    """A 40,000-line run held SQLite's write lock for its whole computation (60 s at 3,000
    apps): a single event's ingestion waited 26 s, background services failed with
    'database is locked'."""
    calc = _pausing()
    with TestClient(_app(app, calc)) as client, ThreadPoolExecutor(1) as pool:
        running = _paused(
            calc,
            pool,
            lambda: client.post(
                "/v1/billing/runs", json={"month": "2026-01"}, headers=tenant.headers
            ),
        )
        waited = _other_write_seconds(runtime, tenant.tenant_id)
        calc.release.set()
        assert waited < 1.0, f"another write waited {waited} s for the bill's write lock"
        created = running.result(30)
        assert created.status_code == 201, created.text
        run = created.json()["run"]
        assert run["total"] == str(SMALL_TOTAL) + "0000"
        with runtime.session_factory() as session:
            service.finalize_run(admin(tenant.tenant_id), run["id"], session=session)

        calc.pause = False
        calc.record([usage("eng", "web", "api", "cpu_seconds", 1500, day=31)], at=_feb(15))
        calc.now = _feb(16)
        adjusting = _paused(
            calc,
            pool,
            lambda: client.post(
                "/v1/billing/adjustments", json={"run_id": run["id"]}, headers=tenant.headers
            ),
        )
        waited = _other_write_seconds(runtime, tenant.tenant_id)
        calc.release.set()
        assert waited < 1.0, f"another write waited {waited} s for the bill's write lock"
        adjusted = adjusting.result(30)
        assert adjusted.status_code == 201, adjusted.text
        assert adjusted.json()["adjustment"]["document"]["total"] == "2.000000"


def _feb(day: int) -> datetime:
    return datetime(2026, 2, day, tzinfo=UTC)


def test_a_draft_finalized_while_its_recomputation_computes_stays_as_finalized(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    caller = admin(tenant.tenant_id)
    calc = _pausing()
    with runtime.session_factory() as session:
        draft = service.create_run(
            caller, period=JANUARY, kind=RunKind.INVOICE, calculator=calc, session=session
        ).document
    calc.record([usage("eng", "web", "api", "cpu_seconds", 1500, day=31)], at=_feb(11))
    calc.now = _feb(12)

    def recompute() -> service.RunOutcome:
        with runtime.session_factory() as session, runtime.read_session_factory() as reader:
            return service.create_run(
                caller,
                period=JANUARY,
                kind=RunKind.INVOICE,
                calculator=calc,
                session=session,
                read_session=reader,
            )

    with ThreadPoolExecutor(1) as pool:
        calc.pause = True
        future = pool.submit(recompute)
        assert calc.computing.wait(10)
        with runtime.session_factory() as session:
            service.finalize_run(caller, draft.id, session=session)
        calc.release.set()
        outcome = future.result(30)
    assert outcome.unchanged
    assert outcome.document.id == draft.id
    assert outcome.document.status == DocumentStatus.FINALIZED.value
    assert outcome.document.total == SMALL_TOTAL  # not the recomputed 2.00 more


def test_an_overlapping_run_stored_while_a_run_computes_refuses_it(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    caller = admin(tenant.tenant_id)
    calc = _pausing()
    half = Period(datetime(2026, 1, 15, tzinfo=UTC), datetime(2026, 2, 15, tzinfo=UTC))

    def create(period: Period, kind: RunKind = RunKind.INVOICE) -> service.RunOutcome:
        with runtime.session_factory() as session, runtime.read_session_factory() as reader:
            return service.create_run(
                caller,
                period=period,
                kind=kind,
                calculator=calc,
                session=session,
                read_session=reader,
            )

    with ThreadPoolExecutor(1) as pool:
        calc.pause = True
        future = pool.submit(create, JANUARY)
        assert calc.computing.wait(10)
        calc.pause = False
        other = create(half).document
        calc.release.set()
        try:
            future.result(30)
        except ConflictError as refused:
            message = refused.message
        else:
            raise AssertionError("the overlapping run was stored")
    assert f"overlaps invoice run {other.id} (draft" in message
    with runtime.session_factory() as session:
        runs = service.list_documents(caller, session=session)
    assert [r.id for r in runs] == [other.id]


def test_other_writes_commit_while_a_bill_is_reproduced(
    app: FastAPI, runtime: Runtime, tenant: TenantHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Reproducing recomputes the whole period: it read in a write session, so on SQLite it
    held the write lock as long as a run did."""
    calc = _pausing()
    with TestClient(_app(app, calc)) as client, ThreadPoolExecutor(1) as pool:
        created = client.post("/v1/billing/runs", json={"month": "2026-01"}, headers=tenant.headers)
        assert created.status_code == 201, created.text
        run_id = created.json()["run"]["id"]
        compute = adjustments.compute_period

        def paused(*args: Any, **kwargs: Any) -> Any:
            calc.computing.set()
            assert calc.release.wait(20), "the test never released the computation"
            return compute(*args, **{**kwargs, "calculator": calc})

        monkeypatch.setattr(adjustments, "compute_period", paused)
        reproducing = pool.submit(
            lambda: client.get(f"/v1/billing/runs/{run_id}/reproduce", headers=tenant.headers)
        )
        assert calc.computing.wait(10)
        waited = _other_write_seconds(runtime, tenant.tenant_id)
        calc.release.set()
        assert waited < 1.0, f"another write waited {waited} s for the reproduction's write lock"
        reproduced = reproducing.result(30)
        assert reproduced.status_code == 200, reproduced.text
        assert reproduced.json()["identical"] is True
