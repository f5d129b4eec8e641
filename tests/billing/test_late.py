"""GET /v1/billing/late: finalized runs whose period received usage after their latest
document, with the adjustment due; the alert the late-usage watch raises for each."""

from __future__ import annotations

import logging
from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest

from quartermaster.billing.late import late_usage
from quartermaster.billing.sources import StoreCalculator, pipeline_catch_up
from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import QMError
from quartermaster.guardrails import late_usage as late_watch
from quartermaster.guardrails.late_usage import LateUsageWatch
from tests.billing.conftest import preview_calculator
from tests.billing.platform import JANUARY_MONTH, Platform, event, jan
from tests.billing.support import PRICES

ZERO = timedelta(0)


def _late(platform: Platform, headers: dict[str, str] | None = None) -> Any:
    pipeline_catch_up(platform.runtime)()
    response = platform.client.get("/v1/billing/late", headers=headers or platform.headers)
    assert response.status_code == 200, response.text
    return response.json()


def _finalized_run(platform: Platform) -> dict[str, Any]:
    made = platform.post("/v1/billing/runs", {"month": JANUARY_MONTH})["run"]
    platform.post(f"/v1/billing/runs/{made['id']}/finalize", {})
    return made


def test_late_usage_is_listed_with_the_adjustment_due_until_adjusted(platform: Platform) -> None:
    run = _finalized_run(platform)
    assert _late(platform) == []
    platform.send(
        [
            event("resource.usage", jan(31), {"resource_id": "api-pod-1", "cpu_seconds": 1500}),
            event("request.trace", jan(30), {"app_id": "web", "request_id": "late-1"}),
        ]
    )
    platform.send([event("resource.usage", jan(2), {"resource_id": "web-pod-1", "cpu_seconds": 1})])
    platform.send(  # February's usage is no run's late usage
        [
            event(
                "resource.usage",
                jan(3).replace(month=2),
                {"resource_id": "api-pod-1", "cpu_seconds": 9},
            )
        ]
    )
    (late,) = _late(platform)
    assert late["run_id"] == run["id"]
    assert late["latest_document_id"] == run["id"]
    assert late["billed_as_of"] == run["as_of"]
    assert (late["period_start"], late["period_end"]) == (run["period_start"], run["period_end"])
    assert late["late_events"] == 3
    assert late["first_arrival"] > run["as_of"]
    assert late["last_arrival"] >= late["first_arrival"]
    # api cpu 500 -> 2000 s: 1000 over the free 1000 at 0.002; web 21 requests; web cpu +1 s.
    assert Decimal(late["adjustment_due"]) == Decimal("2.000000") + Decimal("0.000500") + Decimal(
        "0.002000"
    ), late
    assert late["currency"] == "USD"
    assert late["adjustment_lines"] == 6  # the three apps' lb shares move with web's requests
    finance = platform.key_for("finance")
    assert _late(platform, finance) == [late]
    for role, team in (("team-member", "web"), ("app", None)):
        key = platform.key_for(role, team=team, app_id="web" if role == "app" else None)
        refused = platform.client.get("/v1/billing/late", headers=key)
        assert refused.status_code == 403, refused.text

    adjusted = platform.post("/v1/billing/adjustments", {"run_id": run["id"]})["adjustment"]
    assert Decimal(adjusted["document"]["total"]) == Decimal(late["adjustment_due"])
    assert _late(platform) == []
    # An adjustment is final: discarding it is refused naming what it is.
    adjustment_id = adjusted["document"]["id"]
    kept = platform.client.delete(f"/v1/billing/runs/{adjustment_id}", headers=platform.headers)
    assert kept.status_code == 409, kept.text
    assert kept.json()["error"]["message"] == (
        f"{adjustment_id!r} is adjustment 1 of run {run['id']}: an adjustment is issued final "
        "and is never discarded; a later adjustment corrects it"
    )
    # Usage after the adjustment is late against the adjustment.
    platform.send([event("resource.usage", jan(9), {"resource_id": "api-pod-1", "cpu_seconds": 5})])
    (again,) = _late(platform)
    assert again["latest_document_id"] == adjusted["document"]["id"]
    assert again["billed_as_of"] == adjusted["document"]["as_of"]
    assert (again["late_events"], again["adjustment_due"]) == (1, "0.010000")


def test_late_usage_within_a_free_tier_is_due_as_a_zero_amount_quantity_line(
    platform: Platform,
) -> None:
    run = _finalized_run(platform)
    # api cpu 500 -> 600 s, still within the free 1000: the quantity moves, the amount not.
    platform.send(
        [event("resource.usage", jan(9), {"resource_id": "api-pod-1", "cpu_seconds": 100})]
    )
    (late,) = _late(platform)
    assert (late["late_events"], late["adjustment_due"], late["adjustment_lines"]) == (
        1,
        "0.000000",
        1,
    )
    adjusted = platform.post("/v1/billing/adjustments", {"run_id": run["id"]})["adjustment"]
    (line,) = adjusted["lines"]
    assert (line["app"], line["quantity"], line["amount"]) == ("api", "100", "0.000000")
    assert _late(platform) == []


def _requests_at(price: str) -> list[dict[str, Any]]:
    return [
        {**rule, "unit_price": price} if rule["meter"] == "requests" else rule for rule in PRICES
    ]


def test_a_back_dated_price_change_lists_the_run_until_adjusted(platform: Platform) -> None:
    run = _finalized_run(platform)
    # Recorded now but in force from February on: not this period's price.
    platform.upload_price_book(
        version=2, effective_from="2026-02-01T00:00:00Z", prices=_requests_at("0.0009")
    )
    assert _late(platform) == []
    # In force from the period's start: every requests line of January moves.
    platform.upload_price_book(version=3, prices=_requests_at("0.0006"))
    (late,) = _late(platform)
    assert late["run_id"] == run["id"]
    assert late["latest_document_id"] == run["id"]
    assert (late["late_events"], late["first_arrival"], late["last_arrival"]) == (0, None, None)
    assert late["back_dated_versions"] == [3]
    assert Decimal(late["adjustment_due"]) > 0
    adjusted = platform.post("/v1/billing/adjustments", {"run_id": run["id"]})["adjustment"]
    assert Decimal(adjusted["document"]["total"]) == Decimal(late["adjustment_due"])
    assert adjusted["document"]["price_book_versions"] == "3"
    assert _late(platform) == []
    # Late usage after it: listed for the events, with no version the adjustment holds.
    platform.send([event("resource.usage", jan(9), {"resource_id": "api-pod-1", "cpu_seconds": 5})])
    (again,) = _late(platform)
    assert (again["late_events"], again["back_dated_versions"]) == (1, [])
    assert again["latest_document_id"] == adjusted["document"]["id"]


def test_a_version_recorded_after_the_cutoff_is_not_named_yet(platform: Platform) -> None:
    """The list's adjustment is computed as recorded a settle window ago: a version uploaded
    since is not in it, and is not named beside the late usage that is."""
    _finalized_run(platform)
    platform.send([event("resource.usage", jan(9), {"resource_id": "api-pod-1", "cpu_seconds": 5})])
    pipeline_catch_up(platform.runtime)()
    before = utc_now()
    platform.upload_price_book(version=2, prices=_requests_at("0.0006"))
    earlier = StoreCalculator(platform.runtime.usage_store, clock=lambda: before, settle=ZERO)
    store = platform.runtime.usage_store
    with platform.runtime.read_session_factory() as session:
        (then,) = late_usage("acme", store=store, calculator=earlier, session=session)
    assert (then.arrivals.events, then.price_versions, then.adjustment_due) == (
        1,
        (),
        Decimal(0),  # api's cpu stays within its free 1,000 s
    )
    (now,) = _late(platform)
    assert (now["late_events"], now["back_dated_versions"]) == (1, [2])
    assert Decimal(now["adjustment_due"]) > 0  # every requests line re-rated


def test_usage_of_the_last_settle_window_is_listed_and_alerted_once_it_is_priced(
    platform: Platform,
) -> None:
    """An event that became billable after the cutoff is in no adjustment computed now: not
    listed as a late event that 'changes no line', and not taken as seen by the watch, which
    alerts on it at a pass whose cutoff has passed it."""
    _finalized_run(platform)
    before = utc_now()
    platform.send(
        [event("resource.usage", jan(31), {"resource_id": "api-pod-1", "cpu_seconds": 1500})]
    )
    pipeline_catch_up(platform.runtime)()
    store = platform.runtime.usage_store
    earlier = StoreCalculator(store, clock=lambda: before, settle=ZERO)
    with platform.runtime.read_session_factory() as session:
        assert late_usage("acme", store=store, calculator=earlier, session=session) == []
    watch = LateUsageWatch(platform.runtime, calculator=earlier)
    watch.run_once()
    assert _late_alerts(platform) == []
    earlier.clock = utc_now  # the next pass: its cutoff is past the event
    watch.run_once()
    (alert,) = _late_alerts(platform)
    assert "an adjustment of 2 USD (1 line) is due" in alert["message"]


def test_a_back_dated_version_that_moves_no_line_does_not_list_the_run(
    platform: Platform,
) -> None:
    _finalized_run(platform)
    platform.upload_price_book(version=2)  # v1's prices again, from the period's start
    assert _late(platform) == []
    # With late usage the run is listed, and names the version beside it.
    platform.send([event("resource.usage", jan(9), {"resource_id": "api-pod-1", "cpu_seconds": 5})])
    (late,) = _late(platform)
    assert (late["late_events"], late["back_dated_versions"]) == (1, [2])


def test_the_watch_raises_no_alert_for_a_back_dated_price_change(platform: Platform) -> None:
    """The alert is for usage that arrived late, which nobody chose; a back-dated price was
    uploaded on purpose and is listed by `qm bill late`."""
    _finalized_run(platform)
    platform.upload_price_book(version=2, prices=_requests_at("0.0006"))
    assert len(_late(platform)) == 1
    _watch(platform).run_once()
    assert _late_alerts(platform) == []


def _watch(platform: Platform) -> LateUsageWatch:
    return LateUsageWatch(platform.runtime, calculator=preview_calculator(platform.runtime))


def _late_alerts(platform: Platform) -> list[dict[str, Any]]:
    response = platform.client.get(
        "/v1/alerts", params={"kind": "late_usage"}, headers=platform.headers
    )
    assert response.status_code == 200, response.text
    alerts: list[dict[str, Any]] = response.json()
    return alerts


def test_the_watch_alerts_once_per_billed_document_naming_the_adjustment_due(
    platform: Platform,
) -> None:
    run = _finalized_run(platform)
    watch = _watch(platform)
    watch.run_once()
    assert _late_alerts(platform) == []
    platform.send(
        [event("resource.usage", jan(31), {"resource_id": "api-pod-1", "cpu_seconds": 1500})]
    )
    pipeline_catch_up(platform.runtime)()
    watch.run_once()
    (alert,) = _late_alerts(platform)
    assert alert["severity"] == "warning"
    assert alert["details"]["latest_document_id"] == run["id"]
    assert alert["title"] == (
        "Late usage for the finalized invoice run from 2026-01-01 00:00 UTC until "
        "2026-02-01 00:00 UTC"
    )
    assert alert["message"] == (
        "1 event for the period from 2026-01-01 00:00 UTC until 2026-02-01 00:00 UTC arrived "
        f"after run {run['id']} was billed: an adjustment of 2 USD (1 line) is due; "
        f"`qm bill adjust {run['id']}` issues it"
    )
    # Once per billed document: more late usage, or another server's watch, adds none.
    platform.send(
        [event("resource.usage", jan(30), {"resource_id": "api-pod-1", "cpu_seconds": 5})]
    )
    pipeline_catch_up(platform.runtime)()
    watch.run_once()
    _watch(platform).run_once()
    assert len(_late_alerts(platform)) == 1
    # Once adjusted, new late usage is a new alert against the adjustment.
    adjusted = platform.post("/v1/billing/adjustments", {"run_id": run["id"]})["adjustment"]
    watch.run_once()
    assert len(_late_alerts(platform)) == 1
    platform.send(
        [event("resource.usage", jan(29), {"resource_id": "api-pod-1", "cpu_seconds": 5})]
    )
    pipeline_catch_up(platform.runtime)()
    watch.run_once()
    alerts = _late_alerts(platform)
    assert len(alerts) == 2
    newest = alerts[0]
    assert "an adjustment of 0.01 USD (1 line) is due" in newest["message"]
    details = newest["details"]
    assert details["run_id"] == run["id"]
    assert details["latest_document_id"] == adjusted["document"]["id"]
    assert (details["late_events"], details["adjustment_due"]) == (1, "0.010000")


def test_a_team_member_sees_no_late_usage_alert(platform: Platform) -> None:
    _finalized_run(platform)
    platform.send(
        [event("resource.usage", jan(31), {"resource_id": "api-pod-1", "cpu_seconds": 1500})]
    )
    pipeline_catch_up(platform.runtime)()
    _watch(platform).run_once()
    assert len(_late_alerts(platform)) == 1
    member = platform.key_for("team-member", team="web")
    seen = platform.client.get("/v1/alerts", params={"kind": "late_usage"}, headers=member)
    assert seen.status_code == 200, seen.text
    assert seen.json() == []


def test_between_full_passes_the_watch_checks_only_runs_whose_period_received_usage(
    platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    run = _finalized_run(platform)
    watch = _watch(platform)
    checked: list[str] = []
    real = late_watch.late_usage_of

    def counting(run_row: Any, *args: Any, **kwargs: Any) -> Any:
        checked.append(run_row.id)
        return real(run_row, *args, **kwargs)

    monkeypatch.setattr(late_watch, "late_usage_of", counting)
    watch.run_once()  # the first pass is full
    assert checked == [run["id"]]
    watch.run_once()  # nothing arrived since
    assert checked == [run["id"]]
    # February's usage is no finalized run's: nothing to check.
    platform.send(
        [
            event(
                "resource.usage",
                jan(3).replace(month=2),
                {"resource_id": "api-pod-1", "cpu_seconds": 9},
            )
        ]
    )
    pipeline_catch_up(platform.runtime)()
    watch.run_once()
    assert checked == [run["id"]]
    # A platform cost for January, recorded now: late, and found.
    platform.send([event("platform.cost", jan(15), {"cost_type": "lb", "amount": "3.00"})])
    pipeline_catch_up(platform.runtime)()
    watch.run_once()
    assert checked == [run["id"]] * 2
    (alert,) = _late_alerts(platform)
    assert "an adjustment of 3 USD (3 lines) is due" in alert["message"], alert["message"]
    # A full pass every hour checks every run again (and finds nothing new).
    assert watch.last_full is not None
    watch.last_full -= late_watch.FULL_PASS
    watch.run_once()
    assert checked == [run["id"]] * 3
    assert len(_late_alerts(platform)) == 1


def test_a_run_whose_check_fails_is_logged_once_until_the_reason_changes(
    platform: Platform, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    run = _finalized_run(platform)
    watch = _watch(platform)
    failure: list[Exception] = [QMError("the price book is gone")]
    real = late_watch.late_usage_of

    def failing(*args: Any, **kwargs: Any) -> Any:
        if failure:
            raise failure[0]
        return real(*args, **kwargs)

    def logged() -> list[str]:
        return [r.getMessage() for r in caplog.records if run["id"] in r.getMessage()]

    monkeypatch.setattr(late_watch, "late_usage_of", failing)
    caplog.set_level(logging.WARNING, logger="quartermaster.guardrails")
    for _ in range(3):
        watch.last_full = None  # a full pass each time: the run is checked every time
        watch.run_once()
    assert logged() == [
        f"late usage of run {run['id']} not checked: the price book is gone "
        "(logged again when this changes)"
    ]
    assert caplog.records[-1].exc_info is None  # a named failure: one line, no traceback
    failure[0] = RuntimeError("disk on fire")
    watch.last_full = None
    watch.run_once()
    assert logged()[-1].endswith("RuntimeError: disk on fire (logged again when this changes)")
    assert caplog.records[-1].exc_info is not None  # unexpected: with its traceback
    failure.clear()
    watch.last_full = None
    watch.run_once()
    assert logged()[-1] == f"late usage of run {run['id']} is checked again"
    assert len(logged()) == 3
