"""search_browse_indexes: covering indexes for a search without text (browse) and its filters

Revision ID: 0019c
Revises: 0015

An empty query (and one whose every term is too broad) ranks the WINDOW busiest apps that pass
the filters: `ORDER BY invocations_30d DESC, app_id LIMIT 1100`. The index on
(tenant_id, invocations_30d) left the tie-break on app_id to a sort and every row to a table
lookup, and with a team or pricing-model filter every document of the tenant was read to test
it. Each of these indexes holds the order and every column a browse reads (rank columns and
facets), so the statement is a range scan of one index that stops at the limit: one for no
filter (and tag or capability filters, tested on the index's own tags and capabilities), one
led by team and one by pricing model. They replace ix_app_search_docs_browse.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0019c"
down_revision: str | Sequence[str] | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Same columns as catalog.publish_models.AppSearchDoc.__table_args__.
_ORDER = ["invocations_30d DESC", "app_id", "id"]
_COVERED = ["behaviour", "trust_base", "scanned_epoch", "tags", "capabilities"]
INDEXES = {
    "ix_app_search_docs_rank": ["tenant_id", *_ORDER, "team", "pricing_model", *_COVERED],
    "ix_app_search_docs_team_rank": ["tenant_id", "team", *_ORDER, "pricing_model", *_COVERED],
    "ix_app_search_docs_pricing_rank": [
        "tenant_id",
        "pricing_model",
        *_ORDER,
        "team",
        *_COVERED,
    ],
}


def upgrade() -> None:
    for name, columns in INDEXES.items():
        op.create_index(name, "app_search_docs", [sa.text(c) if " " in c else c for c in columns])
    op.drop_index("ix_app_search_docs_browse", table_name="app_search_docs")


def downgrade() -> None:
    op.create_index(
        "ix_app_search_docs_browse", "app_search_docs", ["tenant_id", "invocations_30d"]
    )
    for name in INDEXES:
        op.drop_index(name, table_name="app_search_docs")
