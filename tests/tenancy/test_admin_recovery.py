"""Creating a tenant is one transaction, and `qm tenant admin-key` lets an operator with the
database back into a tenant whose admin keys are all lost; on SQLite and PostgreSQL."""

from __future__ import annotations

import uuid

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select
from typer.testing import CliRunner

from quartermaster.audit.log import list_records, verify_tenant_chain
from quartermaster.cli.main import app
from quartermaster.config import Settings
from quartermaster.runtime import Runtime
from quartermaster.tenancy import service
from quartermaster.tenancy.models import Principal, Tenant


def _qm(settings: Settings, *args: str) -> tuple[int, str]:
    made = CliRunner().invoke(app, [*args, "--data-dir", str(settings.data_dir)])
    return made.exit_code, made.output


@pytest.fixture
def cli_env(settings: Settings, monkeypatch: pytest.MonkeyPatch) -> Settings:
    monkeypatch.setenv("QM_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("COLUMNS", "200")
    return settings


def test_a_failure_while_issuing_the_first_key_leaves_no_tenant(
    runtime: Runtime, monkeypatch: pytest.MonkeyPatch
) -> None:
    """It was three commits: a crash after the first left a tenant nobody could reach and
    whose name `qm tenant create` then refused."""
    tenant_id = f"half-{uuid.uuid4().hex[:8]}"

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk gone")

    monkeypatch.setattr(service, "generate_key", broken)
    with runtime.session_factory() as session, pytest.raises(RuntimeError):
        service.bootstrap_tenant(tenant_id, session=session)
    monkeypatch.undo()
    with runtime.session_factory() as session:
        assert session.get(Tenant, tenant_id) is None
        assert (
            session.scalar(
                select(func.count()).select_from(Principal).where(Principal.tenant_id == tenant_id)
            )
            == 0
        )
        issued = service.bootstrap_tenant(tenant_id, session=session)
    assert issued.token


def test_admin_key_gives_a_working_key_and_is_audited(
    cli_env: Settings, runtime: Runtime, client: TestClient
) -> None:
    tenant_id = f"lost-{uuid.uuid4().hex[:8]}"
    code, output = _qm(cli_env, "tenant", "create", tenant_id)
    assert code == 0, output
    lost = output.strip().splitlines()[-1]  # the only admin key, never written down

    code, output = _qm(cli_env, "tenant", "admin-key", tenant_id)
    assert code == 0, output
    token = output.strip().splitlines()[-1]
    headers = {"Authorization": f"Bearer {token}"}
    assert client.get("/v1/teams", headers=headers).status_code == 200
    with runtime.session_factory() as session:
        records = [stored.record for stored in list_records(tenant_id, session=session)]
        assert verify_tenant_chain(tenant_id, session=session).ok
    assert (records[-1].action, records[-1].actor) == ("issue-key", "system:cli")
    assert records[-1].detail["principal"] == "admin"
    assert token not in repr(records)

    # A name the tenant lacks is a new admin; a name that is no admin is refused.
    code, output = _qm(cli_env, "tenant", "admin-key", tenant_id, "--name", "ops-oncall")
    assert code == 0, output
    ops = {"Authorization": f"Bearer {output.strip().splitlines()[-1]}"}
    principals = client.get("/v1/principals", headers=ops)
    assert principals.status_code == 200, principals.text
    roles = {p["name"]: p["role"] for p in principals.json()}
    assert roles == {"admin": "admin", "ops-oncall": "admin"}
    assert lost not in output
    client.post(
        "/v1/principals", json={"name": "reader", "role": "finance"}, headers=headers
    ).raise_for_status()
    code, output = _qm(cli_env, "tenant", "admin-key", tenant_id, "--name", "reader")
    assert code == 1
    assert "'reader' has role finance, not admin" in output


def test_admin_key_for_an_unknown_tenant_names_it(cli_env: Settings) -> None:
    code, output = _qm(cli_env, "tenant", "admin-key", "nosuch")
    assert code == 1
    assert "tenant 'nosuch' does not exist" in output
