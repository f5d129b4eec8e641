"""Dependency aliases for routes: the runtime, a session, and the authenticated caller."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session
from starlette.concurrency import run_in_threadpool

from quartermaster.errors import AuthenticationError, PermissionDeniedError
from quartermaster.runtime import Runtime
from quartermaster.tenancy.models import Role
from quartermaster.tenancy.service import AuthContext, verify_api_key

_bearer = HTTPBearer(auto_error=False, description="An API key: `qm_<id>_<secret>`")


# Dependencies without blocking work are `async def`: FastAPI runs a plain `def` dependency
# in the threadpool, a hop that costs more than such a dependency's work.
async def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


def get_session(runtime: RuntimeDep) -> Iterator[Session]:
    with runtime.session_factory() as session:
        yield session


SessionDep = Annotated[Session, Depends(get_session)]


def get_read_session(runtime: RuntimeDep) -> Iterator[Session]:
    with runtime.read_session_factory() as session:
        yield session


# For routes that only read: on SQLite their transaction takes no write lock (never waits
# for a writer such as the pipeline); a write through it is refused.
ReadSessionDep = Annotated[Session, Depends(get_read_session)]


def _check_key(runtime: Runtime, token: str) -> AuthContext:
    cache = runtime.auth_cache
    generation = cache.generation  # before the read: a revocation meanwhile wins
    with runtime.read_session_factory() as session:  # every request: never wait for a writer
        verified = verify_api_key(token, session=session)
    cache.put(
        token,
        verified.context,
        key_id=verified.key_id,
        expires_at=verified.expires_at,
        generation=generation,
    )
    return verified.context


async def get_caller(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> AuthContext:
    if credentials is None:
        raise AuthenticationError("missing API key: send 'Authorization: Bearer qm_…'")
    # A key verified recently (tenancy/auth_cache.py) is answered on the event loop; only a
    # database check goes to the threadpool.
    cached = runtime.auth_cache.get(credentials.credentials)
    if cached is not None:
        return cached
    return await run_in_threadpool(_check_key, runtime, credentials.credentials)


Caller = Annotated[AuthContext, Depends(get_caller)]


def require_roles(*roles: Role) -> Callable[[AuthContext], Awaitable[AuthContext]]:
    allowed = frozenset(roles)

    async def _check(caller: Caller) -> AuthContext:
        if caller.role not in allowed:
            names = ", ".join(sorted(r.value for r in allowed))
            raise PermissionDeniedError(
                f"role {caller.role.value!r} may not do this (needs one of: {names})"
            )
        return caller

    return _check


AdminCaller = Annotated[AuthContext, Depends(require_roles(Role.ADMIN))]
BillingReader = Annotated[AuthContext, Depends(require_roles(Role.ADMIN, Role.FINANCE))]
# Everyone but the ingest-only app role.
Reader = Annotated[AuthContext, Depends(require_roles(Role.ADMIN, Role.FINANCE, Role.TEAM_MEMBER))]
Ingester = Annotated[AuthContext, Depends(require_roles(Role.ADMIN, Role.TEAM_MEMBER, Role.APP))]
