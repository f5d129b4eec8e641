"""`GET /v1/guardrail-actions` and `GET /v1/webhook-deliveries` page as `GET /v1/alerts` does:
`after` is the previous page's X-Next-After header, newest first, each row once; a cursor
that is not one of the tenant's rows is a 422 naming `after`."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import timedelta
from itertools import pairwise
from typing import Any

import pytest
from fastapi.testclient import TestClient

from quartermaster.domain.timeutil import utc_now
from quartermaster.guardrails.alerts import Severity, raise_alert
from quartermaster.guardrails.common import record_action
from quartermaster.runtime import Runtime
from tests.conftest import TenantHandle
from tests.guardrails.support import build_world, key_for, ok


def _pages(
    client: TestClient, path: str, headers: dict[str, str], limit: int, query: str = ""
) -> tuple[list[dict[str, Any]], int]:
    """Every row over the pages, and how many pages it took."""
    rows: list[dict[str, Any]] = []
    params = f"limit={limit}{query}"
    pages = 0
    while True:
        response = client.get(f"{path}?{params}", headers=headers)
        page: list[dict[str, Any]] = ok(response)
        pages += 1
        rows += page
        cursor = response.headers.get("X-Next-After")
        if cursor is None:
            return rows, pages
        assert len(page) == limit
        params = f"limit={limit}{query}&after={cursor}"


@pytest.fixture
def hook(client: TestClient) -> Iterator[Callable[[TenantHandle], str]]:
    """Adds a webhook to a tenant; deleted (with its deliveries) after the test, as the
    database is shared and another test's notifier cannot open this test's sealed URL."""
    made: list[tuple[TenantHandle, str]] = []

    def add(tenant: TenantHandle) -> str:
        body = {"url": f"http://127.0.0.1:9/h{len(made)}"}
        hook_id: str = ok(client.post("/v1/webhooks", json=body, headers=tenant.headers), 201)["id"]
        made.append((tenant, hook_id))
        return hook_id

    yield add
    for tenant, hook_id in made:
        ok(client.delete(f"/v1/webhooks/{hook_id}", headers=tenant.headers), 204)


def _actions(runtime: Runtime, tenant_id: str, scopes: list[tuple[str, str]]) -> None:
    with runtime.session_factory() as session:
        for n, (kind, scope) in enumerate(scopes):
            record_action(
                session,
                tenant_id=tenant_id,
                action="notify",
                scope_kind=kind,
                scope=scope,
                subject=f"budget:b{n}",
                reason=f"action {n}",
            )
        session.commit()


def test_the_action_log_pages_newest_first_each_action_once(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    a, b = build_world(client, tenant), build_world(client, tenant)
    scopes = [("team", a.team), ("app", b.app), ("app", a.app), ("tenant", "")] * 6
    _actions(runtime, tenant.tenant_id, scopes)

    rows, pages = _pages(client, "/v1/guardrail-actions", tenant.headers, limit=5)
    assert [r["reason"] for r in rows] == [f"action {n}" for n in reversed(range(24))]
    assert pages == 5
    # As before paging: the newest `limit`, in the same order.
    newest = ok(client.get("/v1/guardrail-actions?limit=7", headers=tenant.headers))
    assert newest == rows[:7]
    # A page that fills exactly has no next cursor when nothing follows.
    response = client.get("/v1/guardrail-actions?limit=24", headers=tenant.headers)
    assert len(ok(response)) == 24
    assert "X-Next-After" not in response.headers

    member = key_for(client, tenant, "team-member", team=a.team)
    mine, pages = _pages(client, "/v1/guardrail-actions", member, limit=4)
    mine_expected = [
        f"action {n}"
        for n in reversed(range(24))
        if scopes[n] in {("team", a.team), ("app", a.app)}
    ]
    assert [r["reason"] for r in mine] == mine_expected
    assert pages == 3


def test_webhook_deliveries_page_newest_first_with_ties_broken_by_id(
    client: TestClient,
    runtime: Runtime,
    tenant: TenantHandle,
    hook: Callable[[TenantHandle], str],
) -> None:
    hooks = [hook(tenant), hook(tenant)]
    start = utc_now() - timedelta(hours=1)
    with runtime.session_factory() as session:
        for n in range(9):  # two deliveries per alert, three alerts per second
            raise_alert(
                session,
                tenant_id=tenant.tenant_id,
                kind="anomaly",
                severity=Severity.CRITICAL,
                dedup_key=f"d{n}",
                title=f"alert {n}",
                message="m",
                details={},
                at=start + timedelta(seconds=n // 3),
            )
        session.commit()

    everything = ok(client.get("/v1/webhook-deliveries?limit=1000", headers=tenant.headers))
    assert len(everything) == 18
    for limit in (1, 4, 6, 18):
        rows, pages = _pages(client, "/v1/webhook-deliveries", tenant.headers, limit=limit)
        assert rows == everything, limit
        assert pages == -(-18 // limit)
    created = [r["created_at"] for r in everything]
    assert created == sorted(created, reverse=True)
    # Within one instant, the id decides (ascending), so the pages' seams are stable.
    for first, second in pairwise(everything):
        if first["created_at"] == second["created_at"]:
            assert first["id"] < second["id"]

    one, _ = _pages(
        client, "/v1/webhook-deliveries", tenant.headers, limit=2, query=f"&webhook_id={hooks[0]}"
    )
    assert [r["id"] for r in one] == [r["id"] for r in everything if r["webhook_id"] == hooks[0]]


def test_a_bad_cursor_is_a_422_naming_after(
    client: TestClient,
    runtime: Runtime,
    tenant: TenantHandle,
    make_tenant: Callable[[], TenantHandle],
    hook: Callable[[TenantHandle], str],
) -> None:
    other = make_tenant()
    _actions(runtime, other.tenant_id, [("tenant", "")])
    hook(other)
    with runtime.session_factory() as session:
        raise_alert(
            session,
            tenant_id=other.tenant_id,
            kind="anomaly",
            severity=Severity.CRITICAL,
            dedup_key="x",
            title="t",
            message="m",
            details={},
        )
        session.commit()
    their_action = ok(client.get("/v1/guardrail-actions", headers=other.headers))[0]["id"]
    their_delivery = ok(client.get("/v1/webhook-deliveries", headers=other.headers))[0]["id"]

    for path, cursor in [
        ("/v1/guardrail-actions", str(their_action)),  # another tenant's is no cursor here
        ("/v1/guardrail-actions", "999999999999"),
        ("/v1/guardrail-actions", "first"),
        ("/v1/guardrail-actions", "0"),
        ("/v1/webhook-deliveries", their_delivery),
        ("/v1/webhook-deliveries", "nosuchdelivery"),
    ]:
        response = client.get(f"{path}?after={cursor}", headers=tenant.headers)
        assert response.status_code == 422, (path, cursor, response.text)
        assert response.json()["error"]["field"] == "after", (path, cursor)
