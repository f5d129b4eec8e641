"""Appending to and reading the audit log. Appends happen inside the caller's transaction, so
an operation and its record commit together or not at all."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Table, insert, select, text, update
from sqlalchemy.orm import Session

from quartermaster.audit.chain import (
    GENESIS_HASH,
    ChainRecord,
    ChainVerifier,
    VerifyReport,
    canonical_detail,
    compute_hash,
)
from quartermaster.audit.models import AuditHead, AuditRecord
from quartermaster.domain.timeutil import utc_now

_RECORDS = cast(Table, AuditRecord.__table__)
_HEADS = cast(Table, AuditHead.__table__)


def _lock_key(tenant_id: str) -> int:
    digest = hashlib.sha256(f"qm-audit:{tenant_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def lock_tenant_chain(tenant_id: str, *, session: Session) -> None:
    """Serialize appends to one tenant's chain until the transaction ends.

    PostgreSQL: a transaction-level advisory lock per tenant. SQLite: every transaction already
    starts with BEGIN IMMEDIATE (storage/engine.py), which holds the database's write lock."""
    if session.get_bind().dialect.name == "postgresql":
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _lock_key(tenant_id)})


@dataclass(frozen=True, slots=True)
class ChainHead:
    seq: int
    hash: str


def chain_head(tenant_id: str, *, session: Session) -> ChainHead | None:
    row = session.execute(
        select(AuditHead.seq, AuditHead.hash).where(AuditHead.tenant_id == tenant_id)
    ).first()
    return None if row is None else ChainHead(seq=int(row[0]), hash=str(row[1]))


def append_audit(
    tenant_id: str,
    *,
    action: str,
    outcome: str,
    actor: str,
    path: str | None = None,
    lease_id: str | None = None,
    version: int | None = None,
    detail: dict[str, Any] | None = None,
    session: Session,
) -> ChainRecord:
    """Append one record (flushed, not committed: the caller's commit makes both durable).

    Never put a secret value in `detail`; put its fingerprint (a keyed HMAC)."""
    lock_tenant_chain(tenant_id, session=session)
    head = chain_head(tenant_id, session=session)
    record = ChainRecord(
        tenant_id=tenant_id,
        seq=1 if head is None else head.seq + 1,
        recorded_at=utc_now(),
        action=action,
        outcome=outcome,
        actor=actor,
        path=path,
        lease_id=lease_id,
        version=version,
        detail=dict(detail or {}),
        prev_hash=GENESIS_HASH if head is None else head.hash,
        hash="",
    )
    digest = compute_hash(record, record.prev_hash)
    # Core statements: the append runs on every broker operation, so it skips the ORM's
    # unit-of-work bookkeeping.
    session.execute(
        insert(_RECORDS).values(
            tenant_id=tenant_id,
            seq=record.seq,
            recorded_at=record.recorded_at,
            action=action,
            outcome=outcome,
            actor=actor,
            path=path,
            lease_id=lease_id,
            version=version,
            detail=canonical_detail(record.detail),
            prev_hash=record.prev_hash,
            hash=digest,
        )
    )
    if head is None:
        session.execute(
            insert(_HEADS).values(
                tenant_id=tenant_id, seq=record.seq, hash=digest, updated_at=utc_now()
            )
        )
    else:
        session.execute(
            update(_HEADS)
            .where(_HEADS.c.tenant_id == tenant_id)
            .values(seq=record.seq, hash=digest, updated_at=utc_now())
        )
    return ChainRecord(**{**_fields(record), "hash": digest})


def _fields(record: ChainRecord) -> dict[str, Any]:
    return {name: getattr(record, name) for name in ChainRecord.__slots__}


def to_chain_record(row: AuditRecord) -> ChainRecord:
    try:
        detail = json.loads(row.detail)
        if not isinstance(detail, dict):
            detail = {"_unparseable": row.detail}
    except ValueError:
        detail = {"_unparseable": row.detail}  # hashes differently, so it is reported as edited
    return ChainRecord(
        tenant_id=row.tenant_id,
        seq=row.seq,
        recorded_at=row.recorded_at,
        action=row.action,
        outcome=row.outcome,
        actor=row.actor,
        path=row.path,
        lease_id=row.lease_id,
        version=row.version,
        detail=detail,
        prev_hash=row.prev_hash,
        hash=row.hash,
    )


@dataclass(frozen=True, slots=True)
class StoredRecord:
    position: int  # the row id: insertion order
    record: ChainRecord


def list_records(
    tenant_id: str,
    *,
    after_position: int = 0,
    limit: int = 500,
    action: str | None = None,
    session: Session,
) -> list[StoredRecord]:
    query = (
        select(AuditRecord)
        .where(AuditRecord.tenant_id == tenant_id, AuditRecord.id > after_position)
        .order_by(AuditRecord.id)
        .limit(limit)
    )
    if action is not None:
        query = query.where(AuditRecord.action == action)
    return [StoredRecord(row.id, to_chain_record(row)) for row in session.scalars(query)]


def iter_records(tenant_id: str, *, batch: int = 1000, session: Session) -> Iterator[ChainRecord]:
    after = 0
    while True:
        page = list_records(tenant_id, after_position=after, limit=batch, session=session)
        if not page:
            return
        for stored in page:
            yield stored.record
        after = page[-1].position


def verify_tenant_chain(tenant_id: str, *, session: Session) -> VerifyReport:
    verifier = ChainVerifier()
    for record in iter_records(tenant_id, session=session):
        verifier.feed(record)
    head = chain_head(tenant_id, session=session)
    if head is None:
        return verifier.finish()
    return verifier.finish(head_seq=head.seq, head_hash=head.hash)
