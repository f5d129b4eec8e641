"""The running system's parts, built once from settings and handed around explicitly."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, TypeVar

from sqlalchemy import Engine, event
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

logger = logging.getLogger("quartermaster.runtime")

T = TypeVar("T")


class RuntimeClosedError(RuntimeError):
    """A closed runtime was used (its database, usage store or services)."""


CLOSED_MESSAGE = (
    "this Quartermaster runtime is closed (Runtime.close() was called): it opens no new "
    "database connection, usage store or service; build a new one with build_runtime()"
)


@dataclass
class Runtime:
    """Closed once with `close()`: afterwards every use of its database (sessions, the event
    log, the engine), its usage store and its services raises RuntimeClosedError instead of
    quietly opening new connections."""

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
    _closed: bool = field(default=False, repr=False)

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        """Called with the lock held."""
        if self._closed:
            raise RuntimeClosedError(CLOSED_MESSAGE)

    @property
    def read_session_factory(self) -> sessionmaker[Session]:
        """Sessions that only read: no write lock on SQLite (storage.engine)."""
        with self._lock:
            self._check_open()
            if self._read_sessions is None:
                self._read_sessions = make_read_session_factory(self.engine)
            return self._read_sessions

    @property
    def auth_cache(self) -> AuthCache:
        """Verified API keys of this process (tenancy/auth_cache.py)."""
        with self._lock:
            self._check_open()
            if self._auth_cache is None:
                from quartermaster.tenancy.auth_cache import AuthCache

                self._auth_cache = AuthCache(self.settings.auth_cache_seconds)
            return self._auth_cache

    @property
    def usage_store(self) -> UsageStore:
        """Opened on first use: DuckDB lets one process hold the file, so commands that never
        touch usage (e.g. `qm tenant create` beside a running server) must not open it."""
        with self._lock:
            self._check_open()
            if self._usage_store is None:
                from quartermaster.usage.duckdb_store import DuckDBUsageStore

                self._usage_store = DuckDBUsageStore(self.settings.usage_store_path)
            return self._usage_store

    def service(self, name: str, kind: type[T], make: Callable[[], T]) -> T:
        """The long-lived part attached under `name` (one per runtime), made by `make` on first
        use; `close()` closes it (its `close()`, if it has one)."""
        with self._lock:
            self._check_open()
            found = self.services.get(name)
            if found is None:
                found = make()
                self.services[name] = found
        if not isinstance(found, kind):
            raise TypeError(f"runtime service {name!r} is a {type(found).__name__}, not {kind}")
        return found

    def close(self) -> None:
        """Close the services, the usage store and the database connections; idempotent.
        Background services are stopped first by whoever started them (create_app's
        lifespan); one still running finds every use refused."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            services = list(self.services.values())
            self.services.clear()
            store, self._usage_store = self._usage_store, None
        for service in services:
            closer = getattr(service, "close", None)
            if callable(closer):
                try:
                    closer()
                except Exception:  # the others, the store and the database still close
                    logger.exception("closing the runtime service %r failed", service)
        if store is not None:
            store.close()
        # Refused before the pool is emptied: a dispose()d engine would otherwise open a new
        # connection on its next use (a leaked, never closed one).
        event.listen(self.engine, "do_connect", _refuse_connect)
        self.engine.dispose()


def _refuse_connect(*_args: Any) -> None:
    raise RuntimeClosedError(CLOSED_MESSAGE)


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
