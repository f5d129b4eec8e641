"""A replay asked of one server is applied by every server sharing the database: their usage
stores (and the bills computed from them) agree after a back-dated change."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from decimal import Decimal
from pathlib import Path

import pytest

from quartermaster.config import Settings
from quartermaster.domain.timeutil import Period, utc_now
from quartermaster.runtime import Runtime, build_runtime
from quartermaster.usage.pipeline import pipeline_worker, run_pipeline_until_drained
from tests.conftest import make_settings
from tests.usage.conftest import new_platform

H = timedelta(hours=1)


@pytest.fixture
def other_server(tmp_path: Path, usage_settings: Settings) -> Iterator[Runtime]:
    """A second server of the same database: its own data dir and usage store."""
    settings = make_settings(tmp_path / "qm-b", usage_settings.database_url, pipeline_enabled=False)
    runtime = build_runtime(settings, migrate=False)
    yield runtime
    runtime.close()


def _tokens_by_team(runtime: Runtime, tenant_id: str) -> dict[str, Decimal]:
    now = utc_now()
    totals = runtime.usage_store.quantities(tenant_id, Period(now - 10 * H, now + H))
    return {t.team: t.quantity_sum for t in totals if t.meter == "tokens"}


def test_a_replay_through_one_server_is_applied_by_the_others(
    usage_runtime: Runtime, other_server: Runtime, tmp_path: Path, usage_settings: Settings
) -> None:
    now = utc_now()
    platform = new_platform(usage_runtime)
    platform.app("bot", team="ds", cost_center="research", created_at=now - 8 * H)
    platform.append(
        [
            platform.event(
                "qm.invocation.usage", {"app_id": "bot", "tokens": 7}, event_time=now - 2 * H
            )
        ]
    )
    for runtime in (usage_runtime, other_server):
        run_pipeline_until_drained(runtime)
    assert _tokens_by_team(other_server, platform.tenant_id) == {"ds": Decimal(7)}

    # back-dated: the app has belonged to team front since before its usage
    platform.move("bot", team="front", cost_center="ops", at=now - 3 * H)
    pipeline_worker(usage_runtime).replay(platform.tenant_id, requested_by="admin")
    for runtime in (usage_runtime, other_server):
        run_pipeline_until_drained(runtime)
    assert _tokens_by_team(usage_runtime, platform.tenant_id) == {"front": Decimal(7)}
    assert _tokens_by_team(other_server, platform.tenant_id) == {"front": Decimal(7)}
    # applied once: another pass of the other server replays nothing more
    applied = other_server.usage_store.replay_requests_applied()
    run_pipeline_until_drained(other_server)
    assert other_server.usage_store.replay_requests_applied() == applied
    assert [s.name for s in other_server.usage_store.streams() if s.upto is not None] == []

    # a server started later rates everything with today's metadata: nothing to replay
    late_settings = make_settings(
        tmp_path / "qm-c", usage_settings.database_url, pipeline_enabled=False
    )
    late = build_runtime(late_settings, migrate=False)
    try:
        run_pipeline_until_drained(late)
        assert late.usage_store.replay_requests_applied() == applied
        assert _tokens_by_team(late, platform.tenant_id) == {"front": Decimal(7)}
    finally:
        late.close()
