"""foundation: on SQLite, a smaller dedup-key table between the memory and `event_dedup`

A merge of the memory's 100,000 keys into `event_dedup` touches most of that table's pages,
so its cost grew with the log: ~0.35 s at a million events, ~0.5 s at two, and it would have
been seconds per 100,000 events past ten million. Merges now go into `event_dedup_recent`,
kept under a million keys, which is moved into `event_dedup` in one pass when it fills
(bus/sqlite_dedup.py). `event_dedup_mark.flushed_upto` is the last position whose key is in
`event_dedup`; the recent table holds those after it up to `merged_upto`. Unused on
PostgreSQL, like 0012's tables.

Revision ID: 0013
Revises: 0012
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | Sequence[str] | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "event_dedup_recent",
        sa.Column("dedup_key", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("dedup_key", "position", name=op.f("pk_event_dedup_recent")),
        sqlite_with_rowid=False,
    )
    with op.batch_alter_table("event_dedup_mark", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("flushed_upto", sa.BigInteger(), nullable=False, server_default="0")
        )
    # everything merged so far is in event_dedup
    op.execute("UPDATE event_dedup_mark SET flushed_upto = merged_upto")


def downgrade() -> None:
    op.execute(
        "INSERT INTO event_dedup (dedup_key, position)"
        " SELECT dedup_key, position FROM event_dedup_recent ORDER BY dedup_key, position"
    )
    with op.batch_alter_table("event_dedup_mark", schema=None) as batch_op:
        batch_op.drop_column("flushed_upto")
    op.drop_table("event_dedup_recent")
