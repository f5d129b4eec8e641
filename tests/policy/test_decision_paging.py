"""`GET /v1/policy-decisions` pages with `after` (the previous page's X-Next-After header) and
filters by `app` and `result`: past the newest `limit` decisions every one can be read, once."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient

from quartermaster.domain.timeutil import utc_now
from quartermaster.policy.models import PolicyDecision
from quartermaster.runtime import Runtime
from tests.conftest import LiveServer, TenantHandle
from tests.guardrails.support import ok
from tests.tenancy.cli_support import make_qm


def _log(runtime: Runtime, tenant_id: str, decisions: list[tuple[str, str]]) -> list[str]:
    """One decision per (subject, result), newest last, pairs in the same second; their ids."""
    start = utc_now() - timedelta(hours=1)
    rows = [
        PolicyDecision(
            tenant_id=tenant_id,
            point="publish",
            subject=subject,
            policy_name="p",
            policy_version=1,
            mode="enforce",
            input_digest="d",
            result=result,
            reasons="[]",
            enforced=True,
            decided_at=start + timedelta(seconds=n // 2),
        )
        for n, (subject, result) in enumerate(decisions)
    ]
    with runtime.session_factory() as session:
        session.add_all(rows)
        session.commit()
        return [row.id for row in rows]


def _all(client: TestClient, tenant: TenantHandle, limit: int, query: str = "") -> list[str]:
    ids: list[str] = []
    params = f"limit={limit}{query}"
    while True:
        response = client.get(f"/v1/policy-decisions?{params}", headers=tenant.headers)
        rows: list[dict[str, Any]] = ok(response)
        ids += [r["id"] for r in rows]
        cursor = response.headers.get("X-Next-After")
        if cursor is None:
            return ids
        assert len(rows) == limit
        params = f"limit={limit}{query}&after={cursor}"


def test_the_decision_log_is_paged_without_duplicates_or_gaps(
    client: TestClient, runtime: Runtime, tenant: TenantHandle
) -> None:
    decisions = [("web@1.0.0", "allow")] * 9 + [("web_x@2.0.0", "deny")] * 4
    decisions += [("web@1.1.0", "deny")] * 3 + [("budget:b", "allow")]
    ids = _log(runtime, tenant.tenant_id, decisions)

    listed = _all(client, tenant, limit=4)
    assert sorted(listed) == sorted(ids)
    assert len(listed) == len(set(listed)) == 17
    # Newest first across pages.
    order = [ids.index(i) // 2 for i in listed]
    assert order == sorted(order, reverse=True)

    # `app` is the app's versions (not another app whose id it starts), `result` one result.
    web = {i for i, (subject, _) in zip(ids, decisions, strict=True) if subject.startswith("web@")}
    assert set(_all(client, tenant, limit=5, query="&app=web")) == web
    assert len(_all(client, tenant, limit=2, query="&app=web&result=deny")) == 3
    assert len(_all(client, tenant, limit=2, query="&result=deny")) == 7


def test_a_bad_cursor_or_result_is_a_422_naming_the_parameter(
    client: TestClient, tenant: TenantHandle
) -> None:
    response = client.get("/v1/policy-decisions?after=nosuch", headers=tenant.headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "after"
    assert "nosuch" in error["message"]

    response = client.get("/v1/policy-decisions?result=maybe", headers=tenant.headers)
    assert response.status_code == 422, response.text
    error = response.json()["error"]
    assert error["field"] == "result"
    assert "allow, deny" in error["message"]


@pytest.mark.parametrize("db_url", ["sqlite"], indirect=True)  # the CLI only talks HTTP
def test_qm_policy_decisions_pages_with_after_and_all(
    runtime: Runtime,
    live_server: LiveServer,
    tenant: TenantHandle,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    decisions = [(f"app{n}@1.0.0", "deny" if n % 2 else "allow") for n in range(7)]
    _log(runtime, tenant.tenant_id, decisions)
    qm = make_qm(live_server, tenant, monkeypatch)

    first = qm("policy", "decisions", "--result", "deny", "--limit", "2").output
    assert re.findall(r"app\d@", first) == ["app5@", "app3@"]
    cursor = re.search(r"more: qm policy decisions --result deny --after (\w+) \(or --all\)", first)
    assert cursor is not None, first
    rest = qm("policy", "decisions", "--result", "deny", "--limit", "2", "--after", cursor[1])
    assert re.findall(r"app\d@", rest.output) == ["app1@"]
    assert "more:" not in rest.output
    every = qm("policy", "decisions", "--all").output
    assert sorted(re.findall(r"app\d@", every)) == [f"app{n}@" for n in range(7)]
    assert "more:" not in every
