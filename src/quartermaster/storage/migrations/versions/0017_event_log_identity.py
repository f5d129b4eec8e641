"""event log: an id for this database's log, which usage stores record

A usage store (DuckDB, in the data dir) skips log positions it has already rated. Kept while
QM_DATABASE_URL moved to a new database, it skipped the new log's first events as rated and
reported the pipeline balanced. The store now records the id of the log it rates and the
pipeline refuses a store of another log.

Revision ID: 0017
Revises: 0013
"""

import uuid
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import quartermaster.storage.base

revision: str = "0017"
down_revision: str | Sequence[str] | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    identity = op.create_table(
        "event_log_identity",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column(
            "created_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_event_log_identity")),
    )
    op.bulk_insert(identity, [{"id": uuid.uuid4().hex, "created_at": datetime.now(UTC)}])


def downgrade() -> None:
    op.drop_table("event_log_identity")
