"""The driver against a scripted transport: retries, refusals, the barrier before control
actions; and the reconciliation check itself."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import httpx
import orjson
import pytest

from quartermaster.sim.driver import DriverError, SendSummary, post_batch, request, send
from quartermaster.sim.generator import EventBatch, Expectation, RegisterResource, StreamItem
from quartermaster.sim.model import Platform
from quartermaster.sim.report import check_counts

Handler = Callable[[httpx.Request], httpx.Response]


def _client(handler: Handler) -> httpx.Client:
    return httpx.Client(base_url="http://qm.test", transport=httpx.MockTransport(handler))


def _report(request: httpx.Request) -> httpx.Response:
    events = orjson.loads(request.content)
    return httpx.Response(200, json={"accepted": len(events), "duplicates": 0, "rejected": []})


def test_connection_errors_5xx_and_429_are_retried() -> None:
    answers = iter(["drop", 503, 429, "ok"])
    retries = []

    def handler(request: httpx.Request) -> httpx.Response:
        answer = next(answers)
        if answer == "drop":
            raise httpx.ConnectError("connection refused", request=request)
        if answer == "ok":
            return _report(request)
        return httpx.Response(answer, headers={"Retry-After": "0"}, json={"error": {}})

    with _client(handler) as client:
        report = post_batch(client, b'[{"id": "a"}]', on_retry=lambda: retries.append(1))
    assert report["accepted"] == 1
    assert len(retries) == 3


def test_a_refusal_is_an_error_naming_the_call_and_the_reason() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        message = "team 'ghost' not found"
        return httpx.Response(404, json={"error": {"code": "not_found", "message": message}})

    with _client(handler) as client, pytest.raises(DriverError) as caught:
        request(client, "POST", "/v1/apps", json={})
    assert str(caught.value) == "POST /v1/apps -> 404: team 'ghost' not found"


def test_an_all_rejected_batch_is_a_report_not_an_error() -> None:
    rejected = [{"index": 0, "id": "a", "field": "qmsignature", "reason": "bad_signature"}]

    def handler(request: httpx.Request) -> httpx.Response:
        body = {"accepted": 0, "duplicates": 0, "rejected": rejected, "error": {}}
        return httpx.Response(422, json=body)

    with _client(handler) as client:
        assert post_batch(client, b"[{}]")["rejected"] == rejected


def test_control_actions_wait_for_every_earlier_batch(small_platform: Platform) -> None:
    """A late registration must not overtake the events sent before it."""
    lock = threading.Lock()
    answered: list[str] = []
    seen_at_action: list[set[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/events":
            response = _report(request)
            with lock:
                answered.extend(e["id"] for e in orjson.loads(request.content))
            return response
        with lock:
            seen_at_action.append(set(answered))
        return httpx.Response(201, json={})

    resource = small_platform.resources[0]
    batches: list[StreamItem] = [
        EventBatch(small_platform.config.start, [{"id": f"e{b}-{n}"} for n in range(50)])
        for b in range(12)
    ]
    action = RegisterResource(small_platform.config.start + timedelta(hours=1), resource)
    items: list[StreamItem] = [*batches[:8], action, *batches[8:]]
    with _client(handler) as client:
        summary = send(client, items, hours=2, connections=4)
    assert seen_at_action == [{f"e{b}-{n}" for b in range(8) for n in range(50)}]
    assert (summary.sent, summary.accepted, summary.requests, summary.actions) == (600, 600, 12, 1)


def _reconciliation(stages: dict[str, int], rejected: dict[str, int]) -> dict[str, Any]:
    hour = {"hour": "2026-05-04T10:00:00+00:00", "stages": stages, "reasons": {}}
    if rejected:
        hour["reasons"] = {"rejected": rejected}
    return {"hours": [hour], "totals": stages}


EXPECTED = Expectation(duplicates=5, rejected={"bad_signature": 2})


def _summary(**changes: Any) -> SendSummary:
    fields: dict[str, Any] = {
        "sent": 107,
        "accepted": 100,
        "duplicates": 5,
        "rejected": Counter({"bad_signature": 2}),
    }
    fields.update(changes)
    return SendSummary(**fields)


def test_counts_that_reconcile_pass() -> None:
    stages = {"received": 107, "accepted": 100, "duplicate": 5, "rejected": 2}
    assert check_counts(_summary(), EXPECTED, _reconciliation(stages, {"bad_signature": 2})) == []


def test_a_lost_or_double_counted_event_is_caught() -> None:
    lost = {"received": 107, "accepted": 99, "duplicate": 5, "rejected": 2}
    problems = check_counts(_summary(), EXPECTED, _reconciliation(lost, {"bad_signature": 2}))
    assert problems == ["accepted (server): 99, expected 100"]
    doubled = {"received": 107, "accepted": 101, "duplicate": 4, "rejected": 2}
    problems = check_counts(_summary(), EXPECTED, _reconciliation(doubled, {"bad_signature": 2}))
    assert "accepted (server): 101, expected 100" in problems
    assert "duplicates (server): 4, expected 5" in problems
    wrong_reason = {"received": 107, "accepted": 100, "duplicate": 5, "rejected": 2}
    problems = check_counts(_summary(), EXPECTED, _reconciliation(wrong_reason, {"conflict": 2}))
    assert problems == [
        "rejected bad_signature (server): 0, expected 2",
        "rejected conflict (server): 2, expected 0",
    ]


def test_after_retries_resent_events_may_add_duplicates_but_not_accepted() -> None:
    # a retried request had committed: its 10 events come back as duplicates
    summary = _summary(accepted=90, duplicates=15, retries=1)
    stages = {"received": 117, "accepted": 100, "duplicate": 15, "rejected": 2}
    assert check_counts(summary, EXPECTED, _reconciliation(stages, {"bad_signature": 2})) == []
    stages = {**stages, "accepted": 110}
    problems = check_counts(summary, EXPECTED, _reconciliation(stages, {"bad_signature": 2}))
    assert problems == ["accepted (server): 110, expected 100"]
