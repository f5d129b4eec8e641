"""Read-only sessions: a write through one is refused; on SQLite their transaction is deferred,
so a read neither waits for a writer holding the lock nor takes it."""

from __future__ import annotations

import time

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from quartermaster.runtime import Runtime
from quartermaster.storage.engine import ReadOnlySessionError
from quartermaster.tenancy.models import Tenant
from tests.conftest import TenantHandle


def test_a_read_session_refuses_writes(runtime: Runtime) -> None:
    with runtime.read_session_factory() as session:
        session.add(Tenant(id="never-written", name="never"))
        with pytest.raises(ReadOnlySessionError):
            session.flush()
    with runtime.session_factory() as session:
        assert session.get(Tenant, "never-written") is None


def test_a_read_session_refuses_a_write_statement_and_a_write_session_still_writes(
    runtime: Runtime,
) -> None:
    with runtime.read_session_factory() as session:
        with pytest.raises(DBAPIError, match=r"readonly|read-only"):
            session.execute(
                text(
                    "INSERT INTO tenants (id, name, timezone, created_at)"
                    " VALUES ('sneaky', 'sneaky', 'UTC', CURRENT_TIMESTAMP)"
                )
            )
        session.rollback()
    # the same pooled connection, now for writing
    with runtime.session_factory() as session:
        session.add(Tenant(id="written", name="written"))
        session.commit()
    with runtime.read_session_factory() as session:
        assert session.get(Tenant, "written") is not None
        assert session.get(Tenant, "sneaky") is None


def test_search_does_not_wait_for_a_writer(
    runtime: Runtime, client: TestClient, tenant: TenantHandle
) -> None:
    if runtime.engine.dialect.name != "sqlite":
        pytest.skip("PostgreSQL readers never wait for writers")
    with runtime.engine.connect() as writer:
        writer.execute(text("SELECT 1"))  # the engine's begin event: BEGIN IMMEDIATE
        assert writer.connection.dbapi_connection.in_transaction  # type: ignore[union-attr]
        started = time.monotonic()
        response = client.get("/v1/apps/search", params={"q": "x"}, headers=tenant.headers)
        assert response.status_code == 200, response.text
        # busy_timeout is 30 s: an IMMEDIATE read would still be waiting
        assert time.monotonic() - started < 5
        writer.rollback()
