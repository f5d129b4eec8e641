"""Alembic environment: runs against the engine handed over in `config.attributes`."""

from __future__ import annotations

from alembic import context
from sqlalchemy import Engine, text

from quartermaster.storage.base import Base
from quartermaster.storage.models import import_all_models

import_all_models()
target_metadata = Base.metadata
# An arbitrary constant, one per application: the advisory lock migrations hold.
MIGRATION_LOCK = 0x716D5F6D6967


def run_migrations_online() -> None:
    engine: Engine = context.config.attributes["engine"]
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=target_metadata,
            render_as_batch=connection.dialect.name == "sqlite",
        )
        with context.begin_transaction():
            if connection.dialect.name == "postgresql":
                # Two servers (or `qm init`s) starting together on one database: the second
                # waits here until the first has committed, then finds nothing to do. Without
                # it both created the same tables and one failed (UniqueViolation on pg_type).
                connection.execute(
                    text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
                )
            context.run_migrations()
        connection.commit()


run_migrations_online()
