"""Helpers for the pricing tests: documents built in code and extra principals."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from quartermaster.domain.timeutil import Period
from quartermaster.pricing.document import PriceBookDocument
from quartermaster.pricing.loader import validate_document
from quartermaster.runtime import Runtime
from quartermaster.tenancy.models import Role, Team
from quartermaster.tenancy.service import create_principal, issue_api_key

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "pricebook.yaml"
JANUARY = Period(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))


def book(*prices: dict[str, Any], version: int = 1, **extra: Any) -> PriceBookDocument:
    """A valid document with the given rules (and discounts, platform_costs, ...)."""
    data: dict[str, Any] = {
        "name": "internal",
        "currency": "USD",
        "version": version,
        "effective_from": "2026-01-01T00:00:00Z",
        "prices": list(prices),
        **extra,
    }
    return validate_document(data)


def principal_headers(runtime: Runtime, tenant_id: str, role: Role) -> dict[str, str]:
    """An API key for a new principal of `role` in the tenant."""
    with runtime.session_factory() as session:
        team_id = None
        if role is Role.TEAM_MEMBER:
            team = Team(tenant_id=tenant_id, slug="t-pricing", name="Pricing test team")
            session.add(team)
            session.commit()
            team_id = team.id
        principal = create_principal(
            tenant_id,
            f"{role.value}-user",
            role=role,
            team_id=team_id,
            app_slug="some-app" if role is Role.APP else None,
            session=session,
        )
        issued = issue_api_key(principal, session=session)
    return {"Authorization": f"Bearer {issued.token}"}
