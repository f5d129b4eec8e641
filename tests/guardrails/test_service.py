"""The guardrail evaluator as a background service: a tenant whose budgets cannot be
evaluated, or whose high-cost hours cannot be scanned, is logged once, in one line, not with
a traceback every pass."""

from __future__ import annotations

import logging

import pytest
from fastapi.testclient import TestClient

from quartermaster.guardrails.service import GuardrailEvaluator
from quartermaster.runtime import Runtime
from tests.conftest import TenantHandle
from tests.guardrails.support import budget, build_world


def test_a_tenant_without_a_price_book_is_logged_once_without_a_traceback(
    client: TestClient, runtime: Runtime, tenant: TenantHandle, caplog: pytest.LogCaptureFixture
) -> None:
    world = build_world(client, tenant)
    budget(client, world, scope_kind="team", scope=world.team)
    evaluator = GuardrailEvaluator(runtime)
    with caplog.at_level(logging.WARNING, logger="quartermaster.guardrails"):
        for _ in range(3):
            evaluator.run_once()
    mine = [r for r in caplog.records if tenant.tenant_id in r.getMessage()]
    assert len(mine) == 1, [r.getMessage() for r in mine]
    assert "no price book" in mine[0].getMessage()
    assert mine[0].exc_info is None


def test_a_high_cost_threshold_without_a_price_book_is_logged_once_without_a_traceback(
    client: TestClient, runtime: Runtime, tenant: TenantHandle, caplog: pytest.LogCaptureFixture
) -> None:
    response = client.put(
        "/v1/guardrail-settings", json={"high_cost_hour_amount": "10"}, headers=tenant.headers
    )
    assert response.status_code == 200, response.text
    evaluator = GuardrailEvaluator(runtime)
    with caplog.at_level(logging.WARNING):
        for _ in range(3):
            evaluator.run_once()
    mine = [r for r in caplog.records if tenant.tenant_id in r.getMessage()]
    assert [r.getMessage() for r in mine] == [
        f"high-cost hours of tenant {tenant.tenant_id} not scanned: the tenant has no price "
        "book: upload one first (logged again when this changes)"
    ]
    assert mine[0].exc_info is None
