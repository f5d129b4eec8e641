"""Tenancy routes: the caller's tenant, cost centers, teams, principals and API keys.

Who may do what: admin everything; finance and team-members read the directory (tenant,
teams, cost centers); principals and keys are read by admin and finance and changed by admin;
a team-member creates, lists and revokes only the app principals of its own team's apps and
their keys (tenancy/management.py); the app role gets 403 everywhere here."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends

from quartermaster.api.deps import (
    AdminCaller,
    Reader,
    ReadSessionDep,
    RuntimeDep,
    SessionDep,
    require_roles,
)
from quartermaster.api.responses import error_responses
from quartermaster.tenancy import management, service
from quartermaster.tenancy.models import Role
from quartermaster.tenancy.schemas import (
    ApiKeyCreate,
    ApiKeyOut,
    CostCenterCreate,
    CostCenterOut,
    IssuedApiKeyOut,
    PrincipalCreate,
    PrincipalOut,
    TeamCreate,
    TeamOut,
    TenantOut,
    TenantUpdate,
)
from quartermaster.tenancy.service import AuthContext

router = APIRouter(prefix="/v1", tags=["tenancy"])

# Admins manage every principal and key; a team-member its team's apps' app principals' only.
KeyManager = Annotated[AuthContext, Depends(require_roles(Role.ADMIN, Role.TEAM_MEMBER))]


@router.get("/tenant", summary="The caller's tenant", responses=error_responses())
def get_tenant(caller: Reader, session: ReadSessionDep) -> TenantOut:
    return TenantOut.model_validate(service.get_tenant(caller.tenant_id, session=session))


@router.patch(
    "/tenant",
    summary="Change the caller's tenant (its time zone); admin only",
    responses=error_responses(422),
)
def update_tenant(body: TenantUpdate, caller: AdminCaller, session: SessionDep) -> TenantOut:
    updated = service.set_tenant_timezone(
        caller.tenant_id,
        body.timezone,
        actor=f"principal:{caller.principal_name}",
        session=session,
    )
    return TenantOut.model_validate(updated)


@router.post(
    "/cost-centers",
    status_code=201,
    summary="Create a cost center",
    responses=error_responses(409, 422),
)
def create_cost_center(
    body: CostCenterCreate, caller: AdminCaller, session: SessionDep
) -> CostCenterOut:
    created = service.create_cost_center(
        caller.tenant_id, body.slug, name=body.name, session=session
    )
    return CostCenterOut.model_validate(created)


@router.get("/cost-centers", summary="List cost centers", responses=error_responses())
def list_cost_centers(caller: Reader, session: ReadSessionDep) -> list[CostCenterOut]:
    rows = service.list_cost_centers(caller.tenant_id, session=session)
    return [CostCenterOut.model_validate(row) for row in rows]


@router.get("/cost-centers/{slug}", summary="One cost center", responses=error_responses(404))
def get_cost_center(slug: str, caller: Reader, session: ReadSessionDep) -> CostCenterOut:
    return CostCenterOut.model_validate(
        service.get_cost_center(caller.tenant_id, slug, session=session)
    )


@router.post(
    "/teams", status_code=201, summary="Create a team", responses=error_responses(409, 422)
)
def create_team(body: TeamCreate, caller: AdminCaller, session: SessionDep) -> TeamOut:
    created = service.create_team(
        caller.tenant_id, body.slug, name=body.name, cost_center=body.cost_center, session=session
    )
    return TeamOut.model_validate(created)


@router.get("/teams", summary="List teams", responses=error_responses())
def list_teams(caller: Reader, session: ReadSessionDep) -> list[TeamOut]:
    return [
        TeamOut.model_validate(t) for t in service.list_teams(caller.tenant_id, session=session)
    ]


@router.get("/teams/{slug}", summary="One team", responses=error_responses(404))
def get_team(slug: str, caller: Reader, session: ReadSessionDep) -> TeamOut:
    return TeamOut.model_validate(service.get_team(caller.tenant_id, slug, session=session))


@router.post(
    "/principals",
    status_code=201,
    summary="Create a user or service account",
    description="An admin creates any principal. A team-member creates only an app principal "
    "(`role: app`) of one of its own team's apps (403 naming the rule otherwise), so the app "
    "gets a key of its own (docs/tenancy.md, 'Giving an app its own key').",
    responses=error_responses(409, 422),
)
def create_principal(
    body: PrincipalCreate, caller: KeyManager, session: SessionDep
) -> PrincipalOut:
    created = management.create_principal(
        caller,
        body.name,
        role=body.role,
        kind=body.kind,
        team=body.team,
        app_id=body.app_id,
        session=session,
    )
    return PrincipalOut.model_validate(created)


@router.get(
    "/principals",
    summary="List principals",
    description="Admin and finance: every principal of the tenant. A team-member: the app "
    "principals of its own team's apps only.",
    responses=error_responses(),
)
def list_principals(caller: Reader, session: ReadSessionDep) -> list[PrincipalOut]:
    rows = management.list_principals(caller, session=session)
    return [PrincipalOut.model_validate(row) for row in rows]


@router.post(
    "/principals/{principal_id}/keys",
    status_code=201,
    summary="Issue an API key (the token is shown once)",
    description="`principal_id`: the principal's id, or its name (a name equal to another "
    "principal's id, stored before such names were refused, is a 409: give the id of the one "
    "you mean). A team-member issues keys only of its own team's apps' app principals, "
    "expiring within "
    f"{management.TEAM_MEMBER_KEY_MAX_LIFETIME.days} days: without `expires_at` that long, "
    "a later one is a 403 (admins: no limit, and no expiry by default).",
    responses=error_responses(404, 409, 422),  # 409: an old name equal to another's id
)
def issue_key(
    principal_id: str, body: ApiKeyCreate, caller: KeyManager, session: SessionDep
) -> IssuedApiKeyOut:
    issued = management.issue_key(caller, principal_id, expires_at=body.expires_at, session=session)
    return IssuedApiKeyOut(
        key_id=issued.key_id,
        principal_id=issued.principal_id,
        token=issued.token,
        expires_at=issued.expires_at,
    )


@router.get(
    "/keys",
    summary="List API keys (never their secrets)",
    description="Admin and finance: every key of the tenant. A team-member: the keys of its "
    "own team's apps' app principals only.",
    responses=error_responses(),
)
def list_keys(caller: Reader, session: ReadSessionDep) -> list[ApiKeyOut]:
    return [ApiKeyOut.model_validate(k) for k in management.list_keys(caller, session=session)]


@router.delete(
    "/keys/{key_id}",
    summary="Revoke an API key",
    description="An admin revokes any key but the tenant's last active admin key (409); a "
    "team-member only keys of its own team's apps' app principals (403 otherwise).",
    responses=error_responses(404, 409),  # 409: the tenant's last active admin key
)
def revoke_key(
    key_id: str, caller: KeyManager, session: SessionDep, runtime: RuntimeDep
) -> ApiKeyOut:
    revoked = management.revoke_key(caller, key_id, session=session)
    # After the commit: this process's cached checks of the key end now (tenancy/auth_cache.py).
    runtime.auth_cache.invalidate_key(key_id)
    return ApiKeyOut.model_validate(revoked)
