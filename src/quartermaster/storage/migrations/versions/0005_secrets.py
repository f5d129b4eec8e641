"""secrets broker and audit log: data keys, KV versions, leases, engines, access rules,
hash-chained audit records, chain heads, shipping cursors

Revision ID: 0005
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import quartermaster.storage.base

revision: str = "0005"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = ("secrets",)
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "audit_heads",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.Column(
            "updated_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_audit_heads")),
    )
    op.create_table(
        "audit_records",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column(
            "recorded_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("action", sa.String(length=32), nullable=False),
        sa.Column("outcome", sa.String(length=16), nullable=False),
        sa.Column("actor", sa.String(length=300), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=True),
        sa.Column("lease_id", sa.String(length=64), nullable=True),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("detail", sa.Text(), nullable=False),
        sa.Column("prev_hash", sa.String(length=64), nullable=False),
        sa.Column("hash", sa.String(length=64), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_audit_records")),
        sa.UniqueConstraint("tenant_id", "seq", name=op.f("uq_audit_records_tenant_id_seq")),
    )
    with op.batch_alter_table("audit_records", schema=None) as batch_op:
        batch_op.create_index("ix_audit_records_tenant_id_id", ["tenant_id", "id"], unique=False)

    op.create_table(
        "audit_sink_cursors",
        sa.Column("sink", sa.String(length=64), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("seq", sa.BigInteger(), nullable=False),
        sa.Column(
            "updated_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.PrimaryKeyConstraint("sink", "tenant_id", name=op.f("pk_audit_sink_cursors")),
    )
    op.create_table(
        "secret_access_rules",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("rules", sa.Text(), nullable=False),
        sa.Column(
            "updated_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_secret_access_rules_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_secret_access_rules")),
    )
    op.create_table(
        "secret_data_keys",
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("root_key_id", sa.String(length=64), nullable=False),
        sa.Column("wrapped_key", sa.LargeBinary(), nullable=False),
        sa.Column(
            "created_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "rewrapped_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_secret_data_keys_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("tenant_id", name=op.f("pk_secret_data_keys")),
    )
    op.create_table(
        "secret_engines",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("sealed_connection", sa.LargeBinary(), nullable=True),
        sa.Column("grants", sa.Text(), nullable=False),
        sa.Column("default_ttl_seconds", sa.Integer(), nullable=False),
        sa.Column("max_ttl_seconds", sa.Integer(), nullable=False),
        sa.Column(
            "created_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "updated_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_secret_engines_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secret_engines")),
        sa.UniqueConstraint("tenant_id", "path", name=op.f("uq_secret_engines_tenant_id_path")),
    )
    op.create_table(
        "secret_entries",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("current_version", sa.Integer(), nullable=False),
        sa.Column(
            "created_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "updated_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_secret_entries_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secret_entries")),
        sa.UniqueConstraint("tenant_id", "path", name=op.f("uq_secret_entries_tenant_id_path")),
    )
    op.create_table(
        "secret_leases",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("path", sa.String(length=512), nullable=False),
        sa.Column("version", sa.Integer(), nullable=True),
        sa.Column("holder", sa.String(length=200), nullable=False),
        sa.Column("actor", sa.String(length=300), nullable=False),
        sa.Column("state", sa.String(length=16), nullable=False),
        sa.Column(
            "issued_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "expires_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "max_expires_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column("ended_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=True),
        sa.Column("end_reason", sa.String(length=32), nullable=True),
        sa.Column("engine_id", sa.String(length=32), nullable=True),
        sa.Column("role_name", sa.String(length=63), nullable=True),
        sa.Column("sealed_value", sa.LargeBinary(), nullable=True),
        sa.Column("cleanup_pending", sa.Boolean(), nullable=False),
        sa.Column("cleanup_error", sa.String(length=300), nullable=True),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_secret_leases_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secret_leases")),
    )
    with op.batch_alter_table("secret_leases", schema=None) as batch_op:
        batch_op.create_index(
            "ix_secret_leases_holder", ["tenant_id", "holder", "state"], unique=False
        )
        batch_op.create_index(
            "ix_secret_leases_state_expiry", ["state", "expires_at"], unique=False
        )
        batch_op.create_index("ix_secret_leases_tenant_path", ["tenant_id", "path"], unique=False)

    op.create_table(
        "secret_versions",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("entry_id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("ciphertext", sa.LargeBinary(), nullable=True),
        sa.Column("fingerprint", sa.String(length=64), nullable=False),
        sa.Column("size_bytes", sa.Integer(), nullable=False),
        sa.Column("created_by", sa.String(length=300), nullable=False),
        sa.Column(
            "created_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=False
        ),
        sa.Column(
            "deleted_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.Column(
            "destroyed_at", quartermaster.storage.base.UTCDateTime(timezone=True), nullable=True
        ),
        sa.ForeignKeyConstraint(
            ["entry_id"],
            ["secret_entries.id"],
            name=op.f("fk_secret_versions_entry_id_secret_entries"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secret_versions")),
        sa.UniqueConstraint(
            "entry_id", "version", name=op.f("uq_secret_versions_entry_id_version")
        ),
    )
    with op.batch_alter_table("secret_versions", schema=None) as batch_op:
        batch_op.create_index(
            "ix_secret_versions_tenant_fingerprint", ["tenant_id", "fingerprint"], unique=False
        )


def downgrade() -> None:
    for index, table in (
        ("ix_secret_versions_tenant_fingerprint", "secret_versions"),
        ("ix_secret_leases_tenant_path", "secret_leases"),
        ("ix_secret_leases_state_expiry", "secret_leases"),
        ("ix_secret_leases_holder", "secret_leases"),
        ("ix_audit_records_tenant_id_id", "audit_records"),
    ):
        with op.batch_alter_table(table, schema=None) as batch_op:
            batch_op.drop_index(index)
    for table in (
        "secret_versions",
        "secret_leases",
        "secret_entries",
        "secret_engines",
        "secret_data_keys",
        "secret_access_rules",
        "audit_sink_cursors",
        "audit_records",
        "audit_heads",
    ):
        op.drop_table(table)
