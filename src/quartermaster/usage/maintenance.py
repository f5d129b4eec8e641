"""Usage-store maintenance beside the pipeline: purge raw rows past retention (rollups stay),
then fold rollup increments."""

from __future__ import annotations

import logging
from datetime import timedelta

from quartermaster.background import BackgroundService
from quartermaster.domain.timeutil import utc_now
from quartermaster.runtime import Runtime
from quartermaster.usage.store import PurgeResult

logger = logging.getLogger("quartermaster.usage.maintenance")


def purge_expired_raw(runtime: Runtime) -> PurgeResult:
    """Drop raw usage that became billable more than `raw_retention_days` ago."""
    before = utc_now() - timedelta(days=runtime.settings.raw_retention_days)
    return runtime.usage_store.purge_raw(before=before)


class UsageMaintenance(BackgroundService):
    name = "usage-maintenance"

    def __init__(self, runtime: Runtime) -> None:
        super().__init__(
            interval_seconds=runtime.settings.usage_maintenance_interval_seconds,
            enabled=runtime.settings.pipeline_enabled,
        )
        self.runtime = runtime

    def run_once(self) -> bool:
        result = purge_expired_raw(self.runtime)
        if result.usage_rows:
            logger.info(
                "purged %d raw usage rows billable before %s",
                result.usage_rows,
                result.before.isoformat(),
            )
        self.runtime.usage_store.compact()
        return False
