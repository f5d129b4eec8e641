"""Fixtures of the metering tests: apps with signing keys (made through the ORM), principals,
and builders of valid events."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import select

from quartermaster.catalog.models import App, AppAssignment
from quartermaster.catalog.signing_keys import create_signing_key
from quartermaster.domain.timeutil import utc_now
from quartermaster.metering.signing import sign_event
from quartermaster.runtime import Runtime
from quartermaster.tenancy.models import CostCenter, PrincipalKind, Role, Team
from quartermaster.tenancy.service import create_principal, issue_api_key
from tests.conftest import TenantHandle


@dataclass(frozen=True)
class AppHandle:
    tenant_id: str
    app_id: str
    app_pk: str
    team_id: str
    key_id: str
    secret: bytes

    def sign(self, event: dict[str, Any]) -> dict[str, Any]:
        return sign_event(event, key_id=self.key_id, secret=self.secret)


def create_app_with_key(
    runtime: Runtime,
    tenant_id: str,
    app_id: str,
    *,
    require_signatures: bool = False,
    team_id: str | None = None,
) -> AppHandle:
    """An app (with its team, the default cost center and an ownership row) and one key."""
    with runtime.session_factory() as session:
        cost_center_id = session.scalars(
            select(CostCenter.id).where(CostCenter.tenant_id == tenant_id)
        ).first()
        assert cost_center_id is not None
        if team_id is None:
            team = Team(tenant_id=tenant_id, slug=f"team-{app_id}", name=f"Team of {app_id}")
            session.add(team)
            session.flush()
            team_id = team.id
        app = App(
            tenant_id=tenant_id,
            app_id=app_id,
            title=app_id.title(),
            owner="owner@example.com",
            team_id=team_id,
            cost_center_id=cost_center_id,
            require_signatures=require_signatures,
            created_by="tests",
        )
        session.add(app)
        session.flush()
        session.add(
            AppAssignment(
                tenant_id=tenant_id,
                app_pk=app.id,
                team_id=team_id,
                cost_center_id=cost_center_id,
                valid_from=datetime(2020, 1, 1, tzinfo=UTC),
                valid_to=None,
            )
        )
        session.commit()
        key = create_signing_key(app, server_key=runtime.server_key, session=session)
        return AppHandle(
            tenant_id=tenant_id,
            app_id=app_id,
            app_pk=app.id,
            team_id=team_id,
            key_id=key.key_id,
            secret=bytes.fromhex(key.secret_hex),
        )


def principal_token(
    runtime: Runtime,
    tenant_id: str,
    *,
    role: Role,
    app_slug: str | None = None,
    team_id: str | None = None,
) -> str:
    with runtime.session_factory() as session:
        principal = create_principal(
            tenant_id,
            f"{role.value}-{uuid.uuid4().hex[:8]}",
            role=role,
            kind=PrincipalKind.SERVICE_ACCOUNT,
            app_slug=app_slug,
            team_id=team_id,
            session=session,
        )
        return issue_api_key(principal, session=session).token


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def usage_event(
    app_id: str,
    *,
    event_id: str | None = None,
    source: str = "app://tests",
    time: datetime | None = None,
    tokens: int = 10,
    **data: Any,
) -> dict[str, Any]:
    moment = time or utc_now() - timedelta(seconds=5)
    return {
        "specversion": "1.0",
        "id": event_id or uuid.uuid4().hex,
        "source": source,
        "type": "qm.invocation.usage",
        "time": moment.isoformat().replace("+00:00", "Z"),
        "data": {"app_id": app_id, "tokens": tokens, **data},
    }


@pytest.fixture
def make_app(runtime: Runtime, tenant: TenantHandle) -> Callable[..., AppHandle]:
    def _make(app_id: str | None = None, **kwargs: Any) -> AppHandle:
        return create_app_with_key(
            runtime, tenant.tenant_id, app_id or f"app-{uuid.uuid4().hex[:8]}", **kwargs
        )

    return _make
