"""Dynamic-credential engines mounted at a path: configuration (connection sealed with the
tenant's data key) and the database-side cleanup every lease end goes through."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import datetime

import psycopg
from psycopg.conninfo import conninfo_to_dict
from pydantic import TypeAdapter, ValidationError
from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.audit.log import append_audit, lock_tenant_chain
from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import ConflictError, InvalidInputError, NotFoundError
from quartermaster.secrets.access import Action, Requester
from quartermaster.secrets.context import SecretsContext
from quartermaster.secrets.envelope import open_sealed, record_aad, seal
from quartermaster.secrets.guard import authorize, require_scope
from quartermaster.secrets.models import DynamicEngine, LeaseKind, LeaseState, SecretLease
from quartermaster.secrets.paths import parse_path
from quartermaster.secrets.postgres import (
    EngineError,
    GrantSpec,
    revoke_role,
    validate_connection_url,
)

logger = logging.getLogger(__name__)

_GRANTS = TypeAdapter(list[GrantSpec])
_CONNECTION = "engine-connection"


@dataclass(frozen=True, slots=True)
class EngineInfo:
    path: str
    kind: str
    has_own_connection: bool
    grants: list[GrantSpec]
    default_ttl_seconds: int
    max_ttl_seconds: int
    updated_at: datetime


def _info(engine: DynamicEngine) -> EngineInfo:
    return EngineInfo(
        path=engine.path,
        kind=engine.kind,
        has_own_connection=engine.sealed_connection is not None,
        grants=_GRANTS.validate_json(engine.grants),
        default_ttl_seconds=engine.default_ttl_seconds,
        max_ttl_seconds=engine.max_ttl_seconds,
        updated_at=engine.updated_at,
    )


def engine_grants(engine: DynamicEngine) -> list[GrantSpec]:
    return _GRANTS.validate_json(engine.grants)


def parse_grants(raw: object) -> list[GrantSpec]:
    try:
        return _GRANTS.validate_python(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInputError(f"grants.{where}: {first['msg']}", field="grants") from None


def configure_postgres_engine(
    requester: Requester,
    raw_path: str,
    *,
    grants: list[GrantSpec],
    connection_url: str | None,
    default_ttl_seconds: int | None,
    max_ttl_seconds: int | None,
    ctx: SecretsContext,
    session: Session,
) -> EngineInfo:
    target = parse_path(raw_path)
    settings = ctx.settings
    authorize(requester, Action.CONFIGURE, target, session=session)
    require_scope(requester, target, session=session)
    if connection_url is None and settings.secrets_postgres_url is None:
        raise InvalidInputError(
            "connection_url is required: QM_SECRETS_POSTGRES_URL is not set on the server",
            field="connection_url",
        )
    max_ttl = max_ttl_seconds or settings.secrets_lease_max_ttl_seconds
    default_ttl = default_ttl_seconds or min(settings.secrets_lease_ttl_seconds, max_ttl)
    if max_ttl > settings.secrets_lease_max_ttl_seconds:
        raise InvalidInputError(
            f"max_ttl_seconds {max_ttl} exceeds the server's limit "
            f"{settings.secrets_lease_max_ttl_seconds}",
            field="max_ttl_seconds",
        )
    if default_ttl > max_ttl:
        raise InvalidInputError(
            f"default_ttl_seconds {default_ttl} exceeds max_ttl_seconds {max_ttl}",
            field="default_ttl_seconds",
        )
    lock_tenant_chain(requester.tenant_id, session=session)
    data_key = ctx.data_keys.ensure(requester.tenant_id, session=session)
    sealed = None
    if connection_url is not None:
        url = validate_connection_url(connection_url)
        sealed = seal(
            data_key, url.encode(), record_aad(requester.tenant_id, _CONNECTION, target.path)
        )
    grants_json = json.dumps([g.model_dump() for g in grants])
    engine = session.scalar(
        select(DynamicEngine)
        .where(DynamicEngine.tenant_id == requester.tenant_id, DynamicEngine.path == target.path)
        .execution_options(populate_existing=True)
    )
    if engine is not None:
        _refuse_moving_live_leases(engine, connection_url, ctx=ctx, session=session)
    now = utc_now()
    if engine is None:
        engine = DynamicEngine(
            tenant_id=requester.tenant_id,
            path=target.path,
            kind=LeaseKind.POSTGRES.value,
            created_at=now,
        )
        session.add(engine)
    engine.sealed_connection = sealed
    engine.grants = grants_json
    engine.default_ttl_seconds = default_ttl
    engine.max_ttl_seconds = max_ttl
    engine.updated_at = now
    session.flush()
    append_audit(
        requester.tenant_id,
        action="configure",
        outcome="ok",
        actor=requester.actor,
        path=target.path,
        detail={"engine": "postgres", "grants": len(grants), "own_connection": sealed is not None},
        session=session,
    )
    session.commit()
    return _info(engine)


def _live_leases(engine: DynamicEngine, *, session: Session) -> list[str]:
    """Ids of the engine's leases not ended yet (an expired one the reaper has not ended still
    has its role in the database), oldest first."""
    return list(
        session.scalars(
            select(SecretLease.id)
            .where(
                SecretLease.tenant_id == engine.tenant_id,
                SecretLease.engine_id == engine.id,
                SecretLease.state != LeaseState.ENDED.value,
            )
            .order_by(SecretLease.issued_at)
        )
    )


def _count(live: list[str]) -> str:
    return "1 live lease" if len(live) == 1 else f"{len(live)} live leases"


def _database_of(conninfo: str | None) -> tuple[str, ...] | None:
    """Which database a connection reaches: host(s), port(s), database name; not who logs in
    (user, password) nor how (sslmode, timeouts)."""
    if conninfo is None:
        return None
    try:
        parts = conninfo_to_dict(conninfo)
    except psycopg.Error:
        return (conninfo,)
    user = str(parts.get("user") or "")
    return (
        str(parts.get("host") or ""),
        str(parts.get("hostaddr") or ""),
        str(parts.get("port") or "5432"),
        str(parts.get("dbname") or user),
    )


def _refuse_moving_live_leases(
    engine: DynamicEngine, connection_url: str | None, *, ctx: SecretsContext, session: Session
) -> None:
    """A re-mount may change grants and TTLs (they apply to new credentials) and how the
    admin logs in (a rotated admin password), but not the database while leases live: their
    roles are in the current one, and renewing, revoking and the reaper would look for them
    in the new one (as unmounting, it is a 409). The same database again (by its own URL, or
    the server's) is an idempotent re-mount."""
    try:
        current: str | None = engine_conninfo(engine, ctx=ctx, session=session)
    except ConflictError:
        current = None  # no own connection and QM_SECRETS_POSTGRES_URL unset now
    server = ctx.settings.secrets_postgres_url
    if connection_url is not None:
        wanted: str | None = validate_connection_url(connection_url)
    elif server is not None:
        wanted = validate_connection_url(server.get_secret_value())
    else:
        wanted = None
    if _database_of(wanted) == _database_of(current):
        return
    live = _live_leases(engine, session=session)
    if live:
        raise ConflictError(
            f"engine {engine.path!r} has {_count(live)} (e.g. {live[0]}) whose roles are in its "
            "current database: a connection_url to another database (host, port or database "
            "name) would leave them unreachable to renew and revoke; revoke them first "
            f"(qm lease revoke-prefix {engine.path}), or mount the new database at another path",
            field="connection_url",
        )


def find_engine(tenant_id: str, path: str, *, session: Session) -> DynamicEngine | None:
    return session.scalar(
        select(DynamicEngine).where(
            DynamicEngine.tenant_id == tenant_id, DynamicEngine.path == path
        )
    )


def get_engine(requester: Requester, raw_path: str, *, session: Session) -> EngineInfo:
    target = parse_path(raw_path)
    authorize(requester, Action.CONFIGURE, target, session=session)
    engine = find_engine(requester.tenant_id, target.path, session=session)
    if engine is None:
        raise NotFoundError(f"no engine is mounted at {target.path!r}", field="path")
    return _info(engine)


def delete_engine(requester: Requester, raw_path: str, *, session: Session) -> None:
    """Unmount the engine at the path; NotFoundError (as get_engine) when none is mounted
    there, ConflictError while it has live leases."""
    target = parse_path(raw_path)
    authorize(requester, Action.CONFIGURE, target, session=session)
    lock_tenant_chain(requester.tenant_id, session=session)
    engine = find_engine(requester.tenant_id, target.path, session=session)
    if engine is None:
        raise NotFoundError(f"no engine is mounted at {target.path!r}", field="path")
    live = _live_leases(engine, session=session)
    if live:
        raise ConflictError(
            f"engine {target.path!r} still has {_count(live)} (e.g. {live[0]}): "
            f"revoke them first (qm lease revoke-prefix {target.path})"
        )
    session.delete(engine)
    append_audit(
        requester.tenant_id,
        action="configure",
        outcome="ok",
        actor=requester.actor,
        path=target.path,
        detail={"engine": "postgres", "deleted": True},
        session=session,
    )
    session.commit()


def engine_conninfo(engine: DynamicEngine, *, ctx: SecretsContext, session: Session) -> str:
    if engine.sealed_connection is not None:
        data_key = ctx.data_keys.data_key(engine.tenant_id, session=session)
        if data_key is None:
            raise ConflictError(f"tenant {engine.tenant_id!r} has no data key")
        plain = open_sealed(
            data_key,
            engine.sealed_connection,
            record_aad(engine.tenant_id, _CONNECTION, engine.path),
        )
        return plain.decode()
    if ctx.settings.secrets_postgres_url is None:
        raise ConflictError(
            f"engine {engine.path!r} has no connection_url and QM_SECRETS_POSTGRES_URL is unset"
        )
    return validate_connection_url(ctx.settings.secrets_postgres_url.get_secret_value())


@dataclass(frozen=True, slots=True)
class RoleTarget:
    """What dropping a dynamic lease's role needs, read before any lock is taken, so the call
    to the target database never runs inside a control-plane transaction."""

    lease_id: str
    role: str
    conninfo: str | None
    error: str | None = None  # why the role cannot be reached (engine gone, no connection)


def role_targets(
    leases: list[SecretLease], *, ctx: SecretsContext, session: Session
) -> list[RoleTarget]:
    targets: list[RoleTarget] = []
    for lease in leases:
        if lease.kind != LeaseKind.POSTGRES.value or lease.role_name is None:
            continue
        engine = session.get(DynamicEngine, lease.engine_id) if lease.engine_id else None
        if engine is None:
            error = f"engine of lease {lease.id} is gone; drop role {lease.role_name} by hand"
            targets.append(RoleTarget(lease.id, lease.role_name, None, error))
            continue
        try:
            conninfo = engine_conninfo(engine, ctx=ctx, session=session)
        except ConflictError as exc:
            targets.append(RoleTarget(lease.id, lease.role_name, None, exc.message))
            continue
        targets.append(RoleTarget(lease.id, lease.role_name, conninfo))
    return targets


def drop_roles(targets: list[RoleTarget], *, ctx: SecretsContext) -> dict[str, str | None]:
    """Revoke each target's role: disable its login (committed first), terminate its sessions,
    drop it. Lease id -> None when the role is gone (dropped now or already), else the error to
    retry on, which is logged at WARNING with the role. Call it outside transactions."""
    outcome: dict[str, str | None] = {}
    for target in targets:
        if target.conninfo is None:
            error = target.error or "no connection to the role's database"
        else:
            try:
                revoke_role(ctx.postgres, target.conninfo, role=target.role)
            except EngineError as exc:
                error = str(exc)
            else:
                outcome[target.lease_id] = None
                continue
        logger.warning(
            "dynamic role %s of lease %s: cleanup failed, the reaper retries: %s",
            target.role,
            target.lease_id,
            error,
        )
        outcome[target.lease_id] = error[:300]
    return outcome
