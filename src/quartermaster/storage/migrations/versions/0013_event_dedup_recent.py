"""foundation: on SQLite, a smaller dedup-key table between the memory and `event_dedup`

A merge of the memory's 100,000 keys into `event_dedup` touches most of that table's pages,
so its cost grew with the log: ~0.35 s at a million events, ~0.5 s at two, 3 s at six.
Merges now go into `event_dedup_recent`, kept around a million keys, whose keys move into
`event_dedup` when it fills, one key range per appending transaction (bus/sqlite_dedup.py).
`event_dedup_mark.recent_keys` counts the recent table's keys, and `flush_next` is the start
of the next key range to move while a move is under way. Unused on PostgreSQL, like 0012's
tables.

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
        # everything merged so far is in event_dedup: no recent keys, no move under way
        batch_op.add_column(
            sa.Column("recent_keys", sa.BigInteger(), nullable=False, server_default="0")
        )
        batch_op.add_column(sa.Column("flush_next", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    op.execute(
        "INSERT INTO event_dedup (dedup_key, position)"
        " SELECT dedup_key, position FROM event_dedup_recent ORDER BY dedup_key, position"
    )
    with op.batch_alter_table("event_dedup_mark", schema=None) as batch_op:
        batch_op.drop_column("flush_next")
        batch_op.drop_column("recent_keys")
    op.drop_table("event_dedup_recent")
