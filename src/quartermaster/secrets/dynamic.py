"""Issuing dynamic PostgreSQL credentials under a lease, in three steps so that no role can
outlive a crash unnoticed:

1. commit the lease as `issuing` (quota checked, role name chosen, password sealed);
2. create the role in the target database with `VALID UNTIL` the lease's expiry;
3. commit the lease as `active` with its audit record.

If the process dies between 1 and 3 the reaper finds the `issuing` lease, drops the role if it
was created, and ends the lease.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from sqlalchemy import update
from sqlalchemy.orm import Session

from quartermaster.audit.log import append_audit, lock_tenant_chain
from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import ConflictError, NotFoundError, ServiceUnavailableError
from quartermaster.secrets.access import Action, Requester
from quartermaster.secrets.context import SecretsContext
from quartermaster.secrets.engines import (
    RoleTarget,
    drop_roles,
    engine_conninfo,
    engine_grants,
    find_engine,
)
from quartermaster.secrets.envelope import record_aad, seal
from quartermaster.secrets.guard import authorize, refuse
from quartermaster.secrets.leases import LeaseInfo, issue_lease, lease_terms
from quartermaster.secrets.models import LeaseKind, LeaseState, SecretLease
from quartermaster.secrets.paths import parse_path
from quartermaster.secrets.postgres import (
    EngineError,
    EngineUnreachableError,
    create_role,
    new_password,
    new_role_name,
)
from quartermaster.storage.base import new_id

DYNAMIC_PASSWORD = "dynamic-password"


@dataclass(frozen=True, slots=True)
class DynamicCredential:
    path: str
    username: str
    password: str
    lease: LeaseInfo


def issue_postgres_credential(
    requester: Requester,
    raw_path: str,
    *,
    ttl_seconds: int | None = None,
    ctx: SecretsContext,
    session: Session,
) -> DynamicCredential:
    target = parse_path(raw_path)
    authorize(requester, Action.READ, target, session=session)
    tenant_id = requester.tenant_id
    engine = find_engine(tenant_id, target.path, session=session)
    if engine is None:
        refuse(
            requester,
            NotFoundError(f"no dynamic engine is mounted at {target.path!r}", field="path"),
            action="read",
            path=target.path,
            outcome="not_found",
            session=session,
        )
    conninfo = engine_conninfo(engine, ctx=ctx, session=session)
    grants = engine_grants(engine)
    terms = lease_terms(
        ttl_seconds, default_ttl=engine.default_ttl_seconds, max_ttl=engine.max_ttl_seconds
    )
    lease_id = new_id()
    role = new_role_name()
    password = new_password()
    data_key = ctx.data_keys.ensure(tenant_id, session=session)
    lease = issue_lease(
        requester,
        kind=LeaseKind.POSTGRES,
        path=target.path,
        version=None,
        terms=terms,
        ctx=ctx,
        session=session,
        state=LeaseState.ISSUING,
        lease_id=lease_id,
        engine_id=engine.id,
        role_name=role,
        sealed_value=seal(
            data_key, password.encode(), record_aad(tenant_id, DYNAMIC_PASSWORD, lease_id)
        ),
    )
    valid_until = lease.expires_at
    session.commit()  # step 1: the lease exists before the role does

    try:
        ctx.postgres.run(
            conninfo,
            lambda conn: create_role(
                conn, role=role, password=password, valid_until=valid_until, grants=grants
            ),
        )
    except EngineUnreachableError as exc:
        _abandon(lease, str(exc), requester=requester, session=session)
        raise ServiceUnavailableError(
            f"the database of engine {target.path!r} cannot be reached: {exc}"
        ) from None
    except EngineError as exc:
        _abandon(lease, str(exc), requester=requester, session=session)
        raise ConflictError(
            f"the database of engine {target.path!r} refused the credential: {exc}"
        ) from None

    # Step 3, only if the lease is still `issuing`: the reaper may have ended it meanwhile.
    lock_tenant_chain(tenant_id, session=session)
    activated = session.execute(
        update(SecretLease)
        .where(SecretLease.id == lease.id, SecretLease.state == LeaseState.ISSUING.value)
        .values(state=LeaseState.ACTIVE.value)
    )
    if not getattr(activated, "rowcount", 0):
        session.rollback()
        _drop_orphan(lease.id, role, conninfo, ctx=ctx, session=session)
        raise ConflictError(
            f"lease {lease.id} was ended while its credential was being created; request another"
        )
    lease = dataclasses.replace(lease, state=LeaseState.ACTIVE.value)
    append_audit(
        tenant_id,
        action="read",
        outcome="ok",
        actor=requester.actor,
        path=target.path,
        lease_id=lease.id,
        detail={
            "engine": "postgres",
            "username": role,
            "password_hmac": ctx.data_keys.fingerprint(tenant_id, password, session=session),
            "expires_at": lease.expires_at.isoformat(),
            **requester.workload_detail,
        },
        session=session,
    )
    session.commit()
    return DynamicCredential(path=target.path, username=role, password=password, lease=lease)


def _abandon(lease: LeaseInfo, error: str, *, requester: Requester, session: Session) -> None:
    """The role was not created (the transaction in the target rolled back): end the lease."""
    session.rollback()
    lock_tenant_chain(requester.tenant_id, session=session)
    session.execute(
        update(SecretLease)
        .where(SecretLease.id == lease.id, SecretLease.state != LeaseState.ENDED.value)
        .values(
            state=LeaseState.ENDED.value,
            ended_at=utc_now(),
            end_reason="issue_failed",
            sealed_value=None,
        )
    )
    append_audit(
        requester.tenant_id,
        action="read",
        outcome="error",
        actor=requester.actor,
        path=lease.path,
        lease_id=lease.id,
        detail={"engine": "postgres", "error": error[:300], **requester.workload_detail},
        session=session,
    )
    session.commit()


def _drop_orphan(
    lease_id: str, role: str, conninfo: str, *, ctx: SecretsContext, session: Session
) -> None:
    """The lease was ended (by the reaper) before its role existed: revoke the role now, and
    if that fails hand it to the reaper through the ended lease's cleanup_pending."""
    error = drop_roles([RoleTarget(lease_id, role, conninfo)], ctx=ctx).get(lease_id)
    if error is None:
        return
    session.execute(
        update(SecretLease)
        .where(SecretLease.id == lease_id)
        .values(cleanup_pending=True, cleanup_error=error)
    )
    session.commit()
