"""The guardrail evaluator as a background service of `qm serve`: budgets and default caps of
every tenant, previews after high-cost hours, and reservation expiry, each pass; at most
`guardrails_interval_seconds` (<= 30 s) apart."""

from __future__ import annotations

import logging

from quartermaster.background import BackgroundService, FailureLog
from quartermaster.billing.sources import StoreCalculator, pipeline_progress
from quartermaster.guardrails.evaluator import evaluate_all
from quartermaster.guardrails.gate import guardrail_gate
from quartermaster.guardrails.previews import HighCostScanner, scan_all
from quartermaster.guardrails.quotas import expire_reservations
from quartermaster.guardrails.spend import BillingSpend, SpendSource
from quartermaster.runtime import Runtime

logger = logging.getLogger("quartermaster.guardrails")


class GuardrailEvaluator(BackgroundService):
    name = "guardrails"

    def __init__(
        self,
        runtime: Runtime,
        *,
        spend: SpendSource | None = None,
        high_cost: HighCostScanner | None = None,
    ) -> None:
        settings = runtime.settings
        super().__init__(
            interval_seconds=settings.guardrails_interval_seconds,
            enabled=settings.guardrails_enabled,
        )
        self.runtime = runtime
        # The pipeline runs beside us: read the store as it stands, never drain it here.
        self.spend = spend or BillingSpend(StoreCalculator(runtime.usage_store))
        # A preview states as_of the point the store is complete up to, not now.
        self.high_cost = high_cost or HighCostScanner(
            StoreCalculator(runtime.usage_store, progress=pipeline_progress(runtime)),
            runtime.usage_store,
        )
        self._failing: FailureLog[str] = FailureLog(  # tenants whose budgets fail
            logger,
            failing="budgets of tenant {} not evaluated",
            recovered="budgets of tenant {} are evaluated again",
        )
        self._scan_failing: FailureLog[str] = FailureLog(  # tenants whose high-cost scan fails
            logger,
            failing="high-cost hours of tenant {} not scanned",
            recovered="high-cost hours of tenant {} are scanned again",
        )

    def run_once(self) -> bool:
        factory = self.runtime.session_factory
        # Pricing (about a second per tenant at a few hundred apps) reads through read-only
        # sessions: on SQLite a write session would hold the write lock all that time.
        readers = self.runtime.read_session_factory
        results = evaluate_all(
            spend=self.spend,
            session_factory=factory,
            read_session_factory=readers,
            # e.g. no price book yet: one line, logged again when the reason changes
            on_failure=self._failing.failed,
        )
        for tenant_id in results:
            self._failing.passed(tenant_id)
        if any(r.enforcements for r in results.values()):
            guardrail_gate(self.runtime).invalidate()
        scanned = scan_all(
            self.high_cost,
            session_factory=factory,
            read_session_factory=readers,
            on_failure=self._scan_failing.failed,  # e.g. a threshold set before a price book
        )
        for tenant_id in scanned:
            self._scan_failing.passed(tenant_id)
        with factory() as session, readers() as reader:
            expire_reservations(session=session, reader=reader)
        return False


def build_guardrail_evaluator(runtime: Runtime) -> GuardrailEvaluator:
    return GuardrailEvaluator(runtime)
