"""Cost-anomaly route: a backfill scan of past hours (the background detector scores new
usage as it lands; this re-scores a period, e.g. a month loaded before the detector ran)."""

from __future__ import annotations

from datetime import timedelta

from fastapi import APIRouter
from pydantic import BaseModel, Field

from quartermaster.api.deps import AdminCaller, RuntimeDep, SessionDep
from quartermaster.billing.sources import pipeline_catch_up
from quartermaster.domain.timeutil import Period, RequestMoment, ensure_utc, utc_now
from quartermaster.errors import InvalidInputError
from quartermaster.guardrails.anomaly_scan import scan_period

MAX_SCAN = timedelta(days=62)

router = APIRouter(tags=["guardrails"])


class ScanIn(BaseModel):
    since: RequestMoment = Field(description="First hour to score.")
    until: RequestMoment | None = Field(default=None, description="End of the scan; default now.")


class ScanOut(BaseModel):
    hours: int
    alerts: list[str]


@router.post(
    "/v1/alerts/scan",
    response_model=ScanOut,
    summary="Score past hours for cost anomalies (after the pipeline catches up)",
)
def scan_alerts(
    body: ScanIn, caller: AdminCaller, runtime: RuntimeDep, session: SessionDep
) -> ScanOut:
    until = ensure_utc(body.until) if body.until is not None else utc_now()
    since = ensure_utc(body.since)
    if since >= until:
        raise InvalidInputError("since must be before until", field="since")
    if until - since > MAX_SCAN:
        raise InvalidInputError(
            f"a scan covers at most {MAX_SCAN.days} days: split it", field="until"
        )
    pipeline_catch_up(runtime)()
    result = scan_period(
        caller.tenant_id, Period(since, until), store=runtime.usage_store, session=session
    )
    return ScanOut(hours=result.hours, alerts=result.alerts)
