"""The synthetic platform's data model (pure): configuration, usage profiles, and the specs
of everything the simulator creates, including the ground truth of what it injected.

A realistic synthetic micro-app platform, built deterministically from a seed.

One tenant with teams and cost centers, persistent and ephemeral apps in production and
staging, their resources, heavy-tailed usage with diurnal and weekly seasonality, and the
awkward cases the pipeline must handle: an app changing owner mid-period, resources that are
never registered or registered late, events delivered days late, a client's retry that
re-sends a batch, a few events that must be rejected, shared platform costs, and injected cost
anomalies whose ground truth is recorded for measuring a detector.

`sim/platform.py` builds a `Platform`; `sim/generator.py` turns it into CloudEvents."""

from __future__ import annotations

import enum
import hashlib
import math
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from quartermaster.domain.timeutil import HOUR, Period

EVENTS_PER_APP_DAY = 220


@dataclass(frozen=True, slots=True)
class SimConfig:
    """The knobs. `events_per_day` is the target volume, by default 220 per app: ~66,000 a
    day and ~2 million a month for the default 300 apps."""

    start: datetime
    hours: int = 24
    seed: int = 7
    tenant_id: str = "acme"
    teams: int = 20
    apps: int = 300
    events_per_day: int | None = None
    ephemeral_share: float = 0.25
    staging_share: float = 0.12
    anomalies: int | None = None  # default: about one every other day, at least two
    reconciliation_window_hours: int = 24

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.start.utcoffset() != timedelta(0):
            raise ValueError(f"start {self.start!r} must be an aware UTC datetime")
        if self.start != self.start.replace(minute=0, second=0, microsecond=0):
            raise ValueError(f"start {self.start.isoformat()} must be on the hour")
        if self.hours < 1:
            raise ValueError(f"hours must be at least 1, got {self.hours}")
        if self.apps < 4:
            raise ValueError(f"apps must be at least 4, got {self.apps}")
        if self.teams < 2:
            raise ValueError(f"teams must be at least 2, got {self.teams}")
        if self.events_per_day is not None and self.events_per_day < 100:
            raise ValueError(f"events_per_day must be at least 100, got {self.events_per_day}")

    @property
    def daily_events(self) -> int:
        return (
            self.events_per_day
            if self.events_per_day is not None
            else EVENTS_PER_APP_DAY * self.apps
        )

    @property
    def end(self) -> datetime:
        return self.start + self.hours * HOUR

    @property
    def tag(self) -> str:
        """Short fingerprint of the configuration, part of every event id: the same config
        yields the same ids (a re-send deduplicates); another config never collides."""
        text = "|".join(
            str(v)
            for v in (
                self.start.isoformat(),
                self.hours,
                self.seed,
                self.tenant_id,
                self.teams,
                self.apps,
                self.events_per_day,
                self.ephemeral_share,
                self.staging_share,
                self.anomalies,
                self.reconciliation_window_hours,
            )
        )
        return hashlib.sha256(text.encode()).hexdigest()[:8]


class Pattern(enum.StrEnum):
    INTERACTIVE = "interactive"  # office hours, quiet weekends
    BATCH = "batch"  # nightly jobs
    ALWAYS_ON = "always-on"  # agents: busy around the clock, a little more by day


@dataclass(frozen=True, slots=True)
class KindProfile:
    """How an app of one kind is used. Medians of lognormal draws; None = not measured."""

    pattern: Pattern
    lifecycle: str
    tokens: int | None
    compute_units: float
    duration_ms: float
    bytes: int | None
    trace_share: float  # request traces per invocation


KINDS: dict[str, KindProfile] = {
    "assistant": KindProfile(Pattern.INTERACTIVE, "persistent", 1_800, 0.004, 2_200, None, 0.0),
    "web": KindProfile(Pattern.INTERACTIVE, "persistent", None, 0.0008, 180, 24_000, 0.35),
    "workflow": KindProfile(Pattern.BATCH, "persistent", None, 0.03, 9_000, 400_000, 0.0),
    "agent": KindProfile(Pattern.ALWAYS_ON, "persistent", 6_500, 0.012, 7_500, None, 0.0),
    "preview": KindProfile(Pattern.INTERACTIVE, "ephemeral", None, 0.0008, 220, 30_000, 0.5),
    "experiment": KindProfile(Pattern.ALWAYS_ON, "ephemeral", 900, 0.08, 30_000, None, 0.0),
}
PERSISTENT_KIND_MIX: tuple[tuple[str, float], ...] = (
    ("assistant", 0.35),
    ("web", 0.25),
    ("workflow", 0.2),
    ("agent", 0.2),
)


def activity(pattern: Pattern, moment: datetime) -> float:
    """Relative load (peak ~1) at a moment: diurnal shape times a weekend dip (tenant in UTC)."""
    hour = moment.hour + moment.minute / 60
    weekend = moment.weekday() >= 5
    if pattern is Pattern.INTERACTIVE:
        level = 0.05 + 0.95 * math.exp(-0.5 * ((hour - 13.5) / 3.0) ** 2)
        return level * (0.3 if weekend else 1.0)
    if pattern is Pattern.BATCH:
        distance = min(abs(hour - 2.5), 24 - abs(hour - 2.5))
        return (0.15 + 0.85 * math.exp(-0.5 * (distance / 1.5) ** 2)) * (0.8 if weekend else 1.0)
    level = 0.6 + 0.4 * math.exp(-0.5 * ((hour - 13.5) / 4.0) ** 2)
    return level * (0.7 if weekend else 1.0)


@dataclass(frozen=True, slots=True)
class CostCenterSpec:
    slug: str
    name: str


@dataclass(frozen=True, slots=True)
class TeamSpec:
    slug: str
    name: str
    cost_center: str
    members: tuple[str, ...]
    domain_words: tuple[str, ...]  # what its apps are about


@dataclass(frozen=True, slots=True)
class AppSpec:
    index: int
    app_id: str
    title: str
    owner: str
    created_by: str
    team: str
    cost_center: str
    kind: str
    lifecycle: str
    environment: str
    require_signatures: bool
    weight: float  # relative share of invocations (heavy-tailed)
    active_from: datetime
    active_to: datetime
    actors: tuple[str, ...]

    @property
    def profile(self) -> KindProfile:
        return KINDS[self.kind]


class Registration(enum.StrEnum):
    AT_START = "at_start"  # registered before its first event
    LEASED = "leased"  # ephemeral: bound to its app by a lease token carried in its events
    LATE_WITHIN_WINDOW = "late_within_window"  # registered inside the reconciliation window
    LATE_AFTER_WINDOW = "late_after_window"  # registered only after the window closed
    NEVER = "never"  # never registered: its usage ends up unattributed


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    index: int
    resource_id: str
    app_id: str
    kind: str  # svc | worker | db | bucket | sandbox | gpu-job | cron
    environment: str
    valid_from: datetime
    valid_to: datetime | None
    registration: Registration
    registered_at: datetime | None
    cpu_cores: float
    memory_gb: float
    network_bytes_per_hour: int
    storage_gb: float


@dataclass(frozen=True, slots=True)
class OwnershipMove:
    """From `at` on, the app belongs to another team and cost center (dated ownership)."""

    app_id: str
    at: datetime
    from_team: str
    from_cost_center: str
    to_team: str
    to_cost_center: str


@dataclass(frozen=True, slots=True)
class Anomaly:
    """Ground truth: the app's `meter` is `factor` times its normal level over [start, end)."""

    app_id: str
    meter: str  # tokens | cpu_seconds | network_bytes
    event_type: str
    resource_id: str | None
    start: datetime
    end: datetime
    factor: float


@dataclass(frozen=True, slots=True)
class LateDelivery:
    """An app buffered its events of [event_start, event_end) and delivered them at
    `delivered_at`, days later (they are absent from the on-time stream)."""

    app_id: str
    delivered_at: datetime
    event_start: datetime
    event_end: datetime


@dataclass(frozen=True, slots=True)
class Redelivery:
    """A client timed out and re-sent the app's events of `hour` at `delivered_at`: every
    one of them must be reported as a duplicate, none stored twice."""

    app_id: str
    hour: datetime
    delivered_at: datetime


@dataclass(frozen=True, slots=True)
class FaultyEvents:
    """Events that must be rejected: `bad_signature` (signed with a retired secret) or
    `invalid_data` (a negative token count, no measure at all)."""

    app_id: str
    hour: datetime
    kind: str
    count: int


@dataclass(frozen=True, slots=True)
class PlatformCostSpec:
    cost_type: str  # lb | cdn | control_plane
    hourly_amount: Decimal
    traffic_share: float  # 0 = flat; 1 = follows office-hours traffic entirely


@dataclass(frozen=True, slots=True)
class Platform:
    config: SimConfig
    cost_centers: tuple[CostCenterSpec, ...]
    teams: tuple[TeamSpec, ...]
    apps: tuple[AppSpec, ...]
    resources: tuple[ResourceSpec, ...]
    moves: tuple[OwnershipMove, ...]
    anomalies: tuple[Anomaly, ...]
    late_deliveries: tuple[LateDelivery, ...]
    redeliveries: tuple[Redelivery, ...]
    faulty: tuple[FaultyEvents, ...]
    platform_costs: tuple[PlatformCostSpec, ...]
    invocation_scale: float  # invocations per hour per unit of weight at activity 1

    @property
    def period(self) -> Period:
        return Period(self.config.start, self.config.end)

    def app(self, app_id: str) -> AppSpec:
        for spec in self.apps:
            if spec.app_id == app_id:
                return spec
        raise KeyError(app_id)

    def owner_at(self, app: AppSpec, moment: datetime) -> tuple[str, str]:
        """(team, cost center) owning the app at `moment`."""
        team, cost_center = app.team, app.cost_center
        for move in sorted(self.moves, key=lambda m: m.at):
            if move.app_id == app.app_id and moment >= move.at:
                team, cost_center = move.to_team, move.to_cost_center
        return team, cost_center

    def ground_truth(self) -> dict[str, Any]:
        """What was injected, as JSON-ready data: for scoring an anomaly detector (precision,
        recall, time to detect) and checking attribution against what really happened."""

        def when(moment: datetime | None) -> str | None:
            return None if moment is None else moment.isoformat().replace("+00:00", "Z")

        return {
            "config": {
                "seed": self.config.seed,
                "tag": self.config.tag,
                "start": when(self.config.start),
                "end": when(self.config.end),
                "apps": self.config.apps,
                "teams": self.config.teams,
            },
            "anomalies": [
                {
                    "app_id": a.app_id,
                    "meter": a.meter,
                    "event_type": a.event_type,
                    "resource_id": a.resource_id,
                    "start": when(a.start),
                    "end": when(a.end),
                    "factor": a.factor,
                }
                for a in self.anomalies
            ],
            "ownership_moves": [
                {
                    "app_id": m.app_id,
                    "at": when(m.at),
                    "from": {"team": m.from_team, "cost_center": m.from_cost_center},
                    "to": {"team": m.to_team, "cost_center": m.to_cost_center},
                }
                for m in self.moves
            ],
            "untagged_resources": [
                {
                    "resource_id": r.resource_id,
                    "app_id": r.app_id,
                    "registration": r.registration.value,
                    "valid_from": when(r.valid_from),
                    "registered_at": when(r.registered_at),
                }
                for r in self.resources
                if r.registration
                in (
                    Registration.NEVER,
                    Registration.LATE_WITHIN_WINDOW,
                    Registration.LATE_AFTER_WINDOW,
                )
            ],
            "late_deliveries": [
                {
                    "app_id": late.app_id,
                    "delivered_at": when(late.delivered_at),
                    "event_start": when(late.event_start),
                    "event_end": when(late.event_end),
                }
                for late in self.late_deliveries
            ],
            "redeliveries": [
                {"app_id": r.app_id, "hour": when(r.hour), "delivered_at": when(r.delivered_at)}
                for r in self.redeliveries
            ],
            "rejections": [
                {"app_id": f.app_id, "hour": when(f.hour), "reason": f.kind, "count": f.count}
                for f in self.faulty
            ],
        }
