"""Billing routes: runs, adjustments, exports, preview, costs of any period and explain.

Admins create, finalize, discard and adjust; finance reads everything; a team-member reads
only its own team's lines (totals shown are its team's). The app role gets 403."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends, Path, Query, Request, Response
from fastapi.responses import JSONResponse

from quartermaster.api.deps import (
    AdminCaller,
    BillingReader,
    Reader,
    ReadSessionDep,
    RuntimeDep,
    SessionDep,
)
from quartermaster.api.responses import error_responses
from quartermaster.billing import adjustments, costs, explain, files, late, preview, service
from quartermaster.billing.calculator import BillingCalculator
from quartermaster.billing.models import BillingDocument, DocumentStatus, DocumentType, RunKind
from quartermaster.billing.schemas import (
    AdjustmentCreate,
    AdjustmentOut,
    ChargebackExportOut,
    CostAmountOut,
    CostRowOut,
    DailyOut,
    DocumentDetailOut,
    DocumentOut,
    ExplanationOut,
    FinalizedOut,
    LateUsageOut,
    LineOut,
    LinePageOut,
    MarkerOut,
    Outcome,
    PeriodCostsOut,
    PreviewOut,
    RawEventOut,
    ReproductionOut,
    RunCreate,
    RunOut,
    ShareOut,
    SummaryOut,
)
from quartermaster.billing.sources import (
    StoreCalculator,
    pipeline_catch_up,
    pipeline_progress,
    plain,
    waiting_counter,
)
from quartermaster.domain.timeutil import RequestMoment
from quartermaster.errors import InvalidInputError
from quartermaster.tenancy.models import Role
from quartermaster.tenancy.service import AuthContext

# A run or adjustment id, or a unique prefix of it (storage/ids.py): `qm bill list` shows 12
# characters.
RunId = Annotated[
    str,
    Path(
        description="A run (or adjustment) id, or a unique prefix of it of 8 characters or "
        "more; a prefix several documents share is refused with 422."
    ),
]


router = APIRouter(prefix="/v1/billing", tags=["billing"])


def _reader_one_value_each(caller: Reader, request: Request) -> AuthContext:
    """A reader whose query parameters are each given once. Every billing filter takes one
    value (docs/billing.md), and FastAPI keeps the last of a parameter given twice:
    `?team=web&team=data` answered the data team's lines only, as if web had none. Checked
    once the caller is known, so a request without a valid key is still a 401."""
    for name in request.query_params:
        values = request.query_params.getlist(name)
        if len(values) > 1:
            given = ", ".join(repr(value) for value in values[:5])
            raise InvalidInputError(
                f"query parameter {name!r} is given {len(values)} times ({given}"
                f"{', ...' if len(values) > 5 else ''}); it takes one value: ask once per value",
                field=name,
            )
    return caller


# The caller of a route with query parameters: a Reader, each parameter given once.
QueryReader = Annotated[AuthContext, Depends(_reader_one_value_each)]


def get_calculator(runtime: RuntimeDep) -> BillingCalculator:
    """Documents read the usage store after the pipeline has caught up with the log."""
    return StoreCalculator(runtime.usage_store, catch_up=pipeline_catch_up(runtime))


def get_preview_calculator(runtime: RuntimeDep) -> BillingCalculator:
    """A preview reads the store as it is, without waiting for the pipeline: its as_of is
    the point the store is complete up to (`pipeline_progress`), not now."""
    return StoreCalculator(runtime.usage_store, progress=pipeline_progress(runtime))


Calculator = Annotated[BillingCalculator, Depends(get_calculator)]
# The preview's and a period's costs' team filter.
CostsOfTeam = Annotated[
    str | None,
    Query(
        description="Only this team's costs (slug; unknown: 422); a team-member's are its "
        "own team's, another team is a 403."
    ),
]
PreviewCalculator = Annotated[BillingCalculator, Depends(get_preview_calculator)]


def _document(document: BillingDocument, caller: AuthContext) -> DocumentOut:
    out = DocumentOut.model_validate(document)
    if caller.role is Role.TEAM_MEMBER:
        return out.model_copy(update={"total": None})
    return out


def _detail(view: service.DocumentView, caller: AuthContext) -> DocumentDetailOut:
    return DocumentDetailOut(
        document=_document(view.document, caller),
        lines=[LineOut.model_validate(line) for line in view.lines],
        visible_total=view.visible_total,
        visible_line_count=view.visible_count,
        team=view.team,
        adjustments=[_document(a, caller) for a in view.adjustments],
    )


@router.post(
    "/runs",
    status_code=201,
    response_model=RunOut,
    summary="Run a billing period (a finalized period is returned unchanged)",
    responses={
        200: {"model": RunOut, "description": "The draft was recomputed, or the run is final"},
        **error_responses(404, 409, 422),
    },
)
def create_run(
    body: RunCreate,
    caller: AdminCaller,
    session: SessionDep,
    read_session: ReadSessionDep,
    calculator: Calculator,
) -> JSONResponse:
    as_of = calculator.cutoff()  # may wait for the pipeline: before the unit of work opens
    period = service.run_period(
        caller,
        start=body.period_start,
        end=body.period_end,
        month=body.month,
        session=read_session,
    )
    # Computed in the read session; only the storing holds the write session's lock.
    outcome = service.create_run(
        caller,
        period=period,
        kind=body.kind,
        price_book=body.price_book,
        calculator=calculator,
        session=session,
        read_session=read_session,
        as_of=as_of,
    )
    state = (
        Outcome.CREATED
        if outcome.created
        else Outcome.RECOMPUTED
        if outcome.recomputed
        else Outcome.UNCHANGED
    )
    body_out = RunOut(
        outcome=state,
        run=_document(outcome.document, caller),
        price_book_not_used=service.price_book_not_used(outcome, body.price_book),
    )
    return JSONResponse(
        body_out.model_dump(mode="json"), status_code=201 if outcome.created else 200
    )


@router.get(
    "/runs", summary="List billing runs (or adjustment documents)", responses=error_responses(422)
)
def list_runs(
    caller: QueryReader,
    session: ReadSessionDep,
    kind: Annotated[RunKind | None, Query(description="Only runs of this kind.")] = None,
    status: Annotated[
        DocumentStatus | None, Query(description="Only drafts, or only finalized runs.")
    ] = None,
    document_type: Annotated[
        DocumentType, Query(description="run: the bills of periods; adjustment: corrections.")
    ] = DocumentType.RUN,
) -> list[DocumentOut]:
    documents = service.list_documents(
        caller, doc_type=document_type, kind=kind, status=status, session=session
    )
    return [_document(d, caller) for d in documents]


@router.get(
    "/runs/{run_id}",
    summary="One run (or adjustment document) with its lines (?lines=false: without)",
    responses=error_responses(404, 422),
)
def get_run(
    run_id: RunId,
    caller: QueryReader,
    session: ReadSessionDep,
    lines: Annotated[
        bool,
        Query(
            description="false: leave `lines` empty (visible_total and visible_line_count "
            "still count them); page them with /runs/{run_id}/lines instead."
        ),
    ] = True,
) -> DocumentDetailOut:
    view = service.view_document(caller, run_id, session=session, with_lines=lines)
    return _detail(view, caller)


# Positions are 32-bit integers in the database.
MAX_POSITION = 2**31 - 1


@router.get(
    "/runs/{run_id}/lines",
    summary="A page of a document's lines in order (page with after=next_after)",
    responses=error_responses(404, 422),
)
def get_lines(
    run_id: RunId,
    caller: QueryReader,
    session: ReadSessionDep,
    after: Annotated[
        int | None,
        Query(
            ge=0,
            le=MAX_POSITION,
            description="Lines after this position (the previous page's next_after); "
            "default: from the first line.",
        ),
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=5000, description="Lines per page, 1-5000 (default 100).")
    ] = 100,
    cost_center: Annotated[
        str | None, Query(description="Only lines of this cost center (slug).")
    ] = None,
    team: Annotated[
        str | None,
        Query(description="Only lines of this team (slug); a team-member sees its own only."),
    ] = None,
    app: Annotated[str | None, Query(description="Only lines of this app (app id).")] = None,
) -> LinePageOut:
    page = service.line_page(
        caller,
        run_id,
        after=after,
        limit=limit,
        cost_center=cost_center,
        team=team,
        app=app,
        session=session,
    )
    return LinePageOut(
        document_id=page.document.id,
        team=page.team,
        lines=[LineOut.model_validate(line) for line in page.lines],
        next_after=page.next,
    )


def _share(share: service.Share) -> ShareOut:
    return ShareOut(
        cost_center=share.cost_center,
        team=share.team,
        app=share.app,
        amount=share.amount,
        lines=share.lines,
    )


@router.get(
    "/runs/{run_id}/summary",
    summary="A document's lines summed per cost center, team and top apps",
    responses=error_responses(404, 422),
)
def get_summary(
    run_id: RunId,
    caller: QueryReader,
    session: ReadSessionDep,
    top: Annotated[
        int, Query(ge=0, le=1000, description="How many of the largest apps, 0-1000 (default 10).")
    ] = 10,
) -> SummaryOut:
    document, team, summary = service.summarize_document(caller, run_id, top=top, session=session)
    return SummaryOut(
        document=_document(document, caller),
        team=team,
        visible_total=summary.total,
        visible_line_count=summary.lines,
        cost_centers=[_share(s) for s in summary.cost_centers],
        teams=[_share(s) for s in summary.teams],
        top_apps=[_share(s) for s in summary.top_apps],
        apps=summary.apps,
    )


@router.post(
    "/runs/{run_id}/finalize",
    summary="Finalize a draft run: it and its lines become immutable (idempotent)",
    responses=error_responses(404, 409, 422),
)
def finalize_run(
    run_id: RunId, caller: AdminCaller, session: SessionDep, runtime: RuntimeDep
) -> FinalizedOut:
    outcome = service.finalize_run(
        caller, run_id, session=session, waiting=waiting_counter(runtime.usage_store)
    )
    # Admins only: the total is never hidden here.
    return FinalizedOut.model_validate(outcome.document).model_copy(
        update={
            "outcome": "finalized" if outcome.finalized else "unchanged",
            "events_waiting": outcome.waiting.events,
            "waiting_until": outcome.waiting.until,
        }
    )


@router.delete(
    "/runs/{run_id}",
    status_code=204,
    summary="Discard a draft run (finalized runs are immutable)",
    responses=error_responses(404, 409, 422),
)
def discard_run(run_id: RunId, caller: AdminCaller, session: SessionDep) -> Response:
    service.discard_draft(caller, run_id, session=session)
    return Response(status_code=204)


@router.get(
    "/runs/{run_id}/reproduce",
    summary="Recompute a document from what was recorded by its as_of and compare (admin, finance)",
    responses=error_responses(404, 409, 422),
)
def reproduce_run(
    run_id: RunId, caller: BillingReader, session: ReadSessionDep, runtime: RuntimeDep
) -> ReproductionOut:
    # This server's usage store may not have rated what another server (or this one before
    # a restart) billed: reproduce from it only once it holds the whole log, as runs do.
    pipeline_catch_up(runtime)()
    calculator = StoreCalculator(runtime.usage_store)
    result = adjustments.reproduce_document(caller, run_id, calculator=calculator, session=session)
    return ReproductionOut(
        document_id=result.document.id,
        identical=result.identical,
        differences=result.differences,
    )


@router.get(
    "/runs/{run_id}/export",
    summary="Chargeback CSV or JSON, or FOCUS 1.2 CSV",
    response_class=Response,
    responses={
        200: {
            "description": "The file: CSV (`format=csv` or `focus`) or JSON (`format=json`)",
            "model": ChargebackExportOut,  # the JSON's schema
            "content": {"text/csv": {"schema": {"type": "string"}}, "application/json": {}},
            "headers": {
                "Content-Disposition": {
                    "description": 'attachment; filename="<kind>-<YYYYMMDD>-<id>.csv": the '
                    "document's kind, first day and id; `.json` for JSON, `-focus.csv` for "
                    "FOCUS",
                    "schema": {"type": "string"},
                }
            },
        },
        **error_responses(404, 422),
    },
)
def export_run(
    run_id: RunId,
    caller: QueryReader,
    session: ReadSessionDep,
    export_format: Annotated[
        files.ExportFormat, Query(alias="format", description="The file's format.")
    ] = files.ExportFormat.CSV,
    include_adjustments: Annotated[
        bool, Query(description="Add the lines of the run's adjustment documents.")
    ] = False,
) -> Response:
    exported = files.export_document(
        caller,
        run_id,
        export_format,
        include_adjustments=include_adjustments,
        session=session,
    )
    return Response(
        content=exported.content,
        media_type=exported.media_type,
        headers={"Content-Disposition": f'attachment; filename="{exported.filename}"'},
    )


@router.post(
    "/adjustments",
    status_code=201,
    response_model=AdjustmentOut,
    summary="Correct a finalized run: late usage and back-dated price changes",
    responses={
        200: {"model": AdjustmentOut, "description": "Nothing changed: no document was made"},
        **error_responses(404, 409, 422),
    },
)
def create_adjustment(
    body: AdjustmentCreate,
    caller: AdminCaller,
    session: SessionDep,
    read_session: ReadSessionDep,
    calculator: Calculator,
) -> JSONResponse:
    as_of = calculator.cutoff()
    document = adjustments.create_adjustment(
        caller,
        body.run_id,
        calculator=calculator,
        session=session,
        read_session=read_session,
        as_of=as_of,
    )
    if document is None:
        message = adjustments.nothing_changed_message(caller, body.run_id, session=read_session)
        out = AdjustmentOut(adjustment=None, message=message)
        return JSONResponse(out.model_dump(mode="json"), status_code=200)
    view = service.view_document(caller, document.id, session=read_session)
    out = AdjustmentOut(adjustment=_detail(view, caller), message=document.note or "")
    return JSONResponse(out.model_dump(mode="json"), status_code=201)


@router.get(
    "/adjustments", summary="Adjustment documents (of one run)", responses=error_responses(422)
)
def list_adjustments(
    caller: QueryReader,
    session: ReadSessionDep,
    run_id: Annotated[
        str | None, Query(description="Only the adjustments of this finalized run.")
    ] = None,
) -> list[DocumentOut]:
    documents = service.list_documents(
        caller, doc_type=DocumentType.ADJUSTMENT, corrects=run_id, session=session
    )
    return [_document(d, caller) for d in documents]


def _cost_row(row: preview.CostRow) -> CostRowOut:
    return CostRowOut(
        cost_center=row.cost_center,
        team=row.team,
        app=row.app,
        month_to_date=row.month_to_date,
        forecast=row.forecast,
    )


def _daily(days: list[explain.DailyAmount]) -> list[DailyOut]:
    return [DailyOut(start=d.start, end=d.end, value=d.value, events=d.events) for d in days]


@router.get(
    "/late",
    summary="Finalized runs with late usage or back-dated prices no document of theirs holds",
    description="Each finalized run whose period has events that became billable after its "
    "latest document (the run or its latest adjustment) was computed, or price book versions "
    "recorded since then that take effect before its period ends and move a line, newest "
    "period first, with the adjustment `POST /v1/billing/adjustments` would issue now. Admin "
    "and finance.",
    responses=error_responses(),
)
def list_late_usage(
    caller: BillingReader,
    session: ReadSessionDep,
    runtime: RuntimeDep,
    calculator: PreviewCalculator,
) -> list[LateUsageOut]:
    found = late.late_usage(
        caller.tenant_id, store=runtime.usage_store, calculator=calculator, session=session
    )
    return [
        LateUsageOut(
            run_id=item.run.id,
            kind=item.run.kind,
            period_start=item.run.period_start,
            period_end=item.run.period_end,
            timezone=item.run.timezone,
            billed_as_of=item.latest.as_of,
            latest_document_id=item.latest.id,
            late_events=item.arrivals.events,
            first_arrival=item.arrivals.first_at,
            last_arrival=item.arrivals.last_at,
            back_dated_versions=list(item.price_versions),
            adjustment_due=item.adjustment_due,
            adjustment_lines=item.adjustment_lines,
            currency=item.currency,
        )
        for item in found
    ]


@router.get(
    "/preview",
    summary="Month-to-date cost and a run-rate forecast to month end, per team and app",
    responses=error_responses(404, 422),
)
def get_preview(
    caller: QueryReader,
    session: ReadSessionDep,
    runtime: RuntimeDep,
    calculator: PreviewCalculator,
    price_book: Annotated[
        str | None, Query(description="Price book name; default: the tenant's default.")
    ] = None,
    team: CostsOfTeam = None,
) -> PreviewOut:
    result = preview.preview(
        caller,
        calculator=calculator,
        session=session,
        price_book=price_book,
        team=team,
        waiting=waiting_counter(runtime.usage_store),
    )
    return PreviewOut(
        period_start=result.period.start,
        period_end=result.period.end,
        as_of=result.as_of,
        elapsed_days=result.elapsed_days,
        total_days=result.total_days,
        currency=result.currency,
        price_book=result.price_book,
        month_to_date=result.month_to_date,
        forecast=result.forecast,
        method=result.method,
        team=result.team,
        teams=[_cost_row(r) for r in result.teams],
        apps=[_cost_row(r) for r in result.apps],
        events_waiting=result.waiting.events,
        waiting_until=result.waiting.until,
        note=result.note,
    )


@router.get(
    "/costs",
    summary="What any period cost, per team and app, priced as a run of it would be "
    "(nothing is stored)",
    responses=error_responses(403, 404, 422),
)
def get_costs(
    caller: QueryReader,
    session: ReadSessionDep,
    runtime: RuntimeDep,
    calculator: Calculator,
    period_start: Annotated[
        RequestMoment | None,
        Query(description="Period start (inclusive), with a UTC offset; with period_end."),
    ] = None,
    period_end: Annotated[
        RequestMoment | None, Query(description="Period end (exclusive), with a UTC offset.")
    ] = None,
    month: Annotated[
        str | None,
        Query(description="YYYY-MM in the tenant's time zone, instead of the bounds."),
    ] = None,
    price_book: Annotated[
        str | None, Query(description="Price book name; default: the tenant's default.")
    ] = None,
    team: CostsOfTeam = None,
) -> PeriodCostsOut:
    period = service.run_period(
        caller, start=period_start, end=period_end, month=month, session=session
    )
    result = costs.period_costs(
        caller,
        period,
        calculator=calculator,
        session=session,
        price_book=price_book,
        team=team,
        waiting=waiting_counter(runtime.usage_store),
    )
    return PeriodCostsOut(
        period_start=result.period.start,
        period_end=result.period.end,
        as_of=result.as_of,
        complete=result.complete,
        currency=result.currency,
        price_book=result.price_book,
        total=result.total,
        team=result.team,
        teams=[_cost_amount(row) for row in result.teams],
        apps=[_cost_amount(row) for row in result.apps],
        events_waiting=result.waiting.events,
        waiting_until=result.waiting.until,
        note=result.note,
    )


def _cost_amount(row: costs.CostAmount) -> CostAmountOut:
    return CostAmountOut(cost_center=row.cost_center, team=row.team, app=row.app, amount=row.amount)


@router.get(
    "/lines/{line_id:path}/explain",
    summary="A line's daily rollups, top raw events and lifecycle markers",
    description="`line_id`: a line id, a unique prefix of it (8 characters or more), or the "
    "line's audit key. A prefix shared by several lines is refused with 422.",
    responses=error_responses(404, 422),
)
def explain_line(
    line_id: str, caller: Reader, session: ReadSessionDep, runtime: RuntimeDep
) -> ExplanationOut:
    result = explain.explain_line(caller, line_id, store=runtime.usage_store, session=session)
    as_of = result.counted_as_of
    return ExplanationOut(
        line=LineOut.model_validate(result.line),
        document=_document(result.document, caller),
        subject=result.subject,
        counted_as_of=as_of,
        late_after=result.late_after,
        daily=_daily(result.daily),
        daily_total=result.daily_total,
        shared_costs=_daily(result.shared_costs),
        top_events=[
            RawEventOut(
                event_id=e.event_id,
                source=e.source,
                event_type=e.event_type,
                event_time=e.event_time,
                recorded_at=e.recorded_at,
                billable_at=e.billable_at,
                resource_id=e.resource_id,
                quantity=plain(e.quantity),
                method=e.method,
                late=e.late,
                in_document=e.billable_at < as_of,
            )
            for e in result.top_events
        ],
        markers=[
            MarkerOut(
                event_id=m.event_id,
                event_time=m.event_time,
                resource_id=m.resource_id,
                action=m.action,
                replicas=m.replicas,
                environment=m.environment,
            )
            for m in result.markers
        ],
        notes=result.notes,
    )
