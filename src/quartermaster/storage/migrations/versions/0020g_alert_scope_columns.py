"""guardrails: what an alert is about in indexed columns, not only in its JSON details

GET /v1/alerts filtered by scope (and a team-member's view) in Python over the details JSON,
reading the tenant's alerts in batches of 500 until a page was full: a rare scope behind many
others read every alert of the tenant. `scope_kind` and `scope` (NULL: an alert about no
team-owned scope) take what `visibility.alert_scope` finds in the details, and an index on
(tenant_id, scope_kind, scope, created_at) makes the filter a WHERE. Existing rows are filled
here, as the application fills new ones. Deliveries get a (tenant_id, created_at) index for
their newest-first pages.

Revision ID: 0020g
Revises: 0019g
"""

import json
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op

revision: str = "0020g"
down_revision: str | Sequence[str] | None = "0019g"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_TABLE = "guardrail_alerts"
_INDEX = "ix_guardrail_alerts_tenant_id_scope_kind_scope_created_at"
_DELIVERIES_INDEX = "ix_guardrail_deliveries_tenant_id_created_at"
_BACKFILL_CHUNK = 2_000


def _alert_scope(kind: str, details: Mapping[str, Any]) -> tuple[str, str] | None:
    # Frozen copy of quartermaster.guardrails.visibility.alert_scope (a test checks they agree).
    if "scope_kind" in details:
        return str(details["scope_kind"]), str(details.get("scope") or "")
    if kind == "high_cost_event" and details.get("team"):
        return "team", str(details["team"])
    if details.get("app"):
        return "app", str(details["app"])
    return None


def upgrade() -> None:
    op.add_column(_TABLE, sa.Column("scope_kind", sa.String(length=16), nullable=True))
    op.add_column(_TABLE, sa.Column("scope", sa.String(length=200), nullable=True))
    connection = op.get_bind()
    after = ""
    while True:
        rows = connection.execute(
            sa.text(
                f"SELECT id, kind, details FROM {_TABLE} WHERE id > :after ORDER BY id LIMIT :n"
            ),
            {"after": after, "n": _BACKFILL_CHUNK},
        ).all()
        if not rows:
            break
        updates = []
        for alert_id, kind, details in rows:
            about = _alert_scope(kind, json.loads(details or "{}"))
            if about is not None:
                updates.append({"kind": about[0], "scope": about[1], "id": alert_id})
        if updates:
            connection.execute(
                sa.text(f"UPDATE {_TABLE} SET scope_kind = :kind, scope = :scope WHERE id = :id"),
                updates,
            )
        after = rows[-1][0]
    op.create_index(_INDEX, _TABLE, ["tenant_id", "scope_kind", "scope", "created_at"])
    op.create_index(_DELIVERIES_INDEX, "guardrail_deliveries", ["tenant_id", "created_at"])


def downgrade() -> None:
    op.drop_index(_DELIVERIES_INDEX, table_name="guardrail_deliveries")
    op.drop_index(_INDEX, table_name=_TABLE)
    op.drop_column(_TABLE, "scope")
    op.drop_column(_TABLE, "scope_kind")
