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
from quartermaster.secrets.guard import refuse, route_denial
from quartermaster.secrets.identity import looks_like_jwt
from quartermaster.secrets.paths import normalize_prefix, parse_path
from quartermaster.secrets.workloads import requester_for_principal, requester_for_token
from quartermaster.tenancy.models import Role
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


def broker_user(
    action: Action | str,
    *,
    may: frozenset[Role] | None = None,
    workloads: bool = True,
    what: str | None = None,
) -> Callable[[Requester, SecretsContext, Request], Requester]:
    """A dependency: the requester, refused (403, audited as `action`) when its role may not
    call the route at all: a role that may use nothing of the broker (finance), or, with
    `may`, a role the route is not for (`guard.route_denial`; an admin-only route refuses a
    team member, an app key and a workload token). As a dependency it runs before the body
    is validated, so such a caller gets 403 whatever it sent; what each role may do to which
    path is still decided by the service. `workloads=False`: a workload identity token is
    refused too where app keys may call. `what` names the operation in the message (default:
    the action)."""
    name = action.value if isinstance(action, Action) else action

    def check(requester: RequesterDep, ctx: SecretsContextDep, request: Request) -> Requester:
        reason = route_denial(requester, may, workloads=workloads)
        if reason is None:
            return requester
        with ctx.session_factory() as session:
            refuse(
                requester,
                PermissionDeniedError(f"{requester.actor} may not {what or name}: {reason}"),
                action=name,
                path=_audited_path(request),
                lease_id=request.path_params.get("lease_id"),
                session=session,
            )

    return check


ADMINS = frozenset({Role.ADMIN})
MEMBERS = frozenset({Role.ADMIN, Role.TEAM_MEMBER})  # admins and team members
# One per audited action of the broker's routes (the action a refusal is recorded as) and the
# roles the route is for.
BrokerReader = Annotated[Requester, Depends(broker_user(Action.READ))]
BrokerLister = Annotated[Requester, Depends(broker_user(Action.LIST))]
BrokerWriter = Annotated[Requester, Depends(broker_user(Action.WRITE, may=MEMBERS))]
BrokerDestroyer = Annotated[Requester, Depends(broker_user(Action.DESTROY, may=MEMBERS))]
BrokerConfigurer = Annotated[Requester, Depends(broker_user(Action.CONFIGURE, may=ADMINS))]
RulesReader = Annotated[
    Requester, Depends(broker_user(Action.CONFIGURE, may=MEMBERS, what="read access rules"))
]
FingerprintKeyReader = Annotated[
    Requester, Depends(broker_user("deny", may=ADMINS, what="fetch the fingerprint key"))
]
FindingsMatcher = Annotated[
    Requester, Depends(broker_user("deny", may=ADMINS, what="match scan findings"))
]
StreamRedactor = Annotated[
    Requester, Depends(broker_user("deny", may=ADMINS, what="redact streams"))
]
LeaseRenewer = Annotated[Requester, Depends(broker_user("renew"))]
LeaseRevoker = Annotated[Requester, Depends(broker_user("revoke"))]
TokenMinter = Annotated[
    Requester,
    Depends(
        broker_user(
            "token",
            may=frozenset({Role.ADMIN, Role.TEAM_MEMBER, Role.APP}),
            workloads=False,
            what="mint identity tokens",
        )
    ),
]
