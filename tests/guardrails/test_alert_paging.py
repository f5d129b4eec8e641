"""`GET /v1/alerts` pages with `after` (the previous page's X-Next-After header) and filters by
`scope`: past the newest `limit` alerts, every one can be read, once, also through a
team-member's view (which the walkthrough's 150 team alerts behind 1,000 app alerts were not)."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from typing import Any

from fastapi.testclient import TestClient

from quartermaster.domain.timeutil import utc_now
from quartermaster.guardrails.alerts import Severity, raise_alert
from quartermaster.runtime import Runtime
from tests.conftest import TenantHandle
from tests.guardrails.support import World, build_world, key_for, ok


def _raise(runtime: Runtime, tenant_id: str, scopes: list[tuple[str, str]]) -> None:
    """One budget alert per scope, newest last; pairs share a timestamp (the id breaks ties)."""
    start = utc_now() - timedelta(hours=1)
    with runtime.session_factory() as session:
        for n, (kind, scope) in enumerate(scopes):
            raise_alert(
                session,
                tenant_id=tenant_id,
                kind="budget_threshold",
                severity=Severity.WARNING,
                dedup_key=f"k{n}",
                title=f"alert {n}",
                message=f"{kind} {scope}",
                details={"scope_kind": kind, "scope": scope},
                at=start + timedelta(seconds=n // 2),
            )
        session.commit()


def _all(
    client: TestClient, headers: dict[str, str], limit: int, query: str = ""
) -> tuple[list[str], int]:
    """Every alert's title over the pages, and how many pages it took."""
    titles: list[str] = []
    params = f"limit={limit}{query}"
    pages = 0
    while True:
        response = client.get(f"/v1/alerts?{params}", headers=headers)
        rows: list[dict[str, Any]] = ok(response)
        pages += 1
        titles += [r["title"] for r in rows]
        cursor = response.headers.get("X-Next-After")
        if cursor is None:
            return titles, pages
        assert len(rows) == limit
        params = f"limit={limit}{query}&after={cursor}"


def _worlds(client: TestClient, tenant: TenantHandle) -> tuple[World, World]:
    return build_world(client, tenant), build_world(client, tenant)


def test_alerts_past_the_limit_are_paged_without_duplicates_or_gaps(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    a, b = _worlds(client, tenant)
    scopes = [("app", b.app)] * 20 + [("team", a.team)] * 3 + [("app", a.app)] * 4
    _raise(runtime, tenant.tenant_id, scopes)
    newest_first = [f"alert {n}" for n in reversed(range(len(scopes)))]

    titles, pages = _all(client, tenant.headers, limit=5)
    assert sorted(titles) == sorted(newest_first)  # each once
    assert len(titles) == len(set(titles)) == 27
    assert pages == 6
    # Still newest first across pages (ties in time keep one order).
    at = [int(t.split()[1]) // 2 for t in titles]
    assert at == sorted(at, reverse=True)

    # A page that fills exactly has no next cursor when nothing follows.
    response = client.get("/v1/alerts?limit=27", headers=tenant.headers)
    assert len(ok(response)) == 27
    assert "X-Next-After" not in response.headers


def test_the_scope_filter_finds_team_alerts_behind_app_alerts(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    a, b = _worlds(client, tenant)
    scopes = [("team", a.team)] * 3 + [("tenant", "")] + [("app", b.app)] * 12
    _raise(runtime, tenant.tenant_id, scopes)

    titles, _ = _all(client, tenant.headers, limit=2, query=f"&scope=team:{a.team}")
    assert titles[0] == "alert 2"  # alerts 0 and 1 were raised in the same second
    assert sorted(titles) == ["alert 0", "alert 1", "alert 2"]
    assert _all(client, tenant.headers, limit=5, query="&scope=tenant")[0] == ["alert 3"]
    assert _all(client, tenant.headers, limit=5, query="&scope=team:nobody")[0] == []
    assert len(_all(client, tenant.headers, limit=5, query=f"&scope=app:{b.app}")[0]) == 12


def test_a_team_member_pages_through_its_own_alerts_only(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    a, b = _worlds(client, tenant)
    mine = [("team", a.team), ("app", a.app)]
    scopes = [*mine * 4, *[("app", b.app), ("team", b.team)] * 6, *mine * 3]
    _raise(runtime, tenant.tenant_id, scopes)
    member = key_for(client, tenant, "team-member", team=a.team)

    titles, pages = _all(client, member, limit=3)
    expected = [f"alert {n}" for n in reversed(range(len(scopes))) if scopes[n] in mine]
    assert sorted(titles) == sorted(expected)
    assert len(titles) == 14
    assert pages == 5
    # Asking for another team's alerts shows none of them.
    assert _all(client, member, limit=3, query=f"&scope=team:{b.team}")[0] == []


def test_a_bad_cursor_or_scope_is_a_422_naming_the_parameter(
    client: TestClient,
    tenant: TenantHandle,
    make_tenant: Callable[[], TenantHandle],
    runtime: Runtime,
) -> None:
    response = client.get("/v1/alerts?after=nosuchalert", headers=tenant.headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "after"
    assert "nosuchalert" in error["message"]

    # Another tenant's alert is no cursor here.
    other = make_tenant()
    _raise(runtime, other.tenant_id, [("tenant", "")])
    theirs = ok(client.get("/v1/alerts", headers=other.headers))[0]["id"]
    response = client.get(f"/v1/alerts?after={theirs}", headers=tenant.headers)
    assert response.status_code == 422
    assert response.json()["error"]["field"] == "after"

    for bad in ("web", "team", "team:", "galaxy:x", "tenant:x"):
        response = client.get(f"/v1/alerts?scope={bad}", headers=tenant.headers)
        assert response.status_code == 422, bad
        error = response.json()["error"]
        assert error["field"] == "scope", bad
        assert "team:web" in error["message"], bad


def test_paging_a_scope_filter_returns_each_matching_alert_once(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    # The filter is a WHERE on the alert's scope columns: pages of a scope interleaved with
    # others (pairs raised in the same second, the id breaking ties) hold every one of its
    # alerts once, newest first, for an admin and for the team's member alike.
    a, b = _worlds(client, tenant)
    pattern = [("app", b.app), ("team", a.team), ("app", a.app), ("tenant", ""), ("team", b.team)]
    scopes = pattern * 9
    _raise(runtime, tenant.tenant_id, scopes)
    member = key_for(client, tenant, "team-member", team=a.team)
    mine = [("team", a.team), ("app", a.app)]

    for kind, name in pattern:
        wanted = [f"alert {n}" for n in reversed(range(len(scopes))) if scopes[n] == (kind, name)]
        scope = kind if kind == "tenant" else f"{kind}:{name}"
        for limit in (1, 2, 4, 9):
            titles, pages = _all(client, tenant.headers, limit=limit, query=f"&scope={scope}")
            assert sorted(titles) == sorted(wanted), (scope, limit)
            assert len(titles) == len(set(titles)) == 9
            assert pages == -(-9 // limit)  # a page that fills exactly ends the list
            at = [int(t.split()[1]) // 2 for t in titles]
            assert at == sorted(at, reverse=True)
        seen = _all(client, member, limit=2, query=f"&scope={scope}")[0]
        assert sorted(seen) == (sorted(wanted) if (kind, name) in mine else [])
