"""Rate-limit rules of a tenant: per tenant, per app and per user (principal)."""

from __future__ import annotations

from decimal import Decimal

from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.domain.money import plain_text
from quartermaster.errors import InvalidInputError, NotFoundError
from quartermaster.guardrails.common import record_action, require_scope
from quartermaster.guardrails.models import RateLimitRule
from quartermaster.guardrails.visibility import MemberView, scope_filter, scope_label
from quartermaster.tenancy.service import AuthContext, validate_slug

RATE_SCOPES = ("tenant", "app", "user")
# The column is a 32-bit INTEGER (on PostgreSQL): a larger burst failed the insert (a 500).
MAX_BURST = 2**31 - 1


def set_rate_limit(
    caller: AuthContext,
    kind: str,
    scope: str | None,
    rate: Decimal,
    burst: int,
    *,
    session: Session,
) -> RateLimitRule:
    """Create or change a rule; `scope` "*" (app, user) limits each one separately."""
    if kind not in RATE_SCOPES:
        raise InvalidInputError(
            f"scope_kind {kind!r} is not one of: tenant, app, user", field="scope_kind"
        )
    if kind == "tenant":
        if scope:
            raise InvalidInputError("a tenant-wide rate limit takes no scope", field="scope")
        name = ""
    elif not scope:
        raise InvalidInputError(f"a {kind} rate limit needs a scope (a name or *)", field="scope")
    else:
        name = scope if scope == "*" or kind == "user" else validate_slug(scope, field="scope")
    require_scope(caller.tenant_id, kind, name, session=session)
    if rate <= 0:
        raise InvalidInputError(f"rate {rate} must be positive (requests per second)", field="rate")
    if not 1 <= burst <= MAX_BURST:
        raise InvalidInputError(f"burst {burst} must be from 1 to {MAX_BURST:,}", field="burst")
    rule = session.scalar(
        select(RateLimitRule).where(
            RateLimitRule.tenant_id == caller.tenant_id,
            RateLimitRule.scope_kind == kind,
            RateLimitRule.scope == name,
        )
    )
    if rule is None:
        rule = RateLimitRule(tenant_id=caller.tenant_id, scope_kind=kind, scope=name)
        session.add(rule)
    rule.rate = rate
    rule.burst = burst
    session.commit()
    return rule


def list_rate_limits(
    tenant_id: str, *, session: Session, view: MemberView | None = None
) -> list[RateLimitRule]:
    """With a team-member's `view`: tenant-wide, every-app and every-user ones, its apps' and
    its own principal's."""
    query = select(RateLimitRule).where(RateLimitRule.tenant_id == tenant_id)
    if view is not None:
        query = query.where(
            scope_filter(view, RateLimitRule.scope_kind, RateLimitRule.scope, rules=True)
        )
    return list(session.scalars(query.order_by(RateLimitRule.scope_kind, RateLimitRule.scope)))


def delete_rate_limit(caller: AuthContext, rule_id: str, *, session: Session) -> None:
    """Delete a rule of the caller's tenant (404 for another tenant's or an unknown one);
    the action log gets a `delete` entry naming it, its rate and burst and who deleted it."""
    rule = session.get(RateLimitRule, rule_id)
    if rule is None or rule.tenant_id != caller.tenant_id:
        raise NotFoundError(f"no rate limit {rule_id!r}", field="rate_limit_id")
    applies_to = (
        f"every {rule.scope_kind}"
        if rule.scope == "*"
        else scope_label(rule.scope_kind, rule.scope)
    )
    record_action(
        session,
        tenant_id=caller.tenant_id,
        action="delete",
        scope_kind=rule.scope_kind,
        scope=rule.scope,
        subject=f"rate_limit:{rule.id}",
        reason=f"rate limit of {applies_to} ({plain_text(rule.rate)}/s, burst {rule.burst}) "
        f"deleted by {caller.principal_name}",
    )
    session.delete(rule)
    session.commit()
