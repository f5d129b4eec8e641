"""Late usage of finalized runs as alerts: a background service of `qm serve` that, every
`late_usage_interval_seconds`, looks for finalized runs whose period received usage after
their latest document (billing.late) and raises one `late_usage` alert per run and document
(to the tenant's webhooks like any alert), naming the adjustment due. Finance learns that a
closed period moved when it moves, not at the next reproduce."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from quartermaster.background import BackgroundService, FailureLog
from quartermaster.billing.calculator import BillingCalculator
from quartermaster.billing.late import LateUsage, late_usage_of, latest_documents
from quartermaster.billing.models import BillingDocument
from quartermaster.billing.service import period_text
from quartermaster.billing.sources import StoreCalculator, pipeline_progress
from quartermaster.domain.money import plain_text
from quartermaster.domain.timeutil import HOUR, utc_now
from quartermaster.guardrails.alerts import Severity, raise_alert
from quartermaster.guardrails.common import ScopeKind
from quartermaster.runtime import Runtime
from quartermaster.usage.store import LateArrivals

logger = logging.getLogger("quartermaster.guardrails")

# Runs of periods that ended longer ago are not watched: their raw rows, from which late
# usage is counted, are long purged, and an adjustment of them is a decision, not routine.
LOOKBACK = timedelta(days=400)
LATE_USAGE_KIND = "late_usage"
# Between full passes a pass checks only the runs whose period received usage since the one
# before (`arrived_hours`), looking back this far for rows committed late in that pass; a
# full pass every FULL_PASS catches whatever slipped past (platform costs are found by when
# they became billable, not when they were written).
OVERLAP = timedelta(minutes=5)
FULL_PASS = timedelta(hours=1)


def late_usage_alert_key(found: LateUsage) -> str:
    """One alert per run and latest document: more late usage alerts again only after an
    adjustment has billed what the first alert named."""
    return f"{LATE_USAGE_KIND}:{found.run.id}:{found.latest.id}"


def late_usage_message(found: LateUsage) -> tuple[str, str]:
    """The alert's title and message. Pure."""
    run, due = found.run, found.due
    period = period_text(run.period_start, run.period_end, run.timezone)
    count = found.arrivals.events
    title = f"Late usage for the finalized {run.kind} run {period}"
    what = f"{count:,} event{'s' if count != 1 else ''} for the period {period}"
    if due is None:
        return title, f"{what} arrived after run {run.id} was billed; they change no line"
    amount = f"{plain_text(due.total)} {due.currency}"
    return title, (
        f"{what} arrived after run {run.id} was billed: an adjustment of {amount} "
        f"({due.line_count} line{'s' if due.line_count != 1 else ''}) is due; "
        f"`qm bill adjust {run.id}` issues it"
    )


class LateUsageWatch(BackgroundService):
    """Raises a `late_usage` alert for each finalized run with late usage that changes its
    bill. The adjustment due is computed once per new arrival, not every pass."""

    name = "late_usage"

    def __init__(self, runtime: Runtime, *, calculator: BillingCalculator | None = None) -> None:
        settings = runtime.settings
        super().__init__(
            interval_seconds=settings.late_usage_interval_seconds,
            enabled=settings.late_usage_enabled,
        )
        self.runtime = runtime
        # Reads the store as it stands (as a preview does): the check never waits for the
        # pipeline, and what it has not rated yet is found on a later pass.
        self.calculator = calculator or StoreCalculator(
            runtime.usage_store, progress=pipeline_progress(runtime)
        )
        # (run, latest document) -> the arrivals last looked at.
        self.seen: dict[tuple[str, str], LateArrivals] = {}
        self.watermark: datetime | None = None  # when the previous pass started
        self.last_full: datetime | None = None
        # (run, latest document) whose check fails
        self.failing: FailureLog[tuple[str, str]] = FailureLog(
            logger,
            failing="late usage of run {} not checked",
            recovered="late usage of run {} is checked again",
            name=lambda key: key[0],
        )

    def _incremental_since(self, mark: datetime) -> datetime | None:
        """Where this pass looks for new usage from, or None for a full pass (the first,
        and one every FULL_PASS)."""
        if self.watermark is None or self.last_full is None or mark - self.last_full >= FULL_PASS:
            return None
        return self.watermark - OVERLAP

    def run_once(self) -> bool:
        runtime = self.runtime
        store = runtime.usage_store
        calculator = self.calculator
        mark = utc_now()
        since = self._incremental_since(mark)
        arrived = None if since is None else store.arrived_hours(since=since)
        watched: set[tuple[str, str]] = set()
        found: list[LateUsage] = []
        with runtime.read_session_factory() as reader:
            runs = latest_documents(None, session=reader, ended_after=mark - LOOKBACK)
            for run, latest in runs:
                key = (run.id, latest.id)
                watched.add(key)
                if arrived is not None and not _landed_in(arrived, run, latest):
                    continue
                try:
                    late = late_usage_of(
                        run,
                        latest,
                        store=store,
                        calculator=calculator,
                        session=reader,
                        seen=self.seen.get(key),
                    )
                except Exception as exc:  # one run's failure, expected or not, skips only it
                    self.failing.failed(key, exc)
                    continue
                self.failing.passed(key)
                if late is not None:
                    self.seen[key] = late.arrivals
                    if late.due is not None:
                        found.append(late)
        self.seen = {key: value for key, value in self.seen.items() if key in watched}
        self.failing.keep(watched)
        self.watermark = mark
        if arrived is None:
            self.last_full = mark
        if found:
            with runtime.session_factory() as session:
                for item in found:
                    title, message = late_usage_message(item)
                    raise_alert(
                        session,
                        tenant_id=item.run.tenant_id,
                        kind=LATE_USAGE_KIND,
                        severity=Severity.WARNING,
                        dedup_key=late_usage_alert_key(item),
                        title=title,
                        message=message,
                        details=_details(item),
                    )
                session.commit()
        return False


def _landed_in(
    arrived: dict[str, dict[datetime, datetime]], run: BillingDocument, latest: BillingDocument
) -> bool:
    """Whether usage that arrived since the previous pass fell in the run's period after its
    latest document was computed."""
    return any(
        hour < run.period_end and hour + HOUR > run.period_start and billable >= latest.as_of
        for hour, billable in arrived.get(run.tenant_id, {}).items()
    )


def _details(found: LateUsage) -> dict[str, object]:
    due = found.adjustment_due
    return {
        "scope_kind": ScopeKind.TENANT.value,
        "scope": "",
        "run_id": found.run.id,
        "kind": found.run.kind,
        "period_start": found.run.period_start,
        "period_end": found.run.period_end,
        "latest_document_id": found.latest.id,
        "billed_as_of": found.latest.as_of,
        "late_events": found.arrivals.events,
        "first_arrival": found.arrivals.first_at,
        "last_arrival": found.arrivals.last_at,
        "adjustment_due": str(due) if due is not None else None,
        "adjustment_lines": found.adjustment_lines,
        "currency": found.currency,
    }
