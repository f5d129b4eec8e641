"""Policy routes: Rego policies per tenant (versioned), a try-out evaluator, the decision log
and exceptions with an expiry. Admins write; admin and finance read the decision log."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from pydantic import BaseModel, Field

from quartermaster.api.deps import (
    AdminCaller,
    BillingReader,
    Reader,
    ReadSessionDep,
    RuntimeDep,
    SessionDep,
)
from quartermaster.api.params import Int64, one_of
from quartermaster.api.responses import error_responses, paged, set_next_after
from quartermaster.catalog.service import find_app
from quartermaster.domain.timeutil import RequestMoment, utc_now
from quartermaster.errors import InvalidInputError
from quartermaster.policy import audit, service
from quartermaster.policy.dependencies import PolicyCacheDep
from quartermaster.policy.models import PolicyMode
from quartermaster.tenancy.service import require_team

router = APIRouter(prefix="/v1", tags=["policy"])


class PolicyUpload(BaseModel):
    name: str = Field(
        description="Slug; each upload of a name is its next version (the latest version's "
        "source, mode and enabled again: that version, no new one)."
    )
    source: str = Field(description="One Rego v1 module.")
    mode: PolicyMode = Field(
        default=PolicyMode.ENFORCE,
        description="audit: logged, never enforced; beside an enforced version in force it "
        "runs as a trial and the enforced version goes on deciding.",
    )
    enabled: bool = Field(
        default=True,
        description="false: a draft, which waits for POST /v1/policies/{name}/enable while "
        "the versions in force go on deciding.",
    )


class InForceOut(BaseModel):
    version: int
    mode: PolicyMode


class PolicyOut(BaseModel):
    name: str
    version: int
    package: str
    mode: PolicyMode
    enabled: bool
    draft: bool = Field(description="Uploaded disabled: waits for enable, changes nothing now.")
    source_digest: str
    created_by: str
    created_at: datetime
    source: str
    in_force: list[InForceOut] = Field(
        description="The policy's versions evaluated now: the enforced one decides, an audit "
        "one beside it is a trial that only logs; empty: the policy is off."
    )


class PolicyVersionOut(BaseModel):
    version: int
    package: str
    mode: PolicyMode
    enabled: bool
    draft: bool
    state: Literal["in_force", "draft", "off", "superseded"] = Field(
        description="How the version stands now: in force (evaluated), a draft (the newest "
        "version, waiting for enable), off (it disabled the policy) or superseded."
    )
    source_digest: str
    created_by: str
    created_at: datetime


class PolicyRollback(BaseModel):
    to: int = Field(ge=1, description="The version whose source and mode become the next one.")


class PolicyTry(BaseModel):
    source: str | None = Field(default=None, description="A Rego module to try (not stored).")
    name: str | None = Field(default=None, description="...or a stored policy's name.")
    input: dict[str, Any]


class VerdictOut(BaseModel):
    result: str
    deny: list[str]
    require_approval: list[str]
    quarantine: list[str]
    warn: list[str]


class PolicyDecisionOut(BaseModel):
    id: str
    point: str
    subject: str
    policy_name: str
    policy_version: int
    mode: str
    input_digest: str
    result: str
    reasons: list[str]
    enforced: bool
    decided_at: datetime = Field(
        description="When it was made: the moment the input's `time` and `time_ns` say."
    )
    caller_id: str | None = Field(
        description="The principal who caused it (who published, whose approval re-ran the "
        "policies, who asked the decision API); null on decisions logged before 2026-12-04."
    )
    caller_name: str | None
    decision_id: str | None = Field(
        description="An allowed admission decision's id (GET /v1/decisions/{id}); null otherwise."
    )


# The decision log's query parameters: any other is refused (a misspelt filter would
# otherwise answer the whole log as if it were filtered).
def _known_decision_params(request: Request, caller: BillingReader) -> None:
    """After the role check: a caller who may not read the log learns nothing more. The
    parameters it takes are the route's own, read from its signature."""
    known = [param.alias for param in request.scope["route"].dependant.query_params]
    unknown = sorted(set(request.query_params) - set(known))
    if unknown:
        raise InvalidInputError(
            f"unknown query parameter(s): {', '.join(unknown)}; the decision log takes: "
            f"{', '.join(known)}",
            field=unknown[0],
        )


class ExceptionGrant(BaseModel):
    key: str = Field(description="What is waived, e.g. gpu (policies see it in input.exceptions).")
    team: str | None = None
    app_id: str | None = None
    reason: str
    expires_at: RequestMoment | None = None
    days: int | None = Field(default=None, ge=1, le=service.MAX_EXCEPTION_DAYS)


class ExceptionOut(BaseModel):
    id: str
    key: str
    team: str | None
    app_id: str | None
    reason: str
    granted_by: str
    created_at: datetime
    expires_at: datetime
    revoked_at: datetime | None
    revoked_by: str | None = Field(
        description="Who revoked it (null: not revoked, or before 0024p)."
    )
    active: bool


@router.post(
    "/policies",
    status_code=201,
    summary="Upload a policy (its next version); a policy that does not compile is refused",
    responses=error_responses(409, 422),
)
def upload_policy(
    body: PolicyUpload,
    caller: AdminCaller,
    runtime: RuntimeDep,
    session: SessionDep,
    cache: PolicyCacheDep,
    response: Response,
) -> PolicyOut:
    from quartermaster.guardrails.gate import guardrail_gate

    uploaded = service.upload_version(
        caller,
        body.name,
        body.source,
        mode=body.mode,
        enabled=body.enabled,
        session=session,
        cache=cache,  # a trial evaluation on an empty input in the sandbox
    )
    # The decision API's gate caches the tenant's admission policies: the next decision
    # reads the new version instead of waiting out the cache.
    guardrail_gate(runtime).invalidate(caller.tenant_id)
    if not uploaded.created:
        response.status_code = 200  # the latest version already: a retry stores nothing
    return PolicyOut.model_validate(uploaded.view, from_attributes=True)


@router.get(
    "/policies/{name}/versions",
    summary="A policy's versions, newest first, and how each stands (in force, draft, ...)",
    responses=error_responses(404),
)
def list_policy_versions(
    name: Annotated[str, Path(description="The policy's name.", max_length=64)],
    caller: Reader,
    session: ReadSessionDep,
) -> list[PolicyVersionOut]:
    return [
        PolicyVersionOut.model_validate(v, from_attributes=True)
        for v in service.list_versions(caller, name, session=session)
    ]


@router.post(
    "/policies/{name}/rollback",
    status_code=201,
    summary="Upload version `to`'s source and mode again as the next version, enabled",
    responses=error_responses(404, 409, 422),
)
def rollback_policy(
    name: Annotated[str, Path(description="The policy's name.", max_length=64)],
    body: PolicyRollback,
    caller: AdminCaller,
    runtime: RuntimeDep,
    session: SessionDep,
    cache: PolicyCacheDep,
    response: Response,
) -> PolicyOut:
    from quartermaster.guardrails.gate import guardrail_gate

    uploaded = service.rollback_policy(
        caller,
        name,
        to=body.to,
        session=session,
        cache=cache,  # the same trial evaluation as an upload
    )
    guardrail_gate(runtime).invalidate(caller.tenant_id)
    if not uploaded.created:
        response.status_code = 200
    return PolicyOut.model_validate(uploaded.view, from_attributes=True)


def _set_enabled(
    name: str, enabled: bool, caller: AdminCaller, runtime: RuntimeDep, session: SessionDep
) -> PolicyOut:
    from quartermaster.guardrails.gate import guardrail_gate

    view = service.set_policy_enabled(caller, name, enabled=enabled, session=session)
    guardrail_gate(runtime).invalidate(caller.tenant_id)  # admission policies: at once
    return PolicyOut.model_validate(view, from_attributes=True)


@router.post(
    "/policies/{name}/disable",
    summary="Disable a policy: its latest version again as the next one, not evaluated",
    responses=error_responses(404, 409),
)
def disable_policy(
    name: str, caller: AdminCaller, runtime: RuntimeDep, session: SessionDep
) -> PolicyOut:
    return _set_enabled(name, False, caller, runtime, session)


@router.post(
    "/policies/{name}/enable",
    summary="Enable a disabled policy again: its latest version again as the next one",
    responses=error_responses(404, 409),
)
def enable_policy(
    name: str, caller: AdminCaller, runtime: RuntimeDep, session: SessionDep
) -> PolicyOut:
    return _set_enabled(name, True, caller, runtime, session)


@router.get("/policies", summary="Latest version of every policy", responses=error_responses())
def list_policies(caller: Reader, session: ReadSessionDep) -> list[PolicyOut]:
    return [
        PolicyOut.model_validate(v, from_attributes=True)
        for v in service.list_policies(caller, session=session)
    ]


@router.get(
    "/policies/{name}", summary="A policy (latest or ?version=N)", responses=error_responses(404)
)
def get_policy(
    name: str,
    caller: Reader,
    session: ReadSessionDep,
    version: Annotated[
        Int64 | None, Query(description="This version; default: the latest.")
    ] = None,
) -> PolicyOut:
    view = service.get_policy(caller, name, version=version, session=session)
    return PolicyOut.model_validate(view, from_attributes=True)


@router.post(
    "/policies/test",
    summary="Evaluate a policy (given or stored) against an input; nothing is stored",
    responses=error_responses(404, 422),
)
def try_policy(
    body: PolicyTry, caller: Reader, session: SessionDep, cache: PolicyCacheDep
) -> VerdictOut:
    if (body.source is None) == (body.name is None):
        raise InvalidInputError("give exactly one of source or name", field="source")
    source = body.source
    if source is None:
        source = service.get_policy(caller, body.name or "", session=session).source
    verdict = service.try_policy(source, body.input, tenant_id=caller.tenant_id, cache=cache)
    return VerdictOut(
        result=verdict.result,
        deny=verdict.deny,
        require_approval=verdict.require_approval,
        quarantine=verdict.quarantine,
        warn=verdict.warn,
    )


class FindingOut(BaseModel):
    policy: str
    version: int
    mode: str
    enforced: bool
    result: str = Field(
        description="allow (with warnings only) | deny | require_approval | quarantine | error"
    )
    messages: list[str]


class AppAuditOut(BaseModel):
    app_id: str
    team: str
    version: str = Field(description="The app's current published version, the one evaluated.")
    result: str = Field(
        description="What publishing this version would come to now: allow | deny | "
        "require_approval | quarantine | error (an enforced policy failed on it)."
    )
    reasons: list[str] = Field(description="The enforced messages that make the result.")
    excepted: bool = Field(description="An exception is in force for the app or its team.")
    exceptions: list[str] = Field(description="Their keys (the policies' input.exceptions).")
    findings: list[FindingOut] = Field(
        description="Every policy whose verdict was not a plain allow, audit-mode ones too."
    )


class AuditTotalsOut(BaseModel):
    apps: int
    allow: int
    deny: int
    require_approval: int
    quarantine: int
    error: int
    excepted: int
    audit_only: int
    violations: int = Field(description="deny + require_approval + quarantine.")


class AuditOut(BaseModel):
    policies: list[str] = Field(description="`name@version (mode)` of each policy evaluated.")
    audited_at: datetime
    published_apps: int = Field(description="Apps with a published version in the tenant.")
    apps: list[AppAuditOut]
    totals: AuditTotalsOut = Field(description="Of this page's apps.")
    next_after: str | None = Field(
        description="Pass as `after` for the next page; null on the last."
    )


@router.post(
    "/policies/audit",
    summary="Evaluate every app's published version against the enabled policies (a page "
    "of apps); changes nothing",
    responses=error_responses(422),
)
def audit_policies(
    caller: AdminCaller,
    session: ReadSessionDep,
    cache: PolicyCacheDep,
    after: Annotated[
        str | None,
        Query(
            description="Apps after this app id (the previous page's next_after).",
            max_length=64,
        ),
    ] = None,
    limit: Annotated[
        int,
        Query(
            ge=1,
            le=audit.MAX_PAGE,
            description="At most this many apps in this page, in app-id order.",
        ),
    ] = audit.DEFAULT_PAGE,
) -> AuditOut:
    page = audit.audit_apps(caller, after=after, limit=limit, cache=cache, session=session)
    totals = AuditTotalsOut(
        **{name: getattr(page.totals, name) for name in AuditTotalsOut.model_fields}
    )
    return AuditOut(
        policies=page.policies,
        audited_at=page.audited_at,
        published_apps=page.published_apps,
        apps=[AppAuditOut.model_validate(a, from_attributes=True) for a in page.apps],
        totals=totals,
        next_after=page.next_after,
    )


@router.get(
    "/policy-decisions",
    summary="The decision log, newest first (page with after=X-Next-After)",
    responses={**error_responses(422), **paged("decisions")},
    dependencies=[Depends(_known_decision_params)],
)
def list_decisions(
    caller: BillingReader,
    session: ReadSessionDep,
    response: Response,
    subject: Annotated[
        str | None, Query(description="Only decisions about this (app@version, budget:name).")
    ] = None,
    app: Annotated[
        str | None,
        Query(description="Only decisions about this app's versions (its app_id).", max_length=200),
    ] = None,
    result: Annotated[
        Annotated[str, one_of(service.DECISION_RESULTS)] | None,
        Query(description="Only decisions with this result (default: every result)."),
    ] = None,
    policy: Annotated[
        str | None,
        Query(description="Only decisions by this policy (its name).", max_length=64),
    ] = None,
    point: Annotated[
        Annotated[str, one_of(service.DECISION_POINTS)] | None,
        Query(description="Only decisions at this admission point."),
    ] = None,
    after: Annotated[
        str | None,
        Query(
            description="Decisions after this one (the previous page's X-Next-After header).",
            max_length=64,
        ),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=1000, description="At most this many, newest first.")
    ] = 100,
) -> list[PolicyDecisionOut]:
    page = service.list_decisions(
        caller,
        subject=subject,
        app=app,
        result=result,
        policy=policy,
        point=point,
        after=after,
        limit=limit,
        session=session,
    )
    set_next_after(response, page.next_after)
    return [PolicyDecisionOut.model_validate(v, from_attributes=True) for v in page.decisions]


@router.post(
    "/policy-exceptions",
    status_code=201,
    summary="Grant a time-limited exception to a team or an app",
    responses=error_responses(422),
)
def grant_exception(body: ExceptionGrant, caller: AdminCaller, session: SessionDep) -> ExceptionOut:
    if (body.expires_at is None) == (body.days is None):
        raise InvalidInputError("give exactly one of expires_at or days", field="expires_at")
    expires_at = body.expires_at or utc_now() + timedelta(days=body.days or 0)
    if body.team is not None:
        require_team(caller.tenant_id, body.team, field="team", session=session)
    if body.app_id is not None and find_app(caller.tenant_id, body.app_id, session=session) is None:
        raise InvalidInputError(f"app {body.app_id!r} does not exist", field="app_id")
    view = service.grant_exception(
        caller,
        body.key,
        reason=body.reason,
        expires_at=expires_at,
        team=body.team,
        app_id=body.app_id,
        session=session,
    )
    return ExceptionOut.model_validate(view, from_attributes=True)


@router.get(
    "/policy-exceptions",
    summary="Exceptions (active, or all); a team-member sees its own team's and its apps'",
    responses=error_responses(),
)
def list_exceptions(
    caller: Reader,
    session: ReadSessionDep,
    include_lapsed: Annotated[
        bool, Query(description="Expired and revoked exceptions too.")
    ] = False,
) -> list[ExceptionOut]:
    views = service.list_exceptions(caller, include_lapsed=include_lapsed, session=session)
    return [ExceptionOut.model_validate(v, from_attributes=True) for v in views]


@router.get(
    "/policy-exceptions/{exception_id}",
    summary="One exception (id or a unique prefix of 8+); another team's is 404 to a team-member",
    responses=error_responses(404, 422),
)
def get_exception(exception_id: str, caller: Reader, session: ReadSessionDep) -> ExceptionOut:
    view = service.get_exception(caller, exception_id, session=session)
    return ExceptionOut.model_validate(view, from_attributes=True)


@router.delete(
    "/policy-exceptions/{exception_id}",
    summary="Revoke an exception before it expires",
    responses=error_responses(404),
)
def revoke_exception(exception_id: str, caller: AdminCaller, session: SessionDep) -> ExceptionOut:
    view = service.revoke_exception(caller, exception_id, session=session)
    return ExceptionOut.model_validate(view, from_attributes=True)
