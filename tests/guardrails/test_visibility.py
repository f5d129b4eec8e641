"""A team-member reads only its own team's guardrails: budgets, enforcements, quotas, actions
and alerts of its team and its apps (no tenant-wide or cost-center totals, no other team's
spend), and of the rules without spend also the tenant-wide ones; admin sees everything."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from quartermaster.domain.timeutil import utc_now
from quartermaster.guardrails.alerts import Severity, raise_alert
from quartermaster.guardrails.common import record_action
from quartermaster.guardrails.models import Enforcement
from quartermaster.runtime import Runtime
from tests.conftest import TenantHandle
from tests.guardrails.support import World, build_world, key_for, ok


def _put(client: TestClient, tenant: TenantHandle, path: str, body: dict[str, Any]) -> None:
    response = client.request(
        "POST" if path == "/v1/budgets" else "PUT", path, json=body, headers=tenant.headers
    )
    assert response.status_code in (200, 201), response.text


def _rules(client: TestClient, tenant: TenantHandle, a: World, b: World) -> None:
    scopes = [("tenant", None), ("cost_center", "default"), ("team", a.team), ("team", b.team)]
    for n, (kind, scope) in enumerate([*scopes, ("app", a.app), ("app", b.app)]):
        body = {"name": f"b{n}", "scope_kind": kind, "scope": scope, "amount": "100"}
        _put(client, tenant, "/v1/budgets", body)
    for kind, scope in [("tenant", None), ("team", a.team), ("team", b.team)]:
        body = {"scope_kind": kind, "scope": scope, "resource": "jobs", "hard": "9"}
        _put(client, tenant, "/v1/quotas", body)
        body = {"scope_kind": kind, "scope": scope, "resource": "cpu", "max": "2"}
        _put(client, tenant, "/v1/limit-ranges", body)
    for kind, scope in [("tenant", None), ("app", a.app), ("app", b.app), ("app", "*")]:
        body = {"scope_kind": kind, "scope": scope, "rate": "5", "burst": 5}
        _put(client, tenant, "/v1/rate-limits", body)


def _happenings(runtime: Runtime, tenant_id: str, a: World, b: World) -> None:
    now = utc_now()
    alerts: list[tuple[str, dict[str, Any]]] = [
        ("budget_threshold", {"scope_kind": "tenant", "scope": "", "spend": "900"}),
        ("budget_threshold", {"scope_kind": "team", "scope": b.team, "spend": "503"}),
        ("budget_threshold", {"scope_kind": "team", "scope": a.team, "spend": "7"}),
        ("default_cap", {"app": b.app, "spend": "40"}),
        ("anomaly", {"scope_kind": "app", "scope": a.app, "cost": "3"}),
        ("high_cost_event", {"app": b.app, "team": b.team, "hour_cost": "503"}),
        ("high_cost_event", {"app": a.app, "team": a.team, "hour_cost": "12"}),
    ]
    with runtime.session_factory() as session:
        for n, (kind, details) in enumerate(alerts):
            raise_alert(
                session,
                tenant_id=tenant_id,
                kind=kind,
                severity=Severity.INFO,
                dedup_key=f"k{n}",
                title=f"alert {n}",
                message=f"about {details}",
                details=details,
                at=now + timedelta(seconds=n),
            )
        for kind, scope in [("tenant", ""), ("team", a.team), ("team", b.team), ("app", b.app)]:
            record_action(
                session,
                tenant_id=tenant_id,
                action="notify",
                scope_kind=kind,
                scope=scope,
                subject=f"budget:{kind}",
                reason=f"{kind} {scope} spent",
            )
            session.add(
                Enforcement(
                    tenant_id=tenant_id,
                    scope_kind=kind,
                    scope=scope,
                    action="throttle",
                    period_start=now,
                    ends_at=now + timedelta(hours=1),
                    reason=f"{kind} {scope} spent",
                )
            )
        session.commit()


def _scopes(rows: list[dict[str, Any]]) -> list[tuple[str, str]]:
    return sorted((r["scope_kind"], r["scope"] or "") for r in rows)


def test_a_team_member_sees_its_own_teams_guardrails_only(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    a, b = build_world(client, tenant), build_world(client, tenant)
    _rules(client, tenant, a, b)
    _happenings(runtime, tenant.tenant_id, a, b)
    member = key_for(client, tenant, "team-member", team=a.team)

    def get(path: str, headers: dict[str, str] = member) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = ok(client.get(path, headers=headers))
        return rows

    own = [("app", a.app), ("team", a.team)]
    assert _scopes(get("/v1/budgets")) == own
    assert _scopes(get("/v1/quotas")) == [("team", a.team)]
    assert _scopes(get("/v1/limit-ranges")) == [("team", a.team), ("tenant", "")]
    assert _scopes(get("/v1/rate-limits")) == [("app", "*"), ("app", a.app), ("tenant", "")]
    assert _scopes(get("/v1/enforcements")) == [("team", a.team)]
    assert _scopes(get("/v1/guardrail-actions")) == [("team", a.team)]
    alerts = get("/v1/alerts")
    assert [x["title"] for x in alerts] == ["alert 6", "alert 4", "alert 2"]
    # The other team's and the tenant's spends, quoted as the message prints them (the
    # random team and app names may hold the bare digits).
    assert not any("'503'" in x["message"] or "'900'" in x["message"] for x in alerts)
    assert [x["title"] for x in get("/v1/alerts?limit=1")] == ["alert 6"]
    assert [x["title"] for x in get("/v1/alerts?kind=high_cost_event")] == ["alert 6"]
    # The admin still sees the whole tenant.
    assert len(get("/v1/budgets", tenant.headers)) == 6
    assert len(get("/v1/alerts", tenant.headers)) == 7
    assert len(get("/v1/guardrail-actions", tenant.headers)) == 4
