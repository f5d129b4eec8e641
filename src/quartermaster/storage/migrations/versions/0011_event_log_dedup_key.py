"""foundation: the event log's dedup lookup through an 8-byte hash instead of a unique index

The unique (tenant_id, source, event_id) index cost SQLite about twice the CPU and three times
the WAL writes of each appended event (random inserts of ~60-byte keys). The appender, the
log's only writer, now looks each batch's keys up through an index on `dedup_key` (a hash of
the key, compared in full on a hit) and inserts the new ones under the log's write lock.

Existing rows get their dedup_key here, computed as the application computes it.

Revision ID: 0011
Revises: 0009
"""

from collections.abc import Sequence
from hashlib import blake2b

import sqlalchemy as sa
from alembic import op

revision: str = "0011"
down_revision: str | Sequence[str] | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_BACKFILL_CHUNK = 10_000


def _dedup_key(tenant_id: str, source: str, event_id: str) -> int:
    # Frozen copy of quartermaster.bus.embedded.dedup_key (a test checks they agree).
    digest = blake2b(f"{tenant_id}\x00{source}\x00{event_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


def upgrade() -> None:
    with op.batch_alter_table("event_log", schema=None) as batch_op:
        batch_op.add_column(sa.Column("dedup_key", sa.BigInteger(), nullable=True))
    connection = op.get_bind()
    after = 0
    while True:
        rows = connection.execute(
            sa.text(
                "SELECT position, tenant_id, source, event_id FROM event_log"
                " WHERE position > :after ORDER BY position LIMIT :n"
            ),
            {"after": after, "n": _BACKFILL_CHUNK},
        ).all()
        if not rows:
            break
        connection.execute(
            sa.text("UPDATE event_log SET dedup_key = :k WHERE position = :p"),
            [{"k": _dedup_key(t, s, e), "p": p} for p, t, s, e in rows],
        )
        after = rows[-1][0]
    with op.batch_alter_table("event_log", schema=None) as batch_op:
        batch_op.alter_column("dedup_key", existing_type=sa.BigInteger(), nullable=False)
        batch_op.drop_constraint("uq_event_log_tenant_id_source_event_id", type_="unique")
        batch_op.create_index("ix_event_log_dedup_key", ["dedup_key"], unique=False)


def downgrade() -> None:
    with op.batch_alter_table("event_log", schema=None) as batch_op:
        batch_op.drop_index("ix_event_log_dedup_key")
        batch_op.create_unique_constraint(
            "uq_event_log_tenant_id_source_event_id", ["tenant_id", "source", "event_id"]
        )
        batch_op.drop_column("dedup_key")
