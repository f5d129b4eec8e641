"""guardrails: an enforcement outlives its budget or default cap (history, not CASCADE)

Deleting a budget or a default cap deleted its throttles and halts with it (ON DELETE
CASCADE): an enforcement in force vanished from `GET /v1/enforcements` with no trace of who
ended it. The service now ends them (lifted, with who deleted what) and writes an action-log
entry; the foreign keys become ON DELETE SET NULL so the rows stay as history.

Revision ID: 0023g
Revises: 0020g
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0023g"
down_revision: str | Sequence[str] | None = "0020g"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "guardrail_enforcements"
_BUDGET_FK = "fk_guardrail_enforcements_budget_id_guardrail_budgets"
_CAP_FK = "fk_guardrail_enforcements_cap_id_guardrail_default_caps"


def _foreign_keys(ondelete: str) -> None:
    with op.batch_alter_table(_TABLE) as batch:
        batch.drop_constraint(_BUDGET_FK, type_="foreignkey")
        batch.drop_constraint(_CAP_FK, type_="foreignkey")
        batch.create_foreign_key(
            _BUDGET_FK, "guardrail_budgets", ["budget_id"], ["id"], ondelete=ondelete
        )
        batch.create_foreign_key(
            _CAP_FK, "guardrail_default_caps", ["cap_id"], ["id"], ondelete=ondelete
        )


def upgrade() -> None:
    _foreign_keys("SET NULL")


def downgrade() -> None:
    # The rows of deleted budgets and caps (neither id left) went with them before.
    op.execute(f"DELETE FROM {_TABLE} WHERE budget_id IS NULL AND cap_id IS NULL")
    _foreign_keys("CASCADE")
