"""Fixtures of the usage tests: a runtime on an empty database per test (the pipeline consumes
the whole log), a platform builder that writes catalog rows with chosen registration times,
and an event appender that mirrors ingestion (log append + "accepted" counter)."""

from __future__ import annotations

import json
import uuid
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from quartermaster.bus.protocol import LogRecord
from quartermaster.catalog.models import App, AppAssignment, Resource
from quartermaster.config import Settings
from quartermaster.domain.timeutil import floor_hour, utc_now
from quartermaster.metering.models import ReconciliationCounter
from quartermaster.runtime import Runtime, build_runtime
from quartermaster.tenancy.models import CostCenter, Team
from quartermaster.tenancy.service import bootstrap_tenant
from quartermaster.usage.models import EnvironmentOverride
from tests.conftest import make_settings


@pytest.fixture
def usage_settings(tmp_path: Path, fresh_db_url: str) -> Settings:
    return make_settings(tmp_path / "qm", fresh_db_url, pipeline_enabled=False)


@pytest.fixture
def usage_runtime(usage_settings: Settings) -> Iterator[Runtime]:
    rt = build_runtime(usage_settings, migrate=False)
    yield rt
    rt.close()


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return float(value) if value == value.to_integral() else str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(type(value).__name__)


@dataclass
class Platform:
    """One tenant's catalog, written through the ORM so tests choose registration times."""

    runtime: Runtime
    tenant_id: str
    admin_token: str
    cost_centers: dict[str, str] = field(default_factory=dict)  # slug -> id
    teams: dict[str, str] = field(default_factory=dict)
    apps: dict[str, str] = field(default_factory=dict)  # app slug -> pk
    sequence: int = 0

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def cost_center(self, slug: str) -> str:
        if slug not in self.cost_centers:
            with self.runtime.session_factory() as session:
                existing = session.scalar(
                    select(CostCenter.id).where(
                        CostCenter.tenant_id == self.tenant_id, CostCenter.slug == slug
                    )
                )
                if existing is None:
                    row = CostCenter(tenant_id=self.tenant_id, slug=slug, name=slug)
                    session.add(row)
                    session.commit()
                    existing = row.id
                self.cost_centers[slug] = existing
        return self.cost_centers[slug]

    def team(self, slug: str, cost_center: str) -> str:
        if slug not in self.teams:
            cc_id = self.cost_center(cost_center)
            with self.runtime.session_factory() as session:
                row = Team(tenant_id=self.tenant_id, slug=slug, name=slug, cost_center_id=cc_id)
                session.add(row)
                session.commit()
                self.teams[slug] = row.id
        return self.teams[slug]

    def app(
        self,
        app_id: str,
        *,
        team: str,
        cost_center: str,
        created_at: datetime,
        lifecycle: str = "persistent",
        environment: str = "production",
    ) -> str:
        team_id = self.team(team, cost_center)
        cc_id = self.cost_center(cost_center)
        with self.runtime.session_factory() as session:
            row = App(
                tenant_id=self.tenant_id,
                app_id=app_id,
                title=app_id,
                owner="owner@example.com",
                team_id=team_id,
                cost_center_id=cc_id,
                lifecycle=lifecycle,
                environment=environment,
                created_by="tests",
                created_at=created_at,
                updated_at=created_at,
            )
            session.add(row)
            session.flush()
            session.add(
                AppAssignment(
                    tenant_id=self.tenant_id,
                    app_pk=row.id,
                    team_id=team_id,
                    cost_center_id=cc_id,
                    valid_from=created_at,
                    valid_to=None,
                )
            )
            session.commit()
            self.apps[app_id] = row.id
        return row.id

    def move(self, app_id: str, *, team: str, cost_center: str, at: datetime) -> None:
        """Dated ownership change: close the open span at `at`, open a new one."""
        team_id, cc_id = self.team(team, cost_center), self.cost_center(cost_center)
        with self.runtime.session_factory() as session:
            current = session.scalars(
                select(AppAssignment).where(
                    AppAssignment.app_pk == self.apps[app_id], AppAssignment.valid_to.is_(None)
                )
            ).one()
            current.valid_to = at
            session.add(
                AppAssignment(
                    tenant_id=self.tenant_id,
                    app_pk=self.apps[app_id],
                    team_id=team_id,
                    cost_center_id=cc_id,
                    valid_from=at,
                    valid_to=None,
                )
            )
            session.commit()

    def resource(
        self,
        resource_id: str,
        *,
        app_id: str,
        valid_from: datetime,
        valid_to: datetime | None = None,
        created_at: datetime,
        environment: str | None = None,
    ) -> None:
        with self.runtime.session_factory() as session:
            session.add(
                Resource(
                    tenant_id=self.tenant_id,
                    resource_id=resource_id,
                    app_pk=self.apps[app_id],
                    environment=environment,
                    valid_from=valid_from,
                    valid_to=valid_to,
                    created_at=created_at,
                )
            )
            session.commit()

    def override(self, environment: str, *, cost_center: str, created_at: datetime) -> None:
        cc_id = self.cost_center(cost_center)
        with self.runtime.session_factory() as session:
            session.add(
                EnvironmentOverride(
                    tenant_id=self.tenant_id,
                    environment=environment,
                    cost_center_id=cc_id,
                    created_by="tests",
                    created_at=created_at,
                )
            )
            session.commit()

    def event(
        self,
        event_type: str,
        data: dict[str, Any],
        *,
        event_time: datetime,
        recorded_at: datetime | None = None,
        app_id: str | None = None,
        resource_id: str | None = None,
        lease: str | None = None,
        late: bool = False,
    ) -> LogRecord:
        """A LogRecord as ingestion stores it: app_id from data.app_id or a verified lease."""
        self.sequence += 1
        event_id = f"e-{self.sequence}-{uuid.uuid4().hex[:6]}"
        envelope: dict[str, Any] = {
            "specversion": "1.0",
            "id": event_id,
            "source": "tests",
            "type": event_type,
            "time": event_time.isoformat(),
            "data": data,
        }
        if lease is not None:
            envelope["qmlease"] = lease
        payload = json.dumps(envelope, default=_json_default, sort_keys=True)
        return LogRecord(
            tenant_id=self.tenant_id,
            source="tests",
            event_id=event_id,
            type=event_type,
            subject=None,
            event_time=event_time,
            recorded_at=recorded_at or utc_now(),
            content_hash=uuid.uuid4().hex,
            app_id=app_id if app_id is not None else data.get("app_id"),
            resource_id=resource_id if resource_id is not None else data.get("resource_id"),
            late=late,
            payload=payload,
        )

    def append(self, records: list[LogRecord]) -> None:
        """Append to the log and count them accepted per hour of receipt, in one transaction."""
        with self.runtime.session_factory() as session:
            result = self.runtime.event_log.append(records, session=session)
            per_hour = Counter(floor_hour(records[i].recorded_at) for i in result.appended)
            for hour, count in per_hour.items():
                counter = session.get(ReconciliationCounter, (self.tenant_id, hour, "accepted", ""))
                if counter is None:
                    session.add(
                        ReconciliationCounter(
                            tenant_id=self.tenant_id,
                            hour=hour,
                            stage="accepted",
                            reason="",
                            count=count,
                        )
                    )
                else:
                    counter.count += count
            session.commit()


def new_platform(runtime: Runtime, prefix: str = "t") -> Platform:
    tenant_id = f"{prefix}-{uuid.uuid4().hex[:8]}"
    with runtime.session_factory() as session:
        issued = bootstrap_tenant(tenant_id, session=session)
    return Platform(runtime=runtime, tenant_id=tenant_id, admin_token=issued.token)


@pytest.fixture
def platform(usage_runtime: Runtime) -> Platform:
    return new_platform(usage_runtime)
