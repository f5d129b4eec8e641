"""The audit log in the database, on SQLite and PostgreSQL: appends share the operation's
transaction, concurrent writers never fork a chain, and tampering in the table is named."""

from __future__ import annotations

import threading
import uuid

from sqlalchemy import delete, select, update

from quartermaster.audit.log import (
    append_audit,
    chain_head,
    list_records,
    verify_tenant_chain,
)
from quartermaster.audit.models import AuditRecord
from quartermaster.runtime import Runtime


def _tenant() -> str:
    return f"audit-{uuid.uuid4().hex[:10]}"


def _append(runtime: Runtime, tenant_id: str, count: int) -> None:
    for index in range(count):
        with runtime.session_factory() as session:
            append_audit(
                tenant_id,
                action="read",
                outcome="ok",
                actor="app:billing",
                path=f"apps/billing/k{index}",
                detail={"n": index},
                session=session,
            )
            session.commit()


def test_a_record_commits_or_rolls_back_with_its_operation(runtime: Runtime) -> None:
    tenant_id = _tenant()
    with runtime.session_factory() as session:
        append_audit(tenant_id, action="write", outcome="ok", actor="a", session=session)
        session.rollback()
        append_audit(tenant_id, action="write", outcome="ok", actor="b", session=session)
        session.commit()
        records = list_records(tenant_id, session=session)
        head = chain_head(tenant_id, session=session)
    assert [(s.record.seq, s.record.actor) for s in records] == [(1, "b")]
    assert head is not None
    assert (head.seq, head.hash) == (1, records[0].record.hash)


def test_concurrent_writers_never_fork_the_chain(runtime: Runtime) -> None:
    tenant_id = _tenant()
    errors: list[BaseException] = []

    def writer() -> None:
        try:
            _append(runtime, tenant_id, 15)
        except BaseException as exc:  # surfaced below
            errors.append(exc)

    threads = [threading.Thread(target=writer) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    with runtime.session_factory() as session:
        report = verify_tenant_chain(tenant_id, session=session)
        seqs = [s.record.seq for s in list_records(tenant_id, limit=1000, session=session)]
    assert report.ok, report.problems
    assert seqs == list(range(1, 61))


def _rows(runtime: Runtime, tenant_id: str) -> list[AuditRecord]:
    with runtime.session_factory() as session:
        return list(
            session.scalars(
                select(AuditRecord)
                .where(AuditRecord.tenant_id == tenant_id)
                .order_by(AuditRecord.id)
            )
        )


def _verify(runtime: Runtime, tenant_id: str) -> list[tuple[str, int]]:
    with runtime.session_factory() as session:
        report = verify_tenant_chain(tenant_id, session=session)
    return [(p.kind, p.seq) for p in report.problems]


def test_editing_a_row_is_detected(runtime: Runtime) -> None:
    tenant_id = _tenant()
    _append(runtime, tenant_id, 6)
    assert _verify(runtime, tenant_id) == []
    target = _rows(runtime, tenant_id)[2]
    with runtime.session_factory() as session:
        session.execute(
            update(AuditRecord)
            .where(AuditRecord.id == target.id)
            .values(actor="principal:someone-else")
        )
        session.commit()
    assert _verify(runtime, tenant_id) == [("edited", 3)]


def test_removing_a_row_is_detected(runtime: Runtime) -> None:
    tenant_id = _tenant()
    _append(runtime, tenant_id, 6)
    target = _rows(runtime, tenant_id)[3]
    with runtime.session_factory() as session:
        session.execute(delete(AuditRecord).where(AuditRecord.id == target.id))
        session.commit()
    assert _verify(runtime, tenant_id) == [("removed", 4)]


def test_removing_the_last_rows_is_detected(runtime: Runtime) -> None:
    tenant_id = _tenant()
    _append(runtime, tenant_id, 6)
    last_two = [r.id for r in _rows(runtime, tenant_id)[-2:]]
    with runtime.session_factory() as session:
        session.execute(delete(AuditRecord).where(AuditRecord.id.in_(last_two)))
        session.commit()
    assert _verify(runtime, tenant_id) == [("truncated", 5)]


def test_reordering_rows_is_detected(runtime: Runtime) -> None:
    tenant_id = _tenant()
    _append(runtime, tenant_id, 6)
    first, second = _rows(runtime, tenant_id)[1:3]
    columns = [
        "seq",
        "recorded_at",
        "action",
        "outcome",
        "actor",
        "path",
        "lease_id",
        "version",
        "detail",
        "prev_hash",
        "hash",
    ]
    values_first = {c: getattr(first, c) for c in columns}
    values_second = {c: getattr(second, c) for c in columns}
    with runtime.session_factory() as session:
        # Move the first row out of the way of the (tenant, seq) unique key, then swap.
        session.execute(update(AuditRecord).where(AuditRecord.id == first.id).values(seq=-1))
        session.execute(
            update(AuditRecord).where(AuditRecord.id == second.id).values(**values_first)
        )
        session.execute(
            update(AuditRecord).where(AuditRecord.id == first.id).values(**values_second)
        )
        session.commit()
    assert _verify(runtime, tenant_id) == [("reordered", 2)]
