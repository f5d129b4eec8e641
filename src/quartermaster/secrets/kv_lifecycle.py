"""Changing a KV path's versions: soft-delete, undelete, destroy (the ciphertext is erased for
good) and rotate (a new version and every lease on the path revoked, in one transaction)."""

from __future__ import annotations

import secrets as random_source
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.audit.log import append_audit, lock_tenant_chain
from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import ConflictError, NotFoundError
from quartermaster.secrets.access import Action, Requester
from quartermaster.secrets.context import SecretsContext
from quartermaster.secrets.guard import authorize, require_scope
from quartermaster.secrets.kv import (
    VersionMeta,
    check_value,
    find_entry,
    store_version,
    version_meta,
)
from quartermaster.secrets.models import (
    LeaseKind,
    LeaseState,
    SecretEntry,
    SecretLease,
    SecretVersion,
)
from quartermaster.secrets.paths import SecretPath, parse_path
from quartermaster.secrets.revocation import end_lease


def _versions_for_change(
    requester: Requester,
    target: SecretPath,
    versions: Sequence[int] | None,
    *,
    action: Action,
    session: Session,
) -> tuple[SecretEntry, list[SecretVersion]]:
    authorize(requester, action, target, session=session)
    lock_tenant_chain(requester.tenant_id, session=session)
    entry = find_entry(requester.tenant_id, target.path, session=session)
    if entry is None or entry.current_version == 0:
        raise NotFoundError(f"no secret at {target.path!r}", field="path")
    wanted = sorted(set(versions)) if versions else [entry.current_version]
    rows = session.scalars(
        select(SecretVersion)
        .where(SecretVersion.entry_id == entry.id, SecretVersion.version.in_(wanted))
        .execution_options(populate_existing=True)
    ).all()
    missing = sorted(set(wanted) - {r.version for r in rows})
    if missing:
        raise NotFoundError(
            f"{target.path!r} has no version {', '.join(map(str, missing))} "
            f"(latest is {entry.current_version})",
            field="versions",
        )
    return entry, list(rows)


def delete_versions(
    requester: Requester,
    raw_path: str,
    versions: Sequence[int] | None = None,
    *,
    session: Session,
) -> list[VersionMeta]:
    """Soft-delete (default: the latest version). Reversible with undelete."""
    target = parse_path(raw_path)
    _, rows = _versions_for_change(
        requester, target, versions, action=Action.WRITE, session=session
    )
    now = utc_now()
    changed = [r for r in rows if r.deleted_at is None and r.destroyed_at is None]
    for row in changed:
        row.deleted_at = now
    append_audit(
        requester.tenant_id,
        action="delete",
        outcome="ok",
        actor=requester.actor,
        path=target.path,
        detail={"versions": [r.version for r in changed]},
        session=session,
    )
    session.commit()
    return [version_meta(r) for r in rows]


def undelete_versions(
    requester: Requester,
    raw_path: str,
    versions: Sequence[int] | None = None,
    *,
    session: Session,
) -> list[VersionMeta]:
    target = parse_path(raw_path)
    _, rows = _versions_for_change(
        requester, target, versions, action=Action.WRITE, session=session
    )
    destroyed = [r.version for r in rows if r.destroyed_at is not None]
    if destroyed:
        session.rollback()
        raise ConflictError(
            f"version {', '.join(map(str, destroyed))} of {target.path!r} was destroyed and "
            "cannot be undeleted",
            field="versions",
        )
    changed = [r for r in rows if r.deleted_at is not None]
    for row in changed:
        row.deleted_at = None
    append_audit(
        requester.tenant_id,
        action="undelete",
        outcome="ok",
        actor=requester.actor,
        path=target.path,
        detail={"versions": [r.version for r in changed]},
        session=session,
    )
    session.commit()
    return [version_meta(r) for r in rows]


def destroy_versions(
    requester: Requester,
    raw_path: str,
    versions: Sequence[int] | None = None,
    *,
    ctx: SecretsContext,
    session: Session,
) -> list[VersionMeta]:
    """Erase the ciphertext for good and end the leases on those versions (their values can no
    longer be redacted from logs, so nothing should keep using them)."""
    target = parse_path(raw_path)
    _, rows = _versions_for_change(
        requester, target, versions, action=Action.DESTROY, session=session
    )
    now = utc_now()
    for row in rows:
        if row.destroyed_at is None:
            row.ciphertext = None
            row.destroyed_at = now
            row.deleted_at = row.deleted_at or now
    _end_path_leases(
        requester,
        target.path,
        [r.version for r in rows],
        reason="destroyed",
        ctx=ctx,
        session=session,
    )
    append_audit(
        requester.tenant_id,
        action="destroy",
        outcome="ok",
        actor=requester.actor,
        path=target.path,
        detail={"versions": [r.version for r in rows]},
        session=session,
    )
    session.commit()
    return [version_meta(r) for r in rows]


def _end_path_leases(
    requester: Requester,
    path: str,
    versions: list[int] | None,
    *,
    reason: str,
    ctx: SecretsContext,
    session: Session,
) -> int:
    query = select(SecretLease).where(
        SecretLease.tenant_id == requester.tenant_id,
        SecretLease.path == path,
        SecretLease.kind == LeaseKind.KV.value,
        SecretLease.state != LeaseState.ENDED.value,
    )
    if versions is not None:
        query = query.where(SecretLease.version.in_(versions))
    leases = session.scalars(query.execution_options(populate_existing=True)).all()
    for lease in leases:
        end_lease(lease, reason=reason, actor=requester.actor, drops={}, session=session)
    return len(leases)


@dataclass(frozen=True, slots=True)
class RotateResult:
    version: VersionMeta
    revoked_leases: int
    generated: bool


def rotate_secret(
    requester: Requester,
    raw_path: str,
    value: str | None = None,
    *,
    ctx: SecretsContext,
    session: Session,
) -> RotateResult:
    """Write a new version (a fresh random value unless one is given) and revoke every live
    lease on the path, in one transaction."""
    target = parse_path(raw_path)
    generated = value is None
    new_value = value if value is not None else random_source.token_urlsafe(32)
    encoded = check_value(new_value, max_bytes=ctx.settings.secrets_max_value_bytes)
    authorize(requester, Action.WRITE, target, session=session)
    require_scope(requester, target, session=session)
    if find_entry(requester.tenant_id, target.path, session=session) is None:
        raise NotFoundError(f"no secret at {target.path!r} to rotate", field="path")
    _, row = store_version(requester, target, encoded, cas=None, ctx=ctx, session=session)
    revoked = _end_path_leases(
        requester, target.path, None, reason="rotated", ctx=ctx, session=session
    )
    append_audit(
        requester.tenant_id,
        action="rotate",
        outcome="ok",
        actor=requester.actor,
        path=target.path,
        version=row.version,
        detail={"value_hmac": row.fingerprint, "revoked_leases": revoked, "generated": generated},
        session=session,
    )
    session.commit()
    return RotateResult(version=version_meta(row), revoked_leases=revoked, generated=generated)
