"""Metering routes: ingest CloudEvents, read the reconciliation counters, tail the event log.

Status policy of POST /v1/events: 200 with the report when at least one event was stored or
found already stored (or the batch was empty); 422 with the same report plus an `error` when
none was; 400 malformed JSON or a body that does not fit its content type; 413 over a limit;
415 another content type. Whatever the status, the report's counts are committed.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, FastAPI, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from quartermaster.api.deps import BillingReader, Ingester, Reader, ReadSessionDep, RuntimeDep
from quartermaster.api.errors import ErrorBody
from quartermaster.api.openapi import OPERATION_SCHEMAS
from quartermaster.api.params import Int64
from quartermaster.api.responses import MEANING, RETRY_AFTER, rate_limited
from quartermaster.domain.events import DATA_MODELS, event_json_schema
from quartermaster.domain.timeutil import (
    Period,
    RequestMoment,
    moment_text,
    utc_now,
    whole_hours,
)
from quartermaster.errors import (
    InvalidInputError,
    PayloadTooLargeError,
    UnsupportedMediaTypeError,
    body_too_large,
)
from quartermaster.guardrails.gate import check_ingest
from quartermaster.metering.body import BATCH, JSON, SINGLE, parse_events
from quartermaster.metering.offload import validation_pool
from quartermaster.metering.schemas import EventsPage, IngestResponse, ReconciliationResponse
from quartermaster.metering.service import (
    IngestReport,
    IngestState,
    ValidatedBatch,
    ingest_events,
    recent_events,
    reconciliation,
    refuse_gated,
    store_validated,
)
from quartermaster.runtime import Runtime
from quartermaster.storage.unavailable import raise_if_disk_full
from quartermaster.tenancy.service import AuthContext
from quartermaster.usage.accounting import pipeline_stage_counts

MAX_RECONCILIATION_DAYS = 400
MAX_TAIL_LIMIT = 1000

router = APIRouter(tags=["metering"])
bench_router = APIRouter(include_in_schema=False)


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _request_body_doc() -> dict[str, Any]:
    """The body as OpenAPI shows it: the route reads the raw bytes (each event is validated on
    its own, docs/events.md), so the schema is given here rather than by a parameter. Each
    event type is a named schema, `CloudEvent` their union told apart by `type` (a
    discriminator) and `CloudEventBatch` an array of them, so a client generator makes a model
    of each and a list for the batch (api/openapi.py moves them to the components).

    Only `application/json` is listed: the CloudEvents types take the same bodies (the
    description says so), and a generator given three content types for one body
    (openapi-python-client) writes code that cannot send a list."""
    events: dict[str, dict[str, Any]] = {}  # by schema name: one per event type
    data: dict[str, dict[str, Any]] = {}  # the `data` of each
    mapping: dict[str, str] = {}  # event type -> its schema
    for variant in event_json_schema()["oneOf"]:
        event_type = variant["properties"]["type"]["const"]
        data_name = DATA_MODELS[event_type].__name__
        name = f"{data_name}Event"
        variant["title"] = name  # generators name the model after the title
        variant["properties"]["type"] = {"type": "string", "enum": [event_type]}
        data[data_name] = variant["properties"]["data"]
        variant["properties"]["data"] = _ref(data_name)
        events[name] = variant
        mapping[event_type] = _ref(name)["$ref"]
    schemas: dict[str, Any] = {
        **data,
        **events,
        "CloudEvent": {
            "description": "One event: its `type` says which data it carries.",
            "oneOf": [_ref(name) for name in events],
            "discriminator": {"propertyName": "type", "mapping": mapping},
        },
        "CloudEventBatch": {
            "description": "Events sent together (at most `QM_MAX_BATCH_EVENTS`).",
            "type": "array",
            "items": _ref("CloudEvent"),
        },
    }
    return {
        OPERATION_SCHEMAS: schemas,
        "requestBody": {
            "required": True,
            "description": "CloudEvents 1.0 in JSON: one event (`CloudEvent`), or an array "
            f"of them (`CloudEventBatch`), docs/events.md. Sent as `{JSON}`, or as `{SINGLE}` "
            f"(one event) or `{BATCH}` (an array). Each event is judged on its own: the "
            "valid ones are stored and the others listed in `rejected`.",
            "content": {JSON: {"schema": {"oneOf": [_ref("CloudEvent"), _ref("CloudEventBatch")]}}},
        },
    }


def ingest_state(app: FastAPI) -> IngestState:
    """The app's ingest state, created on first use (a race creates a spare, harmlessly)."""
    state: IngestState | None = getattr(app.state, "metering_ingest", None)
    if state is None:
        state = IngestState()
        app.state.metering_ingest = state
    return state


async def _read_body(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise PayloadTooLargeError(_too_large_message(int(declared), limit))
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise PayloadTooLargeError(_too_large_message(None, limit))
        chunks.append(chunk)
    return b"".join(chunks)


def _too_large_message(size: int | None, limit: int) -> str:
    advice = "split the batch (an event over the limit alone cannot be sent)"
    return f"{body_too_large(size, limit)}: {advice}"


def _ingest_body(
    body: bytes, media_type: str, caller: AuthContext, runtime: Runtime, state: IngestState
) -> Response:
    events = parse_events(body, media_type, max_events=runtime.settings.max_batch_events)
    try:
        report = ingest_events(events, caller=caller, runtime=runtime, state=state)
    except Exception as exc:
        raise_if_disk_full(exc)
        raise
    return _ingest_response(report, len(events))


def _store_batch(
    batch: ValidatedBatch, caller: AuthContext, runtime: Runtime, state: IngestState
) -> Response:
    try:
        batch = refuse_gated(batch, caller=caller, runtime=runtime)
        report = store_validated(batch, runtime=runtime, state=state)
    except Exception as exc:
        raise_if_disk_full(exc)
        raise
    return _ingest_response(report, batch.received)


def _ingest_response(report: IngestReport, received: int) -> Response:
    content: dict[str, object] = report.as_dict()
    status = 200
    if received and not (report.accepted or report.duplicates):
        status = 422
        content["error"] = {
            "code": "all_rejected",
            "message": f"none of the {received} event(s) was accepted: see `rejected`",
            "field": None,
        }
    return Response(orjson.dumps(content), status_code=status, media_type=JSON)


@router.post(
    "/v1/events",
    summary="Ingest CloudEvents (one, or a batch)",
    response_model=IngestResponse,
    responses={
        422: {"model": IngestResponse, "description": "No event of the request was accepted."},
        400: {
            "model": ErrorBody,
            "description": "Malformed JSON, or a body that does not fit its content type.",
        },
        413: {"model": ErrorBody, "description": "More events or bytes than the limits allow."},
        415: {"model": ErrorBody, "description": "Not a CloudEvents JSON content type."},
        **rate_limited(
            "The caller's tenant, team or app is throttled by a budget, or over a rate limit "
            "(nothing of the request is counted). Events of another app under a throttle or "
            "over its rate limit are rejected alone (`throttled`, `rate_limited`)."
        ),
        503: {
            "model": ErrorBody,
            "description": MEANING[503]
            + " (the Redis of shared rate limits), or a full disk under the database (the "
            "message names it; Retry-After says when to retry; nothing of the request was "
            "stored).",
            "headers": {RETRY_AFTER[0]: RETRY_AFTER[1]},
        },
    },
    openapi_extra=_request_body_doc(),
)
async def post_events(request: Request, caller: Ingester) -> Response:
    runtime: Runtime = request.app.state.runtime
    media_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media_type not in (SINGLE, BATCH, JSON):
        raise UnsupportedMediaTypeError(
            f"content type {media_type or '(none)'!r} is not accepted: use {SINGLE}, "
            f"{BATCH} or {JSON}"
        )
    # A budget throttle or rate limit of the caller's own scopes: 429 before the body. In a
    # worker thread: on a cache miss the gate reads the database, which may wait for the
    # writer. Other apps' throttles and rate limits refuse their events alone, after
    # validation (`refuse_gated`).
    await run_in_threadpool(check_ingest, runtime, caller)
    body = await _read_body(request, runtime.settings.max_body_bytes)
    state = ingest_state(request.app)
    pool = validation_pool(runtime)
    if pool is not None:  # parse and validate in a worker process (metering/offload.py)
        batch = await pool.validate(
            body, media_type, caller=caller, max_events=runtime.settings.max_batch_events
        )
        if batch is not None:
            return await run_in_threadpool(_store_batch, batch, caller, runtime, state)
    return await run_in_threadpool(_ingest_body, body, media_type, caller, runtime, state)


@router.get(
    "/v1/reconciliation",
    summary="Hourly reconciliation counters of the caller's tenant, with pipeline stages",
    response_model=ReconciliationResponse,
)
def get_reconciliation(
    caller: BillingReader,
    runtime: RuntimeDep,
    session: ReadSessionDep,
    start: Annotated[
        RequestMoment | None,
        Query(
            description="First hour, rounded down to a whole hour (default: 24 hours before `end`)."
        ),
    ] = None,
    end: Annotated[
        RequestMoment | None,
        Query(
            description="End, exclusive, rounded up to a whole hour (default: the end of this "
            "hour). The answer's `start` and `end` are the hours counted."
        ),
    ] = None,
) -> dict[str, object]:
    start, end = whole_hours(start, end, now=utc_now(), default=timedelta(hours=24))
    if end <= start:
        raise InvalidInputError(f"end {moment_text(end)} is not after start", field="end")
    if end - start > timedelta(days=MAX_RECONCILIATION_DAYS):
        raise InvalidInputError(
            f"at most {MAX_RECONCILIATION_DAYS} days per request", field="start"
        )
    hours = reconciliation(caller.tenant_id, start, end, session=session)
    # The pipeline's stages (attributed, unattributed, rated, waiting) of the same ingest
    # hours, from the usage store: accepted = rated + waiting once the pipeline caught up.
    stages = pipeline_stage_counts(runtime.usage_store, caller.tenant_id, Period(start, end))
    for hour in hours:
        hour.stages.update({k: n for k, n in stages.get(hour.hour, {}).items() if n})
    totals: dict[str, int] = {}
    for hour in hours:
        for stage, count in hour.stages.items():
            totals[stage] = totals.get(stage, 0) + count
    return {
        "start": start,
        "end": end,
        "hours": [h.as_dict() for h in hours],
        "totals": totals,
    }


@router.get(
    "/v1/events",
    summary="Recent events of the caller's tenant from the event log",
    response_model=EventsPage,
)
def get_events(
    caller: Reader,
    session: ReadSessionDep,
    after: Annotated[
        Int64 | None, Query(ge=0, description="Only events after this position (default: newest).")
    ] = None,
    limit: Annotated[
        int, Query(ge=1, le=MAX_TAIL_LIMIT, description="At most this many events (1-1000).")
    ] = 100,
) -> dict[str, object]:
    events = recent_events(caller, after=after, limit=limit, session=session)
    return {
        "events": [
            {
                "position": e.position,
                "recorded_at": e.recorded_at,
                "app_id": e.app_id,
                "resource_id": e.resource_id,
                "late": e.late,
                "event": orjson.loads(e.payload),
            }
            for e in events
        ],
        "next_after": events[-1].position if events else after,
    }


@bench_router.post("/v1/_bench/parse", status_code=202)
async def bench_parse(request: Request) -> Response:
    """The benchmark's floor: read the body and parse it, nothing else."""
    orjson.loads(await request.body())
    return Response(status_code=202)
