"""catalog: environment names as long as an event's (64 characters)

An event's `data.environment` is a slug of up to 64 characters, but an app's and a resource
binding's environment held 32, so an environment named in events could not be given to the
app or resource that sends them. SQLite does not enforce a VARCHAR's length, so only
PostgreSQL's columns change.

Revision ID: 0015
Revises: 0007c
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | Sequence[str] | None = "0007c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = (("apps", False), ("resources", True))


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, nullable in _COLUMNS:
        op.alter_column(
            table,
            "environment",
            type_=sa.String(length=64),
            existing_type=sa.String(length=32),
            existing_nullable=nullable,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, nullable in _COLUMNS:
        op.alter_column(
            table,
            "environment",
            type_=sa.String(length=32),
            existing_type=sa.String(length=64),
            existing_nullable=nullable,
        )
