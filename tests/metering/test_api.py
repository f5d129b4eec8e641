"""POST /v1/events, GET /v1/events and GET /v1/reconciliation over real loopback HTTP."""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest

from quartermaster.api.app import create_app
from quartermaster.cli.events import body_limit
from quartermaster.domain.events import event_json_schema
from quartermaster.domain.timeutil import utc_now
from quartermaster.metering import service as metering_service
from quartermaster.runtime import Runtime, build_runtime
from quartermaster.tenancy.models import Role
from quartermaster.tenancy.service import bootstrap_tenant
from tests.conftest import TenantHandle, make_settings, start_live_server
from tests.metering.conftest import (
    AppHandle,
    bearer,
    create_app_with_key,
    principal_token,
    usage_event,
)

BATCH = "application/cloudevents-batch+json"
SINGLE = "application/cloudevents+json"


def post(http: httpx.Client, token: str, body: Any, content_type: str = BATCH) -> httpx.Response:
    content = body if isinstance(body, bytes) else orjson.dumps(body)
    return http.post(
        "/v1/events", content=content, headers={**bearer(token), "Content-Type": content_type}
    )


def test_single_event_content_type(
    http: httpx.Client, tenant: TenantHandle, make_app: Callable[..., AppHandle]
) -> None:
    bot = make_app()
    response = post(http, tenant.admin_token, bot.sign(usage_event(bot.app_id)), SINGLE)
    assert response.status_code == 200
    assert response.json() == {"accepted": 1, "duplicates": 0, "rejected": []}
    as_array = post(http, tenant.admin_token, [usage_event(bot.app_id)], SINGLE)
    assert as_array.status_code == 400
    assert "application/cloudevents-batch+json" in as_array.json()["error"]["message"]


def test_batch_content_type_and_plain_json_take_either_shape(
    http: httpx.Client, tenant: TenantHandle, make_app: Callable[..., AppHandle]
) -> None:
    bot = make_app()
    batch = [usage_event(bot.app_id) for _ in range(3)]
    assert post(http, tenant.admin_token, batch).json()["accepted"] == 3
    one_as_batch = post(http, tenant.admin_token, usage_event(bot.app_id), BATCH)
    assert one_as_batch.status_code == 400
    assert "JSON array" in one_as_batch.json()["error"]["message"]
    json_one = post(http, tenant.admin_token, usage_event(bot.app_id), "application/json")
    json_many = post(
        http, tenant.admin_token, [usage_event(bot.app_id)], "application/json; charset=utf-8"
    )
    assert json_one.json()["accepted"] == json_many.json()["accepted"] == 1


def test_other_content_types_are_refused(http: httpx.Client, tenant: TenantHandle) -> None:
    response = post(http, tenant.admin_token, b"id,source", "text/csv")
    assert response.status_code == 415
    assert "text/csv" in response.json()["error"]["message"]


def test_malformed_json_names_the_position(http: httpx.Client, tenant: TenantHandle) -> None:
    response = post(http, tenant.admin_token, b'[{"id": "1",}\n]')
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "malformed_body"
    assert "line 1, column 12 (byte 11)" in error["message"]


def test_a_body_that_is_not_utf8_names_the_first_bad_byte(
    http: httpx.Client, tenant: TenantHandle
) -> None:
    """orjson reports bad bytes anywhere as "surrogates not allowed" at byte 0."""
    body = b'[{"id": "a\xc3\xa9"},\n {"id": "\xff\xfe"}]'
    response = post(http, tenant.admin_token, body)
    assert response.status_code == 400
    assert response.json()["error"] == {
        "code": "malformed_body",
        "message": "request body is not valid UTF-8: byte 0xff at line 2, column 10 (byte 25)",
        "field": None,
    }


def test_partial_acceptance_keeps_the_valid_events(
    http: httpx.Client, tenant: TenantHandle, make_app: Callable[..., AppHandle]
) -> None:
    bot = make_app(require_signatures=True)
    good = [bot.sign(usage_event(bot.app_id)) for _ in range(2)]
    unsigned = usage_event(bot.app_id, event_id="unsigned-1")
    body = [good[0], unsigned, {"nope": True}, good[1]]
    response = post(http, tenant.admin_token, body)
    assert response.status_code == 200
    report = response.json()
    assert report["accepted"] == 2
    assert [(r["index"], r["id"], r["reason"], r["field"]) for r in report["rejected"]] == [
        (1, "unsigned-1", "missing_signature", "qmsignature"),
        (2, None, "invalid_envelope", "specversion"),
    ]
    assert all(r["message"] for r in report["rejected"])
    # Every problem of the event is named, so one round trip shows everything to fix.
    envelope = report["rejected"][1]["message"]
    for named in ("specversion: Field required", "id: Field required", "source:", "type:"):
        assert named in envelope, envelope
    assert "more)" not in envelope
    tail = http.get("/v1/events", headers=tenant.headers).json()["events"]
    assert [e["event"]["id"] for e in tail] == [good[0]["id"], good[1]["id"]]


@pytest.mark.parametrize("time", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_a_time_without_a_utc_instant_rejects_that_event_alone(
    http: httpx.Client, tenant: TenantHandle, make_app: Callable[..., AppHandle], time: str
) -> None:
    bot = make_app()
    good = [usage_event(bot.app_id) for _ in range(2)]
    bad = {**usage_event(bot.app_id, event_id="bad-time"), "time": time}
    response = post(http, tenant.admin_token, [good[0], bad, good[1]])
    assert response.status_code == 200, response.text  # was a 500 losing the whole batch
    report = response.json()
    assert report["accepted"] == 2
    [rejection] = report["rejected"]
    assert (rejection["index"], rejection["id"], rejection["reason"], rejection["field"]) == (
        1,
        "bad-time",
        "invalid_envelope",
        "time",
    )
    assert time in rejection["message"]
    tail = http.get("/v1/events", headers=tenant.headers).json()["events"]
    assert [e["event"]["id"] for e in tail] == [good[0]["id"], good[1]["id"]]


def test_nothing_acceptable_is_422_with_the_report(
    http: httpx.Client, tenant: TenantHandle
) -> None:
    response = post(http, tenant.admin_token, [{"specversion": "1.0"}, 3])
    assert response.status_code == 422
    body = response.json()
    assert body["accepted"] == 0
    assert body["error"]["code"] == "all_rejected"
    assert [r["index"] for r in body["rejected"]] == [0, 1]
    empty = post(http, tenant.admin_token, [])
    assert (empty.status_code, empty.json()["accepted"]) == (200, 0)


def test_resend_reports_duplicates_and_conflicts(
    http: httpx.Client, tenant: TenantHandle, make_app: Callable[..., AppHandle]
) -> None:
    bot = make_app()
    batch = [bot.sign(usage_event(bot.app_id)) for _ in range(4)]
    assert post(http, tenant.admin_token, batch).json()["accepted"] == 4
    again = post(http, tenant.admin_token, batch)
    assert again.status_code == 200
    assert again.json() == {"accepted": 0, "duplicates": 4, "rejected": []}
    changed = {**batch[0], "data": {**batch[0]["data"], "tokens": 12345}}
    conflict = post(http, tenant.admin_token, [bot.sign(changed)])
    assert conflict.status_code == 422
    assert conflict.json()["rejected"][0]["reason"] == "conflict"


def test_every_rejection_reason_over_http(
    http: httpx.Client,
    runtime: Runtime,
    tenant: TenantHandle,
    make_app: Callable[..., AppHandle],
) -> None:
    bot = make_app(require_signatures=True)
    other = make_app()
    stored = bot.sign(usage_event(bot.app_id, event_id="stored-1"))
    post(http, tenant.admin_token, [stored])
    future = utc_now() + timedelta(hours=2)
    body: list[Any] = [
        {"specversion": "1.0", "id": "x"},  # invalid_envelope
        {**usage_event(bot.app_id), "type": "qm.unknown"},  # unknown_type
        usage_event(bot.app_id, tokens=-5),  # invalid_data
        bot.sign(usage_event(bot.app_id, time=future)),  # future_timestamp
        usage_event(bot.app_id),  # missing_signature
        {**bot.sign(usage_event(bot.app_id)), "qmkeyid": "sk_nope"},  # unknown_key
        {**bot.sign(usage_event(bot.app_id)), "qmsignature": "ab" * 32},  # bad_signature
        other.sign(usage_event(bot.app_id)),  # key_app_mismatch
        {**usage_event(bot.app_id), "qmlease": "rl1.x.y"},  # invalid_lease
        other.sign(usage_event(other.app_id, source=f"app://{bot.app_id}")),  # source_app_mismatch
        bot.sign({**stored, "data": {**stored["data"], "tokens": 1}}),  # conflict
    ]
    report = post(http, tenant.admin_token, body).json()
    reasons = [r["reason"] for r in report["rejected"]]
    assert reasons == [
        "invalid_envelope",
        "unknown_type",
        "invalid_data",
        "future_timestamp",
        "missing_signature",
        "unknown_key",
        "bad_signature",
        "key_app_mismatch",
        "invalid_lease",
        "source_app_mismatch",
        "conflict",
    ]
    app_token = principal_token(runtime, tenant.tenant_id, role=Role.APP, app_slug=other.app_id)
    forbidden = post(http, app_token, [usage_event(bot.app_id)])
    assert forbidden.json()["rejected"][0]["reason"] == "forbidden_app"


def test_another_apps_key_cannot_take_an_apps_source_and_id_first(
    http: httpx.Client,
    runtime: Runtime,
    tenant: TenantHandle,
    make_app: Callable[..., AppHandle],
) -> None:
    victim, squatter = make_app(require_signatures=True), make_app()
    squatter_token = principal_token(
        runtime, tenant.tenant_id, role=Role.APP, app_slug=squatter.app_id
    )
    taken = usage_event(squatter.app_id, event_id="inv-001", source=f"app://{victim.app_id}")
    refused = post(http, squatter_token, [squatter.sign(taken)]).json()["rejected"][0]
    assert (refused["reason"], refused["field"]) == ("source_app_mismatch", "source")
    assert f"reserved to app {victim.app_id!r}" in refused["message"]
    # the victim's own event under its source and id is then stored, not a conflict
    own = victim.sign(
        usage_event(victim.app_id, event_id="inv-001", source=f"app://{victim.app_id}")
    )
    assert post(http, tenant.admin_token, [own]).json() == {
        "accepted": 1,
        "duplicates": 0,
        "rejected": [],
    }


def test_a_sample_naming_only_its_resource_is_checked_against_its_binding(
    http: httpx.Client,
    tenant: TenantHandle,
    make_app: Callable[..., AppHandle],
) -> None:
    owner, other = make_app(require_signatures=True), make_app()
    bound = http.post(
        "/v1/resources",
        json={
            "resource_id": "vm-bound",
            "app_id": owner.app_id,
            "valid_from": (utc_now() - timedelta(hours=1)).isoformat(),
        },
        headers=bearer(tenant.admin_token),
    )
    assert bound.status_code == 201, bound.text
    sample = {
        **usage_event(owner.app_id),
        "type": "qm.resource.usage",
        "data": {"resource_id": "vm-bound", "cpu_seconds": "5"},
    }
    foreign = post(http, tenant.admin_token, [other.sign(sample)]).json()["rejected"][0]
    assert (foreign["reason"], foreign["field"]) == ("key_app_mismatch", "qmkeyid")
    assert "resource 'vm-bound' is bound to it" in foreign["message"]
    # the owner's key, or none (the platform's report), is taken
    assert post(http, tenant.admin_token, [owner.sign(sample)]).json()["accepted"] == 1
    unsigned = {**sample, "id": "platform-sample-1"}
    assert post(http, tenant.admin_token, [unsigned]).json()["accepted"] == 1


def test_team_member_sends_only_its_own_teams_apps_events(
    http: httpx.Client,
    runtime: Runtime,
    tenant: TenantHandle,
    make_app: Callable[..., AppHandle],
) -> None:
    """A team-member's key must not bill another team: its events name one of its team's
    apps, or are rejected one by one (the rest of the batch is kept)."""
    own, others = make_app(), make_app()
    token = principal_token(runtime, tenant.tenant_id, role=Role.TEAM_MEMBER, team_id=own.team_id)
    platform = {
        **usage_event(own.app_id),
        "type": "qm.platform.cost",
        "data": {"cost_type": "lb", "amount": "1"},
    }
    report = post(http, token, [usage_event(own.app_id), usage_event(others.app_id), platform])
    assert report.status_code == 200, report.text
    body = report.json()
    assert body["accepted"] == 1
    assert [(r["index"], r["reason"], r["field"]) for r in body["rejected"]] == [
        (1, "forbidden_app", "data.app_id"),
        (2, "forbidden_app", "data.app_id"),
    ]
    assert body["rejected"][0]["message"] == (
        "role 'team-member' may only send events of its own team's apps; the event names "
        f"app {others.app_id!r}"
    )
    assert body["rejected"][1]["message"].endswith("the event names no app")


def test_app_principal_sends_its_own_events_but_cannot_read(
    http: httpx.Client,
    runtime: Runtime,
    tenant: TenantHandle,
    make_app: Callable[..., AppHandle],
) -> None:
    bot = make_app()
    token = principal_token(runtime, tenant.tenant_id, role=Role.APP, app_slug=bot.app_id)
    assert post(http, token, [bot.sign(usage_event(bot.app_id))]).json()["accepted"] == 1
    assert http.get("/v1/events", headers=bearer(token)).status_code == 403
    assert http.get("/v1/reconciliation", headers=bearer(token)).status_code == 403


def test_authentication_and_roles(
    http: httpx.Client, runtime: Runtime, tenant: TenantHandle
) -> None:
    assert (
        http.post("/v1/events", content=b"[]", headers={"Content-Type": BATCH}).status_code == 401
    )
    finance = principal_token(runtime, tenant.tenant_id, role=Role.FINANCE)
    assert post(http, finance, []).status_code == 403
    assert http.get("/v1/reconciliation", headers=bearer(finance)).status_code == 200


def test_reads_are_scoped_to_the_tenant(
    http: httpx.Client, runtime: Runtime, make_tenant: Callable[..., TenantHandle]
) -> None:
    tenant_a, tenant_b = make_tenant("a"), make_tenant("b")
    app_a = create_app_with_key(runtime, tenant_a.tenant_id, "same-slug")
    create_app_with_key(runtime, tenant_b.tenant_id, "same-slug")
    event = app_a.sign(usage_event("same-slug"))
    assert post(http, tenant_a.admin_token, [event]).json()["accepted"] == 1
    # the same (source, id) is a new event in another tenant; A's key is unknown there
    assert post(http, tenant_b.admin_token, [event]).json()["rejected"][0]["reason"] == (
        "unknown_key"
    )
    assert (
        post(http, tenant_b.admin_token, [usage_event("same-slug", event_id=event["id"])]).json()[
            "accepted"
        ]
        == 1
    )
    events_b = http.get("/v1/events", headers=tenant_b.headers).json()["events"]
    assert len(events_b) == 1
    assert "qmkeyid" not in events_b[0]["event"]
    recon_b = http.get("/v1/reconciliation", headers=tenant_b.headers).json()
    assert recon_b["totals"] == {"received": 2, "accepted": 1, "rejected": 1}
    recon_a = http.get("/v1/reconciliation", headers=tenant_a.headers).json()
    assert recon_a["totals"] == {"received": 1, "accepted": 1}
    # UTC moments written as every other route writes them (…Z), not as +00:00.
    moments = [recon_a["start"], recon_a["end"], recon_a["hours"][0]["hour"]]
    assert all(re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:00:00Z", m) for m in moments), moments
    assert (
        http.get("/v1/events", headers=tenant_a.headers)
        .json()["events"][0]["recorded_at"]
        .endswith("Z")
    )


def test_team_members_tail_only_their_teams_apps(
    http: httpx.Client, runtime: Runtime, tenant: TenantHandle, make_app: Callable[..., AppHandle]
) -> None:
    mine, theirs = make_app(), make_app()
    post(http, tenant.admin_token, [usage_event(mine.app_id), usage_event(theirs.app_id)])
    member = principal_token(runtime, tenant.tenant_id, role=Role.TEAM_MEMBER, team_id=mine.team_id)
    seen = http.get("/v1/events", headers=bearer(member)).json()["events"]
    assert [e["app_id"] for e in seen] == [mine.app_id]


def test_reconciliation_counters_are_tenant_wide_so_team_members_may_not_read_them(
    http: httpx.Client, runtime: Runtime, tenant: TenantHandle, make_app: Callable[..., AppHandle]
) -> None:
    """The counters are per tenant and hour, not per team: they would show a team-member
    other teams' volumes and rejections."""
    mine = make_app()
    post(http, tenant.admin_token, [usage_event(mine.app_id)])
    member = principal_token(runtime, tenant.tenant_id, role=Role.TEAM_MEMBER, team_id=mine.team_id)
    refused = http.get("/v1/reconciliation", headers=bearer(member))
    assert refused.status_code == 403
    assert refused.json()["error"]["code"] == "permission_denied"
    finance = principal_token(runtime, tenant.tenant_id, role=Role.FINANCE)
    counted = http.get("/v1/reconciliation", headers=bearer(finance))
    assert counted.status_code == 200
    assert counted.json()["totals"]["accepted"] == 1


def test_tail_pages_after_a_position(
    http: httpx.Client, tenant: TenantHandle, make_app: Callable[..., AppHandle]
) -> None:
    bot = make_app()
    events = [usage_event(bot.app_id) for _ in range(5)]
    post(http, tenant.admin_token, events)
    newest = http.get("/v1/events", params={"limit": 2}, headers=tenant.headers).json()
    assert [e["event"]["id"] for e in newest["events"]] == [events[3]["id"], events[4]["id"]]
    first = http.get("/v1/events", params={"after": 0, "limit": 3}, headers=tenant.headers).json()
    assert [e["event"]["id"] for e in first["events"]] == [e["id"] for e in events[:3]]
    rest = http.get(
        "/v1/events", params={"after": first["next_after"]}, headers=tenant.headers
    ).json()
    assert [e["event"]["id"] for e in rest["events"]] == [e["id"] for e in events[3:]]
    empty = http.get(
        "/v1/events", params={"after": rest["next_after"]}, headers=tenant.headers
    ).json()
    assert empty == {"events": [], "next_after": rest["next_after"]}


def test_a_page_of_the_log_ends_past_its_byte_budget(
    http: httpx.Client,
    tenant: TenantHandle,
    make_app: Callable[..., AppHandle],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # a reader of large events gets them a few at a time, never a response of gigabytes
    monkeypatch.setattr(metering_service, "EVENTS_PAGE_BYTES", 10_000)
    bot = make_app()
    # 4,000 bytes each: the budget counts bytes, not characters
    events = [{**usage_event(bot.app_id), "xpad": "€" * 1_333} for _ in range(5)]
    post(http, tenant.admin_token, events)
    seen: list[str] = []
    after = 0
    while True:
        page = http.get("/v1/events", params={"after": after}, headers=tenant.headers).json()
        if not page["events"]:
            break
        assert len(page["events"]) <= 2
        seen += [e["event"]["id"] for e in page["events"]]
        after = page["next_after"]
    assert seen == [e["id"] for e in events]
    # one event larger than the budget still comes, alone
    huge = {**usage_event(bot.app_id), "xpad": "x" * 20_000}
    post(http, tenant.admin_token, [huge])
    alone = http.get("/v1/events", params={"after": after}, headers=tenant.headers).json()
    assert [e["event"]["id"] for e in alone["events"]] == [huge["id"]]
    newest = http.get("/v1/events", headers=tenant.headers).json()["events"]
    assert [e["event"]["id"] for e in newest] == [huge["id"]]


def test_reconciliation_parameters_are_checked(http: httpx.Client, tenant: TenantHandle) -> None:
    naive = http.get(
        "/v1/reconciliation", params={"start": "2026-11-01T00:00:00"}, headers=tenant.headers
    )
    assert naive.status_code == 422
    assert "UTC offset" in naive.json()["error"]["message"]
    backwards = http.get(
        "/v1/reconciliation",
        params={"start": "2026-11-02T00:00:00Z", "end": "2026-11-01T00:00:00Z"},
        headers=tenant.headers,
    )
    assert backwards.status_code == 422
    window = http.get(
        "/v1/reconciliation",
        params={"start": "2026-11-01T00:00:00Z", "end": "2026-11-02T00:00:00+00:00"},
        headers=tenant.headers,
    ).json()
    assert window["hours"] == []


def test_bench_route_is_absent_by_default(http: httpx.Client) -> None:
    assert http.post("/v1/_bench/parse", content=b"[]").status_code == 404
    assert "/v1/_bench/parse" not in http.get("/openapi.json").json()["paths"]


def test_the_ingest_route_documents_its_body(http: httpx.Client) -> None:
    spec = http.get("/openapi.json").json()
    operation = spec["paths"]["/v1/events"]["post"]
    schemas = spec["components"]["schemas"]
    [content] = operation["requestBody"]["content"].values()  # one: generators cope
    assert content["schema"] == {
        "oneOf": [
            {"$ref": "#/components/schemas/CloudEvent"},
            {"$ref": "#/components/schemas/CloudEventBatch"},
        ]
    }
    assert schemas["CloudEventBatch"]["items"] == {"$ref": "#/components/schemas/CloudEvent"}
    union = schemas["CloudEvent"]
    assert union["discriminator"]["propertyName"] == "type"
    mapping = union["discriminator"]["mapping"]
    assert set(mapping) == {v["properties"]["type"]["const"] for v in event_json_schema()["oneOf"]}
    for event_type, ref in mapping.items():
        variant = schemas[ref.split("/")[-1]]
        assert variant["properties"]["type"]["enum"] == [event_type]
        assert "data" in variant["required"]
    assert "Retry-After" in operation["responses"]["429"]["headers"]


@dataclass
class LimitedServer:
    http: httpx.Client
    token: str


@pytest.fixture
def limited(tmp_path: Path, db_url: str) -> Iterator[LimitedServer]:
    """A server with small limits (5 events, 4,000 bytes) and the bench routes on."""
    settings = make_settings(
        tmp_path / "limited",
        db_url,
        pipeline_enabled=False,
        max_batch_events=5,
        max_body_bytes=4000,
        bench_routes_enabled=True,
    )
    runtime = build_runtime(settings, migrate=False)
    with runtime.session_factory() as session:
        token = bootstrap_tenant(f"lim-{uuid.uuid4().hex[:8]}", session=session).token
    live = start_live_server(create_app(settings, runtime=runtime))
    try:
        with httpx.Client(base_url=live.url, timeout=30) as client:
            yield LimitedServer(client, token)
    finally:
        live.server.should_exit = True
        live.thread.join(timeout=20)
        runtime.close()


def test_too_many_events_is_413_naming_the_limit(limited: LimitedServer) -> None:
    events = [usage_event("bot") for _ in range(6)]
    response = post(limited.http, limited.token, events)
    assert response.status_code == 413
    assert "limit is 5 per request" in response.json()["error"]["message"]
    assert post(limited.http, limited.token, events[:5]).json()["accepted"] == 5


def test_too_many_bytes_is_413_naming_the_limit(limited: LimitedServer) -> None:
    big = [{**usage_event("bot"), "note": "x" * 900} for _ in range(5)]
    body = orjson.dumps(big)
    assert len(body) > 4000
    declared = post(limited.http, limited.token, body)
    assert declared.status_code == 413
    assert "limit is 4,000 bytes" in declared.json()["error"]["message"]
    assert "an event over the limit alone cannot be sent" in declared.json()["error"]["message"]
    # qm events send reads the limit from this wording
    assert body_limit(declared.json()["error"]["message"]) == 4000

    def chunks() -> Iterator[bytes]:  # no Content-Length: the bytes read are counted
        for start in range(0, len(body), 1000):
            yield body[start : start + 1000]

    streamed = limited.http.post(
        "/v1/events",
        content=chunks(),
        headers={**bearer(limited.token), "Content-Type": BATCH},
    )
    assert streamed.status_code == 413
    assert body_limit(streamed.json()["error"]["message"]) == 4000
    assert "limit is 4,000 bytes" in streamed.json()["error"]["message"]


def test_bench_route_parses_when_enabled(limited: LimitedServer) -> None:
    assert limited.http.post("/v1/_bench/parse", content=b'[{"a": 1}]').status_code == 202
    assert "/v1/_bench/parse" not in limited.http.get("/openapi.json").json()["paths"]


def test_unstorable_values_are_rejected_alone_on_both_backends(
    http: httpx.Client, tenant: TenantHandle
) -> None:
    good = usage_event("bot")
    nul = usage_event("bot", event_id="bad\x00id")
    long_resource = {
        **usage_event("bot"),
        "type": "qm.resource.usage",
        "data": {"resource_id": "r" * 300, "cpu_seconds": "1"},
    }
    report = post(http, tenant.admin_token, [good, nul, long_resource]).json()
    assert report["accepted"] == 1
    assert [(r["index"], r["field"]) for r in report["rejected"]] == [
        (1, "id"),
        (2, "data.resource_id"),
    ]


def test_a_lone_surrogate_makes_the_body_malformed_and_nothing_is_stored(
    http: httpx.Client, tenant: TenantHandle
) -> None:
    good = orjson.dumps(usage_event("bot"))
    bad = orjson.dumps(usage_event("bot")).replace(b'"bot"', b'"bot\\ud800"', 1)
    response = http.post(
        "/v1/events",
        content=b"[" + good + b"," + bad + b"]",
        headers={
            "Authorization": f"Bearer {tenant.admin_token}",
            "Content-Type": "application/cloudevents-batch+json",
        },
    )
    assert response.status_code == 400, response.text
    error = response.json()["error"]
    assert error["code"] == "malformed_body"
    assert "surrogate" in error["message"]
    assert post(http, tenant.admin_token, [orjson.loads(good)]).json()["accepted"] == 1


def _disk_full(dialect: str) -> Exception:
    """The error a full disk raises under the event log's append, as each database says it."""
    from sqlalchemy.exc import OperationalError

    if dialect == "sqlite":
        import sqlite3

        cause: Exception = sqlite3.OperationalError("database or disk is full")
    else:
        from psycopg import errors

        cause = errors.DiskFull('could not extend file "base/16384/16521": No space left on device')
    return OperationalError("INSERT INTO event_log ...", {}, cause)


def test_a_full_disk_is_a_503_naming_it_with_retry_after(
    http: httpx.Client,
    runtime: Runtime,
    tenant: TenantHandle,
    make_app: Callable[..., AppHandle],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A full data dir answered a bare 500 ("internal server error: the server's log has the
    # details"): neither the sender nor the operator could tell why.
    bot = make_app()
    error = _disk_full(runtime.engine.dialect.name)

    def full(*args: object, **kwargs: object) -> None:
        raise error

    monkeypatch.setattr(runtime.event_log, "append", full)
    refused = post(http, tenant.admin_token, [usage_event(bot.app_id) for _ in range(2)])
    assert refused.status_code == 503, refused.text
    assert refused.headers["Retry-After"] == "10"
    body = refused.json()["error"]
    assert body["code"] == "service_unavailable"
    assert body["message"].startswith("events not stored: the database's disk is full (")
    cause = "database or disk is full" if "sqlite" in str(runtime.engine.url) else "DiskFull"
    assert cause in body["message"]
    assert "Nothing of this request was stored" in body["message"]
    # space freed: the same events are accepted, once
    monkeypatch.undo()
    events = [usage_event(bot.app_id) for _ in range(2)]
    assert post(http, tenant.admin_token, events).json()["accepted"] == 2
    assert post(http, tenant.admin_token, events).json()["duplicates"] == 2


def test_other_storage_errors_stay_500s(
    http: httpx.Client,
    runtime: Runtime,
    tenant: TenantHandle,
    make_app: Callable[..., AppHandle],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    bot = make_app()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("something else")

    monkeypatch.setattr(runtime.event_log, "append", broken)
    response = post(http, tenant.admin_token, [usage_event(bot.app_id)])
    assert response.status_code == 500


def test_a_number_beyond_a_double_rejects_its_event_alone(
    http: httpx.Client, tenant: TenantHandle
) -> None:
    good = orjson.dumps(usage_event("bot", event_id="good"))
    huge = orjson.dumps(usage_event("bot", event_id="huge")).replace(
        b'"tokens":10', b'"tokens":1e400'
    )
    deep = orjson.dumps(usage_event("bot", event_id="deep")).replace(
        b'"specversion"', b'"qmextra":{"sizes":[1,-1e999]},"specversion"'
    )
    long_integer = orjson.dumps(usage_event("bot", event_id="long")).replace(
        b'"tokens":10', b'"tokens":' + b"9" * 5000
    )
    body = b"[" + b",".join([good, huge, deep, long_integer]) + b"]"
    response = http.post(
        "/v1/events",
        content=body,
        headers={**bearer(tenant.admin_token), "Content-Type": BATCH},
    )
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["accepted"] == 1
    assert [(r["index"], r["id"], r["reason"], r["field"]) for r in report["rejected"]] == [
        (1, "huge", "invalid_data", "data.tokens"),
        (2, "deep", "invalid_envelope", "qmextra.sizes.1"),
        (3, "long", "invalid_data", "data.tokens"),
    ]
    assert "beyond the largest a JSON number may be" in report["rejected"][0]["message"]
    # its other problems are named beside it, in the order of the checks
    no_version = orjson.loads(good)
    del no_version["specversion"]
    both = orjson.dumps(no_version).replace(b'"tokens":10', b'"tokens":1e400')
    answer = http.post(
        "/v1/events",
        content=b"[" + both + b"]",
        headers={**bearer(tenant.admin_token), "Content-Type": BATCH},
    ).json()
    [refused] = answer["rejected"]
    assert (refused["reason"], refused["field"]) == ("invalid_envelope", "specversion")
    alone = http.post(
        "/v1/events", content=huge, headers={**bearer(tenant.admin_token), "Content-Type": SINGLE}
    )
    assert alone.status_code == 422, alone.text
    # still the body's error when it is not JSON besides, or holds a lone surrogate
    for broken in (body[:-1], body.replace(b'"good"', b'"good\\ud800"')):
        refused = http.post(
            "/v1/events",
            content=broken,
            headers={**bearer(tenant.admin_token), "Content-Type": BATCH},
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["error"]["code"] == "malformed_body"


def test_an_event_nested_too_deep_is_rejected_and_the_batch_kept(
    http: httpx.Client, tenant: TenantHandle
) -> None:
    good = [orjson.dumps(usage_event("bot")) for _ in range(3)]
    levels = 300  # orjson reads up to 1,024 levels but writes 254: the event alone is refused
    deep = orjson.dumps(usage_event("bot", event_id="deep")).replace(
        b'"specversion"', b'"xdeep":' + b"[" * levels + b"1" + b"]" * levels + b',"specversion"'
    )
    body = b"[" + b",".join([*good, deep]) + b"]"
    headers = {**bearer(tenant.admin_token), "Content-Type": BATCH}
    response = http.post("/v1/events", content=body, headers=headers)
    assert response.status_code == 200, response.text
    report = response.json()
    assert report["accepted"] == 3
    [refused] = report["rejected"]
    assert (refused["id"], refused["reason"], refused["field"]) == (
        "deep",
        "invalid_envelope",
        "xdeep",
    )
    # with a number beyond a double, the body is read again by a parser taking fewer levels:
    # past them, the body's error, not a 500
    huge = orjson.dumps(usage_event("bot")).replace(b'"tokens":10', b'"tokens":1e400')
    # up to about 900 levels each such event is still rejected alone
    deep_800 = deep.replace(b"[" * levels, b"[" * 800).replace(b"]" * levels, b"]" * 800)
    kept = http.post(
        "/v1/events", content=b"[" + huge + b"," + deep_800 + b"," + good[0] + b"]", headers=headers
    )
    assert kept.status_code == 200, kept.text
    assert [(r["index"], r["field"]) for r in kept.json()["rejected"]] == [
        (0, "data.tokens"),
        (1, "xdeep"),
    ]
    deeper = deep.replace(b"[" * levels, b"[" * 1000).replace(b"]" * levels, b"]" * 1000)
    refused_body = http.post(
        "/v1/events", content=b"[" + huge + b"," + deeper + b"]", headers=headers
    )
    assert refused_body.status_code == 400, refused_body.text
    assert "nested too deep" in refused_body.json()["error"]["message"]
