"""Helpers for the pricing tests: documents built in code and extra principals."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import yaml

from quartermaster.domain.timeutil import Period
from quartermaster.pricing.document import PriceBookDocument
from quartermaster.pricing.loader import validate_document
from quartermaster.pricing.references import references
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


def example_owners() -> dict[str, list[str]]:
    """The teams, cost centers and apps docs/examples/pricebook.yaml names, by kind."""
    named: dict[str, list[str]] = {"team": [], "cost_center": [], "app": []}
    for reference in references(yaml.safe_load(EXAMPLE.read_text())):
        if reference.kind in named and reference.name not in named[reference.kind]:
            named[reference.kind].append(reference.name)
    return named


def create_example_owners(client: httpx.Client, headers: dict[str, str]) -> None:
    """Give the tenant the owners the example price book names, so that it loads (a price
    book naming a team, cost center or app the tenant does not have is refused). Owners that
    exist already are left as they are."""
    named = example_owners()

    def create(path: str, body: dict[str, str]) -> None:
        response = client.post(path, json=body, headers=headers)
        assert response.status_code in (201, 409), response.text

    for slug in named["cost_center"]:
        create("/v1/cost-centers", {"slug": slug})
    for slug in named["team"]:
        create("/v1/teams", {"slug": slug, "cost_center": "default"})
    for app_id in named["app"]:
        body = {"app_id": app_id, "owner": "pricing-tests", "team": named["team"][0]}
        create("/v1/apps", {**body, "cost_center": "default"})


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
