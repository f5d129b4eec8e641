"""The periodic job that recomputes search's behavioural signals from the usage store:
invocations and distinct users per app over the last 7 and 30 days.

Invocations of an app are the events of its busiest meter (an event counts once per meter it
carries, so the maximum over meters counts each event once); distinct users are the largest
distinct count among its meters (a meter aggregating `distinct` over the actor). An app
without usage, or a store that cannot be read, gives zeros: search still works, ranked on
text and trust."""

from __future__ import annotations

import logging
from collections import defaultdict
from datetime import datetime, timedelta
from typing import TYPE_CHECKING

from sqlalchemy import select

from quartermaster.background import BackgroundService
from quartermaster.catalog import search_index
from quartermaster.catalog.publish_models import AppSearchDoc
from quartermaster.domain.timeutil import Period, utc_now
from quartermaster.usage.store import UsageStore, UsageTotal

if TYPE_CHECKING:
    from quartermaster.runtime import Runtime

logger = logging.getLogger("quartermaster.catalog.search")
SIGNALS_INTERVAL_SECONDS = 3600.0


def per_app(totals: list[UsageTotal]) -> dict[str, tuple[int, int]]:
    """app -> (invocations, distinct users) from one period's usage totals (pure)."""
    invocations: dict[str, int] = defaultdict(int)
    users: dict[str, int] = defaultdict(int)
    for total in totals:
        if total.unattributed:
            continue
        invocations[total.app] = max(invocations[total.app], total.event_count)
        users[total.app] = max(users[total.app], total.distinct_count or 0)
    return {app: (invocations[app], users[app]) for app in invocations}


def compute_signals(
    store: UsageStore, tenant_id: str, *, now: datetime
) -> dict[str, tuple[int, int, int, int]]:
    week = per_app(store.quantities(tenant_id, Period(now - timedelta(days=7), now)))
    month = per_app(store.quantities(tenant_id, Period(now - timedelta(days=30), now)))
    empty = (0, 0)
    return {
        app: (
            week.get(app, empty)[0],
            month.get(app, empty)[0],
            week.get(app, empty)[1],
            month.get(app, empty)[1],
        )
        for app in set(week) | set(month)
    }


class SearchSignalsJob(BackgroundService):
    name = "search-signals"

    def __init__(self, runtime: Runtime, *, interval_seconds: float = SIGNALS_INTERVAL_SECONDS):
        super().__init__(
            interval_seconds=interval_seconds, enabled=runtime.settings.pipeline_enabled
        )
        self.runtime = runtime

    def run_once(self) -> bool:
        now = utc_now()
        with self.runtime.read_session_factory() as session:
            tenants = list(session.scalars(select(AppSearchDoc.tenant_id).distinct()))
        for tenant_id in tenants:
            # Read usage before the write session: on SQLite a write transaction holds the
            # database's lock, which ingestion and the pipeline must not wait for.
            signals = compute_signals(self.runtime.usage_store, tenant_id, now=now)
            with self.runtime.session_factory() as session:
                search_index.set_signals(tenant_id, signals, at=now, session=session)
        logger.info("search signals refreshed for %d tenant(s)", len(tenants))
        return False
