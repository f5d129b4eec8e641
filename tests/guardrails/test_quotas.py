"""Quotas (ResourceQuota) and limit ranges (LimitRange): admission, release, expiry, refusal
messages, and admissions racing for the last unit (never over-admitted) on both backends."""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import event, select

from quartermaster.domain.timeutil import utc_now
from quartermaster.guardrails.decisions import WorkRequest, decide
from quartermaster.guardrails.gate import guardrail_gate
from quartermaster.guardrails.models import Quota, Reservation
from quartermaster.guardrails.quotas import expire_reservations
from quartermaster.runtime import Runtime
from quartermaster.tenancy.models import Role
from quartermaster.tenancy.service import AuthContext
from tests.conftest import TenantHandle
from tests.guardrails.support import World, build_world, key_for, ok


def _quota(client: TestClient, world: World, resource: str, hard: str, team: bool = True) -> None:
    body = {"scope_kind": "team", "scope": world.team} if team else {"scope_kind": "tenant"}
    ok(
        client.put(
            "/v1/quotas", json={**body, "resource": resource, "hard": hard}, headers=world.headers
        )
    )


def _used(client: TestClient, world: World) -> dict[str, str]:
    return {
        f"{q['scope_kind']}:{q['resource']}": q["used_text"]
        for q in ok(client.get("/v1/quotas", headers=world.headers))
    }


def _decide(client: TestClient, world: World, **resources: object) -> dict[str, object]:
    body = {"app": world.app, "resources": resources}
    result: dict[str, object] = ok(client.post("/v1/decisions", json=body, headers=world.headers))
    return result


def test_admission_counts_and_release_gives_back(client: TestClient, tenant: TenantHandle) -> None:
    world = build_world(client, tenant)
    _quota(client, world, "cpu", "2")
    _quota(client, world, "memory", "4Gi")
    _quota(client, world, "jobs", "10", team=False)
    first = _decide(client, world, cpu="1500m", memory="1Gi")
    assert first["allowed"] is True
    assert first["team"] == world.team
    assert _used(client, world) == {"team:cpu": "1500m", "team:memory": "1Gi", "tenant:jobs": "1"}
    refused = _decide(client, world, cpu="1", memory="1Gi")
    assert refused["allowed"] is False
    message = refused["reasons"][0]["message"]  # type: ignore[index]
    assert message == (f"quota cpu of team {world.team!r}: requested 1, used 1500m of limit 2"), (
        message
    )
    assert _used(client, world)["team:cpu"] == "1500m"  # a refusal holds nothing
    released = ok(client.post(f"/v1/decisions/{first['id']}/release", headers=world.headers))
    assert released["status"] == "released"
    again = ok(client.post(f"/v1/decisions/{first['id']}/release", headers=world.headers))
    assert again["status"] == "released"  # idempotent: given back once
    assert _used(client, world) == {"team:cpu": "0", "team:memory": "0", "tenant:jobs": "0"}
    assert _decide(client, world, cpu="1", memory="1Gi")["allowed"] is True


def test_limit_range_defaults_and_maxima(client: TestClient, tenant: TenantHandle) -> None:
    world = build_world(client, tenant)
    h = world.headers
    ok(
        client.put(
            "/v1/limit-ranges",
            json={"scope_kind": "tenant", "resource": "cpu", "default_request": "250m", "max": "4"},
            headers=h,
        )
    )
    ok(
        client.put(
            "/v1/limit-ranges",
            json={
                "scope_kind": "team",
                "scope": world.team,
                "resource": "runtime",
                "default_request": "10m",
                "max": "1h",
            },
            headers=h,
        )
    )
    admitted = _decide(client, world)
    assert admitted["resources"] == {
        "concurrency": 1,
        "cpu": 250,
        "memory": 0,
        "gpu": 0,
        "runtime": 600,
    }
    too_big = _decide(client, world, cpu="8", runtime="2h")
    assert too_big["allowed"] is False
    messages = [r["message"] for r in too_big["reasons"]]  # type: ignore[attr-defined]
    assert "limit range of tenant: cpu 8 is over the max 4 per request" in messages
    assert (
        f"limit range of team {world.team!r}: runtime 7200s is over the max 3600s per request"
        in messages
    )


def test_a_limit_range_with_only_a_max_lowers_the_built_in_default_to_it(
    client: TestClient, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    body = {"scope_kind": "team", "scope": world.team, "resource": "runtime", "max": "30m"}
    ok(client.put("/v1/limit-ranges", json=body, headers=world.headers))
    admitted = _decide(client, world)  # names no runtime: the built-in 1 h is over the max
    assert admitted["allowed"] is True, admitted
    assert admitted["resources"]["runtime"] == 1800  # type: ignore[index]
    # A max above the built-in default leaves it as it is.
    body = {"scope_kind": "tenant", "resource": "concurrency", "max": "5"}
    ok(client.put("/v1/limit-ranges", json=body, headers=world.headers))
    assert _decide(client, world)["resources"]["concurrency"] == 1  # type: ignore[index]


def test_a_limit_range_is_deleted_by_an_admin_and_logged(
    client: TestClient, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    h = world.headers
    team_range = {"scope_kind": "team", "scope": world.team, "resource": "cpu", "max": "1"}
    row = ok(
        client.put("/v1/limit-ranges", json={**team_range, "default_request": "250m"}, headers=h)
    )
    assert _decide(client, world, cpu="2")["allowed"] is False
    member = key_for(client, tenant, "team-member", team=world.team)
    refused = client.delete(f"/v1/limit-ranges/{row['id']}", headers=member)
    assert refused.status_code == 403, refused.text
    assert client.delete(f"/v1/limit-ranges/{row['id']}", headers=h).status_code == 204
    assert ok(client.get("/v1/limit-ranges", headers=h)) == []
    # Its max and default no longer apply: the built-in default (no cpu), no max.
    admitted = _decide(client, world, cpu="2")
    assert admitted["allowed"] is True
    assert _decide(client, world)["resources"]["cpu"] == 0  # type: ignore[index]
    latest = ok(client.get("/v1/guardrail-actions", headers=h))[0]
    assert latest["action"] == "delete"
    assert latest["subject"] == f"limit_range:{row['id']}"
    assert latest["reason"] == (
        f"limit range of team {world.team!r} (cpu: default 250m, max 1) deleted by admin"
    ), latest
    again = client.delete(f"/v1/limit-ranges/{row['id']}", headers=h)
    assert again.status_code == 404
    assert again.json()["error"]["field"] == "limit_range_id"
    assert row["id"] in again.json()["error"]["message"]


def test_a_quota_is_deleted_by_an_admin_and_logged(
    client: TestClient, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    h = world.headers
    _quota(client, world, "cpu", "2")
    held = _decide(client, world, cpu="1500m")
    assert held["allowed"] is True
    assert _decide(client, world, cpu="1")["allowed"] is False
    (quota,) = ok(client.get("/v1/quotas", headers=h))
    member = key_for(client, tenant, "team-member", team=world.team)
    assert client.delete(f"/v1/quotas/{quota['id']}", headers=member).status_code == 403
    assert client.delete(f"/v1/quotas/{quota['id']}", headers=h).status_code == 204
    assert ok(client.get("/v1/quotas", headers=h)) == []
    # Nothing counts against it any more; the work it admitted keeps its reservation.
    assert _decide(client, world, cpu="1")["allowed"] is True
    latest = ok(client.get("/v1/guardrail-actions", headers=h))[0]
    assert latest["action"] == "delete"
    assert latest["subject"] == f"quota:{quota['id']}"
    assert (latest["scope_kind"], latest["scope"]) == ("team", world.team)
    assert latest["reason"] == (
        f"quota of team {world.team!r} (cpu: hard 2, in use 1500m) deleted by admin"
    ), latest
    again = client.delete(f"/v1/quotas/{quota['id']}", headers=h)
    assert again.status_code == 404
    assert again.json()["error"]["field"] == "quota_id"
    assert quota["id"] in again.json()["error"]["message"]


def test_bad_quantities_name_the_field(client: TestClient, tenant: TenantHandle) -> None:
    world = build_world(client, tenant)
    body = {"app": world.app, "resources": {"memory": "12Qi"}}
    response = client.post("/v1/decisions", json=body, headers=world.headers)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "resources.memory"
    response = client.post("/v1/decisions", json={"app": "nope"}, headers=world.headers)
    assert response.status_code == 404
    assert "nope" in response.text
    bad = {"scope_kind": "team", "scope": world.team, "resource": "disk", "hard": "1"}
    response = client.put("/v1/quotas", json=bad, headers=world.headers)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "resource"


def test_expired_reservations_give_quota_back(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    _quota(client, world, "gpu", "1")
    assert _decide(client, world, gpu=1, runtime=60)["allowed"] is True
    assert _decide(client, world, gpu=1)["allowed"] is False
    with runtime.session_factory() as session:
        assert expire_reservations(session=session, now=utc_now() + timedelta(seconds=61)) >= 1
    assert _decide(client, world, gpu=1)["allowed"] is True
    actions = ok(client.get("/v1/guardrail-actions", headers=world.headers))
    assert any(a["action"] == "expire" for a in actions)


def test_racing_admissions_never_over_admit(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    world = build_world(client, tenant)
    _quota(client, world, "concurrency", "5")
    _quota(client, world, "cpu", "3", team=False)
    caller = AuthContext(tenant.tenant_id, "p", "racer", Role.ADMIN, None, None)
    gate = guardrail_gate(runtime)
    results: list[bool] = []
    lock = threading.Lock()
    start = threading.Barrier(12)

    def attempt() -> None:
        start.wait()
        with runtime.session_factory() as session:
            decision = decide(
                caller,
                WorkRequest(app=world.app, resources={"cpu": "500m"}),
                gate=gate,
                session=session,
            )
        with lock:
            results.append(decision.allowed)

    threads = [threading.Thread(target=attempt) for _ in range(12)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    # concurrency 5 per team and cpu 3 (= 6 x 500m) tenant-wide: 5 fit, never more.
    assert results.count(True) == 5, results
    with runtime.session_factory() as session:
        quotas = session.scalars(select(Quota).where(Quota.tenant_id == tenant.tenant_id)).all()
    used = {q.resource: q.used for q in quotas}
    assert used == {"concurrency": 5, "cpu": 2500}


@pytest.mark.parametrize(
    ("resources", "field"),
    [
        ({"runtime": 10**25}, "resources.runtime"),  # its expiry would pass year 9999
        ({"runtime": "36601d"}, "resources.runtime"),  # over 100 years
        ({"memory": "1e99999999"}, "resources.memory"),  # over Decimal's exponent range
        ({"cpu": "5e18"}, "resources.cpu"),  # over what a BIGINT sum of two holds
    ],
)
def test_a_quantity_too_large_to_store_is_a_422_naming_it(
    client: TestClient, tenant: TenantHandle, resources: dict[str, object], field: str
) -> None:
    world = build_world(client, tenant)
    body = {"app": world.app, "resources": resources}
    response = client.post("/v1/decisions", json=body, headers=world.headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == field
    assert "more than the largest accepted" in error["message"]


def test_another_teams_or_apps_decision_is_a_404(client: TestClient, tenant: TenantHandle) -> None:
    """Reading and releasing follow the rule of deciding: a team-member its own team's, an
    app key its own app's; another's decision answers as if it did not exist."""
    a, b = build_world(client, tenant), build_world(client, tenant)
    _quota(client, b, "jobs", "5")
    member_a = key_for(client, tenant, "team-member", team=a.team)
    member_b = key_for(client, tenant, "team-member", team=b.team)
    app_a = key_for(client, tenant, "app", app_id=a.app)
    app_b = key_for(client, tenant, "app", app_id=b.app)
    made = ok(client.post("/v1/decisions", json={"app": b.app}, headers=member_b))
    assert made["allowed"] is True
    decision = made["id"]
    for headers in (member_a, app_a):
        for method, path in (
            ("GET", f"/v1/decisions/{decision}"),
            ("POST", f"/v1/decisions/{decision}/release"),
        ):
            response = client.request(method, path, headers=headers)
            assert response.status_code == 404, response.text
            assert response.json()["error"]["message"] == f"no decision {decision!r}"
    # Nothing was released: the quota is still held, and the owners may see and release it.
    assert ok(client.get(f"/v1/decisions/{decision}", headers=app_b))["status"] == "active"
    assert ok(client.get(f"/v1/decisions/{decision}", headers=tenant.headers))["status"] == "active"
    released = ok(client.post(f"/v1/decisions/{decision}/release", headers=member_b))
    assert released["status"] == "released"


def test_expiry_with_nothing_due_takes_no_write_transaction(runtime: Runtime) -> None:
    """The evaluator's expiry pass looks for due reservations through a read-only session:
    when none is due, its write session never begins (on SQLite it would take the
    database's write lock every pass)."""
    began: list[object] = []
    with runtime.session_factory() as writer, runtime.read_session_factory() as reader:
        event.listen(writer, "after_begin", lambda *args: began.append(args))
        long_ago = datetime(2000, 1, 1, tzinfo=UTC)
        assert expire_reservations(session=writer, reader=reader, now=long_ago) == 0
    assert began == []


def _reservation(runtime: Runtime, world: World, reservation_id: str) -> None:
    """An active decision of `world`'s app with a chosen id (to share a prefix on purpose)."""
    with runtime.session_factory() as session:
        session.add(
            Reservation(
                id=reservation_id,
                tenant_id=world.tenant.tenant_id,
                team=world.team,
                app=world.app,
                runtime_seconds=60,
                created_by="test",
                expires_at=utc_now() + timedelta(hours=1),
            )
        )
        session.commit()


def test_a_decision_is_read_and_released_by_a_unique_prefix_of_8_or_more(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    """As billing runs, enforcements and previews: 8+ characters naming one decision the caller
    may see; another team's by prefix is a 404 like by id, and changes nothing."""
    a, b = build_world(client, tenant), build_world(client, tenant)
    _quota(client, a, "jobs", "5")
    member_a = key_for(client, tenant, "team-member", team=a.team)
    member_b = key_for(client, tenant, "team-member", team=b.team)
    made = ok(client.post("/v1/decisions", json={"app": a.app}, headers=member_a))
    decision = made["id"]
    assert ok(client.get(f"/v1/decisions/{decision[:8]}", headers=member_a))["id"] == decision
    for method, path in (
        ("GET", f"/v1/decisions/{decision[:12]}"),
        ("POST", f"/v1/decisions/{decision[:12]}/release"),
    ):
        response = client.request(method, path, headers=member_b)
        assert response.status_code == 404, response.text
        assert response.json()["error"]["message"] == f"no decision {decision[:12]!r}"
    assert ok(client.get(f"/v1/decisions/{decision}", headers=member_a))["status"] == "active"
    released = ok(client.post(f"/v1/decisions/{decision[:12]}/release", headers=member_a))
    assert (released["id"], released["status"]) == (decision, "released")
    short = client.get(f"/v1/decisions/{decision[:6]}", headers=member_a)
    assert short.status_code == 422, short.text
    assert short.json()["error"]["field"] == "decision_id"
    assert "too short" in short.json()["error"]["message"]


def test_an_ambiguous_decision_prefix_is_a_422_among_the_decisions_the_caller_sees(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    a, b = build_world(client, tenant), build_world(client, tenant)
    prefix = uuid.uuid4().hex[:10]
    mine, theirs = prefix + "a" * 22, prefix + "b" * 22
    _reservation(runtime, a, mine)
    _reservation(runtime, b, theirs)
    both = client.get(f"/v1/decisions/{prefix}", headers=tenant.headers)  # the admin sees both
    assert both.status_code == 422, both.text
    error = both.json()["error"]
    assert error["field"] == "decision_id"
    assert error["message"] == (
        f"decision id prefix {prefix!r} is ambiguous: several start with it; give more of the id"
    )
    # A team-member sees its own team's only: the prefix names one, and says nothing of b's.
    member_a = key_for(client, tenant, "team-member", team=a.team)
    assert ok(client.get(f"/v1/decisions/{prefix}", headers=member_a))["id"] == mine
    assert ok(client.get(f"/v1/decisions/{theirs[:11]}", headers=tenant.headers))["id"] == theirs
