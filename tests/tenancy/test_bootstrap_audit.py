"""`qm tenant create`'s first admin and its key are the first records of the tenant's audit
chain (actor system:cli), never holding the key's secret; on SQLite and PostgreSQL."""

from __future__ import annotations

import json
import uuid

import pytest
from fastapi.testclient import TestClient
from typer.testing import CliRunner

from quartermaster.audit.log import list_records, verify_tenant_chain
from quartermaster.cli.main import app
from quartermaster.config import Settings
from quartermaster.runtime import Runtime
from quartermaster.tenancy.keys import split_token
from quartermaster.tenancy.service import CLI_ACTOR


def test_qm_tenant_create_audits_the_first_admin_and_its_key(
    settings: Settings,
    runtime: Runtime,
    client: TestClient,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("QM_DATABASE_URL", settings.resolved_database_url)
    monkeypatch.setenv("COLUMNS", "200")
    tenant_id = f"boot-{uuid.uuid4().hex[:10]}"
    made = CliRunner().invoke(
        app, ["tenant", "create", tenant_id, "--data-dir", str(settings.data_dir)]
    )
    assert made.exit_code == 0, made.output
    token = made.output.strip().splitlines()[-1]
    parts = split_token(token)
    assert parts is not None, made.output
    key_id, secret = parts

    with runtime.session_factory() as session:
        records = [stored.record for stored in list_records(tenant_id, session=session)]
        assert verify_tenant_chain(tenant_id, session=session).ok
    assert [(r.seq, r.action, r.outcome, r.actor) for r in records] == [
        (1, "create-principal", "ok", CLI_ACTOR),
        (2, "issue-key", "ok", CLI_ACTOR),
    ]
    assert CLI_ACTOR == "system:cli"
    created, issued = records[0].detail, records[1].detail
    assert (created["principal"], created["role"], created["app_id"]) == ("admin", "admin", None)
    assert issued["key_id"] == key_id
    assert (issued["principal"], issued["principal_id"]) == ("admin", created["principal_id"])
    assert issued["expires_at"] is None
    everything = json.dumps([r.detail for r in records]) + repr(records)
    assert secret not in everything
    assert token not in everything

    # The admin sees them over the API, and its own changes follow in the same chain.
    headers = {"Authorization": f"Bearer {token}"}
    listed = client.get("/v1/audit/records", headers=headers)
    assert listed.status_code == 200, listed.text
    assert [(r["action"], r["actor"]) for r in listed.json()["records"]] == [
        ("create-principal", "system:cli"),
        ("issue-key", "system:cli"),
    ]
    second = client.post("/v1/principals", json={"name": "ops", "role": "admin"}, headers=headers)
    assert second.status_code == 201, second.text
    with runtime.session_factory() as session:
        after = [stored.record for stored in list_records(tenant_id, session=session)]
        assert verify_tenant_chain(tenant_id, session=session).ok
    assert [(r.seq, r.action, r.actor) for r in after[2:]] == [
        (3, "create-principal", "principal:admin")
    ]
