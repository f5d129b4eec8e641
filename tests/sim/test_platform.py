from __future__ import annotations

import dataclasses
import re
from collections import Counter
from datetime import UTC, datetime, timedelta

import orjson
import pytest

from quartermaster.domain.events import InvocationUsage
from quartermaster.domain.timeutil import parse_timestamp
from quartermaster.sim.model import Pattern, Platform, Registration, SimConfig, activity
from quartermaster.sim.platform import build_platform
from quartermaster.tenancy.service import SLUG_PATTERN
from tests.sim.conftest import START


def test_same_seed_same_platform_and_another_seed_differs() -> None:
    config = SimConfig(start=START, hours=24, apps=80, teams=10)
    assert build_platform(config) == build_platform(config)
    other = build_platform(dataclasses.replace(config, seed=8))
    assert [a.app_id for a in other.apps] != [a.app_id for a in build_platform(config).apps]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"start": datetime(2026, 5, 4, 10, 30, tzinfo=UTC)}, "on the hour"),
        ({"start": datetime(2026, 5, 4)}, "aware UTC"),
        ({"hours": 0}, "hours must be at least 1"),
        ({"apps": 3}, "apps must be at least 4"),
        ({"teams": 1}, "teams must be at least 2"),
    ],
)
def test_config_refuses_what_cannot_be_simulated(changes: dict[str, object], message: str) -> None:
    fields: dict[str, object] = {"start": START, **changes}
    with pytest.raises(ValueError, match=message):
        SimConfig(**fields)  # type: ignore[arg-type]


def test_default_platform_has_the_requested_shape() -> None:
    platform = build_platform(SimConfig(start=START, hours=24 * 30))
    assert len(platform.teams) == 20
    assert len(platform.apps) == 300
    # a few teams share a cost center, every team has one
    per_center = Counter(t.cost_center for t in platform.teams)
    assert len(platform.cost_centers) == len(per_center) < len(platform.teams)
    assert max(per_center.values()) == 2
    kinds = Counter((a.lifecycle, a.environment) for a in platform.apps)
    assert kinds[("persistent", "production")] > 150
    assert kinds[("persistent", "staging")] > 20
    assert kinds[("ephemeral", "staging")] > 20  # CI previews
    assert kinds[("ephemeral", "production")] > 5  # experiments
    # every team has at least one app, every app a member of its team as owner
    teams = {t.slug: t for t in platform.teams}
    assert {a.team for a in platform.apps} == set(teams)
    for app in platform.apps:
        assert app.owner in teams[app.team].members
        assert app.cost_center == teams[app.team].cost_center


def test_names_are_valid_identifiers_everywhere(small_platform: Platform) -> None:
    ids = [a.app_id for a in small_platform.apps]
    assert len(ids) == len(set(ids))
    for app in small_platform.apps:
        assert SLUG_PATTERN.match(app.app_id), app.app_id
        InvocationUsage(app_id=app.app_id, tokens=1)  # the event contract accepts it
        assert app.title
        assert len(app.title) <= 200
    for team in small_platform.teams:
        assert SLUG_PATTERN.match(team.slug)
    for center in small_platform.cost_centers:
        assert SLUG_PATTERN.match(center.slug)
    resource_ids = [r.resource_id for r in small_platform.resources]
    assert len(resource_ids) == len(set(resource_ids))
    assert all(len(r) <= 200 and re.fullmatch(r"[a-z0-9/._-]+", r) for r in resource_ids)


def test_ephemeral_apps_are_short_lived_and_bound_by_leases(small_platform: Platform) -> None:
    ephemeral = [a for a in small_platform.apps if a.lifecycle == "ephemeral"]
    assert ephemeral
    by_app = {r.app_id: r for r in small_platform.resources}
    for app in ephemeral:
        assert small_platform.period.start <= app.active_from < app.active_to
        assert app.active_to <= small_platform.period.end
        assert app.active_to - app.active_from <= timedelta(hours=72)
        resource = by_app[app.app_id]
        assert resource.registration is Registration.LEASED
        assert (resource.valid_from, resource.valid_to) == (app.active_from, app.active_to)
    persistent = [r for r in small_platform.resources if r.registration is Registration.AT_START]
    assert all(r.valid_from < small_platform.period.start for r in persistent)


def test_untagged_resources_registered_late_within_and_after_the_window() -> None:
    config = SimConfig(start=START, hours=72, apps=40, teams=6, reconciliation_window_hours=24)
    platform = build_platform(config)
    window = timedelta(hours=24)
    late = Counter(r.registration for r in platform.resources if r.kind == "cron")
    assert late == {
        Registration.NEVER: 2,
        Registration.LATE_WITHIN_WINDOW: 1,
        Registration.LATE_AFTER_WINDOW: 1,
    }
    for resource in platform.resources:
        delay = (
            resource.registered_at - resource.valid_from
            if resource.registered_at is not None
            else None
        )
        if resource.registration is Registration.NEVER:
            assert delay is None
        elif resource.registration is Registration.LATE_WITHIN_WINDOW:
            assert delay is not None
            assert timedelta(hours=1) < delay < window
        elif resource.registration is Registration.LATE_AFTER_WINDOW:
            assert delay is not None
            assert delay > window


def test_one_app_moves_to_another_cost_center_mid_period(small_platform: Platform) -> None:
    (move,) = small_platform.moves
    app = small_platform.app(move.app_id)
    assert (move.from_team, move.from_cost_center) == (app.team, app.cost_center)
    assert move.to_cost_center != move.from_cost_center
    assert small_platform.period.start < move.at < small_platform.period.end
    before = small_platform.owner_at(app, move.at - timedelta(seconds=1))
    assert before == (app.team, app.cost_center)
    assert small_platform.owner_at(app, move.at) == (move.to_team, move.to_cost_center)


def test_scenario_ground_truth_is_consistent(small_platform: Platform) -> None:
    period = small_platform.period
    anomalies = small_platform.anomalies
    assert len(anomalies) == 3
    assert len({a.app_id for a in anomalies}) == 3  # one per app: ground truth is unambiguous
    for anomaly in anomalies:
        assert period.start <= anomaly.start < anomaly.end <= period.end
        assert anomaly.factor >= 5
        app = small_platform.app(anomaly.app_id)
        assert (app.lifecycle, app.environment) == ("persistent", "production")
        if anomaly.meter == "tokens":
            assert anomaly.resource_id is None
            assert app.profile.tokens is not None
        else:
            assert anomaly.meter in ("cpu_seconds", "network_bytes")
            assert anomaly.resource_id is not None
    anomalous = {a.app_id for a in anomalies}
    for late in small_platform.late_deliveries:
        assert late.app_id not in anomalous
        assert late.delivered_at - late.event_end >= timedelta(days=1)
        assert period.contains(late.delivered_at)
    for again in small_platform.redeliveries:
        assert again.delivered_at == again.hour + timedelta(hours=1)
        assert again.app_id not in {late.app_id for late in small_platform.late_deliveries}
    assert {f.kind for f in small_platform.faulty} == {"bad_signature", "invalid_data"}


def test_usage_is_heavy_tailed_by_weight() -> None:
    platform = build_platform(SimConfig(start=START, hours=24))
    weights = sorted((a.weight for a in platform.apps), reverse=True)
    top_five_percent = weights[: len(weights) // 20]
    assert sum(top_five_percent) / sum(weights) > 0.3
    assert weights[0] / weights[len(weights) // 2] > 20


def test_activity_has_diurnal_and_weekly_seasonality() -> None:
    monday, saturday = datetime(2026, 5, 4, tzinfo=UTC), datetime(2026, 5, 9, tzinfo=UTC)

    def at(day: datetime, hour: int) -> datetime:
        return day + timedelta(hours=hour)

    assert activity(Pattern.INTERACTIVE, at(monday, 14)) > 10 * activity(
        Pattern.INTERACTIVE, at(monday, 3)
    )
    assert activity(Pattern.INTERACTIVE, at(saturday, 14)) < 0.5 * activity(
        Pattern.INTERACTIVE, at(monday, 14)
    )
    assert activity(Pattern.BATCH, at(monday, 2)) > 3 * activity(Pattern.BATCH, at(monday, 14))
    assert activity(Pattern.ALWAYS_ON, at(monday, 3)) >= 0.5


def test_ground_truth_is_json_ready_and_complete(small_platform: Platform) -> None:
    truth = orjson.loads(orjson.dumps(small_platform.ground_truth()))
    assert len(truth["anomalies"]) == len(small_platform.anomalies)
    first = truth["anomalies"][0]
    anomaly = small_platform.anomalies[0]
    assert (first["app_id"], first["meter"], first["factor"]) == (
        anomaly.app_id,
        anomaly.meter,
        anomaly.factor,
    )
    assert parse_timestamp(first["start"]) == anomaly.start
    assert {r["registration"] for r in truth["untagged_resources"]} == {
        "never",
        "late_within_window",
        "late_after_window",
    }
    assert truth["ownership_moves"][0]["to"]["team"] == small_platform.moves[0].to_team
    assert {r["reason"] for r in truth["rejections"]} == {"bad_signature", "invalid_data"}
