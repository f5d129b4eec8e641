"""Who is calling the broker (an API key's principal or a workload's identity token), issuing
identity tokens, and the tenant's workload access rules."""

from __future__ import annotations

import re
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.audit.log import append_audit
from quartermaster.catalog.models import App
from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import (
    AuthenticationError,
    InvalidInputError,
    NotFoundError,
    PermissionDeniedError,
)
from quartermaster.secrets.access import AccessRule, Requester, RequesterKind, validate_rules
from quartermaster.secrets.context import SecretsContext
from quartermaster.secrets.guard import access_rules, refuse, rules_to_json
from quartermaster.secrets.identity import IssuedToken, TokenRejection
from quartermaster.secrets.models import AccessRuleSet
from quartermaster.tenancy.models import Role, Team, Tenant
from quartermaster.tenancy.service import AuthContext

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def requester_for_principal(auth: AuthContext, *, session: Session) -> Requester:
    team_id = auth.team_id
    app = auth.app_slug if auth.role is Role.APP else None
    if app is not None:
        team_id = session.scalar(
            select(App.team_id).where(App.tenant_id == auth.tenant_id, App.app_id == app)
        )
    team_slug = None
    if team_id is not None:
        team_slug = session.scalar(
            select(Team.slug).where(Team.tenant_id == auth.tenant_id, Team.id == team_id)
        )
    return Requester(
        tenant_id=auth.tenant_id,
        kind=RequesterKind.PRINCIPAL,
        actor=f"principal:{auth.principal_name}",
        role=auth.role,
        team_id=auth.team_id,
        team_slug=team_slug,
        app=app,
        principal_id=auth.principal_id,
    )


def requester_for_token(token: str, *, ctx: SecretsContext, session: Session) -> Requester:
    """Verify a workload identity token. A refused token is audited in the tenant it names
    (if that tenant exists), with a note whether its signature could be trusted."""
    result = ctx.signer.verify(token, audience=ctx.settings.secrets_identity_audience)
    if isinstance(result, TokenRejection):
        tenant_id = result.tenant_id
        if tenant_id is not None and session.get(Tenant, tenant_id) is not None:
            subject = result.subject or "unknown"
            append_audit(
                tenant_id,
                action="authenticate",
                outcome="denied",
                actor=subject if result.signature_valid else f"unverified:{subject}",
                detail={"reason": result.reason, "signature_valid": result.signature_valid},
                session=session,
            )
            session.commit()
        raise AuthenticationError(result.reason)
    return Requester(
        tenant_id=result.tenant_id,
        kind=RequesterKind.WORKLOAD,
        actor=result.subject,
        app=result.app,
        team_slug=result.team,
        job=result.job,
        token_id=result.token_id,
    )


def issue_identity_token(
    requester: Requester,
    *,
    app_id: str,
    job_id: str | None,
    ttl_seconds: int | None,
    audience: str | None,
    ctx: SecretsContext,
    session: Session,
) -> IssuedToken:
    """An identity token for an app (or one of its jobs). Admins may mint for any app of the
    tenant, team members for their team's apps, an app's own key only for itself."""
    settings = ctx.settings
    if job_id is not None and not _JOB_ID.match(job_id):
        raise InvalidInputError(
            f"job_id {job_id!r} must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', '-'",
            field="job_id",
        )
    ttl = ttl_seconds or settings.secrets_identity_ttl_seconds
    if ttl < 1 or ttl > settings.secrets_identity_max_ttl_seconds:
        raise InvalidInputError(
            f"ttl_seconds {ttl} must be between 1 and {settings.secrets_identity_max_ttl_seconds}",
            field="ttl_seconds",
        )
    app = session.scalar(
        select(App).where(App.tenant_id == requester.tenant_id, App.app_id == app_id)
    )
    if app is None:
        raise NotFoundError(f"no app {app_id!r} in this tenant", field="app_id")
    reason = None
    if requester.kind is RequesterKind.WORKLOAD:
        reason = "a workload cannot mint identity tokens"
    elif requester.role is Role.APP and requester.app != app_id:
        reason = f"an app key for {requester.app!r} can only mint tokens for itself"
    elif requester.role is Role.TEAM_MEMBER and app.team_id != requester.team_id:
        reason = f"app {app_id!r} does not belong to your team"
    elif requester.role is Role.FINANCE:
        reason = "role 'finance' cannot mint identity tokens"
    if reason is not None:
        refuse(
            requester,
            PermissionDeniedError(reason),
            action="token",
            path=f"apps/{app_id}",
            session=session,
        )
    team_slug = session.scalar(select(Team.slug).where(Team.id == app.team_id))
    issued = ctx.signer.issue(
        tenant_id=requester.tenant_id,
        app=app_id,
        team=team_slug,
        job=job_id,
        audience=audience or settings.secrets_identity_audience,
        ttl=timedelta(seconds=ttl),
    )
    append_audit(
        requester.tenant_id,
        action="token",
        outcome="ok",
        actor=requester.actor,
        path=f"apps/{app_id}",
        detail={
            "subject": issued.claims.subject,
            "token_id": issued.claims.token_id,
            "expires_at": issued.claims.expires_at.isoformat(),
        },
        session=session,
    )
    session.commit()
    return issued


def get_access_rules(requester: Requester, *, session: Session) -> tuple[AccessRule, ...]:
    if requester.role not in (Role.ADMIN, Role.TEAM_MEMBER):
        raise PermissionDeniedError("only admins and team members may read access rules")
    return access_rules(requester.tenant_id, session=session)


def set_access_rules(
    requester: Requester, rules: list[AccessRule], *, session: Session
) -> tuple[AccessRule, ...]:
    """Replace the tenant's workload rules (the defaults apply only while none are set)."""
    if requester.role is not Role.ADMIN:
        refuse(
            requester,
            PermissionDeniedError("only an admin may change access rules"),
            action="configure",
            session=session,
        )
    validated = validate_rules(rules)
    text = rules_to_json(validated)
    row = session.get(AccessRuleSet, requester.tenant_id, populate_existing=True)
    if row is None:
        session.add(AccessRuleSet(tenant_id=requester.tenant_id, rules=text, updated_at=utc_now()))
    else:
        row.rules = text
        row.updated_at = utc_now()
    append_audit(
        requester.tenant_id,
        action="configure",
        outcome="ok",
        actor=requester.actor,
        detail={"access_rules": [{"role": r.role, "paths": list(r.paths)} for r in validated]},
        session=session,
    )
    session.commit()
    return validated
