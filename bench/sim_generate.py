"""Simulator benchmark: how fast the demo's month of signed events is generated.

Measures, in one run, on the default platform (300 apps, ~2 million events in 30 days):
- the floor: serializing and HMAC-signing already-built events (orjson with sorted keys, the
  ingestion code's HmacSha256) plus the batch serialization the driver does - the work no
  generator can avoid - timed on a sample of the month's own events;
- the generator in one process: build every event, sign it, serialize its batch;
- the generator in two processes, each streaming half of the period's hours.

    python -m bench.sim_generate [--days 30] [--apps 300] [--sample 200000]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import UTC, datetime
from itertools import islice

import orjson
from rich.console import Console
from rich.table import Table

from quartermaster.metering.signing import HmacSha256
from quartermaster.sim.factory import AppKey, Credentials
from quartermaster.sim.generator import EventBatch, events, stream
from quartermaster.sim.model import Platform, Registration, SimConfig
from quartermaster.sim.platform import build_platform

START = datetime(2026, 5, 4, tzinfo=UTC)


def _credentials(platform: Platform) -> Credentials:
    keys = {
        app.app_id: AppKey(f"sk_{app.index:016x}", hashlib.sha256(app.app_id.encode()).digest())
        for app in platform.apps
    }
    leases = {
        r.resource_id: f"rl1.{hashlib.sha256(r.resource_id.encode()).hexdigest()}.mac"
        for r in platform.resources
        if r.registration is Registration.LEASED
    }
    return Credentials(keys=keys, leases=leases)


def _generate(config: SimConfig, start: int, stop: int) -> tuple[int, int, float]:
    """Stream the hours [start, stop) and serialize each batch: (events, body bytes, CPU s)."""
    began = time.process_time()
    platform = build_platform(config)
    count = size = 0
    for item in stream(platform, _credentials(platform), hours=range(start, stop)):
        if isinstance(item, EventBatch):
            count += len(item.events)
            size += len(orjson.dumps(item.events))
    return count, size, time.process_time() - began


def _floor(platform: Platform, sample: int) -> tuple[int, float, float]:
    """Wall and CPU seconds to serialize, sign and batch-serialize `sample` built events."""
    built = [dict(e) for e in islice(events(platform, _credentials(platform)), sample)]
    signer = HmacSha256(hashlib.sha256(b"floor").digest())
    began, cpu = time.perf_counter(), time.process_time()
    for offset in range(0, len(built), 1000):
        chunk = built[offset : offset + 1000]
        for event in chunk:
            event.pop("qmsignature", None)
            event["qmsignature"] = signer.hexdigest(
                orjson.dumps(event, option=orjson.OPT_SORT_KEYS)
            )
        orjson.dumps(chunk)
    return len(built), time.perf_counter() - began, time.process_time() - cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--apps", type=int, default=300)
    parser.add_argument("--sample", type=int, default=200_000)
    args = parser.parse_args()
    console = Console()
    config = SimConfig(start=START, hours=24 * args.days, apps=args.apps)
    platform = build_platform(config)

    floor_events, floor_seconds, floor_cpu = _floor(platform, args.sample)

    began = time.perf_counter()
    total, size, cpu = _generate(config, 0, config.hours)
    one_process = time.perf_counter() - began

    half = config.hours // 2
    began = time.perf_counter()
    with ProcessPoolExecutor(max_workers=2) as pool:
        parts = list(pool.map(_generate, [config, config], [0, half], [half, config.hours]))
    two_processes = time.perf_counter() - began
    if sum(count for count, _, _ in parts) != total:
        raise SystemExit("the two halves do not add up to the whole stream")

    table = Table(
        "measurement",
        "events",
        "wall s",
        "CPU s",
        "events/s (wall)",
        "events/CPU-s",
        "vs floor (CPU)",
        header_style="bold",
    )
    floor_rate = floor_events / floor_cpu
    rows = (
        ("floor: sign + serialize built events", floor_events, floor_seconds, floor_cpu),
        ("generator, 1 process", total, one_process, cpu),
        ("generator, 2 processes", total, two_processes, sum(c for _, _, c in parts)),
    )
    for label, count, wall, cpu_seconds in rows:
        table.add_row(
            label,
            f"{count:,}",
            f"{wall:.1f}",
            f"{cpu_seconds:.1f}",
            f"{count / wall:,.0f}",
            f"{count / cpu_seconds:,.0f}",
            f"{count / cpu_seconds / floor_rate:.2f}",
        )
    console.print(table)
    console.print(
        f"{args.days} days, {args.apps} apps: {total:,} events, {size / 1e6:,.0f} MB of JSON "
        f"batches. Load average while measuring: {os.getloadavg()[0]:.1f} on {os.cpu_count()} "
        "cores (wall times grow with it; CPU times much less)."
    )


if __name__ == "__main__":
    main()
