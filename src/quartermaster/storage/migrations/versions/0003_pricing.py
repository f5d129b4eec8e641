"""pricing: price book versions per tenant

Revision ID: 0003
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import quartermaster.storage.base

revision: str = "0003"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = ("pricing",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "price_book_versions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column(
            "effective_from", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("document", sa.Text(), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "recorded_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_price_book_versions_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_price_book_versions")),
        sa.UniqueConstraint(
            "tenant_id",
            "name",
            "version",
            name=op.f("uq_price_book_versions_tenant_id_name_version"),
        ),
    )
    op.create_index(
        "ix_price_book_versions_lookup",
        "price_book_versions",
        ["tenant_id", "name", "effective_from"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_index("ix_price_book_versions_lookup", table_name="price_book_versions")
    op.drop_table("price_book_versions")
