"""The running system's parts, built once from settings and handed around explicitly."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from sqlalchemy import Engine
from sqlalchemy.orm import Session, sessionmaker

from quartermaster.bus.embedded import EmbeddedEventLog
from quartermaster.bus.protocol import EventLog
from quartermaster.config import Settings, load_server_key
from quartermaster.storage import (
    create_db_engine,
    make_read_session_factory,
    make_session_factory,
    upgrade_database,
)

if TYPE_CHECKING:
    from quartermaster.tenancy.auth_cache import AuthCache
    from quartermaster.usage.store import UsageStore


@dataclass
class Runtime:
    settings: Settings
    engine: Engine
    session_factory: sessionmaker[Session]
    event_log: EventLog
    server_key: bytes
    # Long-lived parts features attach by name (e.g. the pipeline worker), one per runtime.
    services: dict[str, Any] = field(default_factory=dict)
    _usage_store: UsageStore | None = field(default=None, repr=False)
    _read_sessions: sessionmaker[Session] | None = field(default=None, repr=False)
    _auth_cache: AuthCache | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def read_session_factory(self) -> sessionmaker[Session]:
        """Sessions that only read: no write lock on SQLite (storage.engine)."""
        with self._lock:
            if self._read_sessions is None:
                self._read_sessions = make_read_session_factory(self.engine)
            return self._read_sessions

    @property
    def auth_cache(self) -> AuthCache:
        """Verified API keys of this process (tenancy/auth_cache.py)."""
        with self._lock:
            if self._auth_cache is None:
                from quartermaster.tenancy.auth_cache import AuthCache

                self._auth_cache = AuthCache(self.settings.auth_cache_seconds)
            return self._auth_cache

    @property
    def usage_store(self) -> UsageStore:
        """Opened on first use: DuckDB lets one process hold the file, so commands that never
        touch usage (e.g. `qm tenant create` beside a running server) must not open it."""
        with self._lock:
            if self._usage_store is None:
                from quartermaster.usage.duckdb_store import DuckDBUsageStore

                self._usage_store = DuckDBUsageStore(self.settings.usage_store_path)
            return self._usage_store

    def close(self) -> None:
        with self._lock:
            if self._usage_store is not None:
                self._usage_store.close()
                self._usage_store = None
        self.engine.dispose()


def build_runtime(settings: Settings, *, migrate: bool = True) -> Runtime:
    server_key = load_server_key(settings)
    engine = create_db_engine(settings.resolved_database_url)
    if migrate:
        upgrade_database(engine)
    session_factory = make_session_factory(engine)
    return Runtime(
        settings=settings,
        engine=engine,
        session_factory=session_factory,
        event_log=EmbeddedEventLog(session_factory),
        server_key=server_key,
    )
