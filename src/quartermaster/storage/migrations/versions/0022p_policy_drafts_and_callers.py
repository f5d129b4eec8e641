"""policy: draft versions, and who caused each logged decision

Adds `policies.draft` (an upload stored disabled waits beside the versions in force instead
of switching them off; existing rows are no drafts, so an older disabled upload keeps its
meaning: the policy is off), and to `policy_decisions` the caller (`caller_id`,
`caller_name`) and an allowed admission decision's id (`decision_id`). Decisions logged
before keep NULL there.

Revision ID: 0022p
Revises: 0007
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0022p"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "policies",
        sa.Column("draft", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("policy_decisions", sa.Column("caller_id", sa.String(32), nullable=True))
    op.add_column("policy_decisions", sa.Column("caller_name", sa.String(200), nullable=True))
    op.add_column("policy_decisions", sa.Column("decision_id", sa.String(32), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("policy_decisions") as batch:
        batch.drop_column("decision_id")
        batch.drop_column("caller_name")
        batch.drop_column("caller_id")
    with op.batch_alter_table("policies") as batch:
        batch.drop_column("draft")
