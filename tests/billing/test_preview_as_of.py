"""A preview reads the usage store as it stands, without waiting for the pipeline: the `as_of`
it states is the point its usage is complete up to (the pipeline's progress), not now while
events recorded before now are still in the event log; events waiting for their owner are
counted beside the figures, as a run's finalization counts them."""

from __future__ import annotations

from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from quartermaster.domain.timeutil import utc_now
from quartermaster.usage.pipeline import run_pipeline_until_drained
from tests.billing.platform import Platform, event


def _preview(platform: Platform) -> Any:
    response = platform.client.get("/v1/billing/preview", headers=platform.headers)
    assert response.status_code == 200, response.text
    return response.json()


def _last_recorded_at(platform: Platform) -> datetime:
    log = platform.runtime.event_log
    return log.read_after(log.head() - 1, limit=1)[0].record.recorded_at


def _as_of(body: Any) -> datetime:
    return datetime.fromisoformat(body["as_of"].replace("Z", "+00:00"))


def test_a_preview_is_as_of_what_the_pipeline_has_rated(platform: Platform) -> None:
    run_pipeline_until_drained(platform.runtime)  # January's events
    now = utc_now()
    requests = [
        event("request.trace", now - timedelta(minutes=5), {"app_id": "web", "request_id": f"r{n}"})
        for n in range(6)
    ]
    platform.send(requests[:4])
    run_pipeline_until_drained(platform.runtime)
    rated = _preview(platform)
    assert Decimal(rated["month_to_date"]) == Decimal("0.002")  # 4 x 0.0005
    platform.send(requests[4:])  # accepted, not rated yet: the pipeline has not run
    unread_since = _last_recorded_at(platform)
    behind = _preview(platform)
    # It was "as of now", claiming the two unrated requests while counting none of them.
    assert _as_of(behind) <= unread_since
    assert Decimal(behind["month_to_date"]) == Decimal("0.002")
    run_pipeline_until_drained(platform.runtime)
    caught_up = _preview(platform)
    assert _as_of(caught_up) > unread_since
    assert Decimal(caught_up["month_to_date"]) == Decimal("0.003")
    assert caught_up["events_waiting"] == 0
    assert caught_up["waiting_until"] is None


def test_a_preview_counts_the_months_events_waiting_for_their_owner(platform: Platform) -> None:
    now = utc_now()
    platform.send(
        [
            event(
                "resource.usage",
                now - timedelta(minutes=5),
                {"resource_id": "ghost-pod", "cpu_seconds": 70},
            )
        ]
    )
    run_pipeline_until_drained(platform.runtime)
    body = _preview(platform)
    assert Decimal(body["month_to_date"]) == 0  # not billed until attributed
    assert body["events_waiting"] == 1
    assert body["waiting_until"] > now.isoformat()[:19]
