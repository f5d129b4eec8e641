"""Ending the enforcements of a budget or default cap that is deleted or changed: they stay
as history (lifted, by whom), and the action-log entry that says why names them."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.guardrails.models import Enforcement
from quartermaster.guardrails.visibility import scope_label


def in_force(
    tenant_id: str,
    *,
    session: Session,
    now: datetime,
    budget_id: str | None = None,
    cap_id: str | None = None,
) -> list[Enforcement]:
    """The throttles and halts a budget (or a default cap) started that are in force now."""
    query = select(Enforcement).where(
        Enforcement.tenant_id == tenant_id,
        Enforcement.lifted_at.is_(None),
        Enforcement.ends_at > now,
    )
    if budget_id is not None:
        query = query.where(Enforcement.budget_id == budget_id)
    if cap_id is not None:
        query = query.where(Enforcement.cap_id == cap_id)
    return list(session.scalars(query.order_by(Enforcement.created_at)))


def end(rows: Sequence[Enforcement], *, by: str, now: datetime) -> None:
    """End `rows` now, recorded as lifted by `by` (in the caller's unit of work)."""
    for row in rows:
        row.lifted_at = now
        row.lifted_by = by


def named(rows: Sequence[Enforcement]) -> str:
    """`ended throttle 1a2b3c4d5e6f… on app 'web'; …` or that none was in force. Pure."""
    if not rows:
        return "no throttle or halt of it was in force"
    ended = "; ".join(f"{r.action} {r.id} on {scope_label(r.scope_kind, r.scope)}" for r in rows)
    return f"ended {ended}"
