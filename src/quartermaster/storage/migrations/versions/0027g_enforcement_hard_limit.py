"""guardrails: a budget's enforcement records the hard limit it enforced

Adds `guardrail_enforcements.hard_limit`: the spend at which a budget's throttle or halt
started (its amount times `hard_percent`). A budget had one enforcement per period, so a lift
lasted the rest of the period even when the budget was changed afterwards; now a budget whose
enforcement was lifted is enforced again once its spend reaches a hard limit other than the
lifted one's. The unique key becomes (budget, period, hard limit). Rows made before keep NULL
there (as do default caps' rows): a lift of theirs still lasts the period.

Revision ID: 0027g
Revises: 0026g
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0027g"
down_revision: str | Sequence[str] | None = "0026g"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "guardrail_enforcements"
_OLD_UNIQUE = "uq_guardrail_enforcements_budget_id_period_start"
_NEW_UNIQUE = "uq_guardrail_enforcements_budget_id_period_start_hard_limit"


def upgrade() -> None:
    with op.batch_alter_table(_TABLE) as batch:
        batch.add_column(sa.Column("hard_limit", sa.String(80), nullable=True))
        batch.drop_constraint(_OLD_UNIQUE, type_="unique")
        batch.create_unique_constraint(_NEW_UNIQUE, ["budget_id", "period_start", "hard_limit"])


def downgrade() -> None:
    # A budget enforced again after a lift has two rows for its period: the later ones go.
    op.execute(
        f"DELETE FROM {_TABLE} WHERE budget_id IS NOT NULL AND EXISTS (SELECT 1 FROM {_TABLE}"
        f" AS older WHERE older.budget_id = {_TABLE}.budget_id"
        f" AND older.period_start = {_TABLE}.period_start"
        f" AND older.created_at < {_TABLE}.created_at)"
    )
    with op.batch_alter_table(_TABLE) as batch:
        batch.drop_constraint(_NEW_UNIQUE, type_="unique")
        batch.create_unique_constraint(_OLD_UNIQUE, ["budget_id", "period_start"])
        batch.drop_column("hard_limit")
