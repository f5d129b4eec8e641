"""usage: replay requests, which every server sharing the database applies

`qm pipeline replay` rebuilt the usage store of the server it reached only: with several
servers on one database, their stores (and the bills and previews computed from them)
differed after a back-dated change. A request is now recorded here, and each server's
pipeline replays the requests its store has not applied yet.

Revision ID: 0029u
Revises: 0016
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0029u"
down_revision: str | Sequence[str] | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "usage_replay_requests",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            primary_key=True,
            autoincrement=True,
        ),
        sa.Column("tenant_id", sa.String(length=64), nullable=True),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column("requested_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("usage_replay_requests")
