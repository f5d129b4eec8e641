"""/v1/audit: the caller's tenant chain, page by page, and a server-side verification."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel

from quartermaster.api.deps import AdminCaller, ReadSessionDep
from quartermaster.api.params import Int64
from quartermaster.audit.chain import VerifyReport
from quartermaster.audit.log import chain_head, list_records, verify_tenant_chain

router = APIRouter(prefix="/v1/audit", tags=["audit"])


class AuditRecordOut(BaseModel):
    position: int
    tenant_id: str
    seq: int
    recorded_at: datetime
    action: str
    outcome: str
    actor: str
    path: str | None
    lease_id: str | None
    version: int | None
    detail: dict[str, Any]
    prev_hash: str
    hash: str


class AuditPage(BaseModel):
    records: list[AuditRecordOut]
    next_after: int | None
    head_seq: int | None
    head_hash: str | None


class ProblemOut(BaseModel):
    kind: str
    seq: int
    message: str


class VerifyOut(BaseModel):
    ok: bool
    checked: int
    last_seq: int
    last_hash: str
    problems: list[ProblemOut]

    @classmethod
    def of(cls, report: VerifyReport) -> VerifyOut:
        return cls(
            ok=report.ok,
            checked=report.checked,
            last_seq=report.last_seq,
            last_hash=report.last_hash,
            problems=[
                ProblemOut(kind=p.kind, seq=p.seq, message=p.message) for p in report.problems
            ],
        )


@router.get("/records", summary="Audit records in stored order (page with after=next_after)")
def get_records(
    caller: AdminCaller,
    session: ReadSessionDep,
    after: Annotated[
        Int64, Query(ge=0, description="Records after this position (a page's next_after).")
    ] = 0,
    limit: Annotated[int, Query(ge=1, le=5000, description="At most this many records.")] = 1000,
    action: Annotated[
        str | None, Query(description="Only records of this action (e.g. revoke).")
    ] = None,
) -> AuditPage:
    page = list_records(
        caller.tenant_id, after_position=after, limit=limit, action=action, session=session
    )
    head = chain_head(caller.tenant_id, session=session)
    return AuditPage(
        records=[
            AuditRecordOut(position=stored.position, **stored.record.to_json()) for stored in page
        ],
        next_after=page[-1].position if len(page) == limit else None,
        head_seq=None if head is None else head.seq,
        head_hash=None if head is None else head.hash,
    )


@router.get("/verify", summary="Verify the tenant's chain on the server")
def verify(caller: AdminCaller, session: ReadSessionDep) -> VerifyOut:
    return VerifyOut.of(verify_tenant_chain(caller.tenant_id, session=session))
