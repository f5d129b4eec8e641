"""guardrails: budgets, enforcements, action log, alerts, quotas, limit ranges, reservations,
rate limits, webhooks, deliveries and the delivery log

Revision ID: 0008
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import quartermaster.storage.base

revision: str = "0008"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = ("guardrails",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "guardrail_actions",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("scope_kind", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guardrail_actions")),
    )
    op.create_index(
        "ix_guardrail_actions_tenant_id_id", "guardrail_actions", ["tenant_id", "id"], unique=False
    )
    op.create_table(
        "guardrail_alerts",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=32), nullable=False),
        sa.Column("severity", sa.String(length=16), nullable=False),
        sa.Column("dedup_key", sa.String(length=300), nullable=False),
        sa.Column("title", sa.String(length=300), nullable=False),
        sa.Column("message", sa.Text(), nullable=False),
        sa.Column("details", sa.Text(), nullable=False),
        sa.Column(
            "created_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_guardrail_alerts_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guardrail_alerts")),
        sa.UniqueConstraint(
            "tenant_id", "dedup_key", name=op.f("uq_guardrail_alerts_tenant_id_dedup_key")
        ),
    )
    op.create_index(
        "ix_guardrail_alerts_tenant_id_created_at",
        "guardrail_alerts",
        ["tenant_id", "created_at"],
        unique=False,
    )
    op.create_table(
        "guardrail_budgets",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("scope_kind", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("period", sa.String(length=16), nullable=False),
        sa.Column("amount", quartermaster.storage.base.DecimalText(length=64), nullable=False),
        sa.Column("thresholds", sa.String(length=200), nullable=False),
        sa.Column("hard_percent", sa.Integer(), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column(
            "created_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_guardrail_budgets_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guardrail_budgets")),
        sa.UniqueConstraint("tenant_id", "name", name=op.f("uq_guardrail_budgets_tenant_id_name")),
    )
    op.create_index(
        op.f("ix_guardrail_budgets_tenant_id"), "guardrail_budgets", ["tenant_id"], unique=False
    )
    op.create_table(
        "guardrail_limit_ranges",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("scope_kind", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("resource", sa.String(length=16), nullable=False),
        sa.Column("default_request", sa.BigInteger(), nullable=True),
        sa.Column("max", sa.BigInteger(), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_guardrail_limit_ranges_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guardrail_limit_ranges")),
        sa.UniqueConstraint(
            "tenant_id",
            "scope_kind",
            "scope",
            "resource",
            name=op.f("uq_guardrail_limit_ranges_tenant_id_scope_kind_scope_resource"),
        ),
    )
    op.create_index(
        op.f("ix_guardrail_limit_ranges_tenant_id"),
        "guardrail_limit_ranges",
        ["tenant_id"],
        unique=False,
    )
    op.create_table(
        "guardrail_quotas",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("scope_kind", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("resource", sa.String(length=16), nullable=False),
        sa.Column("hard", sa.BigInteger(), nullable=False),
        sa.Column("used", sa.BigInteger(), nullable=False),
        sa.Column(
            "updated_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_guardrail_quotas_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guardrail_quotas")),
        sa.UniqueConstraint(
            "tenant_id",
            "scope_kind",
            "scope",
            "resource",
            name=op.f("uq_guardrail_quotas_tenant_id_scope_kind_scope_resource"),
        ),
    )
    op.create_index(
        op.f("ix_guardrail_quotas_tenant_id"), "guardrail_quotas", ["tenant_id"], unique=False
    )
    op.create_table(
        "guardrail_rate_limits",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("scope_kind", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("rate", quartermaster.storage.base.DecimalText(length=64), nullable=False),
        sa.Column("burst", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_guardrail_rate_limits_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guardrail_rate_limits")),
        sa.UniqueConstraint(
            "tenant_id",
            "scope_kind",
            "scope",
            name=op.f("uq_guardrail_rate_limits_tenant_id_scope_kind_scope"),
        ),
    )
    op.create_index(
        op.f("ix_guardrail_rate_limits_tenant_id"),
        "guardrail_rate_limits",
        ["tenant_id"],
        unique=False,
    )
    op.create_table(
        "guardrail_reservations",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("team", sa.String(length=64), nullable=True),
        sa.Column("app", sa.String(length=64), nullable=True),
        sa.Column("cpu", sa.BigInteger(), nullable=False),
        sa.Column("memory", sa.BigInteger(), nullable=False),
        sa.Column("gpu", sa.BigInteger(), nullable=False),
        sa.Column("concurrency", sa.BigInteger(), nullable=False),
        sa.Column("runtime_seconds", sa.BigInteger(), nullable=False),
        sa.Column("essential", sa.Boolean(), nullable=False),
        sa.Column("quota_ids", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column(
            "created_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "expires_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "released_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_guardrail_reservations_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guardrail_reservations")),
    )
    op.create_index(
        "ix_guardrail_reservations_status_expires_at",
        "guardrail_reservations",
        ["status", "expires_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_guardrail_reservations_tenant_id"),
        "guardrail_reservations",
        ["tenant_id"],
        unique=False,
    )
    op.create_table(
        "guardrail_webhooks",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("url", sa.String(length=2000), nullable=False),
        sa.Column("secret", sa.String(length=128), nullable=False),
        sa.Column("format", sa.String(length=16), nullable=False),
        sa.Column("min_severity", sa.String(length=16), nullable=False),
        sa.Column(
            "created_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_guardrail_webhooks_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guardrail_webhooks")),
    )
    op.create_index(
        op.f("ix_guardrail_webhooks_tenant_id"), "guardrail_webhooks", ["tenant_id"], unique=False
    )
    op.create_table(
        "guardrail_deliveries",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("webhook_id", sa.String(length=32), nullable=False),
        sa.Column("alert_id", sa.String(length=32), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("attempts", sa.Integer(), nullable=False),
        sa.Column(
            "next_attempt_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "finished_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["alert_id"],
            ["guardrail_alerts.id"],
            name=op.f("fk_guardrail_deliveries_alert_id_guardrail_alerts"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_guardrail_deliveries_tenant_id_tenants")
        ),
        sa.ForeignKeyConstraint(
            ["webhook_id"],
            ["guardrail_webhooks.id"],
            name=op.f("fk_guardrail_deliveries_webhook_id_guardrail_webhooks"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guardrail_deliveries")),
        sa.UniqueConstraint(
            "webhook_id", "alert_id", name=op.f("uq_guardrail_deliveries_webhook_id_alert_id")
        ),
    )
    op.create_index(
        "ix_guardrail_deliveries_status_next_attempt_at",
        "guardrail_deliveries",
        ["status", "next_attempt_at"],
        unique=False,
    )
    op.create_index(
        op.f("ix_guardrail_deliveries_tenant_id"),
        "guardrail_deliveries",
        ["tenant_id"],
        unique=False,
    )
    op.create_table(
        "guardrail_enforcements",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("budget_id", sa.String(length=32), nullable=False),
        sa.Column("scope_kind", sa.String(length=16), nullable=False),
        sa.Column("scope", sa.String(length=64), nullable=False),
        sa.Column("action", sa.String(length=16), nullable=False),
        sa.Column(
            "period_start", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("ends_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column(
            "created_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "lifted_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("lifted_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["budget_id"],
            ["guardrail_budgets.id"],
            name=op.f("fk_guardrail_enforcements_budget_id_guardrail_budgets"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_guardrail_enforcements_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guardrail_enforcements")),
        sa.UniqueConstraint(
            "budget_id",
            "period_start",
            name=op.f("uq_guardrail_enforcements_budget_id_period_start"),
        ),
    )
    op.create_index(
        op.f("ix_guardrail_enforcements_tenant_id"),
        "guardrail_enforcements",
        ["tenant_id"],
        unique=False,
    )
    op.create_table(
        "guardrail_delivery_attempts",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("delivery_id", sa.String(length=32), nullable=False),
        sa.Column("attempt", sa.Integer(), nullable=False),
        sa.Column("at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("status_code", sa.Integer(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=False),
        sa.ForeignKeyConstraint(
            ["delivery_id"],
            ["guardrail_deliveries.id"],
            name=op.f("fk_guardrail_delivery_attempts_delivery_id_guardrail_deliveries"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_guardrail_delivery_attempts")),
    )
    op.create_index(
        op.f("ix_guardrail_delivery_attempts_delivery_id"),
        "guardrail_delivery_attempts",
        ["delivery_id"],
        unique=False,
    )
    op.create_index(
        op.f("ix_guardrail_delivery_attempts_tenant_id"),
        "guardrail_delivery_attempts",
        ["tenant_id"],
        unique=False,
    )


def downgrade() -> None:
    op.drop_table("guardrail_delivery_attempts")
    op.drop_table("guardrail_enforcements")
    op.drop_table("guardrail_deliveries")
    op.drop_table("guardrail_webhooks")
    op.drop_table("guardrail_reservations")
    op.drop_table("guardrail_rate_limits")
    op.drop_table("guardrail_quotas")
    op.drop_table("guardrail_limit_ranges")
    op.drop_table("guardrail_budgets")
    op.drop_table("guardrail_alerts")
    op.drop_table("guardrail_actions")
