"""guardrails: a budget's and a default cap's own currency

Adds `amount_currency` to `guardrail_budgets` and `guardrail_default_caps`: the currency the amount
is in, taken from the default price book when the budget or cap is made. Spend priced in
another currency (the default switched to a book in another currency) is not compared with
it. Rows made before keep NULL there: their amount is read in whatever currency the default
price book has, as before.

Revision ID: 0026g
Revises: 0023g
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0026g"
down_revision: str | Sequence[str] | None = "0023g"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("guardrail_budgets", "guardrail_default_caps")


def upgrade() -> None:
    for table in TABLES:
        op.add_column(table, sa.Column("amount_currency", sa.String(3), nullable=True))


def downgrade() -> None:
    for table in TABLES:
        with op.batch_alter_table(table) as batch:
            batch.drop_column("amount_currency")
