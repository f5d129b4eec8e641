"""One event never stops the pipeline: an event whose rating fails is set aside (counted
`failed`, with its reason) and the events after it, of every tenant, are rated; a database
error still stops the pass, which is retried with nothing lost. On both control planes."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from typing import Any

import duckdb
import pyarrow as pa
import pytest
from fastapi.testclient import TestClient

from quartermaster.api.app import create_app
from quartermaster.domain.timeutil import Period, floor_hour, utc_now
from quartermaster.runtime import Runtime
from quartermaster.usage import rating
from quartermaster.usage.accounting import pipeline_accounting
from quartermaster.usage.pipeline import MAIN_STREAM, pipeline_worker, run_pipeline_until_drained
from quartermaster.usage.store import RatedBatch, UsageTotal
from tests.usage.conftest import Platform, new_platform

INVOCATION = "qm.invocation.usage"
H = timedelta(hours=1)


def totals(platform: Platform) -> dict[tuple[str, str], UsageTotal]:
    now = utc_now()
    rows = platform.runtime.usage_store.quantities(
        platform.tenant_id, Period(now - 48 * H, now + H)
    )
    return {(t.app, t.meter): t for t in rows}


def main_position(runtime: Runtime) -> int:
    return next(s.position for s in runtime.usage_store.streams() if s.name == MAIN_STREAM)


@pytest.fixture
def two(usage_runtime: Runtime) -> tuple[Platform, Platform]:
    now = utc_now()
    sender, other = new_platform(usage_runtime, "sender"), new_platform(usage_runtime, "other")
    for platform in (sender, other):
        platform.app("bot", team="ds", cost_center="research", created_at=now - 10 * H)
    return sender, other


def test_an_event_the_store_cannot_hold_is_set_aside_and_every_tenant_is_rated(
    two: tuple[Platform, Platform],
) -> None:
    sender, other = two
    runtime = sender.runtime
    now = utc_now()
    # Written to the log directly, as ingestion did before quantities had a limit.
    sender.append(
        [
            sender.event(INVOCATION, {"app_id": "bot", "tokens": 3}, event_time=now),
            sender.event(INVOCATION, {"app_id": "bot", "duration_ms": "1e26"}, event_time=now),
            sender.event(INVOCATION, {"app_id": "bot", "compute_units": 1e20}, event_time=now),
            # The report's value: under the limit, it failed only for the quantizing context.
            sender.event(
                INVOCATION, {"app_id": "bot", "duration_ms": "100000000000000000"}, event_time=now
            ),
        ]
    )
    other.append([other.event(INVOCATION, {"app_id": "bot", "tokens": 5}, event_time=now)])

    result = pipeline_worker(runtime).run_pass_locked()
    assert (result.events_read, result.failed) == (5, 2)
    assert main_position(runtime) == runtime.event_log.head()

    assert totals(other)[("bot", "tokens")].quantity_sum == 5
    mine = totals(sender)
    assert mine[("bot", "tokens")].quantity_sum == 3
    assert mine[("bot", "duration_ms")].quantity_sum == Decimal("100000000000000000")
    assert mine[("bot", "invocations")].event_count == 2  # the set-aside two are not rated
    assert ("bot", "compute_units") not in mine

    failed = runtime.usage_store.failed_summary(sender.tenant_id)
    assert failed.count == 2
    reasons = sorted(f.reason for f in failed.latest)
    assert "compute_units 1E+20 is outside 0 .. 1000000000000000000" in reasons[0]
    assert "duration_ms 1E+26 is outside" in reasons[1]
    assert {f.tenant_id for f in failed.latest} == {sender.tenant_id}
    assert runtime.usage_store.failed_summary(other.tenant_id).count == 0

    # accepted = rated + waiting + failed, and nothing is left "in the pipeline".
    hours = Period(floor_hour(now) - H, floor_hour(now) + H)
    with runtime.session_factory() as session:
        rows = pipeline_accounting(
            sender.tenant_id, hours, store=runtime.usage_store, session=session
        )
    assert [(h.accepted, h.rated, h.waiting, h.failed, h.balanced) for h in rows] == [
        (4, 2, 0, 2, True)
    ]

    # The next pass has nothing to do: the events are not retried, and not counted twice.
    assert pipeline_worker(runtime).run_pass_locked().failed == 0
    assert runtime.usage_store.failed_summary(sender.tenant_id).count == 2


def test_a_replay_sets_the_same_events_aside_again(two: tuple[Platform, Platform]) -> None:
    sender, _ = two
    runtime = sender.runtime
    now = utc_now()
    sender.append(
        [
            sender.event(INVOCATION, {"app_id": "bot", "tokens": 3}, event_time=now),
            sender.event(INVOCATION, {"app_id": "bot", "compute_units": "5e18"}, event_time=now),
        ]
    )
    run_pipeline_until_drained(runtime)
    before = runtime.usage_store.failed_summary(sender.tenant_id)
    pipeline_worker(runtime).replay(sender.tenant_id)
    run_pipeline_until_drained(runtime)
    after = runtime.usage_store.failed_summary(sender.tenant_id)
    assert (before.count, after.count) == (1, 1)
    assert after.latest[0].position == before.latest[0].position
    assert totals(sender)[("bot", "tokens")].quantity_sum == 3


def test_a_waiting_event_that_fails_when_its_metadata_arrives_is_set_aside(
    two: tuple[Platform, Platform],
) -> None:
    sender, other = two
    runtime = sender.runtime
    now = utc_now()
    sender.append(
        [sender.event(INVOCATION, {"app_id": "later", "compute_units": 1e21}, event_time=now)]
    )
    other.append([other.event(INVOCATION, {"app_id": "later", "tokens": 2}, event_time=now)])
    run_pipeline_until_drained(runtime)
    assert runtime.usage_store.waiting_summary()[sender.tenant_id][0] == 1
    for platform in (sender, other):
        platform.app("later", team="ds", cost_center="research", created_at=now - H)
    result = pipeline_worker(runtime).run_pass_locked(settle_all=True)
    assert (result.resolved, result.failed) == (1, 1)
    assert sender.tenant_id not in runtime.usage_store.waiting_summary()
    assert runtime.usage_store.failed_summary(sender.tenant_id).count == 1
    assert totals(other)[("later", "tokens")].quantity_sum == 2


def test_a_fault_rating_one_event_sets_it_aside_with_its_reason(
    two: tuple[Platform, Platform], monkeypatch: pytest.MonkeyPatch
) -> None:
    sender, other = two
    runtime = sender.runtime
    now = utc_now()
    bad = sender.event(INVOCATION, {"app_id": "bot", "tokens": 13}, event_time=now)
    sender.append([bad, sender.event(INVOCATION, {"app_id": "bot", "tokens": 1}, event_time=now)])
    other.append([other.event(INVOCATION, {"app_id": "bot", "tokens": 5}, event_time=now)])
    measure = rating.measure

    def failing(meter: Any, data: Any) -> Any:
        if data.get("tokens") == 13:
            raise RuntimeError("a bug met this event")
        return measure(meter, data)

    monkeypatch.setattr(rating, "measure", failing)
    assert pipeline_worker(runtime).run_pass_locked().failed == 1
    failed = runtime.usage_store.failed_summary(sender.tenant_id)
    assert [(f.event_id, f.reason) for f in failed.latest] == [
        (bad.event_id, "RuntimeError: a bug met this event")
    ]
    assert totals(sender)[("bot", "tokens")].quantity_sum == 1
    assert totals(other)[("bot", "tokens")].quantity_sum == 5


def test_a_batch_that_does_not_build_is_rated_one_event_at_a_time(
    two: tuple[Platform, Platform], monkeypatch: pytest.MonkeyPatch
) -> None:
    sender, other = two
    runtime = sender.runtime
    now = utc_now()
    bad = sender.event(INVOCATION, {"app_id": "bot", "tokens": 13}, event_time=now)
    sender.append([sender.event(INVOCATION, {"app_id": "bot", "tokens": 1}, event_time=now), bad])
    other.append([other.event(INVOCATION, {"app_id": "bot", "tokens": 5}, event_time=now)])
    build = rating.BatchRater.batch

    def fragile(self: rating.BatchRater, **kwargs: Any) -> RatedBatch:
        built = build(self, **kwargs)
        if bad.event_id in built.usage["event_id"].to_pylist():
            raise pa.ArrowInvalid("a value no check foresaw")
        return built

    monkeypatch.setattr(rating.BatchRater, "batch", fragile)
    assert pipeline_worker(runtime).run_pass_locked().failed == 1
    failed = runtime.usage_store.failed_summary(sender.tenant_id)
    assert [(f.event_id, f.reason) for f in failed.latest] == [
        (bad.event_id, "ArrowInvalid: a value no check foresaw")
    ]
    assert totals(sender)[("bot", "tokens")].quantity_sum == 1
    assert totals(other)[("bot", "tokens")].quantity_sum == 5


def test_a_database_error_still_stops_the_pass_and_loses_nothing(
    two: tuple[Platform, Platform], monkeypatch: pytest.MonkeyPatch
) -> None:
    sender, _ = two
    runtime = sender.runtime
    now = utc_now()
    sender.append([sender.event(INVOCATION, {"app_id": "bot", "tokens": 4}, event_time=now)])
    store = runtime.usage_store
    write = store.write

    def outage(batch: RatedBatch) -> None:
        raise duckdb.IOException("disk went away")

    monkeypatch.setattr(store, "write", outage)
    worker = pipeline_worker(runtime)
    with pytest.raises(duckdb.IOException):
        worker.run_pass_locked()
    assert store.failed_summary(sender.tenant_id).count == 0
    monkeypatch.setattr(store, "write", write)
    run_pipeline_until_drained(runtime)
    assert totals(sender)[("bot", "tokens")].quantity_sum == 4
    assert store.failed_summary(sender.tenant_id).count == 0


@pytest.fixture
def client(usage_runtime: Runtime) -> Iterator[TestClient]:
    with TestClient(create_app(usage_runtime.settings, runtime=usage_runtime)) as test_client:
        yield test_client


def test_status_and_accounting_routes_show_set_aside_events_of_the_callers_tenant_only(
    client: TestClient, two: tuple[Platform, Platform]
) -> None:
    sender, other = two
    now = utc_now()
    bad = sender.event(INVOCATION, {"app_id": "bot", "duration_ms": "2e18"}, event_time=now)
    sender.append([bad])
    other.append([other.event(INVOCATION, {"app_id": "bot", "tokens": 5}, event_time=now)])
    run_pipeline_until_drained(sender.runtime)

    status = client.get("/v1/pipeline/status", headers=sender.headers)
    assert status.status_code == 200, status.text
    body = status.json()
    assert (body["lag"], body["failed"]) == (0, 1)
    [latest] = body["failed_latest"]
    assert (latest["event_id"], latest["event_type"]) == (bad.event_id, INVOCATION)
    assert latest["reason"].startswith("duration_ms 2E+18 is outside 0 .. 1000000000000000000")
    accounting = client.get("/v1/pipeline/accounting", headers=sender.headers).json()
    assert accounting["balanced"] is True
    assert [(h["accepted"], h["failed"], h["in_pipeline"]) for h in accounting["hours"]] == [
        (1, 1, 0)
    ]

    reconciliation = client.get("/v1/reconciliation", headers=sender.headers).json()
    assert (reconciliation["totals"]["accepted"], reconciliation["totals"]["failed"]) == (1, 1)

    theirs = client.get("/v1/pipeline/status", headers=other.headers).json()
    assert (theirs["failed"], theirs["failed_latest"]) == (0, [])
    their_hours = client.get("/v1/pipeline/accounting", headers=other.headers).json()["hours"]
    assert [(h["rated"], h["failed"]) for h in their_hours] == [(1, 0)]


def test_ingest_rejects_a_number_over_the_limit_alone_and_the_rest_is_rated(
    client: TestClient, two: tuple[Platform, Platform]
) -> None:
    sender, _ = two
    now = utc_now()

    def event(event_id: str, data: dict[str, Any]) -> dict[str, Any]:
        return {
            "specversion": "1.0",
            "id": event_id,
            "source": "tests/set-aside",
            "type": INVOCATION,
            "time": now.isoformat(),
            "data": {"app_id": "bot", **data},
        }

    body = [
        event("f4", {"compute_units": 1e20}),
        event("t1", {"duration_ms": "100000000000000000"}),  # the walkthrough's: under it
        event("ok", {"tokens": 5}),
    ]
    sent = client.post("/v1/events", json=body, headers=sender.headers)
    assert sent.status_code == 200, sent.text
    answer = sent.json()
    assert answer["accepted"] == 2
    [rejection] = answer["rejected"]
    assert (rejection["id"], rejection["reason"], rejection["field"]) == (
        "f4",
        "invalid_data",
        "data.compute_units",
    )
    assert "less than or equal to 1000000000000000000" in rejection["message"]
    run_pipeline_until_drained(sender.runtime)
    mine = totals(sender)
    assert mine[("bot", "duration_ms")].quantity_sum == Decimal("100000000000000000")
    assert mine[("bot", "tokens")].quantity_sum == 5
    status = client.get("/v1/pipeline/status", headers=sender.headers).json()
    assert (status["lag"], status["failed"]) == (0, 0)


def test_a_stored_platform_cost_period_with_no_utc_instant_is_rated_without_it(
    usage_runtime: Runtime,
) -> None:
    """Logged before ingestion refused it: rating it raised after its event row was added,
    and the event counted rated and set aside at once (accounting: more rated than
    accepted)."""
    platform = new_platform(usage_runtime)
    now = utc_now()
    data = {"cost_type": "lb", "amount": "5", "billing_period_start": "9999-12-31T23:59:59-01:00"}
    platform.append([platform.event("qm.platform.cost", data, event_time=now)])
    run_pipeline_until_drained(usage_runtime)
    store = usage_runtime.usage_store
    assert store.failed_summary(platform.tenant_id).count == 0
    hours = Period(floor_hour(now) - H, floor_hour(now) + H)
    with usage_runtime.session_factory() as session:
        rows = pipeline_accounting(platform.tenant_id, hours, store=store, session=session)
    assert [(h.accepted, h.rated, h.failed, h.balanced) for h in rows] == [(1, 1, 0, True)]
    costs = store.platform_costs(platform.tenant_id, Period(now - H, now + H))
    assert [c.amount for c in costs] == [Decimal(5)]  # placed by its event time
