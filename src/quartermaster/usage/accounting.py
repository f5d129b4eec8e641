"""Pipeline accounting: for each ingest hour, accepted = rated + waiting + failed (+ not yet
read). `failed`: events the pipeline set aside because rating them failed (docs/usage.md).

`accepted` comes from ingestion's reconciliation counters (written with the event-log append);
the pipeline's stages come from the usage store, where they commit with the rows they count,
so the two sides cannot drift apart by a crash between two writes."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from quartermaster.domain.timeutil import Period
from quartermaster.metering.models import ReconciliationCounter
from quartermaster.usage.store import UsageStore

ACCEPTED_STAGE = "accepted"  # ingestion's stage name (metering.service.STAGE_ACCEPTED)
PIPELINE_STAGES = ("attributed", "unattributed", "rated", "waiting", "failed")


@dataclass(frozen=True, slots=True)
class HourAccounting:
    hour: datetime
    accepted: int
    attributed: int
    unattributed: int
    rated: int
    waiting: int
    failed: int = 0

    @property
    def in_pipeline(self) -> int:
        """Accepted but not yet read by the pipeline (0 once it has caught up)."""
        return self.accepted - self.rated - self.waiting - self.failed

    @property
    def balanced(self) -> bool:
        return self.in_pipeline == 0

    def as_dict(self) -> dict[str, object]:
        return {
            "hour": self.hour.isoformat(),
            "accepted": self.accepted,
            "attributed": self.attributed,
            "unattributed": self.unattributed,
            "rated": self.rated,
            "waiting": self.waiting,
            "failed": self.failed,
            "in_pipeline": self.in_pipeline,
            "balanced": self.balanced,
        }


def pipeline_stage_counts(
    store: UsageStore, tenant_id: str, hours: Period
) -> dict[datetime, dict[str, int]]:
    """Hour -> pipeline stage -> count, to merge into the reconciliation counters' view."""
    return {
        row.hour: {
            "attributed": row.attributed,
            "unattributed": row.unattributed,
            "rated": row.rated,
            "waiting": row.waiting,
            "failed": row.failed,
        }
        for row in store.pipeline_counts(tenant_id, hours)
    }


def accepted_per_hour(tenant_id: str, hours: Period, *, session: Session) -> dict[datetime, int]:
    rows = session.execute(
        select(ReconciliationCounter.hour, func.sum(ReconciliationCounter.count))
        .where(
            ReconciliationCounter.tenant_id == tenant_id,
            ReconciliationCounter.stage == ACCEPTED_STAGE,
            ReconciliationCounter.hour >= hours.start,
            ReconciliationCounter.hour < hours.end,
        )
        .group_by(ReconciliationCounter.hour)
    )
    return {hour: int(count or 0) for hour, count in rows}


def pipeline_accounting(
    tenant_id: str, hours: Period, *, store: UsageStore, session: Session
) -> list[HourAccounting]:
    accepted = accepted_per_hour(tenant_id, hours, session=session)
    stages = pipeline_stage_counts(store, tenant_id, hours)
    result: list[HourAccounting] = []
    for hour in sorted(set(accepted) | set(stages)):
        counts = stages.get(hour, {})
        result.append(
            HourAccounting(
                hour=hour,
                accepted=accepted.get(hour, 0),
                attributed=counts.get("attributed", 0),
                unattributed=counts.get("unattributed", 0),
                rated=counts.get("rated", 0),
                waiting=counts.get("waiting", 0),
                failed=counts.get("failed", 0),
            )
        )
    return result
