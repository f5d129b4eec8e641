"""The cost-anomaly detector as a background service of `qm serve`: every
`anomalies_interval_seconds` it scores the hours that received usage since its previous pass
(guardrails.anomaly_scan), so an alert follows a spike's ingestion within a pipeline pass plus
that interval, and late or backfilled usage is scored when it lands."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from quartermaster.background import BackgroundService
from quartermaster.domain.timeutil import utc_now
from quartermaster.guardrails.anomaly_scan import scan_tenant
from quartermaster.runtime import Runtime

logger = logging.getLogger("quartermaster.guardrails")


class AnomalyDetector(BackgroundService):
    """Scores the hours that received usage since the previous pass (by the store's commit
    stamp, so late and backfilled usage is scored too), at most
    `anomalies_max_hours_per_pass` per tenant per pass: hours not scored yet first, newest
    first; the rest wait for the next pass."""

    name = "anomalies"
    # Rows are stamped processed_at when their batch starts writing and become visible at its
    # commit: each pass looks back this far past its watermark so none slips between passes,
    # and an hour is scored again while usage stamped this close to its last scoring lands.
    OVERLAP = timedelta(seconds=60)

    def __init__(self, runtime: Runtime) -> None:
        settings = runtime.settings
        super().__init__(
            interval_seconds=settings.anomalies_interval_seconds,
            enabled=settings.anomalies_enabled,
        )
        self.runtime = runtime
        self.max_hours = settings.anomalies_max_hours_per_pass
        self.watermark = utc_now() - timedelta(hours=1)
        self.pending: dict[str, set[datetime]] = {}
        self.scored: dict[tuple[str, datetime], datetime] = {}  # (tenant, hour) -> pass start

    def run_once(self) -> bool:
        store = self.runtime.usage_store
        mark = utc_now()
        touched = store.touched_hours(processed_since=self.watermark - self.OVERLAP)
        self.watermark = mark
        for tenant_id, hours in touched.items():
            for hour, latest in hours.items():
                last = self.scored.get((tenant_id, hour))
                if last is None or latest >= last - self.OVERLAP:
                    self.pending.setdefault(tenant_id, set()).add(hour)
        more = False
        for tenant_id in sorted(self.pending):
            # Hours not scored yet first, newest first: a spike happening now is alerted on in
            # this pass, not after a backlog of older hours (a month loaded at once).
            ordered = sorted(
                self.pending[tenant_id],
                key=lambda h: ((tenant_id, h) in self.scored, -h.timestamp()),
            )
            batch, rest = ordered[: self.max_hours], ordered[self.max_hours :]
            with (
                self.runtime.session_factory() as session,
                self.runtime.read_session_factory() as reader,
            ):
                try:
                    scan_tenant(tenant_id, batch, store=store, session=session, reader=reader)
                except Exception:  # one tenant's failure, expected or not, skips only it
                    session.rollback()
                    logger.exception("anomaly scan of tenant %s failed", tenant_id)
            for hour in batch:
                self.scored[(tenant_id, hour)] = mark
            more = more or any((tenant_id, h) not in self.scored for h in rest)
            if rest:
                self.pending[tenant_id] = set(rest)
            else:
                del self.pending[tenant_id]
        # What was scored before the look-back is only scored again when new usage lands.
        self.scored = {k: v for k, v in self.scored.items() if v >= mark - 2 * self.OVERLAP}
        return more


def build_anomaly_detector(runtime: Runtime) -> AnomalyDetector:
    return AnomalyDetector(runtime)
