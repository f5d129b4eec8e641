"""/v1/leases and /v1/identity: renew, revoke, revoke under a prefix; identity tokens."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from quartermaster.api.deps import SessionDep
from quartermaster.api.responses import NEXT_AFTER_HEADER, error_responses, set_next_after
from quartermaster.secrets import leases, revocation, workloads
from quartermaster.secrets.api_deps import (
    BrokerLister,
    LeaseRenewer,
    LeaseRevoker,
    SecretsContextDep,
    TokenMinter,
)
from quartermaster.secrets.schemas import (
    LeaseList,
    LeaseOut,
    RenewIn,
    RevokeOut,
    RevokePrefixIn,
    RevokePrefixOut,
    TokenIn,
    TokenOut,
)

router = APIRouter(tags=["leases"])


@router.get(
    "/v1/leases",
    summary="Leases you may manage (live only unless all=true), oldest first "
    "(page with after=X-Next-After)",
    description="An admin sees every lease of the tenant; a team member its own and every lease "
    "on its team's paths (its apps' workload leases too), with the holder of each; an app key or "
    "workload token the leases it holds.",
    responses={
        200: {
            "description": "A page of leases, oldest first.",
            "headers": {
                NEXT_AFTER_HEADER: {
                    "description": "Pass as `after` for the next page; absent on the last.",
                    "schema": {"type": "string"},
                }
            },
        }
    },
)
def list_leases(
    requester: BrokerLister,
    session: SessionDep,
    response: Response,
    prefix: Annotated[str, Query(description="Only leases on paths starting with this.")] = "",
    holder: Annotated[
        str,
        Query(
            description="Only this holder's leases: app:<app>, principal:<id> or "
            "principal:<name> (as holder or holder_name say)."
        ),
    ] = "",
    key_id: Annotated[
        str,
        Query(
            description="Only the leases bound to this API key (as `key_id` says; `qm key "
            "list` shows key ids).",
            max_length=64,
        ),
    ] = "",
    all: Annotated[bool, Query(description="Ended leases too (default: live ones only).")] = False,
    after: Annotated[
        str | None,
        Query(
            description="Leases after this one (the previous page's X-Next-After header).",
            max_length=64,
        ),
    ] = None,
    limit: Annotated[int, Query(ge=1, le=5000, description="At most this many leases.")] = 500,
) -> LeaseList:
    page = leases.page_leases(
        requester,
        prefix=prefix,
        holder=holder,
        key_id=key_id,
        live_only=not all,
        after=after,
        limit=limit,
        session=session,
    )
    set_next_after(response, page.next_after)
    return LeaseList(leases=[LeaseOut.of(info) for info in page.rows])


@router.get("/v1/leases/{lease_id}", summary="One lease")
def get_lease(lease_id: str, requester: BrokerLister, session: SessionDep) -> LeaseOut:
    return LeaseOut.of(leases.get_lease(requester, lease_id, session=session))


@router.post(
    "/v1/leases/{lease_id}/renew",
    summary="Extend a live lease (capped by max_ttl)",
    responses=error_responses(404, 409),  # 409: the lease has ended (revoked or expired)
)
def renew_lease(
    lease_id: str,
    body: RenewIn,
    requester: LeaseRenewer,
    ctx: SecretsContextDep,
    session: SessionDep,
) -> LeaseOut:
    info = leases.renew_lease(
        requester, lease_id, increment_seconds=body.increment_seconds, ctx=ctx, session=session
    )
    return LeaseOut.of(info)


@router.post(
    "/v1/leases/{lease_id}/revoke", summary="End a lease; already ended or unknown is success"
)
def revoke_lease(
    lease_id: str, requester: LeaseRevoker, ctx: SecretsContextDep, session: SessionDep
) -> RevokeOut:
    return RevokeOut.of(revocation.revoke_lease(requester, lease_id, ctx=ctx, session=session))


@router.post("/v1/leases/revoke-prefix", summary="End every live lease under a path prefix")
def revoke_prefix(
    body: RevokePrefixIn, requester: LeaseRevoker, ctx: SecretsContextDep, session: SessionDep
) -> RevokePrefixOut:
    return RevokePrefixOut.of(
        revocation.revoke_prefix(requester, body.prefix, ctx=ctx, session=session)
    )


@router.post(
    "/v1/identity/token",
    tags=["identity"],
    summary="A workload identity token",
    responses=error_responses(404),  # 404: no such app in the tenant (`app_id`)
)
def issue_token(
    body: TokenIn, requester: TokenMinter, ctx: SecretsContextDep, session: SessionDep
) -> TokenOut:
    issued = workloads.issue_identity_token(
        requester,
        app_id=body.app_id,
        job_id=body.job_id,
        ttl_seconds=body.ttl_seconds,
        audience=body.audience,
        ctx=ctx,
        session=session,
    )
    return TokenOut(
        token=issued.token, subject=issued.claims.subject, expires_at=issued.claims.expires_at
    )


@router.get("/v1/identity/jwks", tags=["identity"], summary="Public key to verify tokens")
def jwks(ctx: SecretsContextDep) -> dict[str, Any]:
    return ctx.signer.jwks()
