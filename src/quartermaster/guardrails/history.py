"""The action log, read back."""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.guardrails.models import GuardrailAction


def list_actions(tenant_id: str, *, limit: int = 100, session: Session) -> list[GuardrailAction]:
    query = (
        select(GuardrailAction)
        .where(GuardrailAction.tenant_id == tenant_id)
        .order_by(GuardrailAction.id.desc())
        .limit(limit)
    )
    return list(session.scalars(query))
