"""search_tenant_rowids: a tenant's documents are one rowid range of the SQLite full-text
indexes, so a query no longer matches a tenant token

Revision ID: 0007c
Revises: 0007b

With the tenant a token of every document, each query matched `tenant : "t…" AND (…)`: FTS5
merged the tenant's whole doclist with the terms' and BM25 counted the tenant token's
documents on every query (its weight was 0, so it never changed a score): about half of a
search's SQL time. Now a document's rowid is `ordinal << 32 | id` with the tenant's ordinal
from `app_search_tenants`, and a query restricts the match to the tenant's rowid range, which
FTS5 seeks to. The tenant token stays in the indexed text, unmatched, so BM25's document
lengths and every score stay exactly as they were. PostgreSQL's tsvectors are untouched (the
table stays empty there).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007c"
down_revision: str | Sequence[str] | None = "0007b"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLES = ("app_search_fts", "app_search_words")
# Same text as search_index._write_fulltext (tenant token: search_index.tenant_token).
_FILL = (
    "INSERT INTO {table} (rowid, tenant, title, descriptions, tags) "
    "SELECT {rowid}, 't' || lower(hex(d.tenant_id)), d.title, "
    "d.short_description || char(10) || d.long_description, "
    "coalesce((SELECT group_concat(j.value, ' ') FROM json_each(d.tags) j), '') "
    "FROM app_search_docs d"
)


def upgrade() -> None:
    op.create_table(
        "app_search_tenants",
        sa.Column("ordinal", sa.Integer(), primary_key=True, autoincrement=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), nullable=False),
        sa.UniqueConstraint("tenant_id"),
    )
    if op.get_bind().dialect.name != "sqlite":
        return
    op.execute(
        "INSERT INTO app_search_tenants (tenant_id) "
        "SELECT DISTINCT tenant_id FROM app_search_docs ORDER BY tenant_id"
    )
    rowid = (
        "((SELECT t.ordinal FROM app_search_tenants t WHERE t.tenant_id = d.tenant_id) << 32) "
        "| d.id"
    )
    for table in _TABLES:
        op.execute(f"DELETE FROM {table}")
        op.execute(_FILL.format(table=table, rowid=rowid))


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for table in _TABLES:
            op.execute(f"DELETE FROM {table}")
            op.execute(_FILL.format(table=table, rowid="d.id"))
    op.drop_table("app_search_tenants")
