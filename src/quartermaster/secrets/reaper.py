"""The lease reaper: ends expired leases (dropping dynamic roles), cleans up dynamic issues a
crash left half-done, and retries role drops that failed earlier. Runs beside the API."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import and_, or_, select

from quartermaster.audit.log import append_audit, lock_tenant_chain
from quartermaster.background import BackgroundService
from quartermaster.domain.timeutil import utc_now
from quartermaster.runtime import Runtime
from quartermaster.secrets.context import SecretsContext, build_secrets_context
from quartermaster.secrets.engines import drop_lease_role
from quartermaster.secrets.leases import end_lease
from quartermaster.secrets.models import LeaseState, SecretLease

REAPER_ACTOR = "system:reaper"
# An issue that has not completed after this long is treated as abandoned (crash, timeout).
ISSUING_GRACE = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class ReapReport:
    expired: int = 0
    abandoned: int = 0
    cleaned: int = 0
    still_pending: int = 0

    @property
    def work_done(self) -> int:
        return self.expired + self.abandoned + self.cleaned


def reap_once(ctx: SecretsContext, *, now: datetime | None = None, batch: int = 200) -> ReapReport:
    """One pass. Each tenant's leases are ended in a transaction of their own, holding that
    tenant's audit lock, so the reaper and a concurrent revoke never both end one lease."""
    moment = now or utc_now()
    with ctx.session_factory() as session:
        due = session.execute(
            select(SecretLease.tenant_id, SecretLease.id)
            .where(SecretLease.state != LeaseState.ENDED.value)
            .where(
                or_(
                    SecretLease.expires_at <= moment,
                    and_(
                        SecretLease.state == LeaseState.ISSUING.value,
                        SecretLease.issued_at <= moment - ISSUING_GRACE,
                    ),
                )
            )
            .limit(batch)
        ).all()
        pending = session.execute(
            select(SecretLease.tenant_id, SecretLease.id)
            .where(SecretLease.state == LeaseState.ENDED.value, SecretLease.cleanup_pending)
            .limit(batch)
        ).all()
    by_tenant: dict[str, list[str]] = defaultdict(list)
    for tenant_id, lease_id in due:
        by_tenant[tenant_id].append(lease_id)
    expired = abandoned = 0
    for tenant_id, lease_ids in by_tenant.items():
        with ctx.session_factory() as session:
            lock_tenant_chain(tenant_id, session=session)
            leases = session.scalars(
                select(SecretLease)
                .where(SecretLease.tenant_id == tenant_id, SecretLease.id.in_(lease_ids))
                .where(SecretLease.state != LeaseState.ENDED.value)
                .execution_options(populate_existing=True)
            ).all()
            for lease in leases:
                if lease.state == LeaseState.ISSUING.value and lease.expires_at > moment:
                    reason = "abandoned"
                    abandoned += 1
                elif lease.expires_at <= moment:
                    reason = "expired"
                    expired += 1
                else:
                    continue
                end_lease(
                    lease,
                    reason=reason,
                    actor=REAPER_ACTOR,
                    ctx=ctx,
                    session=session,
                    action="expire",
                )
            session.commit()
    cleaned = still = 0
    for tenant_id, lease_id in pending:
        with ctx.session_factory() as session:
            lock_tenant_chain(tenant_id, session=session)
            pending_lease = session.get(SecretLease, lease_id, populate_existing=True)
            if pending_lease is None or not pending_lease.cleanup_pending:
                continue
            error = drop_lease_role(pending_lease, ctx=ctx, session=session)
            if error is None:
                pending_lease.cleanup_pending = False
                pending_lease.cleanup_error = None
                append_audit(
                    tenant_id,
                    action="cleanup",
                    outcome="ok",
                    actor=REAPER_ACTOR,
                    path=pending_lease.path,
                    lease_id=pending_lease.id,
                    detail={"role_dropped": True},
                    session=session,
                )
                cleaned += 1
            else:
                pending_lease.cleanup_error = error
                still += 1
            session.commit()
    return ReapReport(expired=expired, abandoned=abandoned, cleaned=cleaned, still_pending=still)


class LeaseReaper(BackgroundService):
    name = "lease-reaper"

    def __init__(self, ctx: SecretsContext, *, interval_seconds: float, owns_context: bool) -> None:
        super().__init__(interval_seconds=interval_seconds)
        self._ctx = ctx
        self._owns_context = owns_context
        self.last_report = ReapReport()

    def run_once(self) -> bool:
        self.last_report = reap_once(self._ctx)
        # Full batches mean more may be waiting; pending cleanups alone wait for the interval.
        return self.last_report.expired + self.last_report.abandoned >= 200

    def close(self) -> None:
        if self._owns_context:
            self._ctx.close()


def build_lease_reaper(runtime: Runtime) -> LeaseReaper:
    return LeaseReaper(
        build_secrets_context(runtime),
        interval_seconds=runtime.settings.secrets_reaper_interval_seconds,
        owns_context=True,
    )
