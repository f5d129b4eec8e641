"""Control-plane storage: engine, sessions, migrations (SQLite embedded, PostgreSQL at scale)."""

from quartermaster.storage.base import Base
from quartermaster.storage.engine import (
    create_db_engine,
    make_read_session_factory,
    make_session_factory,
)
from quartermaster.storage.migrate import upgrade_database

__all__ = [
    "Base",
    "create_db_engine",
    "make_read_session_factory",
    "make_session_factory",
    "upgrade_database",
]
