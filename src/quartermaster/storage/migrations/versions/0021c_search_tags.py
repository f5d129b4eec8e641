"""search_tags: a catalog search's tag filter reads a tag table in browse order

Revision ID: 0021c
Revises: 0019c

A tag filter was a test of each document's JSON list of tags (`instr` and `json_each` on
SQLite, `jsonb @>` on PostgreSQL): a search without text and with a tag read the tenant's
index entries until 1,100 passed, and counted its total by testing all of them. Now each tag
of a document is a row of `app_search_tags` with the document's browse order
(`invocations_30d DESC, app_id`), so a tag filter is a range of one index that stops at the
limit and a count of that range; a text match's tag is a primary-key lookup. Filled here from
the documents' tags.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021c"
down_revision: str | Sequence[str] | None = "0019c"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Each distinct tag of each document (search_index._write_tags writes the same rows).
_FILL = (
    "INSERT INTO app_search_tags (doc_id, tag, tenant_id, invocations_30d, app_id) "
    "SELECT DISTINCT d.id, j.value, d.tenant_id, d.invocations_30d, d.app_id "
    "FROM app_search_docs d, {elements}"
)
_ELEMENTS = {
    "sqlite": "json_each(d.tags) AS j",
    "postgresql": "jsonb_array_elements_text(d.tags::jsonb) AS j(value)",
}


def upgrade() -> None:
    op.create_table(
        "app_search_tags",
        sa.Column(
            "doc_id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.ForeignKey("app_search_docs.id"),
            primary_key=True,
            autoincrement=False,
        ),
        sa.Column("tag", sa.String(40), primary_key=True),
        sa.Column("tenant_id", sa.String(64), sa.ForeignKey("tenants.id"), nullable=False),
        sa.Column("invocations_30d", sa.Integer(), nullable=False),
        sa.Column("app_id", sa.String(64), nullable=False),
    )
    op.create_index(
        "ix_app_search_tags_rank",
        "app_search_tags",
        ["tenant_id", "tag", sa.text("invocations_30d DESC"), "app_id", "doc_id"],
    )
    elements = _ELEMENTS[op.get_bind().dialect.name]
    op.execute(_FILL.format(elements=elements))


def downgrade() -> None:
    op.drop_index("ix_app_search_tags_rank", table_name="app_search_tags")
    op.drop_table("app_search_tags")
