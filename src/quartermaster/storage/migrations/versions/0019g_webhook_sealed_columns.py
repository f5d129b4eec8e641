"""guardrails: webhook URLs and signing secrets sealed with the server key

Adds `sealed_url` and `sealed_secret` (AES-256-GCM with a key derived from the server key,
as app signing keys are) and makes the plaintext `url` and `secret` nullable. A migration
cannot read the server key: the server seals the existing plaintext rows at start (the
webhook notifier's first pass, guardrails.webhooks.seal_plaintext_webhooks) and empties
their plaintext columns ("", as SQLite keeps them NOT NULL). The plaintext columns are
dropped in a later release.

Revision ID: 0019g
Revises: 0010
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019g"
down_revision: str | Sequence[str] | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "guardrail_webhooks"


def upgrade() -> None:
    op.add_column(_TABLE, sa.Column("sealed_url", sa.LargeBinary(), nullable=True))
    op.add_column(_TABLE, sa.Column("sealed_secret", sa.LargeBinary(), nullable=True))
    if op.get_bind().dialect.name == "sqlite":
        # SQLite cannot drop NOT NULL in place, and rebuilding the table would cascade-delete
        # its deliveries: the server clears plaintext to "" there (and on PostgreSQL too).
        return
    op.alter_column(_TABLE, "url", existing_type=sa.String(length=2000), nullable=True)
    op.alter_column(_TABLE, "secret", existing_type=sa.String(length=128), nullable=True)


def downgrade() -> None:
    # Rows sealed since cannot be read back without the server key: they keep "" as url
    # and secret, and must be re-created after a downgrade.
    op.drop_column(_TABLE, "sealed_secret")
    op.drop_column(_TABLE, "sealed_url")
