"""billing: billing documents (runs, adjustments) and their lines, immutable once finalized

Revision ID: 0006
Revises: 0001
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import quartermaster.storage.base

revision: str = "0006"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = ("billing",)
depends_on: str | Sequence[str] | None = None

_IMMUTABLE = "billing document is finalized: it and its lines are immutable"

# The database refuses to change a finalized document or its lines, whatever the caller.
SQLITE_TRIGGERS = (
    f"""CREATE TRIGGER billing_documents_finalized_update BEFORE UPDATE ON billing_documents
    FOR EACH ROW WHEN OLD.status = 'finalized'
    BEGIN SELECT RAISE(ABORT, '{_IMMUTABLE}'); END""",
    f"""CREATE TRIGGER billing_documents_finalized_delete BEFORE DELETE ON billing_documents
    FOR EACH ROW WHEN OLD.status = 'finalized'
    BEGIN SELECT RAISE(ABORT, '{_IMMUTABLE}'); END""",
    f"""CREATE TRIGGER billing_lines_finalized_insert BEFORE INSERT ON billing_lines
    FOR EACH ROW WHEN (SELECT status FROM billing_documents WHERE id = NEW.document_id)
        = 'finalized'
    BEGIN SELECT RAISE(ABORT, '{_IMMUTABLE}'); END""",
    f"""CREATE TRIGGER billing_lines_finalized_update BEFORE UPDATE ON billing_lines
    FOR EACH ROW WHEN (SELECT status FROM billing_documents WHERE id = OLD.document_id)
        = 'finalized'
    BEGIN SELECT RAISE(ABORT, '{_IMMUTABLE}'); END""",
    f"""CREATE TRIGGER billing_lines_finalized_delete BEFORE DELETE ON billing_lines
    FOR EACH ROW WHEN (SELECT status FROM billing_documents WHERE id = OLD.document_id)
        = 'finalized'
    BEGIN SELECT RAISE(ABORT, '{_IMMUTABLE}'); END""",
)

POSTGRESQL_TRIGGERS = (
    f"""CREATE FUNCTION qm_billing_documents_immutable() RETURNS trigger AS $$
    BEGIN
        IF OLD.status = 'finalized' THEN
            RAISE EXCEPTION '{_IMMUTABLE} (%)', OLD.id;
        END IF;
        IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
        RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER billing_documents_immutable BEFORE UPDATE OR DELETE ON billing_documents
    FOR EACH ROW EXECUTE FUNCTION qm_billing_documents_immutable()""",
    f"""CREATE FUNCTION qm_billing_lines_immutable() RETURNS trigger AS $$
    DECLARE document_status text;
    BEGIN
        IF TG_OP = 'INSERT' THEN
            SELECT status INTO document_status FROM billing_documents WHERE id = NEW.document_id;
        ELSE
            SELECT status INTO document_status FROM billing_documents WHERE id = OLD.document_id;
        END IF;
        IF document_status = 'finalized' THEN
            RAISE EXCEPTION '{_IMMUTABLE}';
        END IF;
        IF TG_OP = 'DELETE' THEN RETURN OLD; END IF;
        RETURN NEW;
    END $$ LANGUAGE plpgsql""",
    """CREATE TRIGGER billing_lines_immutable BEFORE INSERT OR UPDATE OR DELETE ON billing_lines
    FOR EACH ROW EXECUTE FUNCTION qm_billing_lines_immutable()""",
)


def _utc() -> quartermaster.storage.base.UTCDateTime:
    return quartermaster.storage.base.UTCDateTime(timezone=True)


def _decimal() -> quartermaster.storage.base.DecimalText:
    return quartermaster.storage.base.DecimalText()


def upgrade() -> None:
    op.create_table(
        "billing_documents",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("doc_type", sa.String(length=16), nullable=False),
        sa.Column("doc_key", sa.String(length=200), nullable=False),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("corrects_id", sa.String(length=32), nullable=True),
        sa.Column("sequence", sa.Integer(), nullable=False),
        sa.Column("period_start", _utc(), nullable=False),
        sa.Column("period_end", _utc(), nullable=False),
        sa.Column("timezone", sa.String(length=64), nullable=False),
        sa.Column("status", sa.String(length=16), nullable=False),
        sa.Column("as_of", _utc(), nullable=False),
        sa.Column("price_book", sa.String(length=64), nullable=False),
        sa.Column("price_book_versions", sa.String(length=200), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("total", _decimal(), nullable=False),
        sa.Column("line_count", sa.Integer(), nullable=False),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("created_at", _utc(), nullable=False),
        sa.Column("created_by", sa.String(length=200), nullable=False),
        sa.Column("finalized_at", _utc(), nullable=True),
        sa.Column("finalized_by", sa.String(length=200), nullable=True),
        sa.ForeignKeyConstraint(
            ["corrects_id"],
            ["billing_documents.id"],
            name=op.f("fk_billing_documents_corrects_id_billing_documents"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_billing_documents_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_documents")),
        sa.UniqueConstraint(
            "tenant_id", "doc_key", name=op.f("uq_billing_documents_tenant_id_doc_key")
        ),
    )
    op.create_index(
        "ix_billing_documents_period", "billing_documents", ["tenant_id", "period_start"]
    )
    op.create_table(
        "billing_lines",
        sa.Column("id", sa.String(length=32), nullable=False),
        sa.Column("tenant_id", sa.String(length=64), nullable=False),
        sa.Column("document_id", sa.String(length=32), nullable=False),
        sa.Column("position", sa.Integer(), nullable=False),
        sa.Column("line_key", sa.String(length=400), nullable=False),
        sa.Column("parent_key", sa.String(length=400), nullable=True),
        sa.Column("cost_type", sa.String(length=16), nullable=False),
        sa.Column("item", sa.String(length=100), nullable=False),
        sa.Column("meter", sa.String(length=64), nullable=True),
        sa.Column("unit", sa.String(length=32), nullable=True),
        sa.Column("cost_center", sa.String(length=64), nullable=False),
        sa.Column("team", sa.String(length=64), nullable=True),
        sa.Column("app", sa.String(length=64), nullable=True),
        sa.Column("lifecycle", sa.String(length=16), nullable=True),
        sa.Column("quantity", _decimal(), nullable=False),
        sa.Column("unit_price", _decimal(), nullable=True),
        sa.Column("amount", _decimal(), nullable=False),
        sa.Column("currency", sa.String(length=3), nullable=False),
        sa.Column("pricing_rule", sa.Text(), nullable=False),
        sa.Column("allocation_method", sa.Text(), nullable=False),
        sa.Column("price_book_versions", sa.String(length=64), nullable=False),
        sa.Column("audit_key", sa.String(length=400), nullable=False),
        sa.Column("adjusted_cost_type", sa.String(length=16), nullable=True),
        sa.Column("corrects_line_id", sa.String(length=32), nullable=True),
        sa.Column("previous_quantity", _decimal(), nullable=True),
        sa.Column("previous_amount", _decimal(), nullable=True),
        sa.Column("reason", sa.Text(), nullable=True),
        sa.ForeignKeyConstraint(
            ["document_id"],
            ["billing_documents.id"],
            name=op.f("fk_billing_lines_document_id_billing_documents"),
        ),
        sa.ForeignKeyConstraint(
            ["tenant_id"], ["tenants.id"], name=op.f("fk_billing_lines_tenant_id_tenants")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_billing_lines")),
        sa.UniqueConstraint(
            "document_id", "line_key", name=op.f("uq_billing_lines_document_id_line_key")
        ),
    )
    op.create_index("ix_billing_lines_document", "billing_lines", ["document_id", "position"])
    op.create_index("ix_billing_lines_audit_key", "billing_lines", ["tenant_id", "audit_key"])
    dialect = op.get_bind().dialect.name
    statements = POSTGRESQL_TRIGGERS if dialect == "postgresql" else SQLITE_TRIGGERS
    for statement in statements:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS billing_lines_immutable ON billing_lines")
        op.execute("DROP TRIGGER IF EXISTS billing_documents_immutable ON billing_documents")
        op.execute("DROP FUNCTION IF EXISTS qm_billing_lines_immutable()")
        op.execute("DROP FUNCTION IF EXISTS qm_billing_documents_immutable()")
    op.drop_index("ix_billing_lines_audit_key", table_name="billing_lines")
    op.drop_index("ix_billing_lines_document", table_name="billing_lines")
    op.drop_table("billing_lines")
    op.drop_index("ix_billing_documents_period", table_name="billing_documents")
    op.drop_table("billing_documents")
