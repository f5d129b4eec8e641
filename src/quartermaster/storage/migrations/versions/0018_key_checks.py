"""key checks: the keys a database's sealed data belongs to, claimed by its first server

Every server of one database needs the same server key, root keys and identity key. A data
dir was checked only against what the database had already sealed, so on a new database a
second server with fresh keys started and the first secret or signing key one of them wrote
answered 500 on the other. The first server now records a check value per kind of key.

Revision ID: 0018
Revises: 0017
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import quartermaster.storage.base

revision: str = "0018"
down_revision: str | Sequence[str] | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "key_checks",
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("key_id", sa.String(length=64), nullable=True),
        sa.Column("check_value", sa.String(length=64), nullable=False),
        sa.Column(
            "updated_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("kind", name=op.f("pk_key_checks")),
    )


def downgrade() -> None:
    op.drop_table("key_checks")
