"""catalog_search_prefix: an unstemmed index for prefix queries, the tenant inside the full-text
index, and precomputed ranking signals on each search document

Revision ID: 0007b
Revises: 0007

A prefix longer than its word's stem ("inciden": porter indexes "incid") found nothing in
the stemmed index; prefixes now go to an unstemmed one (SQLite: a unicode61 FTS5 table;
PostgreSQL: a `simple` tsvector), whole words still to the stemmed one. On SQLite both
tables carry the tenant as a token, so the engine picks a tenant's top matches by BM25
itself (ORDER BY ... LIMIT inside FTS5) instead of ranking every tenant's matches and
filtering afterwards. `behaviour` and `trust_base` hold the parts of the score that do not
change between signal refreshes, so ranking reads them instead of recomputing per hit.
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision: str = "0007b"
down_revision: str | Sequence[str] | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_COLUMNS = "tenant, title, descriptions, tags"
SQLITE_STEMMED = (
    f"CREATE VIRTUAL TABLE app_search_fts USING fts5({_COLUMNS}, "
    "tokenize='porter unicode61 remove_diacritics 2')"
)
SQLITE_WORDS = (
    f"CREATE VIRTUAL TABLE app_search_words USING fts5({_COLUMNS}, "
    "tokenize='unicode61 remove_diacritics 2', prefix='2 3 4')"
)
# Same text as search_index._write_fulltext; the tenant token is search_index.tenant_token.
_SQLITE_FILL = (
    "INSERT INTO {table} (rowid, tenant, title, descriptions, tags) "
    "SELECT d.id, 't' || lower(hex(d.tenant_id)), d.title, "
    "d.short_description || char(10) || d.long_description, "
    "coalesce((SELECT group_concat(j.value, ' ') FROM json_each(d.tags) j), '') "
    "FROM app_search_docs d"
)
PG_PREFIX_FILL = (
    "UPDATE app_search_docs SET prefix_vector = "
    "setweight(to_tsvector('simple', title), 'A') || "
    "setweight(to_tsvector('simple', coalesce((SELECT string_agg(value, ' ') "
    "FROM json_array_elements_text(tags::json)), '')), 'A') || "
    "setweight(to_tsvector('simple', short_description || ' ' || long_description), 'B')"
)


def _scores() -> None:
    # Imported here: the pure scoring functions, so stored parts match what search computes.
    from quartermaster.catalog.search_index import behaviour_score, trust_base

    bind = op.get_bind()
    rows = bind.execute(
        sa.text(
            "SELECT id, invocations_7d, invocations_30d, users_30d, verified_owner, policy_pass "
            "FROM app_search_docs"
        )
    ).all()
    for row in rows:
        bind.execute(
            sa.text("UPDATE app_search_docs SET behaviour = :b, trust_base = :t WHERE id = :id"),
            {
                "b": behaviour_score(row[1], row[2], row[3]),
                "t": trust_base(bool(row[4]), bool(row[5])),
                "id": row[0],
            },
        )
    scans = bind.execute(
        sa.text("SELECT id, scanned_at FROM app_search_docs WHERE scanned_at IS NOT NULL")
    ).all()
    for doc_id, scanned in scans:
        if isinstance(scanned, str):  # SQLite hands back the stored text (naive UTC)
            scanned = datetime.fromisoformat(scanned).replace(tzinfo=UTC)
        bind.execute(
            sa.text("UPDATE app_search_docs SET scanned_epoch = :e WHERE id = :id"),
            {"e": scanned.timestamp(), "id": doc_id},
        )


def upgrade() -> None:
    with op.batch_alter_table("app_search_docs") as batch:
        batch.add_column(sa.Column("behaviour", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("trust_base", sa.Float(), nullable=False, server_default="0"))
        batch.add_column(sa.Column("scanned_epoch", sa.Float(), nullable=True))
    op.create_index(
        "ix_app_search_docs_browse", "app_search_docs", ["tenant_id", "invocations_30d"]
    )
    _scores()
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS app_search_fts")
        op.execute(SQLITE_STEMMED)
        op.execute(SQLITE_WORDS)
        for table in ("app_search_fts", "app_search_words"):
            op.execute(_SQLITE_FILL.format(table=table))
    elif bind.dialect.name == "postgresql":
        op.execute("ALTER TABLE app_search_docs ADD COLUMN prefix_vector tsvector")
        op.execute(PG_PREFIX_FILL)
        op.execute(
            "CREATE INDEX ix_app_search_docs_prefix ON app_search_docs USING gin (prefix_vector)"
        )


def downgrade() -> None:
    bind = op.get_bind()
    if bind.dialect.name == "sqlite":
        op.execute("DROP TABLE IF EXISTS app_search_words")
        op.execute("DROP TABLE IF EXISTS app_search_fts")
        op.execute(
            "CREATE VIRTUAL TABLE app_search_fts USING fts5(title, descriptions, tags, "
            "tokenize='porter unicode61 remove_diacritics 2', prefix='2 3 4')"
        )
        op.execute(
            "INSERT INTO app_search_fts (rowid, title, descriptions, tags) "
            "SELECT d.id, d.title, d.short_description || char(10) || d.long_description, "
            "coalesce((SELECT group_concat(j.value, ' ') FROM json_each(d.tags) j), '') "
            "FROM app_search_docs d"
        )
    elif bind.dialect.name == "postgresql":
        op.execute("DROP INDEX IF EXISTS ix_app_search_docs_prefix")
        op.execute("ALTER TABLE app_search_docs DROP COLUMN prefix_vector")
    op.drop_index("ix_app_search_docs_browse", table_name="app_search_docs")
    with op.batch_alter_table("app_search_docs") as batch:
        batch.drop_column("scanned_epoch")
        batch.drop_column("trust_base")
        batch.drop_column("behaviour")
