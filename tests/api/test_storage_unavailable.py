"""Storage that cannot serve now is a 503 naming it, with Retry-After, on every route: a full
disk, a database locked by another process past the busy timeout, a database that cannot be
reached. Errors of the request or of the code stay what they were (409, 500)."""

from __future__ import annotations

import http.client
import sqlite3
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from psycopg import errors as pg_errors
from sqlalchemy import event, text
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError

from quartermaster.api.app import create_app
from quartermaster.catalog import service as catalog_service
from quartermaster.config import Settings
from quartermaster.errors import ServiceUnavailableError
from quartermaster.runtime import Runtime, build_runtime
from quartermaster.storage.unavailable import unavailable_error
from tests.conftest import (
    PG_ADMIN_DSN,
    LiveServer,
    TenantHandle,
    _new_database,
    free_port,
    make_settings,
    start_live_server,
)


def _real_sqlite_busy(tmp_path: Path) -> sqlite3.OperationalError:
    """The error SQLite raises when another connection holds the write lock."""
    path = tmp_path / "busy.db"
    holder = sqlite3.connect(path, isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    waiter = sqlite3.connect(path, isolation_level=None, timeout=0)
    try:
        waiter.execute("BEGIN IMMEDIATE")
    except sqlite3.OperationalError as exc:
        return exc
    finally:
        waiter.close()
        holder.close()
    raise AssertionError("the second writer was not refused")


def _real_refused_connect() -> psycopg.OperationalError:
    try:
        psycopg.connect(f"postgresql://u:secret@127.0.0.1:{free_port()}/qm", connect_timeout=5)
    except psycopg.OperationalError as exc:
        return exc
    raise AssertionError("nothing listens there, yet it connected")


# The mapping, fed the real exception types.


def test_a_locked_sqlite_database_is_a_503_saying_so(tmp_path: Path) -> None:
    for orig in (_real_sqlite_busy(tmp_path), sqlite3.OperationalError("database is locked")):
        error = unavailable_error(OperationalError("BEGIN IMMEDIATE", {}, orig))
        assert isinstance(error, ServiceUnavailableError)
        assert error.code == "service_unavailable"
        assert error.message == (
            "the database is locked by another process (SQLite busy timeout passed: "
            "OperationalError: database is locked). Nothing of this request was stored; "
            "send it again shortly"
        )
        assert error.retry_after_seconds == 5


def test_a_postgresql_that_cannot_be_reached_is_a_503_with_the_drivers_reason() -> None:
    refused = unavailable_error(OperationalError(None, None, _real_refused_connect()))
    assert isinstance(refused, ServiceUnavailableError)
    assert refused.message.startswith("the database cannot be reached (OperationalError: ")
    assert "Connection refused" in refused.message, refused.message
    assert "127.0.0.1" not in refused.message  # where the database is stays out of it
    assert "secret" not in refused.message
    assert "\n" not in refused.message
    assert refused.retry_after_seconds == 10

    not_accepting = psycopg.OperationalError(
        'connection failed: connection to server at "10.0.0.5", port 5432 failed: FATAL:  '
        'database "qm" is not currently accepting connections'
    )
    error = unavailable_error(OperationalError(None, None, not_accepting))
    assert error is not None
    assert error.message == (
        "the database cannot be reached (OperationalError: connection failed: FATAL: database "
        '"qm" is not currently accepting connections). Send the request again once the '
        "database is back"
    )

    terminated = OperationalError(
        "SELECT 1",
        {},
        pg_errors.AdminShutdown("terminating connection due to administrator command"),
        connection_invalidated=True,
    )
    error = unavailable_error(terminated)
    assert error is not None
    assert error.message.startswith(
        "the database cannot be reached (AdminShutdown: terminating connection due to "
        "administrator command)"
    )
    closed = psycopg.OperationalError("consuming input failed: server closed the connection")
    assert unavailable_error(OperationalError("SELECT 1", {}, closed)) is not None
    assert unavailable_error(closed) is not None  # raw, as psycopg raises it


def test_a_full_disk_keeps_its_own_503_on_any_route() -> None:
    full = OperationalError("INSERT", {}, sqlite3.OperationalError("database or disk is full"))
    error = unavailable_error(full)
    assert error is not None
    assert error.message.startswith(
        "the database's disk is full (OperationalError: database or disk is full). Nothing of "
        "this request was stored"
    )
    assert error.retry_after_seconds == 10


@pytest.mark.parametrize(
    "exc",
    [
        IntegrityError("INSERT", {}, sqlite3.IntegrityError("UNIQUE constraint failed: apps.id")),
        IntegrityError("INSERT", {}, pg_errors.UniqueViolation("duplicate key value")),
        OperationalError("SELECT", {}, sqlite3.OperationalError("no such table: nowhere")),
        OperationalError("SELEC", {}, sqlite3.OperationalError('near "SELEC": syntax error')),
        OperationalError("SELECT", {}, sqlite3.OperationalError("database table is locked")),
        ProgrammingError("SELECT", {}, pg_errors.UndefinedTable('relation "x" does not exist')),
        OperationalError("SELECT", {}, pg_errors.QueryCanceled("canceling statement")),
        OperationalError("SELECT", {}, pg_errors.SerializationFailure("could not serialize")),
        sqlite3.OperationalError("no such column: x"),
        RuntimeError("boom"),
        ValueError("database is locked"),  # words alone are not a driver's error
    ],
    ids=lambda exc: f"{type(exc).__name__}-{getattr(exc, 'orig', exc)}",
)
def test_errors_of_the_request_or_the_code_are_not_a_503(exc: Exception) -> None:
    assert unavailable_error(exc) is None


# Through the app.


def _locked() -> OperationalError:
    return OperationalError("BEGIN IMMEDIATE", {}, sqlite3.OperationalError("database is locked"))


def _register_app(client: TestClient, tenant: TenantHandle) -> Any:
    body = {"app_id": f"a-{uuid.uuid4().hex[:8]}", "owner": "o", "team": "t-su"}
    return client.post("/v1/apps", json=body, headers=tenant.headers)


@pytest.mark.parametrize(
    ("raised", "status", "starts"),
    [
        (_locked(), 503, "the database is locked by another process"),
        (
            OperationalError("COMMIT", {}, sqlite3.OperationalError("database or disk is full")),
            503,
            "the database's disk is full",
        ),
        (
            OperationalError(
                "SELECT 1",
                {},
                pg_errors.AdminShutdown("terminating connection due to administrator command"),
                connection_invalidated=True,
            ),
            503,
            "the database cannot be reached (AdminShutdown: terminating connection",
        ),
        (RuntimeError("wrapped", "x"), 500, "internal server error"),
        (IntegrityError("INSERT", {}, sqlite3.IntegrityError("CHECK constraint failed")), 500, ""),
    ],
    ids=["locked", "disk-full", "terminated", "a-bug", "integrity"],
)
def test_a_route_whose_storage_fails_answers_by_the_one_mapping(
    app: FastAPI,
    tenant: TenantHandle,
    monkeypatch: pytest.MonkeyPatch,
    raised: Exception,
    status: int,
    starts: str,
) -> None:
    def fail(*_args: object, **_kwargs: object) -> None:
        raise raised

    monkeypatch.setattr(catalog_service, "register_app", fail)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = _register_app(client, tenant)
    assert response.status_code == status, response.text
    error = response.json()["error"]
    assert error["message"].startswith(starts), error["message"]
    if status == 503:
        assert error["code"] == "service_unavailable"
        assert response.headers["Retry-After"] in ("5", "10")
        assert "Traceback" not in response.text
    else:
        assert error["code"] == "internal_error"
        assert "Retry-After" not in response.headers


def test_a_storage_failure_wrapped_in_another_exception_is_still_a_503(
    app: FastAPI, tenant: TenantHandle, monkeypatch: pytest.MonkeyPatch
) -> None:
    def fail(*_args: object, **_kwargs: object) -> None:
        try:
            raise _locked()
        except OperationalError as exc:
            raise RuntimeError("registering failed") from exc

    monkeypatch.setattr(catalog_service, "register_app", fail)
    with TestClient(app, raise_server_exceptions=False) as client:
        response = _register_app(client, tenant)
    assert response.status_code == 503, response.text
    assert response.headers["Retry-After"] == "5"


# A real lock, over HTTP: the 503 keeps the connection open for the next request.


@pytest.fixture
def short_busy_runtime(settings: Settings, runtime: Runtime) -> Runtime:
    """The runtime with a busy timeout of 200 ms instead of 30 s (SQLite only)."""
    if runtime.engine.dialect.name != "sqlite":
        pytest.skip("SQLite's write lock")

    @event.listens_for(runtime.engine, "connect")
    def _short_busy_timeout(dbapi_connection: Any, _record: Any) -> None:
        dbapi_connection.execute("PRAGMA busy_timeout=200")

    runtime.engine.dispose()  # pooled connections have the 30 s one
    return runtime


@pytest.fixture
def write_lock(short_busy_runtime: Runtime) -> Iterator[sqlite3.Connection]:
    """Another process's hold on the database's write lock (BEGIN IMMEDIATE), until it
    commits."""
    database = short_busy_runtime.engine.url.database
    assert database is not None
    holder = sqlite3.connect(database, isolation_level=None)
    yield holder
    holder.close()


def _request(conn: http.client.HTTPConnection, method: str, path: str, **kw: Any) -> Any:
    conn.request(method, path, **kw)
    response = conn.getresponse()
    return response, response.read()


def test_a_locked_database_is_a_503_and_the_connection_stays_open(
    live_server: LiveServer,
    tenant: TenantHandle,
    write_lock: sqlite3.Connection,
) -> None:
    host, port = live_server.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    headers = {**tenant.headers, "Content-Type": "application/json"}
    try:
        made, _ = _request(
            conn,
            "POST",
            "/v1/teams",
            body=b'{"slug": "t-lk", "cost_center": "default"}',
            headers=headers,
        )
        assert made.status == 201, made.status
        sock = conn.sock
        write_lock.execute("BEGIN IMMEDIATE")
        app_body = b'{"app_id": "a-lk", "owner": "o", "team": "t-lk"}'
        refused, raw = _request(conn, "POST", "/v1/apps", body=app_body, headers=headers)
        assert refused.status == 503, raw
        assert refused.getheader("Retry-After") == "5"
        assert refused.getheader("Connection") != "close"
        message = __import__("json").loads(raw)["error"]["message"]
        assert message.startswith(
            "the database is locked by another process (SQLite busy timeout passed"
        ), message
        event_body = (
            b'{"specversion": "1.0", "id": "e-lk", "source": "s", "type": "x.y", "data": {}}'
        )
        ingest, raw = _request(
            conn,
            "POST",
            "/v1/events",
            body=event_body,
            headers={**tenant.headers, "Content-Type": "application/cloudevents+json"},
        )
        assert ingest.status == 503, raw
        assert conn.sock is sock  # the same connection, still open
        write_lock.execute("COMMIT")
        after, raw = _request(conn, "GET", "/healthz")
        assert after.status == 200, raw
        assert conn.sock is sock
    finally:
        conn.close()


def test_the_lock_held_stored_nothing(
    app: FastAPI, tenant: TenantHandle, write_lock: sqlite3.Connection
) -> None:
    with TestClient(app) as client:
        client.post(
            "/v1/teams", json={"slug": "t-ln", "cost_center": "default"}, headers=tenant.headers
        )
        write_lock.execute("BEGIN IMMEDIATE")
        body = {"app_id": "a-ln", "owner": "o", "team": "t-ln"}
        refused = client.post("/v1/apps", json=body, headers=tenant.headers)
        assert refused.status_code == 503, refused.text
        write_lock.execute("COMMIT")
        assert client.get("/v1/apps/a-ln", headers=tenant.headers).status_code == 404
        retried = client.post("/v1/apps", json=body, headers=tenant.headers)
        assert retried.status_code == 201, retried.text


# PostgreSQL for real: a backend terminated mid-request, a database refusing connections.


@pytest.mark.postgresql
def test_a_postgresql_backend_terminated_mid_request_is_a_503(tmp_path: Path) -> None:
    url, drop = _new_database("postgresql", tmp_path)
    settings = make_settings(tmp_path / "qm", url, pipeline_enabled=False)
    runtime = build_runtime(settings, migrate=False)
    app = create_app(settings, runtime=runtime)

    @app.get("/terminate-me")
    def terminate_me() -> None:
        with runtime.session_factory() as session:
            session.execute(text("SELECT pg_terminate_backend(pg_backend_pid())"))

    live = start_live_server(app)
    host, port = live.url.removeprefix("http://").split(":")
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        response, raw = _request(conn, "GET", "/terminate-me")
        assert response.status == 503, raw
        assert b"the database cannot be reached (AdminShutdown: terminating connection" in raw
        assert response.getheader("Retry-After") == "10"
        sock = conn.sock
        again, raw = _request(conn, "GET", "/healthz")
        assert again.status == 200, raw
        assert conn.sock is sock

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
            admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS false')
        runtime.engine.dispose()
        try:
            refused, raw = _request(conn, "GET", "/terminate-me")
        finally:
            with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as admin:
                admin.execute(f'ALTER DATABASE "{name}" ALLOW_CONNECTIONS true')
        assert refused.status == 503, raw
        assert b"is not currently accepting connections" in raw, raw
        assert b"127.0.0.1" not in raw
    finally:
        conn.close()
        live.server.should_exit = True
        live.thread.join(timeout=20)
        runtime.close()
        drop()
