"""Build a `Platform` from a `SimConfig`: deterministic for a seed, no I/O."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from quartermaster.domain.timeutil import HOUR
from quartermaster.sim.model import (
    PERSISTENT_KIND_MIX,
    Anomaly,
    AppSpec,
    CostCenterSpec,
    FaultyEvents,
    LateDelivery,
    OwnershipMove,
    Pattern,
    Platform,
    PlatformCostSpec,
    Redelivery,
    Registration,
    ResourceSpec,
    SimConfig,
    TeamSpec,
    activity,
)
from quartermaster.sim.names import (
    EXPERIMENT_MODELS,
    FIRST_NAMES,
    KIND_SUFFIXES,
    LAST_NAMES,
    TEAM_TEMPLATES,
    title_from_slug,
)


def build_platform(config: SimConfig) -> Platform:
    rng = random.Random(f"qm-sim/{config.seed}/platform")
    teams, cost_centers = _teams(config, rng)
    apps = _apps(config, teams, rng)
    resources = _resources(config, apps, rng)
    return _scenarios(config, teams, cost_centers, apps, resources, rng)


def _teams(
    config: SimConfig, rng: random.Random
) -> tuple[tuple[TeamSpec, ...], tuple[CostCenterSpec, ...]]:
    people = [f"{first}.{last}" for first in FIRST_NAMES for last in LAST_NAMES]
    rng.shuffle(people)
    teams: list[TeamSpec] = []
    cost_centers: dict[str, CostCenterSpec] = {}
    for i in range(config.teams):
        template = TEAM_TEMPLATES[i % len(TEAM_TEMPLATES)]
        round_ = i // len(TEAM_TEMPLATES)
        suffix = f"-{round_ + 1}" if round_ else ""
        cc_slug = f"{template.cost_center}{suffix}"
        cost_centers.setdefault(cc_slug, CostCenterSpec(cc_slug, template.cost_center_name))
        size = rng.randint(3, 7)
        members = tuple(
            f"{people.pop()}@{config.tenant_id}.example" for _ in range(min(size, len(people)))
        )
        teams.append(
            TeamSpec(
                slug=f"{template.slug}{suffix}",
                name=f"{template.name}{' ' + str(round_ + 1) if round_ else ''}",
                cost_center=cc_slug,
                members=members,
                domain_words=template.domain_words,
            )
        )
    return tuple(teams), tuple(cost_centers.values())


def _unique(candidate: str, taken: set[str]) -> str:
    name, n = candidate, 2
    while name in taken:
        name = f"{candidate}-{n}"
        n += 1
    taken.add(name)
    return name


def _apps(
    config: SimConfig, teams: tuple[TeamSpec, ...], rng: random.Random
) -> tuple[AppSpec, ...]:
    n_ephemeral = max(1, round(config.apps * config.ephemeral_share))
    n_staging = round(config.apps * config.staging_share)
    n_persistent = config.apps - n_ephemeral - n_staging
    team_popularity = [rng.paretovariate(1.5) for _ in teams]
    taken: set[str] = set()
    start, end = config.start, config.end
    existing_since = start - timedelta(days=90)  # persistent apps predate the period
    apps: list[AppSpec] = []

    def add(**fields: object) -> AppSpec:
        spec = AppSpec(index=len(apps), **fields)  # type: ignore[arg-type]
        apps.append(spec)
        return spec

    def actors(team: TeamSpec) -> tuple[str, ...]:
        outsiders = rng.sample(
            [m for t in teams for m in t.members], k=min(6, sum(len(t.members) for t in teams))
        )
        return tuple(f"user:{m.split('@')[0]}" for m in (*team.members, *outsiders))

    kinds, kind_weights = zip(*PERSISTENT_KIND_MIX, strict=True)
    for i in range(n_persistent):
        # every team gets an app first, then popular teams get more
        team = teams[i] if i < len(teams) else rng.choices(teams, team_popularity)[0]
        kind = rng.choices(kinds, kind_weights)[0]
        base = f"{rng.choice(team.domain_words)}-{rng.choice(KIND_SUFFIXES[kind])}"
        app_id = _unique(base, taken)
        owner = rng.choice(team.members)
        add(
            app_id=app_id,
            title=title_from_slug(app_id),
            owner=owner,
            created_by=owner,
            team=team.slug,
            cost_center=team.cost_center,
            kind=kind,
            lifecycle="persistent",
            environment="production",
            require_signatures=rng.random() < 0.85,
            weight=min(rng.paretovariate(1.16), 400.0),
            active_from=existing_since,
            active_to=end,
            actors=actors(team),
        )
    persistent = list(apps)
    for base_app in rng.sample(persistent, k=min(n_staging, len(persistent))):
        team = next(t for t in teams if t.slug == base_app.team)
        add(
            app_id=_unique(f"{base_app.app_id}-staging", taken),
            title=f"{base_app.title} (staging)",
            owner=base_app.owner,
            created_by=base_app.owner,
            team=base_app.team,
            cost_center=base_app.cost_center,
            kind=base_app.kind,
            lifecycle="persistent",
            environment="staging",
            require_signatures=False,
            weight=base_app.weight * 0.03,
            active_from=existing_since,
            active_to=end,
            actors=tuple(f"user:{m.split('@')[0]}" for m in team.members),
        )
    for _ in range(config.apps - len(apps)):
        begin = start + timedelta(minutes=rng.randrange(config.hours * 60))
        if rng.random() < 0.7:
            base_app = rng.choice(persistent)
            team = next(t for t in teams if t.slug == base_app.team)
            pr = rng.randint(1000, 9999)
            app_id = _unique(f"{base_app.app_id}-pr{pr}", taken)
            title = f"{base_app.title} — PR #{pr} preview"
            kind, environment, created_by = "preview", "staging", "svc:ci-previews"
            lifetime = timedelta(minutes=rng.randint(90, 12 * 60))
        else:
            data_teams = [t for t in teams if t.slug.startswith(("data-science", "analytics"))]
            team = rng.choice(data_teams or list(teams))
            model = rng.choice(EXPERIMENT_MODELS)
            word = rng.choice(team.domain_words)
            app_id = _unique(f"exp-{word}-{model}-v{rng.randint(2, 9)}", taken)
            title = f"{title_from_slug(word)} experiment: {title_from_slug(model)}"
            kind, environment = "experiment", "production"
            created_by = rng.choice(team.members)
            lifetime = timedelta(hours=rng.randint(6, 72))
        add(
            app_id=app_id,
            title=title,
            owner=rng.choice(team.members),
            created_by=created_by,
            team=team.slug,
            cost_center=team.cost_center,
            kind=kind,
            lifecycle="ephemeral",
            environment=environment,
            require_signatures=True,
            weight=rng.paretovariate(2.0) * 0.5,
            active_from=begin,
            active_to=min(end, begin + lifetime),
            actors=tuple(f"user:{m.split('@')[0]}" for m in team.members),
        )
    return tuple(apps)


def _resources(
    config: SimConfig, apps: tuple[AppSpec, ...], rng: random.Random
) -> tuple[ResourceSpec, ...]:
    resources: list[ResourceSpec] = []
    long_ago = config.start - timedelta(days=60)

    def add(app: AppSpec, kind: str, resource_id: str, **fields: object) -> None:
        scale = max(app.weight, 0.2) ** 0.5
        values: dict[str, object] = {
            "cpu_cores": round(min(0.25 * scale, 16.0), 3),
            "memory_gb": round(min(0.5 * scale, 32.0), 3),
            "network_bytes_per_hour": int(40_000_000 * scale),
            "storage_gb": 0.0,
            "valid_from": long_ago,
            "valid_to": None,
            "registration": Registration.AT_START,
            "registered_at": long_ago,
        }
        values.update(fields)
        resources.append(
            ResourceSpec(
                index=len(resources),
                resource_id=resource_id,
                app_id=app.app_id,
                kind=kind,
                environment=app.environment,
                **values,  # type: ignore[arg-type]
            )
        )

    for app in apps:
        env, tag = app.environment, f"{rng.getrandbits(16):04x}"
        if app.lifecycle == "ephemeral":
            leased = {
                "valid_from": app.active_from,
                "valid_to": app.active_to,
                "registration": Registration.LEASED,
                "registered_at": app.active_from,
            }
            if app.kind == "experiment":
                cores = float(rng.choice((8, 16, 32)))
                add(
                    app,
                    "gpu-job",
                    f"gpu/{app.app_id}-{rng.getrandbits(24):06x}",
                    cpu_cores=cores,
                    memory_gb=cores * 4,
                    **leased,
                )
            else:
                add(app, "sandbox", f"sandbox/{app.app_id}-{rng.getrandbits(24):06x}", **leased)
            continue
        add(app, "svc", f"k8s/{env}/{app.app_id}/svc-{tag}")
        if app.kind == "workflow":
            add(app, "worker", f"k8s/{env}/{app.app_id}/worker-{tag}")
        if env == "production" and rng.random() < 0.35:
            add(
                app,
                "db",
                f"pg/{config.tenant_id}-{app.app_id}",
                storage_gb=round(rng.uniform(2, 400), 1),
            )
        if env == "production" and rng.random() < 0.3:
            add(
                app,
                "bucket",
                f"s3/{config.tenant_id}-{app.app_id}-files",
                cpu_cores=0.0,
                memory_gb=0.0,
                storage_gb=round(rng.paretovariate(1.3) * 20, 1),
            )
    return tuple(resources)


def _mean_daily_load(pattern: Pattern) -> float:
    """Average activity over a reference week, in activity-hours per day."""
    monday = datetime(2024, 1, 1, tzinfo=UTC)
    return sum(activity(pattern, monday + h * HOUR) for h in range(168)) / 7


def _scenarios(
    config: SimConfig,
    teams: tuple[TeamSpec, ...],
    cost_centers: tuple[CostCenterSpec, ...],
    apps: tuple[AppSpec, ...],
    resources: tuple[ResourceSpec, ...],
    rng: random.Random,
) -> Platform:
    start, hours, days = config.start, config.hours, config.hours / 24
    production = sorted(
        (a for a in apps if a.lifecycle == "persistent" and a.environment == "production"),
        key=lambda a: (-a.weight, a.index),
    )
    used: set[str] = set()

    def pick(pool: list[AppSpec], exclude: frozenset[str] = frozenset()) -> AppSpec:
        """An app of `pool` no scenario uses yet; on a platform too small for that, any
        production app not excluded (so every scenario is present, some sharing an app)."""
        allowed = [a for a in production if a.app_id not in exclude] or production
        in_pool = [a for a in pool if a.app_id not in exclude]
        fresh = [a for a in in_pool if a.app_id not in used] or [
            a for a in allowed if a.app_id not in used
        ]
        chosen = rng.choice(fresh or in_pool or allowed)
        used.add(chosen.app_id)
        return chosen

    # Hand-deployed cron jobs nobody tagged: some registered late, some never.
    window = timedelta(hours=config.reconciliation_window_hours)
    extra = int(days // 10)
    plan = (
        [Registration.NEVER] * (2 + extra)
        + [Registration.LATE_WITHIN_WINDOW] * (1 + extra)
        + [Registration.LATE_AFTER_WINDOW] * (1 + extra)
    )
    untagged: list[ResourceSpec] = []
    for registration in plan:
        app = rng.choice(production)
        valid_from = start + timedelta(minutes=rng.randrange(max(1, hours * 60 // 3)))
        registered_at: datetime | None = None
        if registration is Registration.LATE_WITHIN_WINDOW:
            registered_at = valid_from + window * rng.uniform(0.2, 0.6)
        elif registration is Registration.LATE_AFTER_WINDOW:
            registered_at = valid_from + window * rng.uniform(1.25, 1.7)
        untagged.append(
            ResourceSpec(
                index=len(resources) + len(untagged),
                resource_id=f"k8s/production/{app.app_id}/cron-{rng.getrandbits(20):05x}",
                app_id=app.app_id,
                kind="cron",
                environment="production",
                valid_from=valid_from,
                valid_to=None,
                registration=registration,
                registered_at=registered_at.replace(second=0, microsecond=0)
                if registered_at
                else None,
                cpu_cores=round(rng.uniform(0.5, 2.0), 2),
                memory_gb=round(rng.uniform(0.5, 4.0), 2),
                network_bytes_per_hour=rng.randint(1_000_000, 50_000_000),
                storage_gb=0.0,
            )
        )

    # One app changes hands halfway through: each owner pays for its own part.
    moved = pick(production[3 : max(4, len(production) // 3)])
    others = [t for t in teams if t.cost_center != moved.cost_center] or [
        t for t in teams if t.slug != moved.team
    ]
    target = rng.choice(others)
    half = (config.end - start) / 2
    moves = (
        OwnershipMove(
            app_id=moved.app_id,
            at=(start + half).replace(second=0, microsecond=0),
            from_team=moved.team,
            from_cost_center=moved.cost_center,
            to_team=target.slug,
            to_cost_center=target.cost_center,
        ),
    )

    # Injected cost anomalies on mid-sized apps (the giants' noise would hide nothing).
    n_anomalies = config.anomalies if config.anomalies is not None else max(2, round(days * 0.6))
    anomaly_pool = production[1 : max(2, int(len(production) * 0.6))]
    anomalies: list[Anomaly] = []
    for _ in range(n_anomalies):
        app = pick(anomaly_pool)
        duration = min(rng.randint(1, 6), hours)
        earliest = min(72, (hours - duration) // 4)
        begin = start + rng.randint(earliest, hours - duration) * HOUR
        if app.profile.tokens is not None and rng.random() < 0.6:
            meter, event_type, resource_id = "tokens", "qm.invocation.usage", None
            factor = round(rng.uniform(6, 20), 1)
        else:
            meter = rng.choice(("cpu_seconds", "network_bytes"))
            event_type = "qm.resource.usage"
            resource_id = next(
                r.resource_id for r in resources if r.app_id == app.app_id and r.kind == "svc"
            )
            factor = round(rng.uniform(5, 12) if meter == "cpu_seconds" else rng.uniform(8, 30), 1)
        end = begin + duration * HOUR
        anomalies.append(Anomaly(app.app_id, meter, event_type, resource_id, begin, end, factor))

    # Buffered events of busy apps, flushed days later during office hours.
    late_deliveries: list[LateDelivery] = []
    moments = [start + h * HOUR for h in range(hours)]
    office = [m for m in moments if m.weekday() < 5 and 9 <= m.hour < 18] or moments
    for _ in range(1 + int(days // 7)):
        app = pick(production[: max(3, len(production) // 5)])
        delivered = rng.choice(office)
        event_start = delivered - rng.randint(2, 4) * 24 * HOUR - rng.randint(1, 3) * HOUR
        late_deliveries.append(
            LateDelivery(app.app_id, delivered, event_start, event_start + rng.randint(2, 4) * HOUR)
        )

    # A client's retry re-sends a busy app's hour (never a late app's: those hours are held).
    redeliveries: list[Redelivery] = []
    late_apps = frozenset(late.app_id for late in late_deliveries)
    for _ in range(1 + int(days // 10)):
        app = pick(production[: max(3, len(production) // 5)], exclude=late_apps)
        hour = rng.choice(office)
        redeliveries.append(Redelivery(app.app_id, hour, hour + HOUR))

    faulty = (
        FaultyEvents(rng.choice(production).app_id, start + rng.randrange(hours) * HOUR,
                     "bad_signature", 12 + int(days)),
        FaultyEvents(rng.choice(production).app_id, start + rng.randrange(hours) * HOUR,
                     "invalid_data", 5 + int(days)),
    )  # fmt: skip

    size = max(config.apps / 300, 0.05)
    platform_costs = tuple(
        PlatformCostSpec(cost_type, (Decimal(amount) * Decimal(str(round(size, 4)))), share)
        for cost_type, amount, share in (
            ("lb", "3.0500", 0.3),
            ("cdn", "1.9000", 0.7),
            ("control_plane", "4.9315", 0.0),
        )
    )

    all_resources = resources + tuple(untagged)
    period_seconds = hours * 3600
    samples_per_day = 0.0
    for r in all_resources:
        begin = max(r.valid_from, start)
        finish = min(r.valid_to or config.end, config.end)
        samples_per_day += max(0.0, (finish - begin).total_seconds()) / 3600 / days
    budget = max(
        config.daily_events - samples_per_day - 24 * len(platform_costs),
        config.daily_events * 0.3,
    )
    load = {p: _mean_daily_load(p) for p in Pattern}
    demand = 0.0
    for a in apps:
        active = (min(a.active_to, config.end) - max(a.active_from, start)).total_seconds()
        share = active / period_seconds
        demand += a.weight * (1 + a.profile.trace_share) * load[a.profile.pattern] * share
    return Platform(
        config=config,
        cost_centers=cost_centers,
        teams=teams,
        apps=apps,
        resources=all_resources,
        moves=moves,
        anomalies=tuple(anomalies),
        late_deliveries=tuple(late_deliveries),
        redeliveries=tuple(redeliveries),
        faulty=faulty,
        platform_costs=platform_costs,
        invocation_scale=budget / demand,
    )
