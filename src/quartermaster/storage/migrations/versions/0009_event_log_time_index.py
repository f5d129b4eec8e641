"""foundation: drop the event log's (tenant_id, event_time) index

No query reads the event log by event time (consumers read by position, dedup looks up the
unique (tenant_id, source, event_id) key), and the index cost about a third of SQLite's
insert work per appended event.

Revision ID: 0009
Revises: 0001
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("event_log", schema=None) as batch_op:
        batch_op.drop_index("ix_event_log_tenant_time")


def downgrade() -> None:
    with op.batch_alter_table("event_log", schema=None) as batch_op:
        batch_op.create_index("ix_event_log_tenant_time", ["tenant_id", "event_time"], unique=False)
