"""Who is calling the broker (an API key's principal or a workload's identity token), issuing
identity tokens, and the tenant's workload access rules."""

from __future__ import annotations

import logging
import re
from datetime import timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.audit.failed_auth import untrusted_text
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
from quartermaster.secrets.identity import IssuedToken, TokenRejection, WorkloadClaims
from quartermaster.secrets.models import AccessRuleSet
from quartermaster.tenancy.auth_cache import AuthCache
from quartermaster.tenancy.models import Role, Team, Tenant
from quartermaster.tenancy.service import (
    AuthContext,
    KeyState,
    api_key_state,
    minting_key_refusal,
)

logger = logging.getLogger("quartermaster.secrets.identity")

_JOB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def requester_for_principal(
    auth: AuthContext, *, api_key_id: str | None = None, session: Session
) -> Requester:
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
        api_key_id=api_key_id,
    )


def requester_for_token(
    token: str, *, ctx: SecretsContext, auth_cache: AuthCache | None = None, session: Session
) -> Requester:
    """Verify a workload identity token, and that the API key that minted it is still neither
    revoked nor expired (its state cached in `auth_cache`, so a revocation through this
    process applies at once). A refused token is recorded by `_record_refusal`."""
    result = ctx.signer.verify(token, audience=ctx.settings.secrets_identity_audience)
    team_slug: str | None = None
    if isinstance(result, WorkloadClaims) and result.minted_by is not None:
        reason = _minting_key_refusal(result, auth_cache=auth_cache, session=session)
        if reason is not None:
            result = TokenRejection(reason, result.tenant_id, result.subject, True)
    if isinstance(result, WorkloadClaims):
        app_team = _app_team(result, session=session)
        if isinstance(app_team, TokenRejection):
            result = app_team
        else:
            team_slug = app_team
    if isinstance(result, TokenRejection):
        _record_refusal(result, ctx=ctx, session=session)
        raise AuthenticationError(result.reason)
    return Requester(
        tenant_id=result.tenant_id,
        kind=RequesterKind.WORKLOAD,
        actor=result.subject,
        app=result.app,
        team_slug=team_slug,
        job=result.job,
        token_id=result.token_id,
        minted_by=result.minted_by,
        token_expires_at=result.expires_at,
    )


def _app_team(claims: WorkloadClaims, *, session: Session) -> str | TokenRejection | None:
    """The slug of the team that owns the token's app now, from the catalog: an app moved to
    another team (PATCH /v1/apps/{id}) takes its tokens with it, so the team it had when the
    token was minted (claim `qm_team`) grants nothing any more. A rejection when the app is
    not in the token's tenant."""
    row = session.execute(
        select(App.id, Team.slug)
        .outerjoin(Team, Team.id == App.team_id)
        .where(App.tenant_id == claims.tenant_id, App.app_id == claims.app)
    ).first()
    if row is None:
        return TokenRejection(
            f"identity token is for app {claims.app!r}, which is not in its tenant",
            claims.tenant_id,
            claims.subject,
            True,
        )
    return None if row[1] is None else str(row[1])


def _minting_key_refusal(
    claims: WorkloadClaims, *, auth_cache: AuthCache | None, session: Session
) -> str | None:
    key_id = claims.minted_by
    assert key_id is not None
    state: KeyState | None = None if auth_cache is None else auth_cache.key_state(key_id)
    if state is None:
        generation = None if auth_cache is None else auth_cache.generation
        state = api_key_state(key_id, session=session)
        if state is not None and auth_cache is not None and generation is not None:
            auth_cache.put_key_state(state, generation=generation)
    return minting_key_refusal(key_id, state, tenant_id=claims.tenant_id, now=utc_now())


def _record_refusal(rejection: TokenRejection, *, ctx: SecretsContext, session: Session) -> None:
    """A token whose signature could not be verified is logged on this server only: its claims
    (tenant, subject) are the sender's words, so they choose no tenant's audit chain, and are
    logged escaped and cut short. A token this server signed is recorded in its tenant's
    chain, at most FAILED_AUTH_RECORDS_PER_MINUTE times per tenant and minute (audit/
    failed_auth.py); the rest are logged, and counted in a record of the next minute."""
    if not rejection.signature_valid:
        logger.warning(
            "refused an identity token with no valid signature (tenant claim %s, subject %s): %s",
            untrusted_text(rejection.tenant_id or "none"),
            untrusted_text(rejection.subject or "none"),
            untrusted_text(rejection.reason, limit=200),
        )
        return
    tenant_id = rejection.tenant_id
    if tenant_id is None or session.get(Tenant, tenant_id) is None:
        return
    admission = ctx.failed_auth.admit(tenant_id)
    if admission.left_out_before:
        append_audit(
            tenant_id,
            action="authenticate",
            outcome="denied",
            actor="system:quartermaster",
            detail={
                "reason": f"{admission.left_out_before} more failed token verifications were "
                "not recorded here (over the limit per minute; see the server log)",
                "left_out": admission.left_out_before,
            },
            session=session,
        )
    if admission.record:
        append_audit(
            tenant_id,
            action="authenticate",
            outcome="denied",
            actor=rejection.subject or "unknown",
            detail={"reason": rejection.reason, "signature_valid": True},
            session=session,
        )
    else:
        logger.warning(
            "refused an identity token of tenant %s (subject %s), not recorded in its audit "
            "chain (over %d records a minute): %s",
            tenant_id,
            rejection.subject,
            ctx.failed_auth.per_window,
            rejection.reason,
        )
    session.commit()


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
    tenant, team members for their team's apps, an app's own key only for itself. A job
    token (`job_id`) only an admin may mint: the tenant's `job:<job>` rules grant what a CI
    job needs, which may lie outside the app's own paths, and whoever names the job gets it."""
    settings = ctx.settings
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
    if job_id is not None and requester.role is not Role.ADMIN:
        refuse(
            requester,
            PermissionDeniedError(
                "job_id: only an admin may mint a token for a CI job (job_id), not "
                f"{_role_name(requester)}; leave job_id out for a token of the app itself",
                field="job_id",
            ),
            action="token",
            path=f"apps/{app_id}",
            session=session,
        )
    if job_id is not None and not _JOB_ID.match(job_id):
        raise InvalidInputError(
            f"job_id {job_id!r} must be 1-128 characters of A-Z, a-z, 0-9, '.', '_', '-'",
            field="job_id",
        )
    team_slug = session.scalar(select(Team.slug).where(Team.id == app.team_id))
    issued = ctx.signer.issue(
        tenant_id=requester.tenant_id,
        app=app_id,
        team=team_slug,
        job=job_id,
        audience=audience or settings.secrets_identity_audience,
        ttl=timedelta(seconds=ttl),
        minted_by=requester.api_key_id,
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
            "minted_by": issued.claims.minted_by,
            "expires_at": issued.claims.expires_at.isoformat(),
        },
        session=session,
    )
    session.commit()
    return issued


def _role_name(requester: Requester) -> str:
    if requester.kind is RequesterKind.WORKLOAD or requester.role is None:
        return "a workload"
    return f"role {requester.role.value!r}"


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
