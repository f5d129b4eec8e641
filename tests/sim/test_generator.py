from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import pytest
from pydantic import ValidationError

from quartermaster.domain.events import DATA_MODELS, CloudEvent
from quartermaster.domain.timeutil import parse_timestamp
from quartermaster.metering.signing import verify_signature
from quartermaster.sim.generator import (
    ChangeOwner,
    EventBatch,
    RegisterResource,
    events,
    expectation,
    stream,
    write_jsonl,
)
from quartermaster.sim.model import Anomaly, Platform, Registration, SimConfig
from quartermaster.sim.platform import build_platform
from tests.sim.conftest import START, fake_credentials


@pytest.fixture(scope="module")
def generated(small_platform: Platform) -> list[dict[str, Any]]:
    return list(events(small_platform, fake_credentials(small_platform)))


def test_same_seed_same_events(small_platform: Platform, generated: list[dict[str, Any]]) -> None:
    again = build_platform(small_platform.config)
    assert list(events(again, fake_credentials(again))) == generated
    reseeded = build_platform(dataclasses.replace(small_platform.config, seed=99))
    other_ids = {e["id"] for e in events(reseeded, fake_credentials(reseeded))}
    assert not other_ids & {e["id"] for e in generated}  # another config never collides


def test_every_event_fits_the_contract_except_the_injected_invalid_ones(
    small_platform: Platform, generated: list[dict[str, Any]]
) -> None:
    invalid_ids = set()
    for event in generated:
        CloudEvent.model_validate(event)
        try:
            DATA_MODELS[event["type"]].model_validate(event["data"])
        except ValidationError:
            invalid_ids.add(event["id"])
    expected = expectation(small_platform).rejected["invalid_data"]
    assert len(invalid_ids) == expected > 0
    assert all(i.startswith(f"{small_platform.config.tag}-x") for i in invalid_ids)


def test_signatures_verify_with_the_ingestion_code(
    small_platform: Platform, generated: list[dict[str, Any]]
) -> None:
    credentials = fake_credentials(small_platform)
    secrets = {key.key_id: key.secret for key in credentials.keys.values()}
    owners = {key.key_id: app_id for app_id, key in credentials.keys.items()}
    verdicts: Counter[bool] = Counter()
    for event in generated:
        if "qmkeyid" not in event:
            # unsigned: cluster exporters and the platform's cost export, never an app's events
            assert "app_id" not in event["data"]
            assert "qmlease" not in event
            assert event["source"].startswith(("/exporters/", "/platform/"))
            continue
        verdicts[verify_signature(event, secret=secrets[event["qmkeyid"]])] += 1
        app_id = event["data"].get("app_id") or event["source"].removeprefix("/apps/")
        assert owners[event["qmkeyid"]] == app_id  # signed with its own app's key
    assert verdicts[False] == expectation(small_platform).rejected["bad_signature"]
    assert verdicts[True] > 0.5 * len(generated)


def test_leased_resources_carry_their_lease_token(
    small_platform: Platform, generated: list[dict[str, Any]]
) -> None:
    credentials = fake_credentials(small_platform)
    leased = {
        r.resource_id for r in small_platform.resources if r.registration is Registration.LEASED
    }
    seen = set()
    for event in generated:
        resource_id = event["data"].get("resource_id")
        if resource_id in leased and event["source"].startswith("/apps/"):
            assert event["qmlease"] == credentials.leases[resource_id]
            seen.add(resource_id)
        else:
            assert "qmlease" not in event
    assert seen
    lifecycle = Counter(
        e["data"]["action"] for e in generated if e["type"] == "qm.resource.lifecycle"
    )
    assert lifecycle["start"] > 0
    assert lifecycle["stop"] > 0
    assert lifecycle["delete"] > 0
    assert lifecycle["deploy"] > 0
    assert lifecycle["scale"] > 0


def test_ids_are_unique_but_for_the_redelivered_batch(
    small_platform: Platform, generated: list[dict[str, Any]]
) -> None:
    seen: dict[tuple[str, str], dict[str, Any]] = {}
    repeats = 0
    for event in generated:
        key = (event["source"], event["id"])
        if key in seen:
            assert seen[key] == event  # a re-send is byte-for-byte the same event
            repeats += 1
        seen[key] = event
    assert repeats == expectation(small_platform).duplicates > 0


def test_stream_order_batches_and_control_actions(small_platform: Platform) -> None:
    items = list(stream(small_platform, fake_credentials(small_platform), batch_size=250))
    batches = [i for i in items if isinstance(i, EventBatch)]
    assert all(0 < len(b.events) <= 250 for b in batches)
    assert [b.delivered_at for b in batches] == sorted(b.delivered_at for b in batches)
    actions = [i for i in items if not isinstance(i, EventBatch)]
    assert sum(isinstance(a, ChangeOwner) for a in actions) == 1
    registered = {a.resource.resource_id: a for a in actions if isinstance(a, RegisterResource)}
    late = {
        r.resource_id
        for r in small_platform.resources
        if r.registration in (Registration.LATE_WITHIN_WINDOW, Registration.LATE_AFTER_WINDOW)
    }
    assert set(registered) == late
    # events of a late resource go out before its registration (they must wait for it)
    position = {id(item): n for n, item in enumerate(items)}
    for resource_id, action in registered.items():
        before = [
            e
            for b in batches
            if position[id(b)] < position[id(action)]
            for e in b.events
            if e["data"].get("resource_id") == resource_id
        ]
        assert before, resource_id
        assert all(parse_timestamp(e["time"]) < action.at for e in before)


def test_late_deliveries_arrive_days_after_their_event_time(small_platform: Platform) -> None:
    credentials = fake_credentials(small_platform)
    late_apps = {late.app_id: late for late in small_platform.late_deliveries}
    found = 0
    for batch in stream(small_platform, credentials):
        if not isinstance(batch, EventBatch):
            continue
        for event in batch.events:
            late = late_apps.get(event["data"].get("app_id", ""))
            if late is None or event["type"] != "qm.invocation.usage":
                continue
            moment = parse_timestamp(event["time"])
            if late.event_start <= moment < late.event_end:
                found += 1
                assert batch.delivered_at - moment > timedelta(days=1)
                assert batch.delivered_at == late.delivered_at
            else:  # the app's other hours are on time
                assert batch.delivered_at <= moment < batch.delivered_at + timedelta(hours=1)
    assert found > 0


def _hourly_totals(
    platform: Platform, anomalies: tuple[Anomaly, ...]
) -> list[dict[datetime, float]]:
    """Per anomaly: its meter's total per hour, for its app (or its resource)."""
    totals: list[dict[datetime, float]] = [defaultdict(float) for _ in anomalies]
    for event in events(platform, None):
        data = event["data"]
        for anomaly, hourly in zip(anomalies, totals, strict=True):
            owner = data.get("resource_id") if anomaly.resource_id else data.get("app_id")
            if anomaly.meter in data and owner == (anomaly.resource_id or anomaly.app_id):
                moment = parse_timestamp(event["time"]).replace(minute=0, second=0, microsecond=0)
                hourly[moment] += float(data[anomaly.meter])
    return totals


def test_anomaly_ground_truth_matches_the_generated_data(small_platform: Platform) -> None:
    anomalies = small_platform.anomalies
    spiked_totals = _hourly_totals(small_platform, anomalies)
    normal_totals = _hourly_totals(dataclasses.replace(small_platform, anomalies=()), anomalies)
    for anomaly, spiked, normal in zip(anomalies, spiked_totals, normal_totals, strict=True):
        assert any(anomaly.start <= hour < anomaly.end for hour in spiked)
        for hour in sorted(set(spiked) | set(normal)):
            if anomaly.start <= hour < anomaly.end:
                ratio = spiked[hour] / max(normal[hour], 1e-9)
                assert 0.4 * anomaly.factor < ratio < 2.5 * anomaly.factor, (anomaly, hour)
            else:
                assert spiked[hour] == pytest.approx(normal[hour]), (anomaly, hour)


def test_volume_seasonality_and_heavy_tail_in_the_events() -> None:
    platform = build_platform(SimConfig(start=START, hours=24))  # the demo's default day
    counts: Counter[str] = Counter()
    by_hour: Counter[int] = Counter()
    total = 0
    for event in events(platform, None):
        total += 1
        if event["type"] == "qm.invocation.usage":
            counts[event["data"]["app_id"]] += 1
            by_hour[int(event["time"][11:13])] += 1
    assert 0.7 * 66_000 < total < 1.4 * 66_000
    top = sum(n for _, n in counts.most_common(len(platform.apps) // 20))
    assert top / sum(counts.values()) > 0.3  # 5% of the apps make a third of the calls
    office = sum(by_hour[h] for h in range(10, 17))
    night = sum(by_hour[h] for h in range(0, 7))
    assert office > 2 * night


def test_jsonl_round_trips(small_platform: Platform, tmp_path: Path) -> None:
    credentials = fake_credentials(small_platform)
    path = tmp_path / "events.jsonl"
    written = write_jsonl(stream(small_platform, credentials), path)
    lines = path.read_bytes().splitlines()
    assert written == len(lines)
    assert [orjson.loads(line) for line in lines] == list(events(small_platform, credentials))


def test_consecutive_hour_ranges_make_the_whole_stream(small_platform: Platform) -> None:
    credentials = fake_credentials(small_platform)
    whole = list(stream(small_platform, credentials))
    hours = small_platform.config.hours
    parts = [
        item
        for window in (range(0, 7), range(7, 30), range(30, hours))
        for item in stream(small_platform, credentials, hours=window)
    ]
    assert parts == whole
    with pytest.raises(ValueError, match="not a range of the period"):
        list(stream(small_platform, credentials, hours=range(0, hours + 1)))
