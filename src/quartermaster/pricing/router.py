"""Price book routes. Admins upload versions (JSON, or YAML with Content-Type
application/yaml) and choose the tenant's default price book; admins and finance read them."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from sqlalchemy.orm import Session

from quartermaster.api.deps import AdminCaller, BillingReader, ReadSessionDep, SessionDep
from quartermaster.api.params import Int64
from quartermaster.api.responses import error_responses
from quartermaster.domain.timeutil import RequestMoment, utc_now
from quartermaster.errors import PayloadTooLargeError
from quartermaster.pricing import service
from quartermaster.pricing.loader import format_for_content_type, stored_document_data
from quartermaster.pricing.schemas import (
    DefaultPriceBookIn,
    DefaultPriceBookOut,
    PriceBookSummaryOut,
    PriceBookUploadOut,
    PriceBookVersionDetail,
    PriceBookVersionOut,
)

MAX_PRICE_BOOK_BYTES = 1024 * 1024

router = APIRouter(prefix="/v1/price-books", tags=["pricing"])

NamePath = Annotated[str, Path(description="The price book's name.", max_length=64)]
AtQuery = Annotated[
    RequestMoment | None,
    Query(description="The moment to look at (RFC 3339 with offset); default now."),
]
AsOfQuery = Annotated[
    RequestMoment | None,
    Query(description="Ignore versions recorded after this moment (reproduce a past view)."),
]


async def _document_body(request: Request) -> tuple[bytes, str | None]:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > MAX_PRICE_BOOK_BYTES:
        raise PayloadTooLargeError(f"a price book may be at most {MAX_PRICE_BOOK_BYTES} bytes")
    body = await request.body()
    if len(body) > MAX_PRICE_BOOK_BYTES:
        raise PayloadTooLargeError(f"a price book may be at most {MAX_PRICE_BOOK_BYTES} bytes")
    return body, request.headers.get("content-type")


DocumentBody = Annotated[tuple[bytes, str | None], Depends(_document_body)]

_DOCUMENT_SCHEMA: dict[str, Any] = {"type": "object", "description": "A price book document"}


@router.post(
    "",
    status_code=201,
    summary="Upload a price book version",
    description="The body is the document, JSON or YAML (Content-Type application/yaml). "
    "A version is immutable: re-sending it unchanged answers 200 with the stored version; "
    "changes are new versions. An effective_from in the past is a back-dated change. "
    "422 lists every problem at once: bad fields, broken rules between fields, and each "
    "meter, team, cost center or app the tenant does not have.",
    responses={
        200: {"model": PriceBookUploadOut, "description": "This exact version was already stored"},
        **error_responses(409, 413, 415, 422),
    },
    openapi_extra={
        "requestBody": {
            "required": True,
            "content": {
                "application/json": {"schema": _DOCUMENT_SCHEMA},
                "application/yaml": {"schema": _DOCUMENT_SCHEMA},
            },
        }
    },
)
def upload_price_book(
    body: DocumentBody, caller: AdminCaller, session: SessionDep, response: Response
) -> PriceBookUploadOut:
    raw, content_type = body
    stored = service.upload_price_book(
        caller.tenant_id,
        raw,
        format_for_content_type(content_type),
        created_by=caller.principal_name,
        session=session,
    )
    if not stored.created:
        response.status_code = 200
    history = service.load_history(caller.tenant_id, stored.row.name, session=session)
    return PriceBookUploadOut.answer(stored.row, history, created=stored.created)


@router.get("", summary="List price books", responses=error_responses(422))
def list_price_books(
    caller: BillingReader, session: ReadSessionDep, at: AtQuery = None
) -> list[PriceBookSummaryOut]:
    summaries = service.list_price_books(caller.tenant_id, at=at, session=session)
    return [PriceBookSummaryOut.build(summary) for summary in summaries]


@router.put(
    "/default",
    summary="Choose the tenant's default price book",
    description="The price book billing runs, previews, budgets, default caps and high-cost "
    "previews price with when no price book is named. A tenant's first price book becomes "
    "the default when it is loaded; later ones only when chosen here.",
    responses=error_responses(404, 422),
)
def set_default_price_book(
    body: DefaultPriceBookIn, caller: AdminCaller, session: SessionDep
) -> DefaultPriceBookOut:
    chosen = service.set_default_price_book(
        caller.tenant_id, body.name, chosen_by=caller.principal_name, session=session
    )
    return DefaultPriceBookOut.build(chosen)


@router.get(
    "/{name}/versions",
    summary="Every version of a price book",
    responses=error_responses(404),
)
def list_price_book_versions(
    name: NamePath, caller: BillingReader, session: ReadSessionDep
) -> list[PriceBookVersionOut]:
    rows = service.list_versions(caller.tenant_id, name, session=session)
    history = service.load_history(caller.tenant_id, name, session=session)
    return [PriceBookVersionOut.build(row, history) for row in rows]


def _detail(caller_tenant: str, name: str, version: int, session: Session) -> dict[str, Any]:
    row = service.get_version(caller_tenant, name, version, session=session)
    history = service.load_history(caller_tenant, name, session=session)
    out = PriceBookVersionOut.build(row, history)
    return {**out.model_dump(), "document": stored_document_data(row.document)}


@router.get(
    "/{name}/versions/{version}",
    summary="One version of a price book, with its document",
    responses=error_responses(404),
)
def get_price_book_version(
    name: NamePath,
    version: Annotated[Int64, Path(ge=1)],
    caller: BillingReader,
    session: ReadSessionDep,
) -> PriceBookVersionDetail:
    return PriceBookVersionDetail(**_detail(caller.tenant_id, name, version, session))


@router.get(
    "/{name}",
    summary="The version of a price book in force at a moment",
    responses=error_responses(404, 422),
)
def get_in_force(
    name: NamePath,
    caller: BillingReader,
    session: ReadSessionDep,
    at: AtQuery = None,
    as_of: AsOfQuery = None,
) -> PriceBookVersionDetail:
    moment: datetime | None = at
    row = service.version_in_force(
        caller.tenant_id, name, moment or utc_now(), as_of=as_of, session=session
    )
    return PriceBookVersionDetail(**_detail(caller.tenant_id, name, row.version, session))
