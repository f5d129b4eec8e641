"""The versioned key/value store: write (optionally check-and-set), read under a lease, list
metadata, soft-delete, undelete, destroy and rotate. Each operation commits together with its
audit record."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import ColumnElement, or_, select
from sqlalchemy.orm import Session

from quartermaster.audit.log import append_audit, lock_tenant_chain
from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import ConflictError, InvalidInputError, NotFoundError
from quartermaster.secrets.access import Action, Requester, RequesterKind, matching_rule
from quartermaster.secrets.context import SecretsContext
from quartermaster.secrets.envelope import open_sealed, seal, value_aad
from quartermaster.secrets.guard import (
    access_rules,
    authorize,
    refuse,
    refuse_listing_without_access,
    require_scope,
    team_scope_prefixes,
)
from quartermaster.secrets.leases import (
    LeaseInfo,
    issue_lease,
    lease_terms,
)
from quartermaster.secrets.models import (
    LeaseKind,
    SecretEntry,
    SecretVersion,
)
from quartermaster.secrets.paths import SecretPath, normalize_prefix, parse_path, under_prefix
from quartermaster.tenancy.models import Role


@dataclass(frozen=True, slots=True)
class VersionMeta:
    version: int
    created_at: datetime
    created_by: str
    size_bytes: int
    deleted_at: datetime | None
    destroyed_at: datetime | None


@dataclass(frozen=True, slots=True)
class SecretMeta:
    path: str
    current_version: int
    created_at: datetime
    updated_at: datetime
    versions: list[VersionMeta]


@dataclass(frozen=True, slots=True)
class SecretValue:
    path: str
    version: int
    value: str
    lease: LeaseInfo


def version_meta(row: SecretVersion) -> VersionMeta:
    return VersionMeta(
        version=row.version,
        created_at=row.created_at,
        created_by=row.created_by,
        size_bytes=row.size_bytes,
        deleted_at=row.deleted_at,
        destroyed_at=row.destroyed_at,
    )


def find_entry(tenant_id: str, path: str, *, session: Session) -> SecretEntry | None:
    return session.scalar(
        select(SecretEntry)
        .where(SecretEntry.tenant_id == tenant_id, SecretEntry.path == path)
        .execution_options(populate_existing=True)
    )


def check_value(value: str, *, max_bytes: int) -> bytes:
    encoded = value.encode()
    if not encoded:
        raise InvalidInputError("value is empty", field="value")
    if len(encoded) > max_bytes:
        raise InvalidInputError(
            f"value is {len(encoded)} bytes; at most {max_bytes} (secrets_max_value_bytes)",
            field="value",
        )
    return encoded


def store_version(
    requester: Requester,
    target: SecretPath,
    encoded: bytes,
    *,
    cas: int | None,
    ctx: SecretsContext,
    session: Session,
) -> tuple[SecretEntry, SecretVersion]:
    lock_tenant_chain(requester.tenant_id, session=session)
    data_key = ctx.data_keys.ensure(requester.tenant_id, session=session)
    entry = find_entry(requester.tenant_id, target.path, session=session)
    current = entry.current_version if entry is not None else 0
    if cas is not None and cas != current:
        session.rollback()
        raise ConflictError(
            f"check-and-set failed for {target.path!r}: cas={cas} but the current version is "
            f"{current}",
            field="cas",
        )
    now = utc_now()
    if entry is None:
        entry = SecretEntry(
            tenant_id=requester.tenant_id,
            path=target.path,
            current_version=0,
            created_at=now,
            updated_at=now,
        )
        session.add(entry)
        session.flush()
    version = current + 1
    row = SecretVersion(
        entry_id=entry.id,
        tenant_id=requester.tenant_id,
        version=version,
        ciphertext=seal(data_key, encoded, value_aad(requester.tenant_id, target.path, version)),
        fingerprint=ctx.data_keys.fingerprint(
            requester.tenant_id, encoded.decode(), session=session
        )
        or "",
        size_bytes=len(encoded),
        created_by=requester.actor,
        created_at=now,
    )
    session.add(row)
    entry.current_version = version
    entry.updated_at = now
    session.flush()
    return entry, row


def write_secret(
    requester: Requester,
    raw_path: str,
    value: str,
    *,
    cas: int | None = None,
    ctx: SecretsContext,
    session: Session,
) -> VersionMeta:
    """Store a new version. With `cas`, only if the current version is exactly `cas`
    (0: only if the path has no version yet)."""
    target = parse_path(raw_path)
    encoded = check_value(value, max_bytes=ctx.settings.secrets_max_value_bytes)
    if cas is not None and cas < 0:
        raise InvalidInputError("cas must be 0 or a version number", field="cas")
    authorize(requester, Action.WRITE, target, session=session)
    require_scope(requester, target, session=session)
    _, row = store_version(requester, target, encoded, cas=cas, ctx=ctx, session=session)
    append_audit(
        requester.tenant_id,
        action="write",
        outcome="ok",
        actor=requester.actor,
        path=target.path,
        version=row.version,
        detail={"value_hmac": row.fingerprint, "cas": cas},
        session=session,
    )
    session.commit()
    return version_meta(row)


def read_secret(
    requester: Requester,
    raw_path: str,
    *,
    version: int | None = None,
    ttl_seconds: int | None = None,
    ctx: SecretsContext,
    session: Session,
) -> SecretValue:
    """The value of the latest (or a given) version, under a new lease."""
    target = parse_path(raw_path)
    authorize(requester, Action.READ, target, session=session)
    tenant_id = requester.tenant_id
    entry = find_entry(tenant_id, target.path, session=session)
    if entry is None or entry.current_version == 0:
        refuse(
            requester,
            NotFoundError(f"no secret at {target.path!r}", field="path"),
            action="read",
            path=target.path,
            outcome="not_found",
            session=session,
        )
    wanted = version if version is not None else entry.current_version
    row = session.scalar(
        select(SecretVersion).where(
            SecretVersion.entry_id == entry.id, SecretVersion.version == wanted
        )
    )
    problem = None
    if row is None:
        problem = (
            f"version {wanted} of {target.path!r} does not exist (latest is "
            f"{entry.current_version})"
        )
    elif row.destroyed_at is not None or row.ciphertext is None:
        problem = f"version {wanted} of {target.path!r} was destroyed"
    elif row.deleted_at is not None:
        problem = f"version {wanted} of {target.path!r} is deleted (undelete it to read it)"
    if problem is not None or row is None or row.ciphertext is None:
        refuse(
            requester,
            NotFoundError(problem or "not found", field="version"),
            action="read",
            path=target.path,
            outcome="not_found",
            session=session,
        )
    data_key = ctx.data_keys.data_key(tenant_id, session=session)
    if data_key is None:
        raise ConflictError(f"tenant {tenant_id!r} has secrets but no data key")
    plain = open_sealed(data_key, row.ciphertext, value_aad(tenant_id, target.path, wanted))
    terms = lease_terms(
        ttl_seconds,
        default_ttl=ctx.settings.secrets_lease_ttl_seconds,
        max_ttl=ctx.settings.secrets_lease_max_ttl_seconds,
    )
    lease = issue_lease(
        requester,
        kind=LeaseKind.KV,
        path=target.path,
        version=wanted,
        terms=terms,
        ctx=ctx,
        session=session,
    )
    append_audit(
        tenant_id,
        action="read",
        outcome="ok",
        actor=requester.actor,
        path=target.path,
        lease_id=lease.id,
        version=wanted,
        detail={
            "value_hmac": row.fingerprint,
            "expires_at": lease.expires_at.isoformat(),
            **requester.workload_detail,
        },
        session=session,
    )
    session.commit()
    return SecretValue(path=target.path, version=wanted, value=plain.decode(), lease=lease)


def describe_secret(requester: Requester, raw_path: str, *, session: Session) -> SecretMeta:
    """Metadata of one path and all its versions; never a value."""
    target = parse_path(raw_path)
    authorize(requester, Action.LIST, target, session=session)
    entry = find_entry(requester.tenant_id, target.path, session=session)
    if entry is None:
        raise NotFoundError(f"no secret at {target.path!r}", field="path")
    rows = session.scalars(
        select(SecretVersion)
        .where(SecretVersion.entry_id == entry.id)
        .order_by(SecretVersion.version)
    ).all()
    return SecretMeta(
        path=entry.path,
        current_version=entry.current_version,
        created_at=entry.created_at,
        updated_at=entry.updated_at,
        versions=[version_meta(r) for r in rows],
    )


def list_secrets(
    requester: Requester, *, prefix: str = "", limit: int = 1000, session: Session
) -> list[SecretMeta]:
    """Paths the requester may see under `prefix`, with version metadata."""
    prefix = normalize_prefix(prefix)
    refuse_listing_without_access(requester, what="secrets", prefix=prefix, session=session)
    query = select(SecretEntry).where(SecretEntry.tenant_id == requester.tenant_id)
    if prefix:
        query = query.where(SecretEntry.path.startswith(prefix.rstrip("/"), autoescape=True))
    if requester.role is Role.TEAM_MEMBER:
        query = query.where(or_(*_team_scopes(requester, session=session)))
    elif requester.kind is RequesterKind.WORKLOAD or requester.role is Role.APP:
        rules = access_rules(requester.tenant_id, session=session)
        visible = [
            e
            for e in session.scalars(query.order_by(SecretEntry.path).limit(limit))
            if under_prefix(e.path, prefix) and matching_rule(requester, e.path, rules)
        ]
        return _with_versions(visible, session=session)
    entries = [
        e
        for e in session.scalars(query.order_by(SecretEntry.path).limit(limit))
        if under_prefix(e.path, prefix)
    ]
    return _with_versions(entries, session=session)


def _team_scopes(requester: Requester, *, session: Session) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = [
        SecretEntry.path.startswith(s, autoescape=True)
        for s in team_scope_prefixes(requester, session=session)
    ]
    return conditions or [SecretEntry.id.is_(None)]


def _with_versions(entries: Sequence[SecretEntry], *, session: Session) -> list[SecretMeta]:
    if not entries:
        return []
    by_entry: dict[str, list[VersionMeta]] = {e.id: [] for e in entries}
    rows = session.scalars(
        select(SecretVersion)
        .where(SecretVersion.entry_id.in_(list(by_entry)))
        .order_by(SecretVersion.version)
    )
    for row in rows:
        by_entry[row.entry_id].append(version_meta(row))
    return [
        SecretMeta(
            path=e.path,
            current_version=e.current_version,
            created_at=e.created_at,
            updated_at=e.updated_at,
            versions=by_entry[e.id],
        )
        for e in entries
    ]
