"""The lease reaper: ends expired leases and leases whose API key is revoked or expired
(dropping dynamic roles), cleans up dynamic issues a crash left half-done, and retries role
drops that failed earlier. Runs beside the API."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, and_, or_, select
from sqlalchemy.orm import Session

from quartermaster.audit.log import append_audit, lock_tenant_chain
from quartermaster.background import BackgroundService
from quartermaster.domain.timeutil import utc_now
from quartermaster.runtime import Runtime
from quartermaster.secrets.context import SecretsContext, build_secrets_context
from quartermaster.secrets.engines import drop_roles, role_targets
from quartermaster.secrets.models import LeaseState, SecretLease
from quartermaster.secrets.revocation import NOT_ATTEMPTED, end_lease
from quartermaster.tenancy.models import ApiKey

REAPER_ACTOR = "system:reaper"
# An issue that has not completed after this long is treated as abandoned (crash, timeout).
ISSUING_GRACE = timedelta(seconds=60)


@dataclass(frozen=True, slots=True)
class ReapReport:
    expired: int = 0
    abandoned: int = 0
    key_ended: int = 0  # ended with the API key behind them (revoked or expired)
    cleaned: int = 0
    still_pending: int = 0

    @property
    def work_done(self) -> int:
        return self.expired + self.abandoned + self.key_ended + self.cleaned


KEY_REASONS = frozenset({"key_revoked", "key_expired"})


def _key_gone(moment: datetime) -> ColumnElement[bool]:
    """The API key is revoked or has expired."""
    return or_(ApiKey.revoked_at.is_not(None), ApiKey.expires_at <= moment)


def _due(moment: datetime) -> ColumnElement[bool]:
    return and_(
        SecretLease.state != LeaseState.ENDED.value,
        or_(
            SecretLease.expires_at <= moment,
            and_(
                SecretLease.state == LeaseState.ISSUING.value,
                SecretLease.issued_at <= moment - ISSUING_GRACE,
            ),
            # As Vault revokes a token's leases with it: a lease ends with the key behind it.
            SecretLease.key_id.in_(select(ApiKey.id).where(_key_gone(moment))),
        ),
    )


def _gone_keys(leases: list[SecretLease], moment: datetime, *, session: Session) -> dict[str, str]:
    """Key id -> the end reason (`key_revoked`, `key_expired`) of each key behind `leases`
    that is gone."""
    ids = {lease.key_id for lease in leases if lease.key_id is not None}
    if not ids:
        return {}
    rows = session.execute(
        select(ApiKey.id, ApiKey.revoked_at).where(ApiKey.id.in_(ids), _key_gone(moment))
    )
    return {key_id: "key_revoked" if revoked else "key_expired" for key_id, revoked in rows}


def reap_once(ctx: SecretsContext, *, now: datetime | None = None, batch: int = 200) -> ReapReport:
    """One pass. Roles are dropped first, outside any transaction; then each tenant's leases
    are ended in a transaction holding that tenant's audit lock (so the reaper and a concurrent
    revoke never both end one lease)."""
    moment = now or utc_now()
    with ctx.session_factory() as session:
        due = list(session.scalars(select(SecretLease).where(_due(moment)).limit(batch)))
        pending = list(
            session.scalars(
                select(SecretLease)
                .where(SecretLease.state == LeaseState.ENDED.value, SecretLease.cleanup_pending)
                .limit(batch)
            )
        )
        targets = role_targets(due + pending, ctx=ctx, session=session)
        by_tenant: dict[str, list[str]] = defaultdict(list)
        for lease in due:
            by_tenant[lease.tenant_id].append(lease.id)
        pending_ids = [(lease.tenant_id, lease.id) for lease in pending]
    drops = drop_roles(targets, ctx=ctx) if targets else {}

    expired = abandoned = key_ended = 0
    for tenant_id, lease_ids in by_tenant.items():
        with ctx.session_factory() as session:
            lock_tenant_chain(tenant_id, session=session)
            leases = session.scalars(
                select(SecretLease)
                .where(SecretLease.tenant_id == tenant_id, SecretLease.id.in_(lease_ids))
                .where(_due(moment))
                .execution_options(populate_existing=True)
            ).all()
            gone = _gone_keys(list(leases), moment, session=session)
            for lease in leases:
                if lease.expires_at <= moment:
                    reason = "expired"
                    expired += 1
                elif lease.key_id in gone:
                    reason = gone[lease.key_id]
                    key_ended += 1
                else:
                    reason = "abandoned"
                    abandoned += 1
                end_lease(
                    lease,
                    reason=reason,
                    actor=REAPER_ACTOR,
                    drops=drops,
                    session=session,
                    # Ended with its key: revoked, as `qm lease revoke` would (audit action).
                    action="revoke" if reason in KEY_REASONS else "expire",
                )
            session.commit()

    cleaned = still = 0
    for tenant_id, lease_id in pending_ids:
        error = drops.get(lease_id, NOT_ATTEMPTED)
        with ctx.session_factory() as session:
            lock_tenant_chain(tenant_id, session=session)
            held = session.get(SecretLease, lease_id, populate_existing=True)
            if held is None or not held.cleanup_pending:
                continue
            if error is None:
                held.cleanup_pending = False
                held.cleanup_error = None
                append_audit(
                    tenant_id,
                    action="cleanup",
                    outcome="ok",
                    actor=REAPER_ACTOR,
                    path=held.path,
                    lease_id=held.id,
                    detail={"role": held.role_name, "role_dropped": True},
                    session=session,
                )
                cleaned += 1
            else:
                held.cleanup_error = error
                still += 1
            session.commit()
    return ReapReport(
        expired=expired,
        abandoned=abandoned,
        key_ended=key_ended,
        cleaned=cleaned,
        still_pending=still,
    )


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
        report = self.last_report
        return report.expired + report.abandoned + report.key_ended >= 200

    def close(self) -> None:
        if self._owns_context:
            self._ctx.close()


def build_lease_reaper(runtime: Runtime) -> LeaseReaper:
    return LeaseReaper(
        build_secrets_context(runtime),
        interval_seconds=runtime.settings.secrets_reaper_interval_seconds,
        owns_context=True,
    )
