"""Dependency aliases for routes: the runtime, a session, and the authenticated caller."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.orm import Session

from quartermaster.errors import AuthenticationError, PermissionDeniedError
from quartermaster.runtime import Runtime
from quartermaster.tenancy.models import Role
from quartermaster.tenancy.service import AuthContext, authenticate

_bearer = HTTPBearer(auto_error=False, description="An API key: `qm_<id>_<secret>`")


def get_runtime(request: Request) -> Runtime:
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


def get_caller(
    runtime: RuntimeDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> AuthContext:
    if credentials is None:
        raise AuthenticationError("missing API key: send 'Authorization: Bearer qm_…'")
    with runtime.read_session_factory() as session:  # every request: never wait for a writer
        return authenticate(credentials.credentials, session=session)


Caller = Annotated[AuthContext, Depends(get_caller)]


def require_roles(*roles: Role) -> Callable[[AuthContext], AuthContext]:
    allowed = frozenset(roles)

    def _check(caller: Caller) -> AuthContext:
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
