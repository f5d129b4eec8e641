"""The action log, read back."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.guardrails.models import GuardrailAction
from quartermaster.guardrails.visibility import MemberView, scope_filter
from quartermaster.storage.paging import Page, position_of, read_page

# Newest first: the log's own sequence (its ids are unique, so no tie to break).
ACTION_ORDER = ((GuardrailAction.id, True),)


def list_actions(
    tenant_id: str,
    *,
    after: int | None = None,
    limit: int = 100,
    session: Session,
    view: MemberView | None = None,
) -> Page[GuardrailAction]:
    """Newest first, from after the action `after` (a previous page's `next_after`); with a
    team-member's `view`, on its team and its apps only."""
    query = select(GuardrailAction).where(GuardrailAction.tenant_id == tenant_id)
    if view is not None:
        query = query.where(scope_filter(view, GuardrailAction.scope_kind, GuardrailAction.scope))
    position = position_of(
        after,
        ACTION_ORDER,
        GuardrailAction.tenant_id == tenant_id,
        GuardrailAction.id == after,
        noun="actions",
        session=session,
    )
    return read_page(
        query,
        order=ACTION_ORDER,
        position=position,
        limit=limit,
        cursor=lambda action: str(action.id),
        session=session,
    )
