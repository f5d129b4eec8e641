"""secrets: the API key behind each lease

Adds `secret_leases.key_id`: the API key the lease was obtained with, or the key that minted
the workload identity token it was obtained with. Revoking or expiring that key ends the
lease (the reaper). Leases issued before keep NULL there and are bound to no key, as before.

Revision ID: 0025s
Revises: 0005
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025s"
down_revision: str | Sequence[str] | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column("secret_leases", sa.Column("key_id", sa.String(32), nullable=True))
    op.create_index("ix_secret_leases_key", "secret_leases", ["key_id", "state"])


def downgrade() -> None:
    op.drop_index("ix_secret_leases_key", table_name="secret_leases")
    with op.batch_alter_table("secret_leases") as batch:
        batch.drop_column("key_id")
