"""Route dependencies of the broker: its per-process context and who is calling (an API key or
a workload identity token)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from quartermaster.api.deps import RuntimeDep
from quartermaster.errors import AuthenticationError, InvalidInputError, PermissionDeniedError
from quartermaster.secrets.access import Action, Requester
from quartermaster.secrets.context import SecretsContext, build_secrets_context
from quartermaster.secrets.guard import refuse, role_without_access
from quartermaster.secrets.identity import looks_like_jwt
from quartermaster.secrets.paths import normalize_prefix, parse_path
from quartermaster.secrets.workloads import requester_for_principal, requester_for_token
from quartermaster.tenancy.service import verify_api_key

_credentials = HTTPBearer(
    auto_error=False,
    scheme_name="ApiKeyOrIdentityToken",
    description="An API key (`qm_<id>_<secret>`) or a workload identity token (a JWT from "
    "POST /v1/identity/token).",
)


def get_secrets_context(request: Request) -> SecretsContext:
    """Built on first use and kept on the app. Two requests racing here may both build one;
    that is harmless (both read the same key files) and the last one is kept."""
    ctx: SecretsContext | None = getattr(request.app.state, "secrets_context", None)
    if ctx is None:
        ctx = build_secrets_context(request.app.state.runtime)
        request.app.state.secrets_context = ctx
    return ctx


SecretsContextDep = Annotated[SecretsContext, Depends(get_secrets_context)]


def get_requester(
    ctx: SecretsContextDep,
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_credentials)],
) -> Requester:
    if credentials is None:
        raise AuthenticationError(
            "missing credentials: send 'Authorization: Bearer' with an API key or an identity token"
        )
    token = credentials.credentials
    with ctx.session_factory() as session:
        if looks_like_jwt(token):
            return requester_for_token(
                token, ctx=ctx, auth_cache=runtime.auth_cache, session=session
            )
        verified = verify_api_key(token, session=session)
        return requester_for_principal(
            verified.context, api_key_id=verified.key_id, session=session
        )


RequesterDep = Annotated[Requester, Depends(get_requester)]


def _audited_path(request: Request) -> str | None:
    """The secret path (or listing prefix) a refused request named, when it is well formed."""
    try:
        if "path" in request.path_params:
            return parse_path(str(request.path_params["path"])).path
        prefix = request.query_params.get("prefix", "")
        return normalize_prefix(prefix) or None
    except InvalidInputError:
        return None


def broker_user(action: Action | str) -> Callable[[Requester, SecretsContext, Request], Requester]:
    """A dependency: the requester, refused (403, audited as `action`) when its role may use
    nothing of the broker (finance). As a dependency it runs before the body is validated,
    so such a caller gets 403 whatever it sent, as on the routes of other roles; what each
    role may do to which path is still decided by the service."""

    def check(requester: RequesterDep, ctx: SecretsContextDep, request: Request) -> Requester:
        role = role_without_access(requester)
        if role is None:
            return requester
        name = action.value if isinstance(action, Action) else action
        with ctx.session_factory() as session:
            refuse(
                requester,
                PermissionDeniedError(
                    f"{requester.actor} may not {name}: role {role!r} has no access to secrets"
                ),
                action=name,
                path=_audited_path(request),
                lease_id=request.path_params.get("lease_id"),
                session=session,
            )

    return check


# One per audited action of the broker's routes (the action a refusal is recorded as).
BrokerReader = Annotated[Requester, Depends(broker_user(Action.READ))]
BrokerLister = Annotated[Requester, Depends(broker_user(Action.LIST))]
BrokerWriter = Annotated[Requester, Depends(broker_user(Action.WRITE))]
BrokerDestroyer = Annotated[Requester, Depends(broker_user(Action.DESTROY))]
BrokerConfigurer = Annotated[Requester, Depends(broker_user(Action.CONFIGURE))]
BrokerAdminTask = Annotated[Requester, Depends(broker_user("deny"))]
LeaseRenewer = Annotated[Requester, Depends(broker_user("renew"))]
LeaseRevoker = Annotated[Requester, Depends(broker_user("revoke"))]
TokenMinter = Annotated[Requester, Depends(broker_user("token"))]
