"""Turn a `Platform` into a stream of signed CloudEvents, in the order they are delivered.

Streaming: events are produced hour by hour and handed out in batches, so a month (~2 million
events) never sits in memory. Deterministic: the same configuration and credentials give
byte-identical events with the same ids (a re-send deduplicates), whatever range of hours is
generated (`sim/factory.py` builds the events).

Between batches the stream carries control actions (a resource registered late, an app
changing owner) at the simulated moment they happen; a driver performs them in order."""

from __future__ import annotations

from collections import Counter, defaultdict, deque
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import orjson

from quartermaster.domain.timeutil import HOUR
from quartermaster.sim.factory import Credentials, EventFactory
from quartermaster.sim.model import (
    AppSpec,
    OwnershipMove,
    Platform,
    Registration,
    ResourceSpec,
)


@dataclass(frozen=True, slots=True)
class EventBatch:
    delivered_at: datetime  # the simulated hour in which all of the batch's events are sent
    events: list[dict[str, Any]]


@dataclass(frozen=True, slots=True)
class RegisterResource:
    """Register a resource that was running untagged (its validity starts in the past)."""

    at: datetime
    resource: ResourceSpec


@dataclass(frozen=True, slots=True)
class ChangeOwner:
    at: datetime
    move: OwnershipMove


ControlAction = RegisterResource | ChangeOwner
StreamItem = EventBatch | ControlAction


@dataclass(frozen=True, slots=True)
class Expectation:
    """What ingestion must report for the whole stream if nothing is lost or double counted."""

    duplicates: int
    rejected: Mapping[str, int]  # bad_signature | invalid_data -> count


def control_actions(platform: Platform) -> list[ControlAction]:
    actions: list[ControlAction] = [ChangeOwner(m.at, m) for m in platform.moves]
    for resource in platform.resources:
        late = (Registration.LATE_WITHIN_WINDOW, Registration.LATE_AFTER_WINDOW)
        if resource.registration in late and resource.registered_at is not None:
            actions.append(RegisterResource(resource.registered_at, resource))
    return sorted(actions, key=lambda a: a.at)


def stream(
    platform: Platform,
    credentials: Credentials | None,
    *,
    batch_size: int = 1000,
    hours: range | None = None,
) -> Iterator[StreamItem]:
    """Everything the platform's clients send, in simulated delivery order: per hour, batches
    of at most `batch_size` events, with control actions in between at their moment.

    `hours` (indexes into the period) limits the stream to what is delivered in those hours;
    the streams of consecutive ranges, concatenated, are the whole stream (so ranges can be
    generated in parallel)."""
    factory = EventFactory(platform, credentials)
    config = platform.config
    window = hours if hours is not None else range(config.hours)
    if window.step != 1 or window.start < 0 or window.stop > config.hours:
        raise ValueError(f"hours {window} is not a range of the period's {config.hours} hours")
    after = config.start + (window.start - 1) * HOUR  # actions up to here came before `window`
    actions = deque(a for a in control_actions(platform) if window.start == 0 or a.at > after)
    skipped = set()
    late_at: dict[datetime, list[tuple[AppSpec, datetime]]] = defaultdict(list)
    for late in platform.late_deliveries:
        app, moment = factory.apps[late.app_id], late.event_start
        while moment < late.event_end:
            skipped.add((late.app_id, moment))
            late_at[late.delivered_at].append((app, moment))
            moment += HOUR
    for again in platform.redeliveries:
        late_at[again.delivered_at].append((factory.apps[again.app_id], again.hour))
    faulty_at: dict[datetime, list[int]] = defaultdict(list)
    for index, faulty in enumerate(platform.faulty):
        faulty_at[faulty.hour].append(index)

    buffer: list[dict[str, Any]] = []
    hour = config.start
    for h in window:
        hour = config.start + h * HOUR
        while actions and actions[0].at <= hour:
            yield actions.popleft()
        buffer.extend(factory.platform_cost_events(hour))
        for resource in platform.resources:
            buffer.extend(factory.resource_events(resource, hour))
        for app in platform.apps:
            if (app.app_id, hour) not in skipped:
                buffer.extend(factory.app_events(app, hour))
        for app, event_hour in late_at.pop(hour, ()):
            buffer.extend(factory.app_events(app, event_hour))
        for index in faulty_at.pop(hour, ()):
            buffer.extend(factory.faulty_events(index))
        for offset in range(0, len(buffer), batch_size):  # a batch never spans two hours
            yield EventBatch(hour, buffer[offset : offset + batch_size])
        buffer = []
    if window.stop < config.hours:
        return
    for delivered_at in sorted(d for d in late_at if d >= config.end):  # due after the period
        for app, event_hour in late_at[delivered_at]:
            buffer.extend(factory.app_events(app, event_hour))
        for offset in range(0, len(buffer), batch_size):
            yield EventBatch(delivered_at, buffer[offset : offset + batch_size])
        buffer = []
    yield from actions


def events(platform: Platform, credentials: Credentials | None) -> Iterator[dict[str, Any]]:
    """The stream's events alone, in order."""
    for item in stream(platform, credentials):
        if isinstance(item, EventBatch):
            yield from item.events


def expectation(platform: Platform) -> Expectation:
    """Duplicates and rejections the whole stream must produce (everything else is accepted)."""
    factory = EventFactory(platform, None)
    duplicates = sum(
        len(factory.app_events(factory.apps[again.app_id], again.hour))
        for again in platform.redeliveries
    )
    rejected: Counter[str] = Counter()
    for faulty in platform.faulty:
        rejected[faulty.kind] += faulty.count
    return Expectation(duplicates=duplicates, rejected=dict(rejected))


def write_jsonl(items: Iterable[StreamItem], path: Path) -> int:
    """Write the stream's events one per line (what `qm events send FILE` replays)."""
    count = 0
    with path.open("wb") as out:
        for item in items:
            if isinstance(item, EventBatch) and item.events:
                out.write(b"\n".join(orjson.dumps(event) for event in item.events) + b"\n")
                count += len(item.events)
    return count
