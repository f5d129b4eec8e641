"""Catalog publishing routes: the manifest schema, dry-run validation, versions and their
lifecycle, approvals, and search. Registered before the catalog router so that the fixed
paths (/v1/apps/search, /v1/apps/manifest-schema, /v1/apps/validate) win over /v1/apps/{id}."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, Depends, Query, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from quartermaster.api.deps import (
    AdminCaller,
    Reader,
    ReadSessionDep,
    RuntimeDep,
    SessionDep,
    require_roles,
)
from quartermaster.api.responses import error_responses
from quartermaster.catalog import search_index, versions
from quartermaster.catalog.checks import MAX_PACKAGE_BYTES
from quartermaster.catalog.manifest import Capability, PricingModelName, manifest_json_schema
from quartermaster.catalog.publish_models import VersionState
from quartermaster.errors import InvalidInputError, PayloadTooLargeError
from quartermaster.policy.dependencies import PolicyCacheDep
from quartermaster.policy.models import ApprovalStatus
from quartermaster.runtime import Runtime
from quartermaster.tenancy.models import Role
from quartermaster.tenancy.service import AuthContext

router = APIRouter(prefix="/v1", tags=["catalog publishing"])
Writer = Annotated[AuthContext, Depends(require_roles(Role.ADMIN, Role.TEAM_MEMBER))]


class PackageBody(BaseModel):
    package_zip_b64: str | None = Field(
        default=None,
        description="The package submitted with this version, again, as a base64 zip: the "
        "server keeps only its digest and publishing scans it (secret and code scans). "
        "Required when the version was submitted with a package (422 naming "
        "`package_zip_b64` if left out or different); left out for a version submitted "
        "without one.",
    )


class VersionSubmit(BaseModel):
    manifest: dict[str, Any]
    package_zip_b64: str | None = Field(
        default=None,
        description="The app package as a base64 zip (secret and code scans); only its "
        "SHA-256 digest is stored, so publishing a draft later sends it again.",
    )
    publish: bool = Field(default=False, description="Run the checks and publish at once.")


class ReasonBody(BaseModel):
    reason: str | None = Field(default=None, max_length=2000)


class ReviewBody(BaseModel):
    comment: str = Field(min_length=1, max_length=4000)


class CheckOut(BaseModel):
    name: str
    outcome: str
    blocking: bool
    summary: str
    findings: list[dict[str, Any]]


class AppVersionOut(BaseModel):
    app_id: str
    version: str
    state: VersionState
    state_reason: str | None
    manifest: dict[str, Any]
    manifest_digest: str
    package_digest: str | None
    checks: list[CheckOut]
    decision: dict[str, Any] | None
    checked_at: datetime | None
    published_at: datetime | None
    created_by: str
    created_at: datetime


class ValidationOut(BaseModel):
    ok: bool
    checks: list[CheckOut]
    policy_result: str
    deny: list[str]
    require_approval: list[str]
    audit_only: list[str]


class ApprovalOut(BaseModel):
    id: str
    app_id: str
    version: str
    reasons: list[str]
    status: ApprovalStatus
    requested_by: str
    requested_at: datetime
    expires_at: datetime
    reviewer: str | None
    comment: str | None
    decided_at: datetime | None
    version_state: VersionState = Field(
        description="Where the version stands now; after approving, what the policies' re-run "
        "made of it (published, or rejected with version_state_reason)."
    )
    version_state_reason: str | None


class HitOut(BaseModel):
    app_id: str
    version: str
    title: str
    short_description: str
    tags: list[str]
    team: str
    capabilities: list[str]
    pricing_model: str
    score: float
    components: dict[str, float]


class SearchOut(BaseModel):
    query: str
    total: int = Field(description="Every app that matches the query and filters.")
    hits: list[HitOut]
    facets: dict[str, dict[str, int]] = Field(
        description="Per facet, the 20 commonest values among the `facet_hits` best hits."
    )
    facet_hits: int = Field(
        description="The hits the facets count: `total`, or the 1,100 or more best of more."
    )


def decode_package(encoded: str | None) -> bytes | None:
    if encoded is None:
        return None
    if len(encoded) > MAX_PACKAGE_BYTES * 4 // 3 + 4:
        raise PayloadTooLargeError(f"the package is larger than {MAX_PACKAGE_BYTES} bytes")
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInputError(
            "package_zip_b64 is not valid base64", field="package_zip_b64"
        ) from None


def _version_out(view: versions.VersionView) -> AppVersionOut:
    return AppVersionOut.model_validate(view, from_attributes=True)


@router.get(
    "/apps/manifest-schema",
    summary="The app manifest's JSON Schema (also in docs/catalog.md)",
)
def manifest_schema() -> dict[str, Any]:
    return manifest_json_schema()


@router.post(
    "/apps/validate",
    summary="Dry run: every check and every policy on a manifest and package; stores nothing",
    responses=error_responses(413, 422),
)
def validate(
    body: VersionSubmit, caller: Writer, session: SessionDep, cache: PolicyCacheDep
) -> ValidationOut:
    results, evaluation = versions.validate_only(
        caller,
        body.manifest,
        package_zip=decode_package(body.package_zip_b64),
        cache=cache,
        session=session,
    )
    blocked = any(r.blocking and r.outcome == "fail" for r in results)
    return ValidationOut(
        ok=not blocked and not evaluation.deny,
        checks=[CheckOut(**r.as_dict()) for r in results],
        policy_result=evaluation.result,
        deny=evaluation.deny,
        require_approval=evaluation.require_approval,
        audit_only=evaluation.audit_only,
    )


def _search(
    runtime: Runtime,
    tenant_id: str,
    query: str,
    filters: search_index.SearchFilters,
    limit: int,
    offset: int,
) -> bytes:
    with runtime.read_session_factory() as session:  # as ReadSessionDep: no write lock
        result = search_index.search(
            tenant_id, query, filters=filters, limit=limit, offset=offset, session=session
        )
    return orjson.dumps(result)


@router.get(
    "/apps/search",
    summary="Search published apps",
    response_model=SearchOut,
    responses=error_responses(),
)
async def search(
    caller: Reader,
    runtime: RuntimeDep,
    q: Annotated[str, Query(description="Words to match, best first; empty: every app.")] = "",
    tag: Annotated[str | None, Query(description="Only apps with this tag.")] = None,
    team: Annotated[str | None, Query(description="Only apps of this team (its slug).")] = None,
    capability: Annotated[
        Capability | None, Query(description="Only apps declaring this capability.")
    ] = None,
    pricing_model: Annotated[
        PricingModelName | None, Query(description="Only apps priced this way.")
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=search_index.MAX_LIMIT, description="At most this many results.")
    ] = 20,
    offset: Annotated[
        int,
        Query(
            ge=0, le=search_index.MAX_OFFSET, description="Skip this many results (the next page)."
        ),
    ] = 0,
) -> Response:
    # The hot read path: one threadpool hop for the session and the search together, and
    # the result's dataclasses (the fields of SearchOut, which documents the response) written
    # by orjson instead of validated and serialized again by pydantic.
    filters = search_index.SearchFilters(tag, team, capability, pricing_model)
    body = await run_in_threadpool(_search, runtime, caller.tenant_id, q, filters, limit, offset)
    return Response(body, media_type="application/json")


@router.post(
    "/apps/{app_id}/versions",
    status_code=201,
    summary="Submit a version (registers the app on first use); publish=true publishes it",
    responses={
        200: {"model": AppVersionOut, "description": "This exact version was stored already"},
        **error_responses(404, 409, 413, 422),
    },
)
def submit_version(
    app_id: str,
    body: VersionSubmit,
    caller: Writer,
    session: SessionDep,
    cache: PolicyCacheDep,
    response: Response,
) -> AppVersionOut:
    submitted = versions.submit_version(
        caller,
        app_id,
        body.manifest,
        package_zip=decode_package(body.package_zip_b64),
        publish=body.publish,
        cache=cache,
        session=session,
    )
    if not submitted.created:  # a retry: nothing new, as a price book re-sent answers
        response.status_code = 200
    return _version_out(submitted.view)


@router.get("/apps/{app_id}/versions", summary="An app's versions", responses=error_responses(404))
def list_app_versions(app_id: str, caller: Reader, session: ReadSessionDep) -> list[AppVersionOut]:
    return [_version_out(v) for v in versions.list_versions(caller, app_id, session=session)]


@router.get(
    "/apps/{app_id}/versions/{version}",
    summary="One version with its check results and policy decision",
    responses=error_responses(404, 422),
)
def get_app_version(
    app_id: str, version: str, caller: Reader, session: ReadSessionDep
) -> AppVersionOut:
    return _version_out(versions.get_version(caller, app_id, version, session=session))


@router.post(
    "/apps/{app_id}/versions/{version}/publish",
    summary="Publish a draft: checks, policies, then published / pending approval / rejected",
    responses=error_responses(404, 409, 413, 422),
)
def publish_version(
    app_id: str,
    version: str,
    body: PackageBody,
    caller: Writer,
    session: SessionDep,
    cache: PolicyCacheDep,
) -> AppVersionOut:
    view = versions.publish_version(
        caller,
        app_id,
        version,
        package_zip=decode_package(body.package_zip_b64),
        cache=cache,
        session=session,
    )
    return _version_out(view)


@router.post(
    "/apps/{app_id}/versions/{version}/deprecate",
    summary="Deprecate a published version (it leaves search)",
    responses=error_responses(404, 409, 422),
)
def deprecate_version(
    app_id: str, version: str, body: ReasonBody, caller: Writer, session: SessionDep
) -> AppVersionOut:
    view = versions.deprecate_version(caller, app_id, version, reason=body.reason, session=session)
    return _version_out(view)


@router.post(
    "/apps/{app_id}/versions/{version}/quarantine",
    summary="Quarantine a version from any state, with the reason (admin)",
    responses=error_responses(404, 422),
)
def quarantine_version(
    app_id: str, version: str, body: ReasonBody, caller: AdminCaller, session: SessionDep
) -> AppVersionOut:
    view = versions.quarantine_version(
        caller, app_id, version, reason=body.reason or "", session=session
    )
    return _version_out(view)


@router.get(
    "/approvals",
    summary="Approval requests (a team-member's: its own team's apps only)",
    responses=error_responses(),
)
def list_approvals(
    caller: Reader,
    session: ReadSessionDep,
    status: Annotated[
        ApprovalStatus | None, Query(description="Only requests in this state.")
    ] = None,
) -> list[ApprovalOut]:
    views = versions.list_approvals(caller, status=status, session=session)
    return [ApprovalOut.model_validate(v, from_attributes=True) for v in views]


def _review(
    approval_id: str, approve: bool, body: ReviewBody, caller: AuthContext, session: Any, cache: Any
) -> ApprovalOut:
    view = versions.decide_approval(
        caller, approval_id, approve=approve, comment=body.comment, cache=cache, session=session
    )
    return ApprovalOut.model_validate(view, from_attributes=True)


@router.post(
    "/approvals/{approval_id}/approve",
    summary="Approve a request with a comment (the policies run again with the approval)",
    responses=error_responses(404, 409, 422),
)
def approve(
    approval_id: str,
    body: ReviewBody,
    caller: AdminCaller,
    session: SessionDep,
    cache: PolicyCacheDep,
) -> ApprovalOut:
    return _review(approval_id, True, body, caller, session, cache)


@router.post(
    "/approvals/{approval_id}/reject",
    summary="Reject a request with a comment (the version is rejected)",
    responses=error_responses(404, 409, 422),
)
def reject(
    approval_id: str,
    body: ReviewBody,
    caller: AdminCaller,
    session: SessionDep,
    cache: PolicyCacheDep,
) -> ApprovalOut:
    return _review(approval_id, False, body, caller, session, cache)
