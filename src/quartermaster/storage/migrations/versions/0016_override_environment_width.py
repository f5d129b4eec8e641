"""usage: environment overrides for environment names of up to 64 characters

An override's environment held 32 characters while an event's `data.environment` may have 64,
so events of a longer environment could never be sent to a cost center. SQLite does not
enforce a VARCHAR's length, so only PostgreSQL's column changes.

Revision ID: 0016
Revises: 0004
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | Sequence[str] | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "environment_overrides",
            "environment",
            type_=sa.String(length=64),
            existing_type=sa.String(length=32),
            existing_nullable=False,
        )


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        op.alter_column(
            "environment_overrides",
            "environment",
            type_=sa.String(length=32),
            existing_type=sa.String(length=64),
            existing_nullable=False,
        )
