"""Usage routes and `qm meter|environment|usage|pipeline` over HTTP, fed by real ingestion."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import httpx
import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from quartermaster.api.app import create_app
from quartermaster.audit.log import list_records
from quartermaster.billing.models import BillingDocument, DocumentStatus, DocumentType, RunKind
from quartermaster.cli.main import _register_groups
from quartermaster.cli.main import app as qm
from quartermaster.domain.timeutil import utc_now
from quartermaster.runtime import Runtime
from quartermaster.tenancy.models import PrincipalKind, Role
from quartermaster.tenancy.service import create_principal, issue_api_key
from quartermaster.usage.pipeline import pipeline_worker, run_pipeline_until_drained
from tests.conftest import start_live_server
from tests.usage.conftest import Platform, new_platform

H = timedelta(hours=1)


@pytest.fixture
def client(usage_runtime: Runtime) -> Iterator[TestClient]:
    app = create_app(usage_runtime.settings, runtime=usage_runtime)
    with TestClient(app) as test_client:
        yield test_client


def key_for(platform: Platform, role: Role) -> dict[str, str]:
    team_id = platform.team("ds", "research") if role is Role.TEAM_MEMBER else None
    with platform.runtime.session_factory() as session:
        principal = create_principal(
            platform.tenant_id,
            f"{role.value}-user",
            role=role,
            kind=PrincipalKind.USER,
            team_id=team_id,
            session=session,
        )
        issued = issue_api_key(principal, session=session)
    return {"Authorization": f"Bearer {issued.token}"}


def test_meters_routes(client: TestClient, platform: Platform) -> None:
    listed = client.get("/v1/meters", headers=platform.headers).json()
    assert {m["name"] for m in listed if m["built_in"]} >= {"tokens", "requests"}
    body = {
        "name": "gpu_seconds",
        "event_type": "qm.invocation.usage",
        "value": "compute_units",
        "aggregation": "sum",
        "unit": "gpu-s",
    }
    created = client.post("/v1/meters", json=body, headers=platform.headers)
    assert created.status_code == 201, created.text
    assert created.json()["built_in"] is False
    again = client.post("/v1/meters", json=body, headers=platform.headers)
    assert again.status_code == 409
    bad = client.post(
        "/v1/meters", json={**body, "name": "x2", "value": "nope"}, headers=platform.headers
    )
    assert bad.status_code == 422
    assert bad.json()["error"]["field"] == "value"
    custom = client.post(
        "/v1/meters",
        json={**body, "name": "x3", "event_type": "my.custom", "value": "whatever"},
        headers=platform.headers,
    )
    assert custom.status_code == 422
    assert custom.json()["error"]["field"] == "event_type"
    assert "qm.invocation.usage" in custom.json()["error"]["message"]
    installed = client.post("/v1/meters/install-defaults", headers=platform.headers).json()
    assert len(installed) == 10
    member = key_for(platform, Role.TEAM_MEMBER)
    assert client.post("/v1/meters", json={**body, "name": "y"}, headers=member).status_code == 403
    assert client.get("/v1/meters", headers=member).status_code == 200


def test_environment_override_routes(client: TestClient, platform: Platform) -> None:
    platform.cost_center("sandbox")
    put = client.put(
        "/v1/environment-overrides/staging",
        json={"cost_center": "sandbox"},
        headers=platform.headers,
    )
    assert put.status_code == 201, put.text
    again = client.put(
        "/v1/environment-overrides/staging",
        json={"cost_center": "sandbox"},
        headers=platform.headers,
    )
    # PUT is idempotent: the same cost center again changes nothing.
    assert again.status_code == 200, again.text
    assert again.json() == put.json()
    unknown = client.put(
        "/v1/environment-overrides/dev", json={"cost_center": "nope"}, headers=platform.headers
    )
    assert unknown.status_code == 404
    assert unknown.json()["error"]["field"] == "cost_center"
    # data.environment is a slug (docs/events.md): an override of any other name never matches.
    for name in ("Bad%20Env", "STAGING", "-x", "a" * 65):
        refused = client.put(
            f"/v1/environment-overrides/{name}",
            json={"cost_center": "sandbox"},
            headers=platform.headers,
        )
        assert refused.status_code == 422, name
        assert refused.json()["error"]["field"] == "environment"
        assert "must be a slug" in refused.json()["error"]["message"]
    # as long as an event's environment may be (the column held 32 before migration 0016)
    longest = "eu-west.canary_" + "x" * 49
    put = client.put(
        f"/v1/environment-overrides/{longest}",
        json={"cost_center": "sandbox"},
        headers=platform.headers,
    )
    assert put.status_code == 201, put.text
    assert client.delete(
        f"/v1/environment-overrides/{longest}", headers=platform.headers
    ).is_success
    listed = client.get("/v1/environment-overrides", headers=platform.headers).json()
    assert [(o["environment"], o["cost_center"]) for o in listed] == [("staging", "sandbox")]
    assert (
        client.delete("/v1/environment-overrides/staging", headers=platform.headers).status_code
        == 204
    )
    assert (
        client.delete("/v1/environment-overrides/staging", headers=platform.headers).status_code
        == 404
    )


def test_putting_another_cost_center_replaces_the_override_from_now(
    client: TestClient, platform: Platform
) -> None:
    platform.cost_center("sandbox")
    platform.cost_center("qa-lab")
    url = "/v1/environment-overrides/qa"
    first = client.put(url, json={"cost_center": "sandbox"}, headers=platform.headers)
    assert first.status_code == 201, first.text
    before = utc_now()
    replaced = client.put(url, json={"cost_center": "qa-lab"}, headers=platform.headers)
    assert replaced.status_code == 200, replaced.text
    body = replaced.json()
    assert (body["environment"], body["cost_center"]) == ("qa", "qa-lab")
    # In force from now: attribution counts an override for events recorded after created_at.
    assert datetime.fromisoformat(body["created_at"]) >= before
    assert body["created_at"] > first.json()["created_at"]
    listed = client.get("/v1/environment-overrides", headers=platform.headers).json()
    assert [(o["environment"], o["cost_center"]) for o in listed] == [("qa", "qa-lab")]
    again = client.put(url, json={"cost_center": "qa-lab"}, headers=platform.headers)
    assert (again.status_code, again.json()) == (200, body)
    assert client.delete(url, headers=platform.headers).status_code == 204
    # Each change is in the tenant's audit chain, with the cost center it replaced.
    with platform.runtime.session_factory() as session:
        records = list_records(platform.tenant_id, action="configure", session=session)
    changes = [r.record.detail["environment_override"] for r in records]
    assert changes == [
        {"change": "created", "environment": "qa", "to": "sandbox"},
        {"change": "replaced", "environment": "qa", "to": "qa-lab", "from": "sandbox"},
        {"change": "deleted", "environment": "qa", "from": "qa-lab"},
    ]


def test_ingest_to_usage_status_replay_and_accounting(
    client: TestClient, platform: Platform
) -> None:
    now = utc_now()
    platform.app("bot", team="ds", cost_center="research", created_at=now - 10 * H)
    events = [
        {
            "specversion": "1.0",
            "id": f"ev-{i}",
            "source": "tests/api",
            "type": "qm.invocation.usage",
            "time": (now - timedelta(minutes=i)).isoformat(),
            "data": {
                "app_id": "bot" if i < 4 else "unknown-app",
                "tokens": 10,
                "compute_units": 0.25,
            },
        }
        for i in range(5)
    ]
    ingested = client.post("/v1/events", json=events, headers=platform.headers)
    assert ingested.status_code == 200, ingested.text
    run_pipeline_until_drained(platform.runtime)
    window = {"start": (now - H).isoformat(), "end": (now + H).isoformat()}
    usage = client.get("/v1/usage", params=window, headers=platform.headers)
    assert usage.status_code == 200, usage.text
    rows = {(r["app"], r["meter"]): r for r in usage.json()["rows"]}
    assert rows[("bot", "tokens")]["quantity"] == "40"
    assert rows[("bot", "compute_units")]["quantity"] == "1"
    assert rows[("bot", "invocations")]["unit"] == "call"

    status = client.get("/v1/pipeline/status", headers=platform.headers)
    assert status.status_code == 200, status.text
    body = status.json()
    assert (body["lag"], body["waiting"]) == (0, 1)
    assert body["latency"]["events"] == 4
    assert body["latency"]["p99_ms"] is not None

    accounting = client.get("/v1/pipeline/accounting", headers=platform.headers).json()
    assert accounting["balanced"] is True
    assert sum(h["accepted"] for h in accounting["hours"]) == 5
    assert sum(h["rated"] + h["waiting"] for h in accounting["hours"]) == 5

    reconciliation = client.get("/v1/reconciliation", headers=platform.headers).json()
    totals = reconciliation["totals"]
    assert totals["accepted"] == totals["rated"] + totals["waiting"] == 5
    assert (totals["attributed"], totals["waiting"]) == (4, 1)

    # A window inside an hour counts that whole hour (the counters are hourly), in both.
    busy = next(h for h in accounting["hours"] if h["accepted"])
    hour = datetime.fromisoformat(busy["hour"].replace("Z", "+00:00"))
    inside = {
        "start": (hour + timedelta(minutes=1)).isoformat(),
        "end": (hour + timedelta(minutes=30)).isoformat(),
    }
    narrow = client.get("/v1/pipeline/accounting", params=inside, headers=platform.headers)
    assert narrow.status_code == 200, narrow.text
    assert (narrow.json()["start"], narrow.json()["end"]) == (
        busy["hour"],
        (hour + timedelta(hours=1)).isoformat().replace("+00:00", "Z"),
    )
    assert narrow.json()["hours"] == [busy]
    assert narrow.json()["balanced"] is True
    counted = client.get("/v1/reconciliation", params=inside, headers=platform.headers).json()
    assert [h["stages"]["accepted"] for h in counted["hours"]] == [busy["accepted"]]
    # A moment outside the calendar once in UTC is a 422 naming it, not a 500.
    for path in ("/v1/reconciliation", "/v1/pipeline/accounting"):
        for params, field in (
            ({"end": "0001-01-01T00:00:00Z"}, "start"),
            ({"start": "0001-01-01T00:00:00+01:00"}, "start"),
            ({"end": "9999-12-31T23:59:59-10:00"}, "end"),
        ):
            refused = client.get(path, params=params, headers=platform.headers)
            assert refused.status_code == 422, (path, params, refused.text)
            assert refused.json()["error"]["field"] == field, refused.text

    replayed = client.post("/v1/pipeline/replay", params={"wait": True}, headers=platform.headers)
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["drained"] is True
    assert client.get("/v1/usage", params=window, headers=platform.headers).json() == usage.json()

    finance = key_for(platform, Role.FINANCE)
    assert client.get("/v1/usage", params=window, headers=finance).status_code == 200
    # Finance reads all billing data (docs/tenancy.md): the accounting of the events its bills
    # are made of (accepted = rated + waiting, as /v1/reconciliation it reads already), not
    # the server's pipeline (status: streams, worker errors) nor a replay.
    by_finance = client.get("/v1/pipeline/accounting", headers=finance)
    assert by_finance.status_code == 200, by_finance.text
    assert (
        by_finance.json() == client.get("/v1/pipeline/accounting", headers=platform.headers).json()
    )
    member = key_for(platform, Role.TEAM_MEMBER)
    assert client.get("/v1/pipeline/accounting", headers=member).status_code == 403
    assert client.get("/v1/pipeline/status", headers=finance).status_code == 403
    assert client.post("/v1/pipeline/replay", headers=finance).status_code == 403
    naive = {"start": "2026-01-01T00:00:00", "end": "2026-01-02T00:00:00Z"}
    refused = client.get("/v1/usage", params=naive, headers=platform.headers)
    assert refused.status_code == 422
    assert refused.json()["error"]["field"] == "start"


def test_cli_over_a_live_server(usage_runtime: Runtime, platform: Platform) -> None:
    if not any(group.name == "meter" for group in qm.registered_groups):
        _register_groups()
    app = create_app(usage_runtime.settings, runtime=usage_runtime)
    live = start_live_server(app)
    try:
        env = {"QM_URL": live.url, "QM_API_KEY": platform.admin_token, "COLUMNS": "200"}
        runner = CliRunner()
        created = runner.invoke(
            qm,
            [
                "meter",
                "create",
                "peak_tokens",
                "--event-type",
                "qm.invocation.usage",
                "--value",
                "tokens",
                "--aggregation",
                "max",
                "--unit",
                "token",
            ],
            env=env,
        )
        assert created.exit_code == 0, created.output
        assert "created meter peak_tokens (max of tokens)" in created.output
        # The tenant's first meter: the defaults stop rating its events, and it is told so.
        assert "the 10 default meters no longer apply" in created.output
        listed = runner.invoke(qm, ["meter", "list"], env=env)
        assert "peak_tokens" in listed.output
        refused = runner.invoke(
            qm,
            [
                "meter",
                "create",
                "bad",
                "--event-type",
                "qm.invocation.usage",
                "--value",
                "nope",
                "--aggregation",
                "sum",
                "--unit",
                "x",
            ],
            env=env,
        )
        assert refused.exit_code == 1
        assert "has no field 'nope'" in refused.output
        status = runner.invoke(qm, ["pipeline", "status"], env=env)
        assert status.exit_code == 0, status.output
        assert "log head 0, lag 0" in status.output
        replay = runner.invoke(qm, ["pipeline", "replay"], env=env)
        assert replay.exit_code == 0, replay.output
        assert "rebuilt usage up to log position 0" in replay.output
        accounting = runner.invoke(qm, ["pipeline", "accounting"], env=env)
        assert accounting.exit_code == 0, accounting.output
        assert "no events accepted in the window" in accounting.output
        now = utc_now()
        shown = runner.invoke(
            qm,
            ["usage", "show", "--start", (now - H).isoformat(), "--end", now.isoformat()],
            env=env,
        )
        assert shown.exit_code == 0, shown.output
        assert "no usage in the period" in shown.output
        as_json = runner.invoke(
            qm,
            ["usage", "show", "--start", (now - H).isoformat(), "--end", now.isoformat(), "--json"],
            env=env,
        )
        assert as_json.exit_code == 0, as_json.output
        assert json.loads(as_json.stdout)["groups"] == []
        # A month in the tenant's zone (UTC here), as `qm bill run --month` takes it.
        monthly = runner.invoke(qm, ["usage", "show", "--month", "2026-11"], env=env)
        assert monthly.exit_code == 0, monthly.output
        assert "no usage in the period" in monthly.output
        both = runner.invoke(
            qm, ["usage", "show", "--month", "2026-11", "--end", now.isoformat()], env=env
        )
        assert both.exit_code == 1
        assert "give --month, or --start and --end, not both" in both.output
        neither = runner.invoke(qm, ["usage", "show", "--start", now.isoformat()], env=env)
        assert neither.exit_code == 1
        assert "give --month, or --start and --end" in neither.output
        bad = runner.invoke(qm, ["usage", "show", "--month", "2026-13"], env=env)
        assert bad.exit_code == 1
        assert "month 13 is not within 1-12" in bad.output
    finally:
        live.server.should_exit = True
        live.thread.join(timeout=20)


def test_every_usage_route_is_scoped_to_the_callers_tenant(
    client: TestClient, usage_runtime: Runtime
) -> None:
    now = utc_now()
    mine, theirs = new_platform(usage_runtime, "mine"), new_platform(usage_runtime, "theirs")
    for platform in (mine, theirs):
        platform.app("bot", team="ds", cost_center="research", created_at=now - 10 * H)
    theirs.append(
        [
            theirs.event("qm.invocation.usage", {"app_id": "bot", "tokens": 9}, event_time=now),
            theirs.event("qm.invocation.usage", {"app_id": "nobody", "tokens": 1}, event_time=now),
        ]
    )
    run_pipeline_until_drained(usage_runtime)
    window = {"start": (now - H).isoformat(), "end": (now + H).isoformat()}
    assert client.get("/v1/usage", params=window, headers=mine.headers).json()["rows"] == []
    assert client.get("/v1/usage", params=window, headers=theirs.headers).json()["rows"] != []
    status = client.get("/v1/pipeline/status", headers=mine.headers).json()
    assert (status["waiting"], status["latency"]["events"]) == (0, 0)
    accounting = client.get("/v1/pipeline/accounting", headers=mine.headers).json()
    assert accounting["hours"] == []
    replay = client.post("/v1/pipeline/replay", params={"wait": True}, headers=mine.headers)
    assert replay.json()["tenant_id"] == mine.tenant_id
    theirs_usage = client.get("/v1/usage", params=window, headers=theirs.headers).json()
    assert {r["meter"]: r["quantity"] for r in theirs_usage["rows"] if r["app"] == "bot"}[
        "tokens"
    ] == "9"


def finalize_a_document(platform: Platform, start: datetime, end: datetime) -> str:
    """A finalized billing run of the tenant, as `qm bill run --finalize` leaves one."""
    with platform.runtime.session_factory.begin() as session:
        document = BillingDocument(
            tenant_id=platform.tenant_id,
            doc_type=DocumentType.RUN.value,
            doc_key=f"invoice:{start.isoformat()}",
            kind=RunKind.INVOICE.value,
            period_start=start,
            period_end=end,
            status=DocumentStatus.FINALIZED.value,
            as_of=end,
            price_book="default",
            price_book_versions="1",
            currency="USD",
            total=Decimal("12.5"),
            created_by="admin",
            finalized_at=end,
            finalized_by="admin",
        )
        session.add(document)
        session.flush()
        return document.id


def test_a_replay_over_finalized_billing_documents_needs_force(
    client: TestClient, usage_runtime: Runtime, platform: Platform
) -> None:
    # A replay decides again, with today's metadata and window, the events the window settled
    # to the default cost center: a finalized bill no longer reproduced, and the next
    # adjustment reversed its lines. It is refused unless forced, naming the documents.
    now = utc_now()
    platform.app("bot", team="ds", cost_center="research", created_at=now - 10 * H)
    platform.append(
        [platform.event("qm.invocation.usage", {"app_id": "bot", "tokens": 3}, event_time=now - H)]
    )
    run_pipeline_until_drained(usage_runtime)
    allowed = client.post("/v1/pipeline/replay", params={"wait": True}, headers=platform.headers)
    assert allowed.status_code == 200, allowed.text  # nothing finalized yet
    start = datetime(2026, 11, 1, tzinfo=UTC)
    doc_id = finalize_a_document(platform, start, datetime(2026, 12, 1, tzinfo=UTC))
    refused = client.post("/v1/pipeline/replay", params={"wait": True}, headers=platform.headers)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["field"] == "force"
    assert error["message"].startswith(
        f"1 finalized billing document(s) cover usage this replay rebuilds: run {doc_id[:8]} "
        "(2026-11-01..2026-12-01)."
    )
    assert "qm pipeline replay --force" in error["message"]
    assert not any(s.upto is not None for s in usage_runtime.usage_store.streams())
    forced = client.post(
        "/v1/pipeline/replay", params={"wait": True, "force": True}, headers=platform.headers
    )
    assert forced.status_code == 200, forced.text
    assert forced.json()["drained"] is True
    # another tenant's finalized documents do not stop this tenant's replay
    other = new_platform(usage_runtime, "other")
    other_replay = client.post("/v1/pipeline/replay", headers=other.headers)
    assert other_replay.status_code == 200, other_replay.text


def test_cli_replay_refused_over_finalized_documents_then_forced(
    usage_runtime: Runtime, platform: Platform
) -> None:
    if not any(group.name == "meter" for group in qm.registered_groups):
        _register_groups()
    finalize_a_document(
        platform, datetime(2026, 10, 1, tzinfo=UTC), datetime(2026, 11, 1, tzinfo=UTC)
    )
    app = create_app(usage_runtime.settings, runtime=usage_runtime)
    live = start_live_server(app)
    try:
        env = {"QM_URL": live.url, "QM_API_KEY": platform.admin_token, "COLUMNS": "200"}
        runner = CliRunner()
        refused = runner.invoke(qm, ["pipeline", "replay"], env=env)
        assert refused.exit_code == 1, refused.output
        assert "finalized billing document(s) cover usage this replay rebuilds" in refused.output
        assert "--force" in refused.output
        forced = runner.invoke(qm, ["pipeline", "replay", "--force"], env=env)
        assert forced.exit_code == 0, forced.output
        assert "rebuilt usage up to log position 0" in forced.output
    finally:
        live.server.should_exit = True
        live.thread.join(timeout=20)


def test_pipeline_status_clears_the_error_once_a_pass_succeeds(
    usage_runtime: Runtime, platform: Platform, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A disk that filled and was freed: the pipeline caught up, and `qm pipeline status` went
    # on printing the disk-full error as if it were still failing.
    if not any(group.name == "meter" for group in qm.registered_groups):
        _register_groups()
    now = utc_now()
    platform.app("bot", team="ds", cost_center="research", created_at=now - 10 * H)
    platform.append(
        [platform.event("qm.invocation.usage", {"app_id": "bot", "tokens": 1}, event_time=now)]
    )
    worker = pipeline_worker(usage_runtime)

    def full(batch: object) -> None:
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(usage_runtime.usage_store, "write", full)
    assert worker.run_pass() is False
    app = create_app(usage_runtime.settings, runtime=usage_runtime)
    live = start_live_server(app)
    try:
        env = {"QM_URL": live.url, "QM_API_KEY": platform.admin_token, "COLUMNS": "200"}
        runner = CliRunner()
        failing = runner.invoke(qm, ["pipeline", "status"], env=env)
        assert failing.exit_code == 0, failing.output
        assert "last error (at " in failing.output
        assert "No space left on device" in failing.output
        monkeypatch.undo()
        worker.run_pass()
        status = httpx.get(f"{live.url}/v1/pipeline/status", headers=platform.headers)
        shown = runner.invoke(qm, ["pipeline", "status"], env=env)
    finally:
        live.server.should_exit = True
        live.thread.join(timeout=20)
    assert "No space left on device" not in shown.output
    assert "recovered at " in shown.output
    assert "from an error at " in shown.output
    worker_out = status.json()["worker"]
    assert worker_out["last_error"] is None
    assert worker_out["last_error_at"] is not None
    assert worker_out["recovered_at"] >= worker_out["last_error_at"]
