"""Attribution: who owns an event's usage (pure rules over an event and a metadata snapshot).

Priority: 1 the event's explicit app (`app_id` in its data, or from a verified lease token);
2 its `resource_id`, joined to the Resource binding valid at the event's time; 3 an environment
override of the tenant (e.g. staging -> a sandbox cost center); else 4 the event waits in the
reconciliation window (counted from `recorded_at`) for metadata to arrive, and after the
deadline goes to the tenant's default cost center, flagged unattributed.

An app's team and cost center are those of its ownership span at the event's time (dated
ownership): an app that moves mid-period is charged to each owner for its own part.

Determinism: an event is attributed with the metadata registered by the earliest moment it
can be (its `recorded_at`, or the registration of the metadata that resolves it), and metadata
registered after its deadline never counts for it. So the outcome does not depend on when the
pipeline happens to run, and replaying the log reproduces it."""

from __future__ import annotations

import bisect
import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from quartermaster.domain.frozen import fast_constructor

NO_OWNER = ""  # team or app of usage that has none (environment override, unattributed)


class Outcome(enum.StrEnum):
    ATTRIBUTED = "attributed"
    WAITING = "waiting"
    UNATTRIBUTED = "unattributed"


class Method(enum.StrEnum):
    APP_ID = "app_id"
    LEASE_TOKEN = "lease_token"
    RESOURCE = "resource"
    ENVIRONMENT = "environment"
    DEFAULT = "default"
    SHARED = "shared"  # platform costs: tenant-wide, allocated by billing


@dataclass(frozen=True, slots=True)
class OwnerSpan:
    team: str
    cost_center: str
    valid_from: datetime
    valid_to: datetime | None


@dataclass(frozen=True, slots=True)
class AppRecord:
    app_id: str
    created_at: datetime
    lifecycle: str
    environment: str
    team: str  # current owner, used when the app has no ownership spans
    cost_center: str
    spans: tuple[OwnerSpan, ...] = ()  # ordered by valid_from
    starts: tuple[datetime, ...] = field(init=False, default=())

    def __post_init__(self) -> None:
        object.__setattr__(self, "starts", tuple(span.valid_from for span in self.spans))

    def owner_at(self, moment: datetime) -> tuple[str, str]:
        """(team, cost center) owning the app at `moment`. Before its first span, the first
        owner; in a gap after a span ends, the owner of that span."""
        if not self.spans:
            return self.team, self.cost_center
        index = bisect.bisect_right(self.starts, moment) - 1
        span = self.spans[max(index, 0)]
        return span.team, span.cost_center


@dataclass(frozen=True, slots=True)
class ResourceRecord:
    resource_id: str
    app_id: str
    environment: str | None
    valid_from: datetime
    valid_to: datetime | None
    created_at: datetime

    def valid_at(self, moment: datetime) -> bool:
        return self.valid_from <= moment and (self.valid_to is None or moment < self.valid_to)


@dataclass(frozen=True, slots=True)
class OverrideRecord:
    environment: str
    cost_center: str
    created_at: datetime


@dataclass(frozen=True, slots=True)
class MetadataSnapshot:
    """What attribution reads about one tenant, loaded once per pipeline pass."""

    tenant_id: str
    default_cost_center: str
    apps: Mapping[str, AppRecord] = field(default_factory=dict)
    resources: Mapping[str, tuple[ResourceRecord, ...]] = field(default_factory=dict)
    overrides: Mapping[str, OverrideRecord] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class AttributionInput:
    event_time: datetime
    recorded_at: datetime
    app_id: str | None
    resource_id: str | None
    environment: str | None
    via_lease: bool = False  # the app_id came from a verified lease token


@dataclass(frozen=True, slots=True)
class Attribution:
    outcome: Outcome
    deadline: datetime
    method: Method | None = None
    cost_center: str = ""
    team: str = NO_OWNER
    app: str = NO_OWNER
    environment: str = ""
    lifecycle: str = ""
    billable_at: datetime | None = None  # None while waiting


# Once per attributed event: the positional constructor skips the frozen __init__'s cost.
_new_attribution = fast_constructor(Attribution)
_ATTRIBUTED = Outcome.ATTRIBUTED


def attribute(
    event: AttributionInput,
    snapshot: MetadataSnapshot,
    *,
    now: datetime,
    window: timedelta,
) -> Attribution:
    """Attribute one event. `now` is when the snapshot was taken: metadata registered later is
    not in it, and an event whose deadline has not passed by `now` may still wait."""
    deadline = event.recorded_at + window
    found = _resolve(event, snapshot, known_at=event.recorded_at, deadline=deadline)
    if found is not None:
        return found
    for known_at in _later_moments(event, snapshot, deadline=deadline, now=now):
        found = _resolve(event, snapshot, known_at=known_at, deadline=deadline)
        if found is not None:
            return found
    if now < deadline:
        return Attribution(outcome=Outcome.WAITING, deadline=deadline)
    return Attribution(
        outcome=Outcome.UNATTRIBUTED,
        deadline=deadline,
        method=Method.DEFAULT,
        cost_center=snapshot.default_cost_center,
        environment=event.environment or "",
        billable_at=deadline,
    )


def _later_moments(
    event: AttributionInput, snapshot: MetadataSnapshot, *, deadline: datetime, now: datetime
) -> list[datetime]:
    """After `recorded_at`, each registration of metadata relevant to the event inside its
    window: the only moments at which its attribution can change."""
    moments: set[datetime] = set()
    candidates: list[datetime] = []
    if event.app_id is not None and event.app_id in snapshot.apps:
        candidates.append(snapshot.apps[event.app_id].created_at)
    if event.resource_id is not None:
        for record in snapshot.resources.get(event.resource_id, ()):
            candidates.append(record.created_at)
            owner = snapshot.apps.get(record.app_id)
            if owner is not None:
                candidates.append(owner.created_at)
    if event.environment is not None and event.environment in snapshot.overrides:
        candidates.append(snapshot.overrides[event.environment].created_at)
    for moment in candidates:
        if event.recorded_at < moment < deadline and moment <= now:
            moments.add(moment)
    return sorted(moments)


def _resolve(
    event: AttributionInput,
    snapshot: MetadataSnapshot,
    *,
    known_at: datetime,
    deadline: datetime,
) -> Attribution | None:
    """The attribution from metadata registered by `known_at`, or None if it resolves nothing."""
    if event.app_id is not None:
        app = snapshot.apps.get(event.app_id)
        if app is not None and app.created_at <= known_at:
            method = Method.LEASE_TOKEN if event.via_lease else Method.APP_ID
            return _to_app(
                event, app, method=method, known_at=known_at, deadline=deadline, environment=None
            )
    if event.resource_id is not None:
        for record in snapshot.resources.get(event.resource_id, ()):
            if record.created_at > known_at or not record.valid_at(event.event_time):
                continue
            app = snapshot.apps.get(record.app_id)
            if app is not None and app.created_at <= known_at:
                return _to_app(
                    event,
                    app,
                    method=Method.RESOURCE,
                    known_at=known_at,
                    deadline=deadline,
                    environment=record.environment,
                )
    if event.environment is not None:
        override = snapshot.overrides.get(event.environment)
        if override is not None and override.created_at <= known_at:
            return Attribution(
                outcome=Outcome.ATTRIBUTED,
                deadline=deadline,
                method=Method.ENVIRONMENT,
                cost_center=override.cost_center,
                environment=event.environment,
                billable_at=known_at,
            )
    return None


def _to_app(
    event: AttributionInput,
    app: AppRecord,
    *,
    method: Method,
    known_at: datetime,
    deadline: datetime,
    environment: str | None,
) -> Attribution:
    team, cost_center = app.owner_at(event.event_time)
    return _new_attribution(
        _ATTRIBUTED,
        deadline,
        method,
        cost_center,
        team,
        app.app_id,
        event.environment or environment or app.environment,
        app.lifecycle,
        known_at,
    )
