"""Engines and sessions; callers create them explicitly (nothing at import time)."""

from __future__ import annotations

from typing import Any

from sqlalchemy import ColumnElement, Engine, create_engine, event, func, make_url
from sqlalchemy.orm import Session, sessionmaker

from quartermaster.config import ConfigurationError


def create_db_engine(url: str, **kwargs: Any) -> Engine:
    try:
        make_url(url)
    except ValueError as exc:  # e.g. a port that is not a number; never echo the URL
        raise ConfigurationError(f"QM_DATABASE_URL is not a usable database URL: {exc}") from None
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False}, **kwargs)
        _configure_sqlite(engine)
        return engine
    kwargs.setdefault("pool_size", 10)
    kwargs.setdefault("max_overflow", 20)
    kwargs.setdefault("pool_pre_ping", True)
    engine = create_engine(url, **kwargs)
    _configure_postgresql(engine)
    return engine


def _configure_postgresql(engine: Engine) -> None:
    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # The database refuses any write of a read-only session's transaction, as SQLite's
        # query_only does: a read route that wrote would be found by the tests.
        if connection.get_execution_options().get(READ_ONLY_OPTION):
            connection.exec_driver_sql("SET TRANSACTION READ ONLY")


# A SQL function on SQLite connections: lower() as PostgreSQL's, for every letter.
UNICODE_LOWER = "qm_lower"


def _unicode_lower(value: object) -> object:
    return value.lower() if isinstance(value, str) else value


def unicode_lower(expression: Any, *, dialect: str) -> ColumnElement[str]:
    """`lower(expression)` folding every letter on each database (SQLite's own lower() folds
    ASCII only)."""
    if dialect == "sqlite":
        return getattr(func, UNICODE_LOWER)(expression)  # type: ignore[no-any-return]
    return func.lower(expression)


def _configure_sqlite(engine: Engine) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy's "begin" event issue BEGIN itself (pysqlite's own is deferred).
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        # FULL: a committed (acknowledged) batch survives power loss, not just a crash.
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        # A 32 MB page cache and a checkpoint every ~40 MB of WAL: the event log's dedup
        # lookups touch pages all over (random hashes); re-reading them and copying each
        # batch's pages back into the database file cost more than the inserts.
        cursor.execute("PRAGMA cache_size=-32768")
        cursor.execute("PRAGMA wal_autocheckpoint=10000")
        cursor.close()
        # SQLite's lower() folds ASCII letters only, PostgreSQL's every letter: a search
        # for `éclair` found `Éclair` on PostgreSQL alone (`unicode_lower`).
        dbapi_connection.create_function(UNICODE_LOWER, 1, _unicode_lower, deterministic=True)

    @event.listens_for(engine, "begin")
    def _on_begin(connection: Any) -> None:
        # IMMEDIATE takes the write lock up front, so a read-then-write transaction never
        # fails half-way with SQLITE_BUSY. A read-only session's transaction is deferred: it
        # takes no lock, so it neither waits for a writer (up to busy_timeout) nor holds one
        # back; in WAL mode it reads the last committed snapshot.
        # query_only makes SQLite refuse any write statement of a read-only transaction (the
        # ORM's are refused earlier, at flush): such a write would have to upgrade the lock
        # mid-transaction and could fail with SQLITE_BUSY under load.
        # The pragma is set on the pooled connection only when its mode changes, so that a
        # writer (an ingest batch) whose connection last wrote runs no statement for it.
        read_only = bool(connection.get_execution_options().get(READ_ONLY_OPTION))
        info = connection.connection.info
        if info.get(_QUERY_ONLY, False) != read_only:
            connection.exec_driver_sql(f"PRAGMA query_only={int(read_only)}")
            info[_QUERY_ONLY] = read_only
        connection.exec_driver_sql("BEGIN DEFERRED" if read_only else "BEGIN IMMEDIATE")


READ_ONLY_OPTION = "qm_read_only"
_QUERY_ONLY = "qm_query_only"  # the pooled SQLite connection's query_only pragma, as last set


class ReadOnlySessionError(RuntimeError):
    """A read-only session was asked to write."""


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    return sessionmaker(bind=engine, expire_on_commit=False)


def _refuse_flush(session: Session, _context: Any, _instances: Any) -> None:
    if session.new or session.dirty or session.deleted:
        raise ReadOnlySessionError("this session is read-only (it began a deferred transaction)")


def make_read_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions for requests that only read (lists, search, authentication): on SQLite their
    transactions are deferred instead of IMMEDIATE, so they neither wait for a writer nor
    hold one back. ORM writes are refused at flush, any other write by the database (SQLite's
    query_only, PostgreSQL's read-only transaction)."""
    factory = sessionmaker(
        bind=engine.execution_options(**{READ_ONLY_OPTION: True}), expire_on_commit=False
    )
    event.listen(factory, "before_flush", _refuse_flush)
    return factory
