"""Apply Alembic migrations. Each feature owns a branch rooted at the foundation revision."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.migration import MigrationContext
from sqlalchemy import Engine

MIGRATIONS_DIR = Path(__file__).parent / "migrations"


def alembic_config(engine: Engine) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["engine"] = engine
    return config


def upgrade_database(engine: Engine) -> None:
    # "heads": every feature branch, so features can add tables independently.
    command.upgrade(alembic_config(engine), "heads")


def applied_revisions(engine: Engine) -> frozenset[str]:
    """The revisions the database is at (empty before the first migration)."""
    with engine.connect() as connection:
        return frozenset(MigrationContext.configure(connection).get_current_heads())
