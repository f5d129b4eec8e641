"""Replaying the log from the start changes nothing (property, on both backends)."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from quartermaster.domain.timeutil import Period, floor_hour, utc_now
from quartermaster.runtime import Runtime
from quartermaster.usage.pipeline import pipeline_worker, run_pipeline_until_drained
from tests.usage.conftest import new_platform

H = timedelta(hours=1)

event_specs = st.lists(
    st.tuples(
        st.sampled_from(["bot", "web", "ghost", None]),  # app claimed by the event
        st.sampled_from(["vm-1", "vm-2", None]),  # resource named by the event
        st.sampled_from(["staging", "production", None]),
        st.integers(min_value=0, max_value=72 * 60),  # minutes before now (event time)
        st.integers(min_value=0, max_value=30),  # hours before now (recorded)
        st.integers(min_value=0, max_value=500),
    ),
    min_size=1,
    max_size=40,
)


def _snapshot(runtime: Runtime, tenant_id: str) -> tuple[Any, ...]:
    store = runtime.usage_store
    now = utc_now()
    period = Period(now - timedelta(days=10), now + timedelta(days=1))
    hours = Period(floor_hour(now) - timedelta(days=3), floor_hour(now) + H)
    waiting = store.waiting_summary().get(tenant_id, (0, None))[0]
    return (
        store.quantities(tenant_id, period),
        store.pipeline_counts(tenant_id, hours),
        store.platform_costs(tenant_id, period),
        waiting,
    )


@settings(
    max_examples=8,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(specs=event_specs, batch_size=st.integers(min_value=3, max_value=15))
def test_replaying_the_log_changes_nothing(
    usage_runtime: Runtime, specs: list[tuple[Any, ...]], batch_size: int
) -> None:
    platform = new_platform(usage_runtime)
    now = utc_now()
    platform.app("bot", team="ds", cost_center="research", created_at=now - 80 * H)
    platform.app("web", team="front", cost_center="ops", created_at=now - 5 * H)
    platform.move("bot", team="front", cost_center="ops", at=now - 24 * H)
    platform.resource("vm-1", app_id="web", valid_from=now - 100 * H, created_at=now - 10 * H)
    platform.override("staging", cost_center="sandbox", created_at=now - 20 * H)
    records = []
    for app_id, resource_id, environment, minutes, recorded_hours, tokens in specs:
        data: dict[str, Any] = {"cpu_seconds": tokens}
        if resource_id is not None:
            data["resource_id"] = resource_id
        if app_id is not None:
            data["app_id"] = app_id
        if environment is not None:
            data["environment"] = environment
        event_type = "qm.resource.usage" if resource_id is not None else "qm.invocation.usage"
        if event_type == "qm.invocation.usage":
            data = {k: v for k, v in data.items() if k != "cpu_seconds"} | {"tokens": tokens}
            data.setdefault("app_id", "ghost")
        recorded = now - recorded_hours * H
        records.append(
            platform.event(
                event_type,
                data,
                event_time=min(recorded, now - minutes * timedelta(minutes=1)),
                recorded_at=recorded,
            )
        )
    platform.append(records)
    worker = pipeline_worker(usage_runtime)
    worker.batch_size = batch_size
    run_pipeline_until_drained(usage_runtime)
    before = _snapshot(usage_runtime, platform.tenant_id)
    worker.replay(platform.tenant_id)
    assert _snapshot(usage_runtime, platform.tenant_id)[0] == []  # dropped, then rebuilt
    worker.batch_size = 1000
    run_pipeline_until_drained(usage_runtime)
    assert _snapshot(usage_runtime, platform.tenant_id) == before


def test_replay_of_one_tenant_leaves_the_others_alone(usage_runtime: Runtime) -> None:
    now = utc_now()
    one, two = new_platform(usage_runtime), new_platform(usage_runtime)
    for platform in (one, two):
        platform.app("bot", team="ds", cost_center="research", created_at=now - 10 * H)
        platform.append(
            [platform.event("qm.invocation.usage", {"app_id": "bot", "tokens": 4}, event_time=now)]
        )
    run_pipeline_until_drained(usage_runtime)
    worker = pipeline_worker(usage_runtime)
    state = worker.replay(one.tenant_id)
    period = Period(now - H, now + H)
    store = usage_runtime.usage_store

    def tokens(tenant_id: str) -> list[Decimal]:
        rows = store.quantities(tenant_id, period)
        return [t.quantity_sum for t in rows if t.meter == "tokens"]

    assert store.quantities(one.tenant_id, period) == []
    assert tokens(two.tenant_id) == [4]
    # New usage keeps flowing while the replay rebuilds the older positions.
    one.append([one.event("qm.invocation.usage", {"app_id": "bot", "tokens": 1}, event_time=now)])
    run_pipeline_until_drained(usage_runtime)
    assert state.name not in {s.name for s in store.streams()}
    assert tokens(one.tenant_id) == [5]
    assert tokens(two.tenant_id) == [4]


def test_replay_leaves_the_event_to_billable_latency_as_first_measured(
    usage_runtime: Runtime,
) -> None:
    # Latency is first arrival to billable: a replay re-rates old events long after they
    # arrived, and counting them again read as p50 38673 ms, then 536200 ms, after replays.
    now = utc_now()
    platform = new_platform(usage_runtime)
    platform.app("bot", team="ds", cost_center="research", created_at=now - 10 * H)
    platform.append(
        [
            platform.event("qm.invocation.usage", {"app_id": "bot", "tokens": n}, event_time=now)
            for n in range(1, 6)
        ]
    )
    run_pipeline_until_drained(usage_runtime)
    store = usage_runtime.usage_store
    before = store.latency(platform.tenant_id, since=now - H)
    assert before.events == 5
    worker = pipeline_worker(usage_runtime)
    for _ in range(2):
        worker.replay(platform.tenant_id)
        run_pipeline_until_drained(usage_runtime)
        assert store.latency(platform.tenant_id, since=now - H) == before
    # New events after the replay are measured as ever.
    platform.append(
        [platform.event("qm.invocation.usage", {"app_id": "bot", "tokens": 9}, event_time=now)]
    )
    run_pipeline_until_drained(usage_runtime)
    assert store.latency(platform.tenant_id, since=now - H).events == 6
