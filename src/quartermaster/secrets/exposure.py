"""Finding leaked values: the fingerprint key for `qm scan`, matching scan fingerprints to
stored versions, and the plaintexts of live leases that a log redactor must hide."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.audit.log import append_audit
from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import InvalidInputError, PermissionDeniedError
from quartermaster.secrets.access import Requester, RequesterKind
from quartermaster.secrets.context import SecretsContext
from quartermaster.secrets.dynamic import DYNAMIC_PASSWORD
from quartermaster.secrets.envelope import open_sealed, record_aad, value_aad
from quartermaster.secrets.guard import refuse
from quartermaster.secrets.models import (
    LeaseKind,
    LeaseState,
    SecretEntry,
    SecretLease,
    SecretVersion,
)
from quartermaster.secrets.paths import normalize_prefix, under_prefix
from quartermaster.secrets.redaction import Redactor
from quartermaster.tenancy.models import Role

MAX_FINGERPRINTS = 10_000


def _require_admin(requester: Requester, what: str, *, session: Session) -> None:
    if requester.kind is RequesterKind.SYSTEM or requester.role is Role.ADMIN:
        return
    refuse(
        requester,
        PermissionDeniedError(f"only an admin may {what}"),
        action="deny",
        detail={"operation": what},
        session=session,
    )


def fingerprint_key(requester: Requester, *, ctx: SecretsContext, session: Session) -> str | None:
    """The tenant's HMAC key (hex) so `qm scan` can fingerprint findings locally: plaintext
    findings never leave the machine that scans. None while the tenant holds no secrets."""
    _require_admin(requester, "fetch the fingerprint key", session=session)
    key = ctx.data_keys.fingerprint_key(requester.tenant_id, session=session)
    append_audit(
        requester.tenant_id,
        action="fingerprint-key",
        outcome="ok",
        actor=requester.actor,
        detail={"issued": key is not None},
        session=session,
    )
    session.commit()
    return None if key is None else key.hex()


@dataclass(frozen=True, slots=True)
class FingerprintMatch:
    fingerprint: str
    path: str
    version: int
    is_current: bool
    destroyed: bool


def match_fingerprints(
    requester: Requester, values: Sequence[str], *, session: Session
) -> list[FingerprintMatch]:
    _require_admin(requester, "match scan findings", session=session)
    wanted = sorted({v.lower() for v in values})
    if len(wanted) > MAX_FINGERPRINTS:
        raise InvalidInputError(
            f"{len(wanted)} fingerprints; at most {MAX_FINGERPRINTS} per request",
            field="fingerprints",
        )
    bad = next(
        (v for v in wanted if len(v) != 64 or not all(c in "0123456789abcdef" for c in v)), None
    )
    if bad is not None:
        raise InvalidInputError(
            f"fingerprint {bad[:80]!r} is not 64 hex characters", field="fingerprints"
        )
    matches: list[FingerprintMatch] = []
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        rows = session.execute(
            select(
                SecretVersion.fingerprint,
                SecretEntry.path,
                SecretVersion.version,
                SecretEntry.current_version,
                SecretVersion.destroyed_at,
            )
            .join(SecretEntry, SecretEntry.id == SecretVersion.entry_id)
            .where(SecretVersion.tenant_id == requester.tenant_id)
            .where(SecretVersion.fingerprint.in_(chunk))
        ).all()
        for fp, path, version, current, destroyed_at in rows:
            matches.append(
                FingerprintMatch(
                    fingerprint=fp,
                    path=path,
                    version=version,
                    is_current=version == current,
                    destroyed=destroyed_at is not None,
                )
            )
    append_audit(
        requester.tenant_id,
        action="match",
        outcome="ok",
        actor=requester.actor,
        detail={"fingerprints": len(wanted), "matched": sorted({m.path for m in matches})},
        session=session,
    )
    session.commit()
    matches.sort(key=lambda m: (m.path, m.version))
    return matches


def leased_values(
    tenant_id: str,
    *,
    prefix: str = "",
    lease_ids: Sequence[str] | None = None,
    ctx: SecretsContext,
    session: Session,
) -> list[str]:
    """Plaintexts of every live lease of the tenant (under `prefix`, or only `lease_ids`):
    what a redactor must replace. Only for in-process use (runners, the redact endpoint)."""
    prefix = normalize_prefix(prefix)
    now = utc_now()
    query = (
        select(SecretLease)
        .where(SecretLease.tenant_id == tenant_id)
        .where(SecretLease.state != LeaseState.ENDED.value, SecretLease.expires_at > now)
    )
    if lease_ids is not None:
        query = query.where(SecretLease.id.in_(list(lease_ids)))
    leases = [lease for lease in session.scalars(query) if under_prefix(lease.path, prefix)]
    data_key = ctx.data_keys.data_key(tenant_id, session=session)
    if data_key is None or not leases:
        return []
    values: set[str] = set()
    kv_wanted = {(lease.path, lease.version) for lease in leases if lease.kind == LeaseKind.KV}
    if kv_wanted:
        paths = sorted({path for path, _ in kv_wanted})
        rows = session.execute(
            select(SecretEntry.path, SecretVersion.version, SecretVersion.ciphertext)
            .join(SecretEntry, SecretEntry.id == SecretVersion.entry_id)
            .where(SecretEntry.tenant_id == tenant_id)
            .where(SecretEntry.path.in_(paths))
        ).all()
        for path, version, ciphertext in rows:
            if (path, version) in kv_wanted and ciphertext is not None:
                plain = open_sealed(data_key, ciphertext, value_aad(tenant_id, path, version))
                values.add(plain.decode())
    for lease in leases:
        if lease.kind == LeaseKind.POSTGRES and lease.sealed_value is not None:
            plain = open_sealed(
                data_key, lease.sealed_value, record_aad(tenant_id, DYNAMIC_PASSWORD, lease.id)
            )
            values.add(plain.decode())
    return sorted(values)


def redactor_for(
    requester: Requester,
    *,
    prefix: str = "",
    lease_ids: Sequence[str] | None = None,
    ctx: SecretsContext,
    session: Session,
) -> Redactor:
    """A redactor loaded with the values of the tenant's live leases (audited, admin only)."""
    _require_admin(requester, "redact streams", session=session)
    values = leased_values(
        requester.tenant_id, prefix=prefix, lease_ids=lease_ids, ctx=ctx, session=session
    )
    append_audit(
        requester.tenant_id,
        action="redact",
        outcome="ok",
        actor=requester.actor,
        detail={"prefix": prefix, "lease_ids": list(lease_ids or []), "values": len(values)},
        session=session,
    )
    session.commit()
    return Redactor(values)
