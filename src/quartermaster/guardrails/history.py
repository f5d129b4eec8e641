"""The action log, read back."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.guardrails.models import GuardrailAction
from quartermaster.guardrails.visibility import MemberView, scope_filter


def list_actions(
    tenant_id: str, *, limit: int = 100, session: Session, view: MemberView | None = None
) -> list[GuardrailAction]:
    """Newest first; with a team-member's `view`, on its team and its apps only."""
    query = select(GuardrailAction).where(GuardrailAction.tenant_id == tenant_id)
    if view is not None:
        query = query.where(scope_filter(view, GuardrailAction.scope_kind, GuardrailAction.scope))
    return list(session.scalars(query.order_by(GuardrailAction.id.desc()).limit(limit)))
