"""foundation: on SQLite, the event log's dedup keys in a table merged in bulk, not an index

An index on event_log.dedup_key (random 8-byte hashes) made every SQLite commit write about
one WAL page per appended event once the index outgrew a few thousand pages: appending 1,000
events cost ~24 ms at 250,000 logged events and ~42 ms at a million, against ~12 for the rows
alone. The keys now go to `event_dedup` (key order, WITHOUT ROWID) in bulk merges, and each
appending process holds the keys logged since the last merge in memory (bus/sqlite_dedup.py).
PostgreSQL keeps its index (its WAL logs a page in full once per checkpoint, not per commit);
the two new tables are unused there (`event_dedup` empty, the mark at 0).

Revision ID: 0012
Revises: 0011
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0012"
down_revision: str | Sequence[str] | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "event_dedup",
        sa.Column("dedup_key", sa.BigInteger(), nullable=False),
        sa.Column("position", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("dedup_key", "position", name=op.f("pk_event_dedup")),
        sqlite_with_rowid=False,
    )
    op.create_table(
        "event_dedup_mark",
        sa.Column("id", sa.BigInteger().with_variant(sa.Integer(), "sqlite"), nullable=False),
        sa.Column("merged_upto", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_dedup_mark")),
    )
    connection = op.get_bind()
    if connection.dialect.name != "sqlite":
        op.execute("INSERT INTO event_dedup_mark (id, merged_upto) VALUES (1, 0)")
        return
    op.execute(
        "INSERT INTO event_dedup (dedup_key, position)"
        " SELECT dedup_key, position FROM event_log ORDER BY dedup_key, position"
    )
    op.execute(
        "INSERT INTO event_dedup_mark (id, merged_upto)"
        " SELECT 1, coalesce(max(position), 0) FROM event_log"
    )
    with op.batch_alter_table("event_log", schema=None) as batch_op:
        batch_op.drop_index("ix_event_log_dedup_key")


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        with op.batch_alter_table("event_log", schema=None) as batch_op:
            batch_op.create_index("ix_event_log_dedup_key", ["dedup_key"], unique=False)
    op.drop_table("event_dedup_mark")
    op.drop_table("event_dedup")
