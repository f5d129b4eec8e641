"""catalog_publish: app versions, search documents and full-text index, policies, decision log,
approvals, exceptions

Revision ID: 0007
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import quartermaster.storage.base

revision: str = "0007"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = ("catalog_publish",)
depends_on: str | Sequence[str] | None = None

# SQLite: an external-content-free FTS5 table whose rowid is app_search_docs.id; prefix
# indexes make "recomm*" cheap. PostgreSQL: a weighted tsvector column with a GIN index.
SQLITE_FTS = (
    "CREATE VIRTUAL TABLE app_search_fts USING fts5("
    "title, descriptions, tags, tokenize='porter unicode61 remove_diacritics 2', prefix='2 3 4')"
)


def upgrade() -> None:
    op.create_table(
        "policies",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("package", sa.String(length=200), nullable=False),
        sa.Column("source", sa.Text(), nullable=False),
        sa.Column("source_digest", sa.String(length=64), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("enabled", sa.Boolean(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column(
            "created_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_policies_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policies")),
        sa.UniqueConstraint(
            "tenant_id", "name", "version", name=op.f("uq_policies_tenant_id_name_version")
        ),
    )
    op.create_index(op.f("ix_policies_tenant_id"), "policies", ["tenant_id"], unique=False)
    op.create_table(
        "policy_decisions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("point", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("app_version_id", sa.String(length=32), nullable=True),
        sa.Column("policy_name", sa.String(length=64), nullable=False),
        sa.Column("policy_version", sa.Integer(), nullable=False),
        sa.Column("mode", sa.String(length=16), nullable=False),
        sa.Column("input_digest", sa.String(length=64), nullable=False),
        sa.Column("result", sa.String(length=24), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("enforced", sa.Boolean(), nullable=False),
        sa.Column(
            "decided_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_policy_decisions_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_decisions")),
    )
    op.create_index(
        "ix_policy_decisions_lookup", "policy_decisions", ["tenant_id", "decided_at"], unique=False
    )
    op.create_table(
        "policy_exceptions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("key", sa.String(length=64), nullable=False),
        sa.Column("team", sa.String(length=64), nullable=True),
        sa.Column("app_id", sa.String(length=64), nullable=True),
        sa.Column("reason", sa.Text(), nullable=False),
        sa.Column("granted_by", sa.String(length=200), nullable=False),
        sa.Column(
            "created_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "expires_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "revoked_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_policy_exceptions_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_policy_exceptions")),
    )
    op.create_index(
        "ix_policy_exceptions_lookup",
        "policy_exceptions",
        ["tenant_id", "key", "expires_at"],
        unique=False,
    )
    op.create_table(
        "app_search_docs",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("app_pk", sa.String(length=32), nullable=False),
        sa.Column("app_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("title", sa.String(length=200), nullable=False),
        sa.Column("short_description", sa.String(length=280), nullable=False),
        sa.Column("long_description", sa.Text(), nullable=False),
        sa.Column("tags", sa.Text(), nullable=False),
        sa.Column("team", sa.String(length=64), nullable=False),
        sa.Column("capabilities", sa.String(length=64), nullable=False),
        sa.Column("pricing_model", sa.String(length=32), nullable=False),
        sa.Column("verified_owner", sa.Boolean(), nullable=False),
        sa.Column("policy_pass", sa.Boolean(), nullable=False),
        sa.Column(
            "scanned_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("invocations_7d", sa.Integer(), nullable=False),
        sa.Column("invocations_30d", sa.Integer(), nullable=False),
        sa.Column("users_7d", sa.Integer(), nullable=False),
        sa.Column("users_30d", sa.Integer(), nullable=False),
        sa.Column(
            "signals_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "updated_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["app_pk"], ["apps.id"], name=op.f("fk_app_search_docs_app_pk_apps")
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_app_search_docs_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_app_search_docs")),
        sa.UniqueConstraint(
            "tenant_id", "app_id", name=op.f("uq_app_search_docs_tenant_id_app_id")
        ),
    )
    op.create_index(op.f("ix_app_search_docs_app_pk"), "app_search_docs", ["app_pk"], unique=False)
    op.create_index(
        op.f("ix_app_search_docs_tenant_id"), "app_search_docs", ["tenant_id"], unique=False
    )
    op.create_table(
        "app_versions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("app_pk", sa.String(length=32), nullable=False),
        sa.Column("version", sa.String(length=64), nullable=False),
        sa.Column("state", sa.String(length=24), nullable=False),
        sa.Column("manifest", sa.Text(), nullable=False),
        sa.Column("manifest_digest", sa.String(length=64), nullable=False),
        sa.Column("package_digest", sa.String(length=64), nullable=True),
        sa.Column("checks", sa.Text(), nullable=False),
        sa.Column("decision", sa.Text(), nullable=True),
        sa.Column("state_reason", sa.Text(), nullable=True),
        sa.Column(
            "checked_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "published_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column(
            "created_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "updated_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(["app_pk"], ["apps.id"], name=op.f("fk_app_versions_app_pk_apps")),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_app_versions_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_app_versions")),
        sa.UniqueConstraint(
            "tenant_id", "app_pk", "version", name=op.f("uq_app_versions_tenant_id_app_pk_version")
        ),
    )
    op.create_index("ix_app_versions_app_state", "app_versions", ["app_pk", "state"], unique=False)
    op.create_index(op.f("ix_app_versions_tenant_id"), "app_versions", ["tenant_id"], unique=False)
    op.create_table(
        "approvals",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("app_version_id", sa.String(length=32), nullable=False),
        sa.Column("subject", sa.String(length=200), nullable=False),
        sa.Column("reasons", sa.Text(), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("requested_by", sa.String(length=200), nullable=False),
        sa.Column(
            "requested_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "expires_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("reviewer", sa.String(length=200), nullable=True),
        sa.Column("comment", sa.Text(), nullable=True),
        sa.Column(
            "decided_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["app_version_id"],
            ["app_versions.id"],
            name=op.f("fk_approvals_app_version_id_app_versions"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_approvals_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_approvals")),
    )
    op.create_index(
        op.f("ix_approvals_app_version_id"), "approvals", ["app_version_id"], unique=False
    )
    op.create_index("ix_approvals_status", "approvals", ["tenant_id", "status"], unique=False)

    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute(SQLITE_FTS)
    elif bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE app_search_docs ADD COLUMN search_vector tsvector")
        op.execute(
            "CREATE INDEX ix_app_search_docs_vector ON app_search_docs USING gin (search_vector)"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS app_search_fts")
    for table in (
        "approvals",
        "app_versions",
        "app_search_docs",
        "policy_exceptions",
        "policy_decisions",
        "policies",
    ):
        op.drop_table(table)
