"""Small shared pieces: scope kinds, insert-once for every backend, the action log."""

from __future__ import annotations

import enum
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import insert, literal_column, select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import InvalidInputError, NotFoundError
from quartermaster.guardrails.models import GuardrailAction
from quartermaster.storage.base import Base
from quartermaster.tenancy.service import validate_slug


class ScopeKind(enum.StrEnum):
    TENANT = "tenant"
    COST_CENTER = "cost_center"
    TEAM = "team"
    APP = "app"


def check_scope(kind: str, scope: str | None, *, allowed: Sequence[ScopeKind]) -> tuple[str, str]:
    """(kind, scope) validated: the tenant scope has no name, every other needs a slug."""
    names = ", ".join(k.value for k in allowed)
    if kind not in {k.value for k in allowed}:
        raise InvalidInputError(f"scope_kind {kind!r} is not one of: {names}", field="scope_kind")
    if kind == ScopeKind.TENANT:
        if scope:
            raise InvalidInputError("a tenant-wide scope takes no scope name", field="scope")
        return kind, ""
    if not scope:
        raise InvalidInputError(f"scope_kind {kind!r} needs a scope (its slug)", field="scope")
    return kind, validate_slug(scope, field="scope")


def require_scope(tenant_id: str, kind: str, scope: str, *, session: Session) -> None:
    """The named team, cost center, app or principal exists in the tenant, else 404."""
    from quartermaster.catalog.models import App
    from quartermaster.tenancy.models import CostCenter, Principal, Team

    column: Any = {
        ScopeKind.TEAM: Team.slug,
        ScopeKind.COST_CENTER: CostCenter.slug,
        ScopeKind.APP: App.app_id,
        "user": Principal.id,
    }.get(kind)
    if column is None or scope in ("", "*"):
        return
    model = column.class_
    found = session.scalar(select(column).where(model.tenant_id == tenant_id, column == scope))
    if found is None:
        label = kind.replace("_", " ") if kind != "user" else "principal"
        raise NotFoundError(f"no {label} {scope!r} in this tenant", field="scope")


def insert_once(
    session: Session, model: type[Base], values: Mapping[str, Any], keys: Sequence[str]
) -> bool:
    """INSERT unless a row with the same unique `keys` exists; True when this call inserted.
    The database's unique constraint decides, so racing evaluators still insert once."""
    dialect = session.get_bind().dialect.name
    statement: Any
    if dialect == "postgresql":
        statement = postgresql.insert(model).on_conflict_do_nothing(index_elements=list(keys))
    elif dialect == "sqlite":
        statement = sqlite.insert(model).on_conflict_do_nothing(index_elements=list(keys))
    else:  # pragma: no cover - the two supported backends are above
        statement = insert(model)
    # RETURNING, not rowcount: a skipped conflict returns no row on both backends.
    result = session.execute(statement.values(**values).returning(literal_column("1")))
    return result.first() is not None


def record_action(
    session: Session,
    *,
    tenant_id: str,
    action: str,
    scope_kind: str,
    scope: str,
    subject: str,
    reason: str,
    at: datetime | None = None,
) -> None:
    """Append to the action log (in the caller's unit of work): what was done, and why."""
    session.add(
        GuardrailAction(
            tenant_id=tenant_id,
            at=at or utc_now(),
            action=action,
            scope_kind=scope_kind,
            scope=scope,
            subject=subject,
            reason=reason,
        )
    )
