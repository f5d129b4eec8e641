"""pricing: each tenant's default price book

Billing runs, previews and guardrails used "the tenant's only price book" and stopped for a
tenant with a second one. The default is now recorded: each tenant that has price books gets
its earliest-loaded book (smallest recorded_at, then the first stored) as its default, chosen
when and by whom that book's first version was recorded, as a first load does from now on.

Revision ID: 0014
Revises: 0003
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import quartermaster.storage.base

revision: str = "0014"
down_revision: str | Sequence[str] | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    defaults = op.create_table(
        "price_book_defaults",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column(
            "chosen_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("chosen_by", sa.String(length=200), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_price_book_defaults_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_price_book_defaults")),
    )
    versions = sa.table(
        "price_book_versions",
        sa.column("id", sa.Integer()),
        sa.column("tenant_id", sa.String()),
        sa.column("name", sa.String()),
        sa.column("recorded_at", quartermaster.storage.base.UTCDateTime(timezone=True)),
        sa.column("created_by", sa.String()),
    )
    rows = op.get_bind().execute(
        sa.select(
            versions.c.tenant_id, versions.c.name, versions.c.recorded_at, versions.c.created_by
        ).order_by(versions.c.tenant_id, versions.c.recorded_at, versions.c.id)
    )
    first: dict[str, dict[str, object]] = {}
    for tenant_id, name, recorded_at, created_by in rows:
        first.setdefault(
            tenant_id,
            {
                "tenant_id": tenant_id,
                "name": name,
                "chosen_at": recorded_at,
                "chosen_by": created_by,
            },
        )
    if first:
        op.bulk_insert(defaults, list(first.values()))


def downgrade() -> None:
    op.drop_table("price_book_defaults")
