"""Shared fixtures. Database tests run on SQLite and on the PostgreSQL server at 127.0.0.1:5432.

The shared database (`db_url`) is created and migrated once per backend and test process
(`make test` runs one process per core); tests isolate themselves by creating their own
tenant (`make_tenant`). Tests that need an empty database
(pipeline consumers, crash tests) use `fresh_db_url`.
"""

from __future__ import annotations

import os
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import psycopg
import pytest
import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient
from sqlalchemy import Engine

from quartermaster.api.app import create_app
from quartermaster.config import Settings, generate_server_key
from quartermaster.runtime import Runtime, build_runtime
from quartermaster.storage import create_db_engine, upgrade_database
from quartermaster.tenancy.service import bootstrap_tenant

PG_ADMIN_DSN = os.environ.get("QM_TEST_PG_DSN", "postgresql://postgres@127.0.0.1:5432/postgres")
BACKENDS = ["sqlite", pytest.param("postgresql", marks=pytest.mark.postgresql)]


def _pg_url(database: str) -> str:
    base = PG_ADMIN_DSN.rsplit("/", 1)[0].replace("postgresql://", "postgresql+psycopg://", 1)
    return f"{base}/{database}"


def create_pg_database() -> tuple[str, Callable[[], None]]:
    name = f"qm_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')

    def drop() -> None:
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    return _pg_url(name), drop


def _new_database(backend: str, directory: Path) -> tuple[str, Callable[[], None]]:
    if backend == "postgresql":
        url, drop = create_pg_database()
    else:
        url, drop = f"sqlite:///{directory / 'qm.db'}", lambda: None
    engine = create_db_engine(url)
    try:
        upgrade_database(engine)
    finally:
        engine.dispose()
    return url, drop


@pytest.fixture(scope="session", params=BACKENDS)
def db_url(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[str]:
    url, drop = _new_database(request.param, tmp_path_factory.mktemp("shared-db"))
    yield url
    drop()


@pytest.fixture(params=BACKENDS)
def fresh_db_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    url, drop = _new_database(request.param, tmp_path)
    yield url
    drop()


def make_settings(data_dir: Path, database_url: str, **overrides: object) -> Settings:
    # Webhook tests deliver to a receiver on 127.0.0.1, which the SSRF guard refuses unless
    # private destinations are allowed; the guard's own tests pass False.
    overrides.setdefault("webhook_allow_private", True)
    settings = Settings(data_dir=data_dir, database_url=database_url, **overrides)  # type: ignore[arg-type]
    generate_server_key(settings)
    return settings


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> Settings:
    return make_settings(tmp_path / "qm", db_url, pipeline_enabled=False)


@pytest.fixture
def runtime(settings: Settings) -> Iterator[Runtime]:
    rt = build_runtime(settings, migrate=False)
    yield rt
    rt.close()


@pytest.fixture
def app(settings: Settings, runtime: Runtime) -> FastAPI:
    return create_app(settings, runtime=runtime)


@pytest.fixture
def client(app: FastAPI) -> Iterator[TestClient]:
    with TestClient(app) as test_client:
        yield test_client


@dataclass(frozen=True)
class TenantHandle:
    tenant_id: str
    admin_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.admin_token}"}


@pytest.fixture
def make_tenant(runtime: Runtime) -> Callable[..., TenantHandle]:
    def _make(prefix: str = "t") -> TenantHandle:
        tenant_id = f"{prefix}-{uuid.uuid4().hex[:10]}"
        with runtime.session_factory() as session:
            issued = bootstrap_tenant(tenant_id, session=session)
        return TenantHandle(tenant_id=tenant_id, admin_token=issued.token)

    return _make


@pytest.fixture
def tenant(make_tenant: Callable[..., TenantHandle]) -> TenantHandle:
    return make_tenant()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class LiveServer:
    url: str
    server: uvicorn.Server
    thread: threading.Thread


def start_live_server(app: FastAPI) -> LiveServer:
    """Serve `app` with uvicorn on a random loopback port, in a thread of this process."""
    port = free_port()
    config = uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("live server did not start")
        time.sleep(0.02)
    return LiveServer(url=f"http://127.0.0.1:{port}", server=server, thread=thread)


@pytest.fixture
def live_server(app: FastAPI) -> Iterator[LiveServer]:
    live = start_live_server(app)
    yield live
    live.server.should_exit = True
    live.thread.join(timeout=20)


@pytest.fixture
def http(live_server: LiveServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=live_server.url, timeout=30) as client:
        yield client


@pytest.fixture(params=BACKENDS)
def empty_engine(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Engine]:
    """An engine on a database without any table (a fresh SQLite file, or a fresh PostgreSQL
    database dropped afterwards): for migration tests."""
    if request.param == "postgresql":
        url, drop = create_pg_database()
    else:
        url, drop = f"sqlite:///{tmp_path / 'qm.db'}", lambda: None
    engine = create_db_engine(url)
    yield engine
    engine.dispose()
    drop()
