"""Helpers of the guardrail tests: a tenant with a team and an app, and a spend source whose
totals the test sets (budget logic is tested apart from pricing; one test prices for real)."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient
from sqlalchemy.orm import Session

from quartermaster.domain.timeutil import Period, utc_now
from quartermaster.guardrails.spend import ScopeSpend
from tests.conftest import TenantHandle


class FixedSpend:
    """Spend per (scope kind, scope) as the test sets it."""

    def __init__(self) -> None:
        self.totals: dict[tuple[str, str], Decimal] = {}
        self.calls = 0

    def set(self, kind: str, scope: str, amount: str) -> None:
        self.totals[(kind, scope)] = Decimal(amount)

    def spend(self, tenant_id: str, period: Period, *, session: Session) -> ScopeSpend:
        self.calls += 1
        return ScopeSpend(as_of=datetime.now(UTC), currency="EUR", totals=dict(self.totals))


@dataclass(frozen=True)
class World:
    tenant: TenantHandle
    team: str
    app: str

    @property
    def headers(self) -> dict[str, str]:
        return self.tenant.headers


def ok(response: Any, status: int = 200) -> Any:
    assert response.status_code == status, response.text
    return response.json() if response.content else None


def build_world(client: TestClient, tenant: TenantHandle) -> World:
    team = f"team-{uuid.uuid4().hex[:6]}"
    app = f"app-{uuid.uuid4().hex[:6]}"
    ok(client.post("/v1/teams", json={"slug": team}, headers=tenant.headers), 201)
    body = {"app_id": app, "owner": "o", "team": team, "cost_center": "default"}
    ok(client.post("/v1/apps", json=body, headers=tenant.headers), 201)
    return World(tenant, team, app)


def budget(client: TestClient, world: World, **fields: Any) -> dict[str, Any]:
    body = {"name": f"b-{uuid.uuid4().hex[:6]}", "amount": "100", **fields}
    result: dict[str, Any] = ok(client.post("/v1/budgets", json=body, headers=world.headers), 201)
    return result


def key_for(
    client: TestClient,
    tenant: TenantHandle,
    role: str,
    *,
    team: str | None = None,
    app_id: str | None = None,
) -> dict[str, str]:
    """Headers of a new key of `role` in the tenant (a team-member of `team`, an app key of
    `app_id`)."""
    body: dict[str, Any] = {"name": f"{role}-{uuid.uuid4().hex[:6]}", "role": role}
    if team is not None:
        body["team"] = team
    if app_id is not None:
        body["app_id"] = app_id
    principal = ok(client.post("/v1/principals", json=body, headers=tenant.headers), 201)
    issued = ok(
        client.post(f"/v1/principals/{principal['id']}/keys", json={}, headers=tenant.headers), 201
    )
    return {"Authorization": f"Bearer {issued['token']}"}


def usage_event(app: str, tokens: int = 1) -> dict[str, object]:
    """A valid usage event of `app`, happened a moment ago."""
    moment = utc_now() - timedelta(seconds=1)
    return {
        "specversion": "1.0",
        "type": "qm.invocation.usage",
        "source": "/tests/guardrails",
        "id": uuid.uuid4().hex,
        "time": moment.isoformat().replace("+00:00", "Z"),
        "data": {"app_id": app, "tokens": tokens},
    }


def send_events(
    client: TestClient, headers: dict[str, str], events: list[dict[str, object]]
) -> Any:
    return client.post(
        "/v1/events",
        content=json.dumps(events),
        headers={**headers, "Content-Type": "application/cloudevents-batch+json"},
    )
