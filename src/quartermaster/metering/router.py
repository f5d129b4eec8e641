"""Metering routes: ingest CloudEvents, read the reconciliation counters, tail the event log.

Status policy of POST /v1/events: 200 with the report when at least one event was stored or
found already stored (or the batch was empty); 422 with the same report plus an `error` when
none was; 400 malformed JSON or a body that does not fit its content type; 413 over a limit;
415 another content type. Whatever the status, the report's counts are committed.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Annotated, Any

import orjson
from fastapi import APIRouter, FastAPI, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from quartermaster.api.deps import Ingester, Reader, RuntimeDep, SessionDep
from quartermaster.api.errors import error_response
from quartermaster.domain.timeutil import Period, floor_hour, utc_now
from quartermaster.errors import InvalidInputError, PayloadTooLargeError, QMError
from quartermaster.guardrails.gate import check_ingest
from quartermaster.metering.schemas import EventsPage, IngestResponse, ReconciliationResponse
from quartermaster.metering.service import (
    IngestState,
    ingest_events,
    recent_events,
    reconciliation,
)
from quartermaster.metering.validation import json_kind
from quartermaster.runtime import Runtime
from quartermaster.tenancy.service import AuthContext
from quartermaster.usage.accounting import pipeline_stage_counts

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
JSON = "application/json"
MAX_RECONCILIATION_DAYS = 400
MAX_TAIL_LIMIT = 1000

router = APIRouter(tags=["metering"])
bench_router = APIRouter(include_in_schema=False)


class MalformedBodyError(QMError):
    """The body is not JSON, or not the shape its content type announces (HTTP 400)."""

    code = "malformed_body"


_REQUEST_BODY_DOC: dict[str, Any] = {
    "requestBody": {
        "required": True,
        "description": "CloudEvents 1.0 in JSON: one event, or an array of them (docs/events.md).",
        "content": {
            SINGLE: {"schema": {"type": "object"}},
            BATCH: {"schema": {"type": "array", "items": {"type": "object"}}},
            JSON: {"schema": {"oneOf": [{"type": "object"}, {"type": "array"}]}},
        },
    }
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
    given = f"{size:,} bytes" if size is not None else f"more than {limit:,} bytes"
    return (
        f"request body is {given}; the limit is {limit:,} bytes (QM_MAX_BODY_BYTES): "
        "split the batch"
    )


def parse_events(body: bytes, media_type: str, *, max_events: int) -> list[object]:
    """The events of a request body; raises naming what is wrong (position, shape, limit)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedBodyError(
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno}, "
            f"column {exc.colno} (byte {exc.pos})"
        ) from None
    if type(parsed) is dict and media_type != BATCH:
        return [parsed]
    if type(parsed) is list and media_type != SINGLE:
        if len(parsed) > max_events:
            raise PayloadTooLargeError(
                f"batch has {len(parsed):,} events; the limit is {max_events:,} per request "
                "(QM_MAX_BATCH_EVENTS): split the batch"
            )
        return parsed
    expected = {
        SINGLE: "one JSON object (send arrays as application/cloudevents-batch+json)",
        BATCH: "a JSON array of events (send one event as application/cloudevents+json)",
        JSON: "a JSON object (one event) or an array of events",
    }[media_type]
    raise MalformedBodyError(
        f"{media_type} body must be {expected}, got a JSON {json_kind(parsed)}"
    )


def _ingest_body(
    body: bytes, media_type: str, caller: AuthContext, runtime: Runtime, state: IngestState
) -> Response:
    events = parse_events(body, media_type, max_events=runtime.settings.max_batch_events)
    report = ingest_events(events, caller=caller, runtime=runtime, state=state)
    content: dict[str, object] = report.as_dict()
    status = 200
    if events and not (report.accepted or report.duplicates):
        status = 422
        content["error"] = {
            "code": "all_rejected",
            "message": f"none of the {len(events)} event(s) was accepted: see `rejected`",
            "field": None,
        }
    return Response(orjson.dumps(content), status_code=status, media_type=JSON)


@router.post(
    "/v1/events",
    summary="Ingest CloudEvents (one, or a batch)",
    response_model=IngestResponse,
    responses={
        422: {"model": IngestResponse, "description": "No event of the request was accepted."},
        400: {"description": "Malformed JSON, or a body that does not fit its content type."},
        413: {"description": "More events or bytes than the limits allow."},
        415: {"description": "Not a CloudEvents JSON content type."},
    },
    openapi_extra=_REQUEST_BODY_DOC,
)
async def post_events(request: Request, caller: Ingester) -> Response:
    runtime: Runtime = request.app.state.runtime
    media_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if media_type not in (SINGLE, BATCH, JSON):
        return error_response(
            415,
            "unsupported_media_type",
            f"content type {media_type or '(none)'!r} is not accepted: use {SINGLE}, "
            f"{BATCH} or {JSON}",
        )
    # A budget throttle or rate limit: 429 before the body. In a worker thread: on a cache
    # miss the gate reads the database, which may wait for the writer.
    await run_in_threadpool(check_ingest, runtime, caller)
    body = await _read_body(request, runtime.settings.max_body_bytes)
    state = ingest_state(request.app)
    return await run_in_threadpool(_ingest_body, body, media_type, caller, runtime, state)


def _aware(value: datetime | None, name: str) -> datetime | None:
    if value is not None and value.tzinfo is None:
        raise InvalidInputError(
            f"{name} {value.isoformat()} needs a UTC offset, e.g. 2026-11-01T00:00:00Z",
            field=name,
        )
    return value


@router.get(
    "/v1/reconciliation",
    summary="Hourly reconciliation counters of the caller's tenant, with pipeline stages",
    response_model=ReconciliationResponse,
)
def get_reconciliation(
    caller: Reader,
    runtime: RuntimeDep,
    session: SessionDep,
    start: Annotated[
        datetime | None, Query(description="First hour (default: 24 hours before `end`).")
    ] = None,
    end: Annotated[
        datetime | None, Query(description="End, exclusive (default: the end of this hour).")
    ] = None,
) -> dict[str, object]:
    end = _aware(end, "end") or floor_hour(utc_now()) + timedelta(hours=1)
    start = _aware(start, "start") or end - timedelta(hours=24)
    if end <= start:
        raise InvalidInputError(f"end {end.isoformat()} is not after start", field="end")
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
        "start": start.isoformat(),
        "end": end.isoformat(),
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
    session: SessionDep,
    after: Annotated[
        int | None, Query(ge=0, description="Only events after this position (default: newest).")
    ] = None,
    limit: Annotated[int, Query(ge=1, le=MAX_TAIL_LIMIT)] = 100,
) -> dict[str, object]:
    events = recent_events(caller, after=after, limit=limit, session=session)
    return {
        "events": [
            {
                "position": e.position,
                "recorded_at": e.recorded_at.isoformat(),
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
