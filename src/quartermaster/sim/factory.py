"""Build the CloudEvents of a `Platform`: each (app, hour) and (resource, hour) from its own
seeded generator, so any hour's events are the same whatever else is generated.

Who signs: an event whose data names an app, or that carries a lease token, comes from that
app's runtime and is signed with the app's key; resource samples from the cluster exporters
and platform-cost exports carry neither and are sent unsigned.

Hot loop: ~2 million events a month must be built and signed in well under a minute, so the
random draws come from precomputed tables and timestamps from precomputed fragments."""

from __future__ import annotations

import math
import random
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from decimal import Decimal
from functools import cache
from statistics import NormalDist
from typing import Any

from quartermaster.domain.timeutil import HOUR
from quartermaster.metering.signing import HmacSha256, canonical_bytes
from quartermaster.sim.model import (
    AppSpec,
    Pattern,
    Platform,
    Registration,
    ResourceSpec,
    activity,
)

INVOCATION = "qm.invocation.usage"
RESOURCE_USAGE = "qm.resource.usage"
LIFECYCLE = "qm.resource.lifecycle"
TRACE = "qm.request.trace"
PLATFORM_COST = "qm.platform.cost"
_MONEY = Decimal("0.0001")


@dataclass(frozen=True, slots=True)
class AppKey:
    key_id: str
    secret: bytes


@dataclass(frozen=True, slots=True)
class Credentials:
    """What the control plane handed out: each app's signing key and each leased
    resource's token. Events are signed with these, so they are part of determinism."""

    keys: Mapping[str, AppKey]
    leases: Mapping[str, str] = field(default_factory=dict)


_BITS = 12  # quantile-table resolution: 4096 levels
_MASK = (1 << _BITS) - 1
_U64 = (1 << 64) - 1


def _mix(value: int) -> int:
    """splitmix64's finalizer: a well-spread 64-bit hash of an integer."""
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & _U64
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & _U64
    return value ^ (value >> 31)


@cache
def _lognormal(sigma_tenths: int) -> tuple[float, ...]:
    """exp(sigma * z) at the 4096 mid-quantiles of the standard normal (median 1)."""
    normal, size = NormalDist(), 1 << _BITS
    sigma = sigma_tenths / 10
    return tuple(math.exp(sigma * normal.inv_cdf((i + 0.5) / size)) for i in range(size))


@cache
def _scaled(median: float, sigma_tenths: int, *, digits: int | None = None) -> tuple[Any, ...]:
    """The lognormal table scaled to `median`: whole numbers, or floats rounded to `digits`."""
    table = _lognormal(sigma_tenths)
    if digits is None:
        return tuple(int(median * spread) for spread in table)
    return tuple(round(median * spread, digits) for spread in table)


@cache
def _clock_strings() -> tuple[tuple[str, ...], tuple[str, ...]]:
    """`MM:SS.` for each second of an hour and `mmmZ` for each millisecond."""
    return (
        tuple(f"{s // 60:02d}:{s % 60:02d}." for s in range(3600)),
        tuple(f"{ms:03d}Z" for ms in range(1000)),
    )


def poisson(rng: random.Random, lam: float) -> int:
    if lam <= 0:
        return 0
    if lam > 30:  # normal approximation; exact enough for load shaping, and O(1)
        return max(0, round(rng.gauss(lam, math.sqrt(lam))))
    limit, k, product = math.exp(-lam), 0, rng.random()
    while product > limit:
        k += 1
        product *= rng.random()
    return k


def _seed(seed: int, stream: int, index: int, epoch_hour: int) -> int:
    """One integer per (seed, stream, index, hour): each draws from its own generator."""
    return (((seed & 0xFFFF_FFFF) * 8 + stream) << 44) + (index << 24) + epoch_hour


def _iso(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


class EventFactory:
    """Builds the events of one platform; every method is deterministic in its arguments."""

    def __init__(self, platform: Platform, credentials: Credentials | None) -> None:
        self.platform = platform
        self.config = platform.config
        self.tag = platform.config.tag
        self.leases = dict(credentials.leases) if credentials else {}
        self.signers: dict[str, tuple[str, HmacSha256]] = {}
        if credentials is not None:
            for app_id, key in credentials.keys.items():
                self.signers[app_id] = (key.key_id, HmacSha256(key.secret))
        self.apps = {a.app_id: a for a in platform.apps}
        self.anomalies = {(a.app_id, a.meter): a for a in platform.anomalies}
        self.prefixes: dict[int, str] = {}
        self.services = {r.app_id: r for r in platform.resources if r.kind == "svc"}
        self.scale_apps = {
            a.app_id
            for a in sorted(platform.apps, key=lambda a: -a.weight)[:3]
            if a.lifecycle == "persistent"
        }

    # --- helpers -------------------------------------------------------------------------

    def _sign(self, event: dict[str, Any], app_id: str) -> dict[str, Any]:
        signer = self.signers.get(app_id)
        if signer is not None:
            event["qmkeyid"] = signer[0]
            event["qmsignature"] = signer[1].hexdigest(canonical_bytes(event))
        return event

    def _factor(self, app_id: str, meter: str, hour: datetime) -> float:
        anomaly = self.anomalies.get((app_id, meter))
        if anomaly is not None and anomaly.start <= hour < anomaly.end:
            return anomaly.factor
        return 1.0

    def _prefix(self, epoch_hour: int, hour: datetime) -> str:
        prefix = self.prefixes.get(epoch_hour)
        if prefix is None:
            prefix = self.prefixes[epoch_hour] = hour.strftime("%Y-%m-%dT%H:")
        return prefix

    def _time(self, moment: datetime) -> str:
        epoch = int(moment.timestamp())
        seconds = epoch % 3600
        prefix = self._prefix(epoch // 3600, moment)
        return f"{prefix}{seconds // 60:02d}:{seconds % 60:02d}Z"

    @staticmethod
    def _stamp(prefix: str, offset_ms: int) -> str:
        minutes, rest = divmod(offset_ms, 60_000)
        seconds, millis = divmod(rest, 1000)
        return f"{prefix}{minutes:02d}:{seconds:02d}.{millis:03d}Z"

    # --- app runtime events ---------------------------------------------------------------

    def app_events(self, app: AppSpec, hour: datetime) -> list[dict[str, Any]]:
        """The app's own events of one hour: invocations, request traces, a deploy."""
        begin = max(hour, app.active_from)
        end = min(hour + HOUR, app.active_to)
        if end <= begin:
            return []
        span_ms = int((end - begin).total_seconds() * 1000)
        first_ms = int((begin - hour).total_seconds() * 1000)
        profile = app.profile
        epoch_hour = int(hour.timestamp()) // 3600
        rng = random.Random(_seed(self.config.seed, 1, app.index, epoch_hour))
        load = activity(profile.pattern, begin + (end - begin) / 2) * span_ms / 3_600_000
        lam = self.platform.invocation_scale * app.weight * load
        n_invocations = poisson(rng, lam * self._factor(app.app_id, "tokens", hour))
        n_traces = poisson(rng, lam * profile.trace_share)
        deploys = (
            app.lifecycle == "persistent"
            and profile.pattern is not Pattern.BATCH
            and app.app_id in self.services
            and hour.weekday() < 5
            and 9 <= hour.hour < 18
            and rng.random() < 0.03
        )
        prefix = self._prefix(epoch_hour, hour)
        id_prefix = f"{self.tag}-{app.index}-{epoch_hour}-"
        source = f"/apps/{app.app_id}"
        app_id, environment, actors = app.app_id, app.environment, app.actors
        tokens, compute, duration, size = (
            profile.tokens,
            profile.compute_units,
            profile.duration_ms,
            profile.bytes,
        )
        # Lognormal draws from precomputed quantile tables of each value: one getrandbits per
        # draw instead of a normalvariate, a multiplication and a rounding.
        tokens_of = _scaled(tokens, 7) if tokens is not None else None
        compute_of = _scaled(compute, 6, digits=6)
        duration_of = _scaled(duration, 5)
        bytes_of = _scaled(size, 9) if size is not None else None
        bytes_in_of, bytes_out_of = _scaled(1_800, 8), _scaled(size or 20_000, 9)
        seconds_of, millis_of = _clock_strings()
        bits, uniform, n_actors, sign = rng.getrandbits, rng.random, len(actors), self._sign
        out: list[dict[str, Any]] = []
        for seq in range(n_invocations):
            data: dict[str, Any] = {
                "app_id": app_id,
                "actor_id": actors[int(uniform() * n_actors)],
                "environment": environment,
            }
            if tokens_of is not None:
                data["tokens"] = tokens_of[bits(_BITS)]
            data["compute_units"] = compute_of[bits(_BITS)]
            data["duration_ms"] = duration_of[bits(_BITS)]
            if bytes_of is not None:
                data["bytes"] = bytes_of[bits(_BITS)]
            ms = first_ms + int(uniform() * span_ms)
            event = {
                "specversion": "1.0",
                "id": f"{id_prefix}i{seq}",
                "source": source,
                "type": INVOCATION,
                "time": prefix + seconds_of[ms // 1000] + millis_of[ms % 1000],
                "subject": app_id,
                "datacontenttype": "application/json",
                "data": data,
            }
            out.append(sign(event, app_id))
        for seq in range(n_traces):
            status = 200 if uniform() > 0.012 else rng.choice((500, 502, 503))
            ms = first_ms + int(uniform() * span_ms)
            event = {
                "specversion": "1.0",
                "id": f"{id_prefix}t{seq}",
                "source": source,
                "type": TRACE,
                "time": prefix + seconds_of[ms // 1000] + millis_of[ms % 1000],
                "subject": app_id,
                "datacontenttype": "application/json",
                "data": {
                    "app_id": app_id,
                    "request_id": f"req-{bits(64):016x}",
                    "actor_id": actors[int(uniform() * n_actors)],
                    "environment": environment,
                    "bytes_in": bytes_in_of[bits(_BITS)],
                    "bytes_out": bytes_out_of[bits(_BITS)],
                    "duration_ms": duration_of[bits(_BITS)],
                    "status": status,
                },
            }
            out.append(sign(event, app_id))
        if deploys:
            out.append(self._deploy(app, hour, prefix, first_ms + int(uniform() * span_ms), rng))
        return out

    def _deploy(
        self, app: AppSpec, hour: datetime, prefix: str, offset_ms: int, rng: random.Random
    ) -> dict[str, Any]:
        service = self.services[app.app_id]
        team, _ = self.platform.owner_at(app, hour)
        event = {
            "specversion": "1.0",
            "id": f"{self.tag}-{app.index}-{int(hour.timestamp()) // 3600}-deploy",
            "source": f"/deployer/{app.app_id}",
            "type": LIFECYCLE,
            "time": self._stamp(prefix, offset_ms),
            "subject": service.resource_id,
            "datacontenttype": "application/json",
            "data": {
                "resource_id": service.resource_id,
                "action": "deploy",
                "app_id": app.app_id,
                "team_id": team,
                "environment": app.environment,
                "metadata": {
                    "version": f"v1.{rng.randint(0, 40)}.{rng.randint(0, 9)}",
                    "commit": f"{rng.getrandbits(28):07x}",
                },
            },
        }
        return self._sign(event, app.app_id)

    # --- resource events ------------------------------------------------------------------

    def resource_events(self, resource: ResourceSpec, hour: datetime) -> list[dict[str, Any]]:
        """One usage sample covering the resource's part of the hour, and its lifecycle."""
        end_of_life = resource.valid_to or self.config.end
        begin, end = max(hour, resource.valid_from), min(hour + HOUR, end_of_life)
        if end <= begin:
            return []
        epoch_hour = int(hour.timestamp()) // 3600
        # Two draws per sample: a hash of (seed, resource, hour) is cheaper than a generator.
        noise = _mix(_seed(self.config.seed, 2, resource.index, epoch_hour))
        app = self.apps[resource.app_id]
        pattern = Pattern.BATCH if resource.kind == "cron" else app.profile.pattern
        load = activity(pattern, begin + (end - begin) / 2)
        seconds = (end - begin).total_seconds()
        utilization = min(1.0, (0.1 + 0.8 * load) * _lognormal(2)[noise & _MASK])
        data: dict[str, Any] = {"resource_id": resource.resource_id}
        data["environment"] = resource.environment
        if resource.cpu_cores:
            cpu = resource.cpu_cores * seconds * utilization
            data["cpu_seconds"] = round(
                cpu * self._resource_factor(resource, "cpu_seconds", hour), 3
            )
            data["memory_gb_hours"] = round(
                resource.memory_gb * seconds / 3600 * (0.85 + 0.15 * utilization), 6
            )
        if resource.kind != "db":
            network = resource.network_bytes_per_hour * seconds / 3600 * (0.2 + load)
            network *= _lognormal(3)[(noise >> _BITS) & _MASK]
            data["network_bytes"] = int(
                network * self._resource_factor(resource, "network_bytes", hour)
            )
        if resource.storage_gb:
            data["storage_gb_days"] = round(resource.storage_gb * seconds / 86_400, 6)
        offset_s = int((begin - hour).total_seconds()) + resource.index % 50
        sample = self._resource_event(
            resource,
            f"{self.tag}-r{resource.index}-{epoch_hour}",
            RESOURCE_USAGE,
            hour + timedelta(seconds=min(offset_s, 3599)),
            data,
        )
        out = [sample]
        if resource.registration is Registration.LEASED:
            if hour <= resource.valid_from < hour + HOUR:
                out.append(self._lifecycle(resource, "start", resource.valid_from))
            ended = resource.valid_to
            if ended is not None and hour <= ended < min(hour + HOUR, self.config.end):
                out.append(self._lifecycle(resource, "stop", ended))
                out.append(self._lifecycle(resource, "delete", ended + timedelta(seconds=1)))
        if (
            resource.kind == "svc"
            and resource.app_id in self.scale_apps
            and hour.weekday() < 5
            and hour.hour in (8, 20)
        ):
            replicas = 6 if hour.hour == 8 else 2
            out.append(self._lifecycle(resource, "scale", hour, replicas=replicas))
        return out

    def _resource_factor(self, resource: ResourceSpec, meter: str, hour: datetime) -> float:
        anomaly = self.anomalies.get((resource.app_id, meter))
        if anomaly is None or anomaly.resource_id != resource.resource_id:
            return 1.0
        return anomaly.factor if anomaly.start <= hour < anomaly.end else 1.0

    def _resource_event(
        self,
        resource: ResourceSpec,
        event_id: str,
        event_type: str,
        moment: datetime,
        data: dict[str, Any],
    ) -> dict[str, Any]:
        leased = resource.registration is Registration.LEASED
        event: dict[str, Any] = {
            "specversion": "1.0",
            "id": event_id,
            "source": f"/apps/{resource.app_id}"
            if leased
            else f"/exporters/{resource.environment}-cluster",
            "type": event_type,
            "time": self._time(moment),
            "subject": resource.resource_id,
            "datacontenttype": "application/json",
            "data": data,
        }
        if not leased:
            return event
        token = self.leases.get(resource.resource_id)
        if token is not None:
            event["qmlease"] = token
        return self._sign(event, resource.app_id)

    def _lifecycle(
        self, resource: ResourceSpec, action: str, moment: datetime, *, replicas: int | None = None
    ) -> dict[str, Any]:
        data: dict[str, Any] = {
            "resource_id": resource.resource_id,
            "action": action,
            "environment": resource.environment,
        }
        if replicas is not None:
            data["replicas"] = replicas
        stamp = int(moment.timestamp())
        event_id = f"{self.tag}-r{resource.index}-{action}-{stamp}"
        return self._resource_event(resource, event_id, LIFECYCLE, moment, data)

    # --- platform costs and faulty events -------------------------------------------------

    def platform_cost_events(self, hour: datetime) -> list[dict[str, Any]]:
        traffic = activity(Pattern.INTERACTIVE, hour + HOUR / 2)
        epoch_hour = int(hour.timestamp()) // 3600
        out = []
        for cost in self.platform.platform_costs:
            level = Decimal(str(round(1 - cost.traffic_share + cost.traffic_share * traffic, 4)))
            out.append(
                {
                    "specversion": "1.0",
                    "id": f"{self.tag}-{cost.cost_type}-{epoch_hour}",
                    "source": "/platform/billing-export",
                    "type": PLATFORM_COST,
                    "time": _iso(hour),
                    "subject": cost.cost_type,
                    "datacontenttype": "application/json",
                    "data": {
                        "cost_type": cost.cost_type,
                        "amount": str((cost.hourly_amount * level).quantize(_MONEY)),
                        "currency": "USD",
                        "billing_period_start": _iso(hour),
                        "billing_period_end": _iso(hour + HOUR),
                    },
                }
            )
        return out

    def faulty_events(self, index: int) -> list[dict[str, Any]]:
        """Events ingestion must reject: signed with a retired secret, or with bad data."""
        faulty = self.platform.faulty[index]
        app = self.apps[faulty.app_id]
        rng = random.Random(_seed(self.config.seed, 3, index, 0))
        out = []
        for seq in range(faulty.count):
            data: dict[str, Any] = {"app_id": app.app_id, "environment": app.environment}
            if faulty.kind == "invalid_data" and seq % 2 == 0:
                data["tokens"] = -rng.randint(1, 500)  # a negative count
            elif faulty.kind != "invalid_data":
                data["tokens"] = rng.randint(100, 4000)
                data["duration_ms"] = rng.randint(100, 9000)
            # else: no measure at all
            event = {
                "specversion": "1.0",
                "id": f"{self.tag}-x{index}-{seq}",
                "source": f"/apps/{app.app_id}",
                "type": INVOCATION,
                "time": _iso(faulty.hour + timedelta(seconds=rng.randrange(3600))),
                "subject": app.app_id,
                "datacontenttype": "application/json",
                "data": data,
            }
            signed = self._sign(event, app.app_id)
            if faulty.kind == "bad_signature" and "qmkeyid" in signed:
                stale = HmacSha256(f"retired/{self.config.seed}/{app.app_id}".encode())
                del signed["qmsignature"]
                signed["qmsignature"] = stale.hexdigest(canonical_bytes(signed))
            out.append(signed)
        return out
