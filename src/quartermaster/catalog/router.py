"""Catalog routes: apps with dated ownership, their signing keys, resources and leases.

Admin and team-members register and change apps and resources (a team-member only its own
team's), finance reads everything, the ingest-only app role gets 403."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Query, Response

from quartermaster.api.deps import Reader, ReadSessionDep, RuntimeDep, SessionDep, require_roles
from quartermaster.api.responses import (
    NEXT_AFTER_HEADER,
    TOTAL_COUNT_HEADER,
    error_responses,
    set_next_after,
)
from quartermaster.catalog import app_list, resources, service
from quartermaster.catalog.models import Lifecycle
from quartermaster.catalog.schemas import (
    AppCreate,
    AppDetailOut,
    AppOut,
    AppUpdate,
    AppUpdatedOut,
    LeaseCreate,
    LeaseIssuedOut,
    OwnershipOut,
    ResourceCreate,
    ResourceEnd,
    ResourceLeaseOut,
    ResourceOut,
    SigningKeyCreatedOut,
    SigningKeyOut,
)
from quartermaster.runtime import Runtime
from quartermaster.tenancy.models import Role
from quartermaster.tenancy.service import AuthContext

router = APIRouter(prefix="/v1", tags=["catalog"])

CatalogWriter = Annotated[AuthContext, Depends(require_roles(Role.ADMIN, Role.TEAM_MEMBER))]


def _max_future_skew(runtime: Runtime) -> timedelta:
    """How far ahead of now ingest accepts event times: a binding ends no sooner."""
    return timedelta(seconds=runtime.settings.max_future_skew_seconds)


def _detail(detail: service.AppDetail) -> AppDetailOut:
    return AppDetailOut(
        **AppOut.model_validate(detail.app).model_dump(),
        ownership=[OwnershipOut.model_validate(span) for span in detail.ownership],
    )


@router.post(
    "/apps", status_code=201, summary="Register an app", responses=error_responses(409, 422)
)
def register_app(body: AppCreate, caller: CatalogWriter, session: SessionDep) -> AppOut:
    registration = service.AppRegistration(**body.model_dump())
    return AppOut.model_validate(service.register_app(caller, registration, session=session))


@router.get(
    "/apps",
    summary="List apps by app id (page with after=X-Next-After and limit)",
    responses={
        **error_responses(),
        200: {
            "description": "The apps, by app id: all of them, or a page with `limit`.",
            "headers": {
                NEXT_AFTER_HEADER: {
                    "description": "Pass as `after` for the next page; absent on the last.",
                    "schema": {"type": "string"},
                },
                TOTAL_COUNT_HEADER: {
                    "description": "How many apps the filters match, on every page.",
                    "schema": {"type": "integer"},
                },
            },
        },
    },
)
def list_apps(
    caller: Reader,
    session: ReadSessionDep,
    response: Response,
    team: Annotated[str | None, Query(description="Only apps of this team (its slug).")] = None,
    cost_center: Annotated[
        str | None, Query(description="Only apps of this cost center (its slug).")
    ] = None,
    lifecycle: Annotated[Lifecycle | None, Query(description="Only apps at this stage.")] = None,
    search: Annotated[
        str | None,
        Query(
            description="Only apps whose id, title or owner contains this, in any case "
            "(any letter: é finds É).",
            max_length=200,
        ),
    ] = None,
    after: Annotated[
        str | None,
        Query(
            description="Apps after this app id (the previous page's X-Next-After header).",
            max_length=200,
        ),
    ] = None,
    limit: Annotated[
        int | None,
        Query(ge=1, le=5000, description="At most this many apps (default: every one)."),
    ] = None,
) -> list[AppOut]:
    wanted = app_list.AppFilter(
        team=team, cost_center=cost_center, lifecycle=lifecycle, search=search
    )
    page = app_list.list_apps(caller, wanted, after=after, limit=limit, session=session)
    set_next_after(response, page.next_after)
    response.headers[TOTAL_COUNT_HEADER] = str(page.total)
    return [AppOut.model_validate(app) for app in page.apps]


@router.get(
    "/apps/{app_id}", summary="One app with its dated ownership", responses=error_responses(404)
)
def get_app(app_id: str, caller: Reader, session: ReadSessionDep) -> AppDetailOut:
    return _detail(service.get_app(caller, app_id, session=session))


@router.patch(
    "/apps/{app_id}",
    summary="Change an app (a change of team or cost center is dated)",
    responses=error_responses(404, 422),
)
def update_app(
    app_id: str, body: AppUpdate, caller: CatalogWriter, session: SessionDep
) -> AppUpdatedOut:
    changes = service.AppChanges(**body.model_dump(exclude_unset=True))
    detail = service.update_app(caller, app_id, changes, session=session)
    return AppUpdatedOut(**_detail(detail).model_dump(), rated_usage_note=detail.rated_usage_note)


@router.post(
    "/apps/{app_id}/signing-keys",
    status_code=201,
    summary="Create an HMAC signing key (secret shown once; at most two active)",
    responses=error_responses(404, 409),
)
def create_signing_key(
    app_id: str, caller: CatalogWriter, session: SessionDep, runtime: RuntimeDep
) -> SigningKeyCreatedOut:
    created = service.add_signing_key(
        caller, app_id, server_key=runtime.server_key, session=session
    )
    return SigningKeyCreatedOut(
        key_id=created.key_id, app_id=created.app_id, secret=created.secret_hex
    )


@router.get(
    "/apps/{app_id}/signing-keys",
    summary="List an app's signing keys (never their secrets)",
    responses=error_responses(404),
)
def list_signing_keys(app_id: str, caller: Reader, session: ReadSessionDep) -> list[SigningKeyOut]:
    keys = service.list_signing_keys(caller, app_id, session=session)
    return [SigningKeyOut.model_validate(key) for key in keys]


@router.delete(
    "/apps/{app_id}/signing-keys/{key_id}",
    summary="Retire a signing key",
    responses=error_responses(404),
)
def retire_signing_key(
    app_id: str, key_id: str, caller: CatalogWriter, session: SessionDep
) -> SigningKeyOut:
    retired = service.retire_app_signing_key(caller, app_id, key_id, session=session)
    return SigningKeyOut.model_validate(retired)


@router.post(
    "/resources",
    status_code=201,
    summary="Bind a resource to an app over a validity interval",
    responses=error_responses(409, 422),
)
def register_resource(
    body: ResourceCreate, caller: CatalogWriter, session: SessionDep
) -> ResourceOut:
    span = resources.register_resource(
        caller,
        body.resource_id,
        body.app_id,
        valid_from=body.valid_from,
        valid_to=body.valid_to,
        environment=body.environment,
        session=session,
    )
    return ResourceOut.model_validate(span)


@router.post(
    "/resources/end",
    summary="End a resource's binding to its app (to bind it to another, or to none)",
    responses=error_responses(404, 409, 422),
)
def end_resource_binding(
    body: ResourceEnd, caller: CatalogWriter, session: SessionDep, runtime: RuntimeDep
) -> ResourceOut:
    span = resources.end_binding(
        caller,
        body.resource_id,
        at=body.at,
        max_future_skew=_max_future_skew(runtime),
        session=session,
    )
    return ResourceOut.model_validate(span)


@router.get("/resources", summary="List resource bindings", responses=error_responses())
def list_resources(
    caller: Reader,
    session: ReadSessionDep,
    resource_id: Annotated[str | None, Query(description="Only bindings of this resource.")] = None,
    app_id: Annotated[str | None, Query(description="Only bindings to this app.")] = None,
) -> list[ResourceOut]:
    spans = resources.list_resources(
        caller, resource_id=resource_id, app_id=app_id, session=session
    )
    return [ResourceOut.model_validate(span) for span in spans]


@router.post(
    "/resource-leases",
    status_code=201,
    summary="Lease a short-lived resource to an app (returns a signed lease token)",
    responses=error_responses(409, 422),
)
def open_lease(
    body: LeaseCreate, caller: CatalogWriter, session: SessionDep, runtime: RuntimeDep
) -> LeaseIssuedOut:
    issued = resources.open_lease(
        caller,
        body.resource_id,
        body.app_id,
        ttl_seconds=body.ttl_seconds,
        environment=body.environment,
        issued_at=body.issued_at,
        server_key=runtime.server_key,
        session=session,
    )
    return LeaseIssuedOut.model_validate(issued)


@router.get(
    "/resource-leases/{lease_id}", summary="One resource lease", responses=error_responses(404)
)
def get_resource_lease(lease_id: str, caller: Reader, session: ReadSessionDep) -> ResourceLeaseOut:
    return ResourceLeaseOut.model_validate(resources.get_lease(caller, lease_id, session=session))


@router.delete(
    "/resource-leases/{lease_id}",
    summary="End a resource lease now",
    responses=error_responses(404),
)
def end_lease(
    lease_id: str, caller: CatalogWriter, session: SessionDep, runtime: RuntimeDep
) -> ResourceLeaseOut:
    ended = resources.end_lease(
        caller, lease_id, max_future_skew=_max_future_skew(runtime), session=session
    )
    return ResourceLeaseOut.model_validate(ended)
