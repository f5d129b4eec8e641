"""policy: who revoked an exception

Adds `policy_exceptions.revoked_by` (the principal's name, as `granted_by`): a revocation
recorded only its time. Exceptions revoked before keep NULL there.

Revision ID: 0024p
Revises: 0022p
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0024p"
down_revision: str | Sequence[str] | None = "0022p"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("policy_exceptions", sa.Column("revoked_by", sa.String(200), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("policy_exceptions") as batch:
        batch.drop_column("revoked_by")
