"""guardrails: default hard caps (ephemeral / non-production apps), per-tenant guardrail
settings, preview invoices after high-cost hours; enforcements may come from a cap

Revision ID: 0010
Revises: 0008
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import quartermaster.storage.base

revision: str = "0010"
down_revision: str | Sequence[str] | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UTC = quartermaster.storage.base.UTCDateTime
DECIMAL = quartermaster.storage.base.DecimalText


def upgrade() -> None:
    op.create_table(
        "guardrail_default_caps",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("applies_to", sa.String(length=16), nullable=False),
        sa.Column("amount", DECIMAL(), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("created_at", UTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_guardrail_default_caps_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guardrail_default_caps")),
        sa.UniqueConstraint(
            "tenant_id", "applies_to", name=op.f("uq_guardrail_default_caps_tenant_id_applies_to")
        ),
    )
    op.create_index(
        op.f("ix_guardrail_default_caps_tenant_id"), "guardrail_default_caps", ["tenant_id"]
    )
    op.create_table(
        "guardrail_settings",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("high_cost_hour_amount", DECIMAL(), nullable=True),
        sa.Column("updated_by", sa.String(length=200), nullable=False),
        sa.Column("updated_at", UTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_guardrail_settings_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_guardrail_settings")),
    )
    op.create_table(
        "guardrail_cost_previews",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("app", sa.String(length=64), nullable=False),
        sa.Column("team", sa.String(length=64), nullable=True),
        sa.Column("cost_center", sa.String(length=64), nullable=False),
        sa.Column("hour_start", UTC(timezone=True), nullable=False),
        sa.Column("hour_cost", DECIMAL(), nullable=False),
        sa.Column("threshold", DECIMAL(), nullable=False),
        sa.Column("currency", sa.String(length=8), nullable=False),
        sa.Column("body", sa.Text(), nullable=False),
        sa.Column("alert_id", sa.String(length=32), nullable=True),
        sa.Column("created_at", UTC(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_guardrail_cost_previews_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guardrail_cost_previews")),
        sa.UniqueConstraint(
            "tenant_id",
            "app",
            "hour_start",
            name=op.f("uq_guardrail_cost_previews_tenant_id_app_hour_start"),
        ),
    )
    op.create_index(
        "ix_guardrail_cost_previews_tenant_id_created_at",
        "guardrail_cost_previews",
        ["tenant_id", "created_at"],
    )
    with op.batch_alter_table("guardrail_enforcements") as batch:
        batch.alter_column("budget_id", existing_type=sa.String(length=32), nullable=True)
        batch.add_column(sa.Column("cap_id", sa.String(length=32), nullable=True))
        batch.create_foreign_key(
            op.f("fk_guardrail_enforcements_cap_id_guardrail_default_caps"),
            "guardrail_default_caps",
            ["cap_id"],
            ["id"],
            ondelete="CASCADE",
        )
        batch.create_unique_constraint(
            op.f("uq_guardrail_enforcements_cap_id_scope_period_start"),
            ["cap_id", "scope", "period_start"],
        )


def downgrade() -> None:
    with op.batch_alter_table("guardrail_enforcements") as batch:
        batch.drop_constraint(
            op.f("uq_guardrail_enforcements_cap_id_scope_period_start"), type_="unique"
        )
        batch.drop_constraint(
            op.f("fk_guardrail_enforcements_cap_id_guardrail_default_caps"), type_="foreignkey"
        )
        batch.drop_column("cap_id")
    op.execute("DELETE FROM guardrail_enforcements WHERE budget_id IS NULL")
    with op.batch_alter_table("guardrail_enforcements") as batch:
        batch.alter_column("budget_id", existing_type=sa.String(length=32), nullable=False)
    op.drop_index("ix_guardrail_cost_previews_tenant_id_created_at", "guardrail_cost_previews")
    op.drop_table("guardrail_cost_previews")
    op.drop_table("guardrail_settings")
    op.drop_index(op.f("ix_guardrail_default_caps_tenant_id"), "guardrail_default_caps")
    op.drop_table("guardrail_default_caps")
