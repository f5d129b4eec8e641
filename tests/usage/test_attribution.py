"""Attribution rules, pure: priorities, the reconciliation window, dated ownership."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from hypothesis import given, settings
from hypothesis import strategies as st

from quartermaster.usage.attribution import (
    AppRecord,
    AttributionInput,
    MetadataSnapshot,
    Method,
    Outcome,
    OverrideRecord,
    OwnerSpan,
    ResourceRecord,
    attribute,
)

T0 = datetime(2026, 5, 1, tzinfo=UTC)
WINDOW = timedelta(hours=24)
H = timedelta(hours=1)


def app(app_id: str = "bot", *, created_at: datetime = T0 - 100 * H, **kw: object) -> AppRecord:
    values: dict[str, object] = {
        "app_id": app_id,
        "created_at": created_at,
        "lifecycle": "ephemeral",
        "environment": "production",
        "team": "ds",
        "cost_center": "research",
        "spans": (OwnerSpan("ds", "research", created_at, None),),
    }
    values.update(kw)
    return AppRecord(**values)  # type: ignore[arg-type]


def snapshot(
    apps: tuple[AppRecord, ...] = (),
    resources: tuple[ResourceRecord, ...] = (),
    overrides: tuple[OverrideRecord, ...] = (),
) -> MetadataSnapshot:
    grouped: dict[str, tuple[ResourceRecord, ...]] = {}
    for r in resources:
        grouped[r.resource_id] = (*grouped.get(r.resource_id, ()), r)
    return MetadataSnapshot(
        tenant_id="t",
        default_cost_center="default",
        apps={a.app_id: a for a in apps},
        resources=grouped,
        overrides={o.environment: o for o in overrides},
    )


def event(**kw: object) -> AttributionInput:
    values: dict[str, object] = {
        "event_time": T0,
        "recorded_at": T0,
        "app_id": None,
        "resource_id": None,
        "environment": None,
    }
    values.update(kw)
    return AttributionInput(**values)  # type: ignore[arg-type]


def resource(rid: str = "r1", app_id: str = "bot", **kw: object) -> ResourceRecord:
    values: dict[str, object] = {
        "resource_id": rid,
        "app_id": app_id,
        "environment": "staging",
        "valid_from": T0 - 10 * H,
        "valid_to": None,
        "created_at": T0 - 10 * H,
    }
    values.update(kw)
    return ResourceRecord(**values)  # type: ignore[arg-type]


NOW = T0 + H


def test_explicit_app_id_wins_over_resource_and_environment() -> None:
    snap = snapshot(
        apps=(app("bot"), app("other", team="web", cost_center="ops", spans=())),
        resources=(resource(app_id="other"),),
        overrides=(OverrideRecord("staging", "sandbox", T0 - 50 * H),),
    )
    result = attribute(
        event(app_id="bot", resource_id="r1", environment="staging"), snap, now=NOW, window=WINDOW
    )
    assert (result.method, result.app, result.team, result.cost_center) == (
        Method.APP_ID,
        "bot",
        "ds",
        "research",
    )
    assert result.billable_at == T0
    assert result.environment == "staging"


def test_resource_is_joined_to_the_binding_valid_at_the_event_time() -> None:
    snap = snapshot(
        apps=(app("old"), app("new", team="web", cost_center="ops", spans=())),
        resources=(
            resource(app_id="old", valid_to=T0 - H),
            resource(app_id="new", valid_from=T0 - H),
        ),
    )
    before = attribute(event(resource_id="r1", event_time=T0 - 2 * H), snap, now=NOW, window=WINDOW)
    after = attribute(event(resource_id="r1"), snap, now=NOW, window=WINDOW)
    assert (before.method, before.app) == (Method.RESOURCE, "old")
    assert (after.app, after.team, after.cost_center) == ("new", "web", "ops")
    assert after.environment == "staging"  # from the resource binding


def test_unknown_app_id_falls_back_to_the_resource() -> None:
    snap = snapshot(apps=(app("bot"),), resources=(resource(),))
    result = attribute(event(app_id="ghost", resource_id="r1"), snap, now=NOW, window=WINDOW)
    assert (result.method, result.app) == (Method.RESOURCE, "bot")


def test_environment_override_when_no_app_or_resource_claims_the_event() -> None:
    snap = snapshot(overrides=(OverrideRecord("staging", "sandbox", T0 - H),))
    result = attribute(
        event(resource_id="unknown", environment="staging"), snap, now=NOW, window=WINDOW
    )
    assert (result.outcome, result.method, result.cost_center, result.team, result.app) == (
        Outcome.ATTRIBUTED,
        Method.ENVIRONMENT,
        "sandbox",
        "",
        "",
    )


def test_event_waits_in_the_window_then_goes_to_the_default_cost_center_flagged() -> None:
    snap = snapshot()
    unowned = event(resource_id="r9", recorded_at=T0)
    waiting = attribute(unowned, snap, now=T0 + 23 * H, window=WINDOW)
    assert waiting.outcome is Outcome.WAITING
    assert waiting.deadline == T0 + WINDOW
    assert waiting.billable_at is None
    late = attribute(unowned, snap, now=T0 + WINDOW, window=WINDOW)
    assert (late.outcome, late.method, late.cost_center) == (
        Outcome.UNATTRIBUTED,
        Method.DEFAULT,
        "default",
    )
    assert late.billable_at == T0 + WINDOW


def test_metadata_arriving_within_the_window_attributes_the_event_from_then() -> None:
    arrived = T0 + 5 * H
    snap = snapshot(apps=(app("bot", created_at=arrived),))
    result = attribute(event(app_id="bot"), snap, now=T0 + 6 * H, window=WINDOW)
    assert (result.outcome, result.app, result.billable_at) == (Outcome.ATTRIBUTED, "bot", arrived)
    # The first owner is charged for usage from before the app's registration.
    assert result.team == "ds"


def test_metadata_arriving_after_the_deadline_never_counts() -> None:
    snap = snapshot(apps=(app("bot", created_at=T0 + WINDOW + H),))
    result = attribute(event(app_id="bot"), snap, now=T0 + 30 * H, window=WINDOW)
    assert result.outcome is Outcome.UNATTRIBUTED


def test_dated_ownership_charges_each_owner_for_its_part() -> None:
    moved = T0 + 12 * H
    bot = app(
        "bot",
        spans=(
            OwnerSpan("ds", "research", T0 - 100 * H, moved),
            OwnerSpan("web", "ops", moved, None),
        ),
    )
    snap = snapshot(apps=(bot,))
    before = attribute(event(app_id="bot", event_time=moved - H), snap, now=NOW, window=WINDOW)
    after = attribute(event(app_id="bot", event_time=moved), snap, now=NOW, window=WINDOW)
    assert (before.team, before.cost_center) == ("ds", "research")
    assert (after.team, after.cost_center) == ("web", "ops")


def test_lease_attributed_events_stay_with_the_app_after_the_resource_is_gone() -> None:
    snap = snapshot(apps=(app("bot"),), resources=(resource(valid_to=T0 - 5 * H),))
    result = attribute(
        event(app_id="bot", resource_id="r1", via_lease=True), snap, now=NOW, window=WINDOW
    )
    assert (result.method, result.app) == (Method.LEASE_TOKEN, "bot")


def test_resource_gone_without_a_lease_is_not_attributed_to_it() -> None:
    snap = snapshot(apps=(app("bot"),), resources=(resource(valid_to=T0 - 5 * H),))
    result = attribute(event(resource_id="r1"), snap, now=T0 + WINDOW, window=WINDOW)
    assert result.outcome is Outcome.UNATTRIBUTED


registration = st.integers(min_value=-48, max_value=48).map(lambda h: T0 + h * H)


@settings(max_examples=200, deadline=None)
@given(
    app_at=st.none() | registration,
    resource_at=st.none() | registration,
    override_at=st.none() | registration,
    checked_at=st.integers(min_value=0, max_value=60).map(lambda h: T0 + h * H),
)
def test_a_final_attribution_does_not_depend_on_when_the_pipeline_ran(
    app_at: datetime | None,
    resource_at: datetime | None,
    override_at: datetime | None,
    checked_at: datetime,
) -> None:
    """Whatever pass first settles an event, a replay long after gives the same answer."""

    def known_at(moment: datetime) -> MetadataSnapshot:
        return snapshot(
            apps=(app("bot", created_at=app_at),) if app_at and app_at <= moment else (),
            resources=(
                (resource(created_at=resource_at, app_id="bot"),)
                if resource_at and app_at and resource_at <= moment and app_at <= moment
                else ()
            ),
            overrides=(
                (OverrideRecord("staging", "sandbox", override_at),)
                if override_at and override_at <= moment
                else ()
            ),
        )

    unowned = event(app_id="bot", resource_id="r1", environment="staging")
    first = attribute(unowned, known_at(checked_at), now=checked_at, window=WINDOW)
    replay_at = T0 + 100 * H
    replayed = attribute(unowned, known_at(replay_at), now=replay_at, window=WINDOW)
    if first.outcome is not Outcome.WAITING:
        assert first == replayed
    else:
        assert checked_at < T0 + WINDOW
