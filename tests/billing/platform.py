"""A small platform built through the HTTP API, fed through ingestion and the real pipeline.

The same shape as the hand-computed invoice of tests/billing/support.py, with request counts
divided by 1,000 (each request is one event). January 2026, price book "internal" v1:
  web  cpu 5000 s: 1000 free + 4000 x 0.002 = 8.00          requests 20 x 0.0005 = 0.01
  api  cpu  500 s: free = 0.00                              requests 10 x 0.0005 = 0.005
  etl  requests 4 x 0.0005 = 0.002, data-team 10% -0.0002  storage 150: 10 + 50 x 0.05 = 12.50
  lb 30.00 by requests 20:10:4 -> 17.647059 / 8.823529 / 3.529412
  control_plane 9.00 evenly -> 3.00 per app
  total 59.516800
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from fastapi.testclient import TestClient

from quartermaster.billing.calculator import BillingCalculator
from quartermaster.billing.sources import StoreCalculator, pipeline_catch_up
from quartermaster.pricing.loader import document_to_data
from quartermaster.runtime import Runtime
from tests.billing.support import book

PIPELINE_TOTAL = Decimal("59.516800")
JANUARY_MONTH = "2026-01"
BATCH = "application/cloudevents-batch+json"


def jan(day: int, hour: int = 12) -> datetime:
    return datetime(2026, 1, day, hour, tzinfo=UTC)


class Platform:
    """An admin client of one tenant, and builders of its catalog and events."""

    def __init__(self, client: TestClient, runtime: Runtime, tenant_id: str, token: str) -> None:
        self.client = client
        self.runtime = runtime
        self.tenant_id = tenant_id
        self.headers = {"Authorization": f"Bearer {token}"}

    def post(self, path: str, body: dict[str, Any], **kw: Any) -> Any:
        response = self.client.post(path, json=body, headers=kw.get("headers", self.headers))
        assert response.status_code in (200, 201), response.text
        return response.json()

    def key_for(
        self, role: str, *, team: str | None = None, app_id: str | None = None
    ) -> dict[str, str]:
        body: dict[str, Any] = {"name": f"{role}-{uuid.uuid4().hex[:6]}", "role": role}
        if team is not None:
            body["team"] = team
        if app_id is not None:
            body["app_id"] = app_id
        principal = self.post("/v1/principals", body)
        issued = self.post(f"/v1/principals/{principal['id']}/keys", {})
        return {"Authorization": f"Bearer {issued['token']}"}

    def upload_price_book(self, **changes: Any) -> None:
        data = document_to_data(book(**changes))
        response = self.client.post(
            "/v1/price-books", content=json.dumps(data), headers=self.headers
        )
        assert response.status_code in (200, 201), response.text

    def send(self, events: list[dict[str, Any]]) -> None:
        response = self.client.post(
            "/v1/events",
            content=json.dumps(events, default=str),
            headers={**self.headers, "Content-Type": BATCH},
        )
        assert response.status_code in (200, 202), response.text
        assert not response.json().get("rejected"), response.text


def event(kind: str, when: datetime, data: dict[str, Any]) -> dict[str, Any]:
    return {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": "tests/billing",
        "type": f"qm.{kind}",
        "time": when.isoformat(),
        "data": data,
    }


def build_platform(platform: Platform) -> None:
    since = "2025-12-01T00:00:00Z"
    for slug in ("eng", "analytics"):
        platform.post("/v1/cost-centers", {"slug": slug})
    platform.post("/v1/teams", {"slug": "web", "cost_center": "eng"})
    platform.post("/v1/teams", {"slug": "data", "cost_center": "analytics"})
    for app_id, team in (("web", "web"), ("api", "web"), ("etl", "data")):
        platform.post(
            "/v1/apps",
            {
                "app_id": app_id,
                "owner": f"{app_id}@example.com",
                "team": team,
                "owned_since": since,
            },
        )
    for resource, app_id in (("web-pod-1", "web"), ("api-pod-1", "api"), ("etl-vol", "etl")):
        platform.post(
            "/v1/resources", {"resource_id": resource, "app_id": app_id, "valid_from": since}
        )
    platform.upload_price_book()


def january_events() -> list[dict[str, Any]]:
    events = [
        event("resource.lifecycle", jan(3), {"resource_id": "web-pod-1", "action": "deploy"}),
        event(
            "resource.lifecycle",
            jan(10),
            {"resource_id": "web-pod-1", "action": "scale", "replicas": 3},
        ),
        event("resource.usage", jan(5), {"resource_id": "web-pod-1", "cpu_seconds": 3000}),
        event("resource.usage", jan(12), {"resource_id": "web-pod-1", "cpu_seconds": 2000}),
        event("resource.usage", jan(6), {"resource_id": "api-pod-1", "cpu_seconds": 500}),
        event("resource.usage", jan(7), {"resource_id": "etl-vol", "storage_gb_days": 150}),
        event("platform.cost", jan(1, 0), {"cost_type": "lb", "amount": "30.00"}),
        event("platform.cost", jan(1, 0), {"cost_type": "control_plane", "amount": "9.00"}),
    ]
    for app_id, count in (("web", 20), ("api", 10), ("etl", 4)):
        events += [
            event(
                "request.trace",
                jan(2 + n % 20),
                {"app_id": app_id, "request_id": f"{app_id}-{n}"},
            )
            for n in range(count)
        ]
    return events


def immediate_calculator(runtime: Runtime) -> BillingCalculator:
    """As the API's, without the settle delay (tests ingest and bill within a second)."""
    return StoreCalculator(
        runtime.usage_store, catch_up=pipeline_catch_up(runtime), settle=timedelta(0)
    )
