"""Route dependencies of the broker: its per-process context and who is calling (an API key or
a workload identity token)."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from quartermaster.api.deps import RuntimeDep
from quartermaster.errors import AuthenticationError
from quartermaster.secrets.access import Requester
from quartermaster.secrets.context import SecretsContext, build_secrets_context
from quartermaster.secrets.identity import looks_like_jwt
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
