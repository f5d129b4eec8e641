"""guardrails: an enforcement records the hard limit it enforced

Adds `guardrail_enforcements.hard_limit`: the spend at which a budget's or a default cap's
throttle or halt started (a budget's amount times `hard_percent`, a cap's amount). A budget
or a capped app had one enforcement per period, so a lift lasted the rest of the period even
when the budget or cap was changed afterwards; now, once lifted, it is enforced again when
the spend reaches a hard limit other than the lifted one's. The unique keys become (budget,
period, hard limit) and (cap, app, period, hard limit). Rows made before keep NULL there:
a lift of theirs still lasts the period.

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
# (unique key before, after): the owner's columns, then the period's start
_OWNERS = (("budget_id",), ("cap_id", "scope"))


def _name(columns: Sequence[str]) -> str:
    return f"uq_{_TABLE}_{'_'.join(columns)}"


def upgrade() -> None:
    with op.batch_alter_table(_TABLE) as batch:
        batch.add_column(sa.Column("hard_limit", sa.String(80), nullable=True))
        for owner in _OWNERS:
            before = [*owner, "period_start"]
            batch.drop_constraint(_name(before), type_="unique")
            batch.create_unique_constraint(_name([*before, "hard_limit"]), [*before, "hard_limit"])


def downgrade() -> None:
    # An owner enforced again after a lift has two rows for its period: the later ones go.
    for owner in _OWNERS:
        same = " AND ".join(f"older.{c} = {_TABLE}.{c}" for c in (*owner, "period_start"))
        op.execute(
            f"DELETE FROM {_TABLE} WHERE {owner[0]} IS NOT NULL AND EXISTS (SELECT 1 FROM"
            f" {_TABLE} AS older WHERE {same} AND older.created_at < {_TABLE}.created_at)"
        )
    with op.batch_alter_table(_TABLE) as batch:
        for owner in _OWNERS:
            before = [*owner, "period_start"]
            batch.drop_constraint(_name([*before, "hard_limit"]), type_="unique")
            batch.create_unique_constraint(_name(before), before)
        batch.drop_column("hard_limit")
