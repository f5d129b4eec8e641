"""Fixtures of the broker tests: a data dir with root keyring and identity key, a broker
context, and a tenant with two teams and their apps (made through the ORM)."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import select
from typer.testing import CliRunner

from quartermaster.catalog.models import App
from quartermaster.cli.main import _register_groups
from quartermaster.cli.main import app as cli_app
from quartermaster.config import Settings
from quartermaster.runtime import Runtime
from quartermaster.secrets.access import Requester, RequesterKind
from quartermaster.secrets.context import SecretsContext, build_secrets_context
from quartermaster.secrets.identity import generate_identity_key
from quartermaster.secrets.keys import generate_root_keyring
from quartermaster.tenancy.models import CostCenter, PrincipalKind, Role, Team
from quartermaster.tenancy.service import bootstrap_tenant, create_principal, issue_api_key
from tests.conftest import LiveServer, make_settings


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    configured = make_settings(tmp_path / "qm", db_url, pipeline_enabled=False)
    generate_root_keyring(configured)
    generate_identity_key(configured)
    return configured


@pytest.fixture
def ctx(runtime: Runtime) -> Iterator[SecretsContext]:
    context = build_secrets_context(runtime)
    yield context
    context.close()


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client
    context: SecretsContext | None = getattr(app.state, "secrets_context", None)
    if context is not None:
        context.close()


@dataclass(frozen=True)
class World:
    """One tenant: team `payments` owns app `billing`, team `growth` owns app `web`."""

    tenant_id: str
    admin_token: str
    payments_team_id: str
    growth_team_id: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}

    def admin(self) -> Requester:
        return Requester(
            tenant_id=self.tenant_id,
            kind=RequesterKind.PRINCIPAL,
            actor="principal:admin",
            role=Role.ADMIN,
            principal_id="admin-principal",
        )

    def member(self, team_id: str, name: str = "mia") -> Requester:
        return Requester(
            tenant_id=self.tenant_id,
            kind=RequesterKind.PRINCIPAL,
            actor=f"principal:{name}",
            role=Role.TEAM_MEMBER,
            team_id=team_id,
            principal_id=f"p-{name}",
        )

    def workload(self, app: str, *, team: str | None = None, job: str | None = None) -> Requester:
        return Requester(
            tenant_id=self.tenant_id,
            kind=RequesterKind.WORKLOAD,
            actor=f"job:{job}" if job else f"app:{app}",
            app=app,
            team_slug=team,
            job=job,
        )


def add_team_and_app(runtime: Runtime, tenant_id: str, team_slug: str, app_id: str) -> str:
    with runtime.session_factory() as session:
        cost_center_id = session.scalar(
            select(CostCenter.id).where(CostCenter.tenant_id == tenant_id)
        )
        assert cost_center_id is not None
        team = Team(tenant_id=tenant_id, slug=team_slug, name=team_slug.title())
        session.add(team)
        session.flush()
        session.add(
            App(
                tenant_id=tenant_id,
                app_id=app_id,
                title=app_id.title(),
                owner="owner",
                team_id=team.id,
                cost_center_id=cost_center_id,
                created_by="test",
            )
        )
        session.commit()
        return team.id


@pytest.fixture
def make_world(runtime: Runtime) -> Callable[[], World]:
    def _make() -> World:
        tenant_id = f"s-{uuid.uuid4().hex[:10]}"
        with runtime.session_factory() as session:
            issued = bootstrap_tenant(tenant_id, session=session)
        payments = add_team_and_app(runtime, tenant_id, "payments", "billing")
        growth = add_team_and_app(runtime, tenant_id, "growth", "web")
        return World(tenant_id, issued.token, payments, growth)

    return _make


@pytest.fixture
def world(make_world: Callable[[], World]) -> World:
    return make_world()


def api_key(
    runtime: Runtime,
    tenant_id: str,
    name: str,
    role: Role,
    *,
    team_id: str | None = None,
    app_slug: str | None = None,
) -> dict[str, str]:
    """Authorization headers of a new principal of the given role."""
    with runtime.session_factory() as session:
        principal = create_principal(
            tenant_id,
            name,
            role=role,
            kind=PrincipalKind.SERVICE_ACCOUNT,
            team_id=team_id,
            app_slug=app_slug,
            session=session,
        )
        issued = issue_api_key(principal, session=session)
    return {"Authorization": f"Bearer {issued.token}"}


def register_cli() -> None:
    """Register the feature command groups once (main() does it at startup)."""
    if not any(group.name == "secret" for group in cli_app.registered_groups):
        _register_groups()


@pytest.fixture
def qm(live_server: LiveServer, world: World, monkeypatch: pytest.MonkeyPatch) -> CliRunner:
    """A CLI runner talking to a live server as the world's admin."""
    register_cli()
    monkeypatch.setenv("QM_URL", live_server.url)
    monkeypatch.setenv("QM_API_KEY", world.admin_token)
    monkeypatch.setenv("COLUMNS", "250")
    return CliRunner()


def run_ok(runner: CliRunner, *args: str, stdin: str | None = None) -> str:
    result = runner.invoke(cli_app, list(args), input=stdin)
    assert result.exit_code == 0, result.output
    return result.stdout
