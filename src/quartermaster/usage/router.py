"""Usage routes: meters, environment overrides, usage quantities, and the pipeline (status
and replay: admin only, as they are the server's pipeline; accounting: admin and finance, the
tenant's events accounted for, billing data as /v1/reconciliation is)."""

from __future__ import annotations

import functools
from datetime import datetime, timedelta
from typing import Annotated

from fastapi import APIRouter, Query, Response
from starlette.concurrency import run_in_threadpool

from quartermaster.api.deps import (
    AdminCaller,
    BillingReader,
    Reader,
    ReadSessionDep,
    RuntimeDep,
    SessionDep,
)
from quartermaster.api.params import one_of
from quartermaster.api.responses import error_responses
from quartermaster.domain.timeutil import (
    Period,
    RequestMoment,
    moment_text,
    require_offset,
    utc_now,
    whole_hours,
)
from quartermaster.errors import InvalidInputError
from quartermaster.usage import service
from quartermaster.usage.accounting import pipeline_accounting
from quartermaster.usage.pipeline import MAIN_STREAM, pipeline_worker, run_pipeline_until_drained
from quartermaster.usage.schemas import (
    AccountingHourOut,
    AccountingOut,
    FailedEventOut,
    LatencyOut,
    MeterCreate,
    MeterOut,
    OverrideOut,
    OverrideSet,
    PipelineStatusOut,
    ReplayOut,
    StreamOut,
    UsageGroupOut,
    UsageMeterOut,
    UsageOut,
    UsageRowOut,
    WorkerOut,
)
from quartermaster.usage.store import UsageFilter

router = APIRouter(prefix="/v1", tags=["usage"])
MAX_QUERY_DAYS = 400
FAILED_SHOWN = 10  # set-aside events the pipeline status lists


def _period(start: datetime, end: datetime) -> Period:
    start, end = require_offset(start, "start") or start, require_offset(end, "end") or end
    if end <= start:
        raise InvalidInputError(f"end {moment_text(end)} is not after start", field="end")
    if end - start > timedelta(days=MAX_QUERY_DAYS):
        raise InvalidInputError(f"at most {MAX_QUERY_DAYS} days per request", field="start")
    return Period(start, end)


# --- meters ------------------------------------------------------------------------------------


@router.get("/meters", summary="The tenant's meters", responses=error_responses())
def list_meters(caller: Reader, session: ReadSessionDep) -> list[MeterOut]:
    views = service.list_meters(caller.tenant_id, session=session)
    return [MeterOut.of(v.definition, built_in=v.built_in) for v in views]


@router.post(
    "/meters", status_code=201, summary="Create a meter", responses=error_responses(409, 422)
)
def create_meter(body: MeterCreate, caller: AdminCaller, session: SessionDep) -> MeterOut:
    return MeterOut.of(service.create_meter(caller, body.definition(), session=session))


@router.post(
    "/meters/install-defaults",
    summary="Create the default meters the tenant does not have",
    responses=error_responses(),
)
def install_default_meters(caller: AdminCaller, session: SessionDep) -> list[MeterOut]:
    return [MeterOut.of(m) for m in service.install_default_meters(caller, session=session)]


# --- environment overrides ---------------------------------------------------------------


@router.get(
    "/environment-overrides",
    summary="Environments whose unclaimed usage goes to a cost center",
    responses=error_responses(),
)
def list_overrides(caller: Reader, session: ReadSessionDep) -> list[OverrideOut]:
    views = service.list_environment_overrides(caller.tenant_id, session=session)
    return [
        OverrideOut(environment=v.environment, cost_center=v.cost_center, created_at=v.created_at)
        for v in views
    ]


@router.put(
    "/environment-overrides/{environment}",
    status_code=201,
    summary="Send an environment's unclaimed usage to a cost center",
    description="201 when the environment had no override. The same cost center again "
    "answers 200 and changes nothing; another cost center replaces the override (200): it "
    "counts from now on, usage already rated stays where it went.",
    responses={
        200: {
            "model": OverrideOut,
            "description": "The override was already this one, or was replaced",
        },
        **error_responses(404, 409, 422),  # 409: changed concurrently by another request
    },
)
def set_override(
    environment: str,
    body: OverrideSet,
    caller: AdminCaller,
    session: SessionDep,
    response: Response,
) -> OverrideOut:
    view, change = service.set_environment_override(
        caller, environment, body.cost_center, session=session
    )
    if change is not service.OverrideChange.CREATED:
        response.status_code = 200
    return OverrideOut(
        environment=view.environment, cost_center=view.cost_center, created_at=view.created_at
    )


@router.delete(
    "/environment-overrides/{environment}",
    status_code=204,
    summary="Remove an environment override",
    responses=error_responses(404),
)
def delete_override(environment: str, caller: AdminCaller, session: SessionDep) -> None:
    service.delete_environment_override(caller, environment, session=session)


# --- usage -------------------------------------------------------------------------------------


@router.get(
    "/usage",
    summary="Metered quantities in a period, filtered and summed per cost center, team, app "
    "or meter",
    responses=error_responses(422),
)
def get_usage(
    caller: BillingReader,
    runtime: RuntimeDep,
    session: ReadSessionDep,
    start: Annotated[
        RequestMoment, Query(description="Period start (inclusive), with a UTC offset.")
    ],
    end: Annotated[RequestMoment, Query(description="Period end (exclusive), with a UTC offset.")],
    as_of: Annotated[
        RequestMoment | None, Query(description="Answer as the store stood at this time.")
    ] = None,
    by: Annotated[
        str | None,
        one_of(service.USAGE_LEVELS),
        Query(
            description="Sum quantities per cost center, team, app or meter (each group "
            "keeps its meter) into `groups`; without it, `rows` per cost center, team, app "
            "and meter."
        ),
    ] = None,
    cost_center: Annotated[
        list[str] | None,
        Query(description="Only these cost centers (slugs; repeatable or comma-separated)."),
    ] = None,
    team: Annotated[
        list[str] | None,
        Query(description="Only these teams (slugs; repeatable or comma-separated)."),
    ] = None,
    app: Annotated[
        list[str] | None,
        Query(description="Only these apps (app ids; repeatable or comma-separated)."),
    ] = None,
    meter: Annotated[
        list[str] | None,
        Query(description="Only these meters (names; repeatable or comma-separated)."),
    ] = None,
    top: Annotated[
        int | None,
        Query(
            description="Keep the N largest groups (or rows) of each meter; `meters` says "
            "how many were left out and their share. Default: all."
        ),
    ] = None,
) -> UsageOut:
    period = _period(start, end)
    filters = UsageFilter(
        cost_centers=service.filter_values(cost_center, "cost_center"),
        teams=service.filter_values(team, "team"),
        apps=service.filter_values(app, "app"),
        meters=service.filter_values(meter, "meter"),
    )
    view = service.usage_view(
        caller.tenant_id,
        period,
        store=runtime.usage_store,
        by=by,
        filters=filters,
        top=top,
        as_of=require_offset(as_of, "as_of"),
        session=session,
    )
    meters = [UsageMeterOut.model_validate(m, from_attributes=True) for m in view.meters]
    if by is None:
        return UsageOut(
            start=period.start,
            end=period.end,
            as_of=as_of,
            rows=[UsageRowOut.model_validate(r, from_attributes=True) for r in view.rows()],
            meters=meters,
        )
    return UsageOut(
        start=period.start,
        end=period.end,
        as_of=as_of,
        rows=[],
        by=by,
        groups=[UsageGroupOut.model_validate(g, from_attributes=True) for g in view.groups],
        meters=meters,
    )


# --- pipeline ----------------------------------------------------------------------------------


@router.get("/pipeline/status", summary="Pipeline positions, lag, waiting events, latency")
def pipeline_status(
    caller: AdminCaller,
    runtime: RuntimeDep,
    since: Annotated[
        RequestMoment | None,
        Query(description="Latency over events rated since (default 1 h ago)."),
    ] = None,
) -> PipelineStatusOut:
    worker = pipeline_worker(runtime)
    store = runtime.usage_store
    head = runtime.event_log.head()
    streams = store.streams()
    main = next((s for s in streams if s.name == MAIN_STREAM), None)
    waiting, earliest = store.waiting_summary().get(caller.tenant_id, (0, None))
    failed = store.failed_summary(caller.tenant_id, latest=FAILED_SHOWN)
    since = require_offset(since, "since") or utc_now() - timedelta(hours=1)
    latency = store.latency(caller.tenant_id, since=since)
    state = worker.status()
    return PipelineStatusOut(
        log_head=head,
        streams=[
            StreamOut(
                name=s.name,
                position=s.position,
                tenant_id=s.tenant_id,
                upto=s.upto,
                lag=max((s.upto if s.upto is not None else head) - s.position, 0),
            )
            for s in streams
            if s.tenant_id in (None, caller.tenant_id)
        ],
        lag=max(head - (main.position if main else 0), 0),
        waiting=waiting,
        earliest_deadline=earliest,
        failed=failed.count,
        failed_latest=[
            FailedEventOut(
                position=f.position,
                event_id=f.event_id,
                source=f.source,
                event_type=f.event_type,
                recorded_at=f.recorded_at,
                failed_at=f.failed_at,
                reason=f.reason,
            )
            for f in failed.latest
        ],
        worker=WorkerOut(
            enabled=state.enabled,
            running=state.running,
            runs=state.runs,
            failures=state.failures,
            last_success_at=state.last_success_at,
            last_error=state.last_error if state.consecutive_failures else None,
            last_error_at=state.last_error_at,
            recovered_at=state.recovered_at,
        ),
        latency=LatencyOut(
            since=since,
            events=latency.events,
            p50_ms=latency.p50_ms,
            p99_ms=latency.p99_ms,
            max_ms=latency.max_ms,
            waited=latency.waited,
        ),
    )


@router.post(
    "/pipeline/replay",
    summary="Rebuild the tenant's usage from the event log",
    responses=error_responses(404, 409),
)
async def replay(
    caller: AdminCaller,
    runtime: RuntimeDep,
    session: ReadSessionDep,
    wait: Annotated[bool, Query(description="Answer when the rebuild has finished.")] = False,
    force: Annotated[
        bool,
        Query(
            description="Replay even though finalized billing documents cover the usage it "
            "rebuilds (they may no longer reproduce; without it such a replay is a 409)."
        ),
    ] = False,
) -> ReplayOut:
    if not force:
        await run_in_threadpool(
            service.check_replay_keeps_finalized, caller.tenant_id, session=session
        )
    worker = pipeline_worker(runtime)
    state = await run_in_threadpool(
        functools.partial(worker.replay, caller.tenant_id, requested_by=caller.principal_name)
    )
    if wait:
        await run_in_threadpool(run_pipeline_until_drained, runtime)
    return ReplayOut(
        stream=state.name, tenant_id=state.tenant_id, upto=state.upto or 0, drained=wait
    )


@router.get(
    "/pipeline/accounting",
    summary="Per ingest hour: accepted = rated + waiting (+ not yet read)",
    responses=error_responses(422),
)
def accounting(
    caller: BillingReader,
    runtime: RuntimeDep,
    session: ReadSessionDep,
    start: Annotated[
        RequestMoment | None,
        Query(description="Rounded down to a whole hour (default: 24 h before `end`)."),
    ] = None,
    end: Annotated[
        RequestMoment | None,
        Query(
            description="Rounded up to a whole hour (default: the end of this hour); the "
            "answer's `start` and `end` are the hours counted."
        ),
    ] = None,
) -> AccountingOut:
    first, last = whole_hours(start, end, now=utc_now(), default=timedelta(hours=24))
    hours = _period(first, last)
    rows = pipeline_accounting(caller.tenant_id, hours, store=runtime.usage_store, session=session)
    return AccountingOut(
        start=hours.start,
        end=hours.end,
        hours=[AccountingHourOut.model_validate(r.as_dict()) for r in rows],
        balanced=all(r.balanced for r in rows),
    )
