"""Dated ownership: a change of team or cost center closes the current span and opens one."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import update

from quartermaster.catalog.models import App, AppAssignment
from quartermaster.catalog.service import app_owner_at, assignments_for_tenant
from quartermaster.domain.timeutil import Period
from quartermaster.runtime import Runtime
from tests.conftest import TenantHandle
from tests.tenancy.support import make_app, make_cost_center, make_team, ok

JAN = datetime(2025, 1, 1, tzinfo=UTC)
FEB = datetime(2025, 2, 1, tzinfo=UTC)
MAR = datetime(2025, 3, 1, tzinfo=UTC)


def iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


@pytest.fixture
def org(client: TestClient, tenant: TenantHandle) -> TenantHandle:
    make_cost_center(client, tenant, "shop-cc")
    make_cost_center(client, tenant, "lab-cc")
    make_team(client, tenant, "web", cost_center="shop-cc")
    make_team(client, tenant, "data", cost_center="lab-cc")
    return tenant


def registered_on(runtime: Runtime, tenant: TenantHandle, app_id: str, moment: datetime) -> None:
    """Pretend the app was registered at `moment` (registration always starts now)."""
    with runtime.session_factory() as session:
        app_pk = session.query(App.id).filter_by(tenant_id=tenant.tenant_id, app_id=app_id).scalar()
        session.execute(
            update(AppAssignment).where(AppAssignment.app_pk == app_pk).values(valid_from=moment)
        )
        session.commit()


def move(client: TestClient, tenant: TenantHandle, app_id: str, **body: Any) -> Any:
    return client.patch(f"/v1/apps/{app_id}", json=body, headers=tenant.headers)


def spans(detail: dict[str, Any]) -> list[tuple[str, str, str, str | None]]:
    return [
        (s["team"], s["cost_center"], s["valid_from"], s["valid_to"]) for s in detail["ownership"]
    ]


def test_a_dated_change_of_owner_charges_each_owner_for_its_own_part(
    client: TestClient, org: TenantHandle, runtime: Runtime
) -> None:
    make_app(client, org, "bot", team="web")
    registered_on(runtime, org, "bot", JAN)
    moved = ok(move(client, org, "bot", team="data", cost_center="lab-cc", effective_at=iso(FEB)))
    assert (moved["team"], moved["cost_center"]) == ("data", "lab-cc")
    assert spans(moved) == [
        ("web", "shop-cc", iso(JAN), iso(FEB)),
        ("data", "lab-cc", iso(FEB), None),
    ]

    with runtime.session_factory() as session:

        def owner(at: datetime, app_id: str = "bot") -> tuple[str, str] | None:
            return app_owner_at(org.tenant_id, app_id, at, session=session)

        assert owner(JAN - timedelta(microseconds=1)) is None  # before registration
        assert owner(JAN) == ("web", "shop-cc")
        assert owner(FEB - timedelta(microseconds=1)) == ("web", "shop-cc")
        assert owner(FEB) == ("data", "lab-cc")  # half-open: the new owner from FEB on
        assert owner(MAR) == ("data", "lab-cc")
        assert owner(FEB, "ghost") is None
        assert app_owner_at("another-tenant", "bot", FEB, session=session) is None

        def spans_in(start: datetime, end: datetime) -> list[tuple[str, str]]:
            found = assignments_for_tenant(
                org.tenant_id, period=Period(start, end), session=session
            )
            return [(s.team, s.cost_center) for s in found]

        assert spans_in(JAN, FEB) == [("web", "shop-cc")]
        assert spans_in(FEB, MAR) == [("data", "lab-cc")]
        assert spans_in(JAN + timedelta(days=15), FEB + timedelta(days=15)) == [
            ("web", "shop-cc"),
            ("data", "lab-cc"),
        ]
        everything = assignments_for_tenant(org.tenant_id, session=session)
        assert [(s.app_id, s.valid_from, s.valid_to) for s in everything] == [
            ("bot", JAN, FEB),
            ("bot", FEB, None),
        ]


def test_changes_chain_without_gaps_and_keep_what_is_not_changed(
    client: TestClient, org: TenantHandle, runtime: Runtime
) -> None:
    make_app(client, org, "bot", team="web")
    registered_on(runtime, org, "bot", JAN)
    ok(move(client, org, "bot", cost_center="lab-cc", effective_at=iso(FEB)))
    detail = ok(move(client, org, "bot", team="data", effective_at=iso(MAR)))
    assert spans(detail) == [
        ("web", "shop-cc", iso(JAN), iso(FEB)),
        ("web", "lab-cc", iso(FEB), iso(MAR)),
        ("data", "lab-cc", iso(MAR), None),  # the cost center stays unless changed
    ]


def test_without_effective_at_the_change_takes_effect_now(
    client: TestClient, org: TenantHandle, runtime: Runtime
) -> None:
    make_app(client, org, "bot", team="web")
    registered_on(runtime, org, "bot", JAN)
    before = datetime.now(UTC)
    detail = ok(move(client, org, "bot", team="data"))
    (_, _, _, boundary), (_, _, start, _) = spans(detail)
    assert boundary == start
    assert boundary is not None
    assert before <= datetime.fromisoformat(boundary) <= datetime.now(UTC)


def test_a_change_dated_at_the_start_of_the_current_span_replaces_it(
    client: TestClient, org: TenantHandle, runtime: Runtime
) -> None:
    make_app(client, org, "bot", team="web")
    registered_on(runtime, org, "bot", JAN)
    ok(move(client, org, "bot", team="data", effective_at=iso(FEB)))
    corrected = ok(move(client, org, "bot", cost_center="lab-cc", effective_at=iso(FEB)))
    assert spans(corrected) == [
        ("web", "shop-cc", iso(JAN), iso(FEB)),
        ("data", "lab-cc", iso(FEB), None),  # no empty [FEB, FEB) span
    ]


def test_effective_at_is_refused_before_the_current_span_in_the_future_or_without_a_change(
    client: TestClient, org: TenantHandle, runtime: Runtime
) -> None:
    make_app(client, org, "bot", team="web")
    registered_on(runtime, org, "bot", JAN)
    ok(move(client, org, "bot", team="data", effective_at=iso(FEB)))

    earlier = move(client, org, "bot", team="web", effective_at="2025-01-15T00:00:00Z")
    assert earlier.status_code == 422
    assert earlier.json()["error"] == {
        "code": "invalid_input",
        "message": "effective_at 2025-01-15 00:00 UTC is earlier than the current "
        "ownership, which began at 2025-02-01 00:00 UTC",
        "field": "effective_at",
    }
    future = move(
        client, org, "bot", team="web", effective_at=iso(datetime.now(UTC) + timedelta(days=1))
    )
    assert future.status_code == 422
    assert future.json()["error"]["field"] == "effective_at"
    assert "is in the future" in future.json()["error"]["message"]
    no_change = move(client, org, "bot", title="x", effective_at=iso(MAR))
    assert no_change.status_code == 422
    assert no_change.json()["error"]["message"] == (
        "effective_at dates a change of team or cost_center, and neither changes"
    )
    naive = move(client, org, "bot", team="web", effective_at="2025-03-01T00:00:00")
    assert (naive.status_code, naive.json()["error"]["field"]) == (422, "effective_at")
    # Nothing of the refused requests was applied.
    detail = ok(client.get("/v1/apps/bot", headers=org.headers))
    assert (detail["title"], len(detail["ownership"])) == ("bot", 2)
