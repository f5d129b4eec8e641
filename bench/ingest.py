"""Ingest benchmark: events/s of POST /v1/events over loopback HTTP, against a floor measured in
the same run (POST /v1/_bench/parse of the same server: read the body, orjson-parse it, 202).

The server is the real one (`qm serve`: uvicorn and its validation worker) on a random port,
with its own data dir and an empty database (SQLite by default;
`--database-url postgresql+psycopg://...` for PostgreSQL). Batches of 1,000 signed events are
generated and signed before the clock starts, and sent as prebuilt HTTP/1.1 requests over
several keep-alive connections, so the client costs next to nothing; both measurements use the
same bodies and connections.

    python -m bench.ingest [--batches 150] [--connections 4] [--rounds 3] [--database-url URL]
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import orjson
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, select

from bench.ingest_bound import IrreducibleCost, measure_irreducible
from quartermaster.bus.models import EventLogEntry
from quartermaster.catalog.models import App, AppAssignment
from quartermaster.catalog.signing_keys import create_signing_key
from quartermaster.config import Settings
from quartermaster.metering.signing import sign_event
from quartermaster.runtime import Runtime, build_runtime
from quartermaster.tenancy.models import CostCenter, Team
from quartermaster.tenancy.service import bootstrap_tenant

EVENTS_PER_BATCH = 1000
TARGET_EVENTS_PER_SECOND = 50_000
TARGET_FLOOR_RATIO = 0.5


@dataclass(frozen=True)
class SigningApp:
    app_id: str
    key_id: str
    secret: bytes


@dataclass(frozen=True)
class Measurement:
    route: str
    batches: int
    events: int
    seconds: float
    latencies: list[float]
    server_cpu_seconds: float = 0.0
    # Each process's own CPU seconds: the server's ("server") and its children's ("child
    # <pid>": the validation workers).
    process_cpu: dict[str, float] = field(default_factory=dict)

    @property
    def events_per_second(self) -> float:
        return self.events / self.seconds

    @property
    def events_per_server_cpu_second(self) -> float:
        return self.events / self.server_cpu_seconds if self.server_cpu_seconds else 0.0

    def busy(self) -> dict[str, float]:
        """Each process's CPU seconds per wall second: how much of a core it kept busy."""
        return {name: cpu / self.seconds for name, cpu in self.process_cpu.items()}

    def percentile(self, q: float) -> float:
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def setup_tenant(runtime: Runtime, *, apps: int) -> tuple[str, list[SigningApp]]:
    """A tenant with `apps` apps, each with a signing key; half of them require signatures."""
    with runtime.session_factory() as session:
        token = bootstrap_tenant("bench", session=session).token
        cost_center = session.scalars(
            select(CostCenter.id).where(CostCenter.tenant_id == "bench")
        ).one()
        team = Team(tenant_id="bench", slug="platform", name="Platform")
        session.add(team)
        session.flush()
        made: list[SigningApp] = []
        for i in range(apps):
            app = App(
                tenant_id="bench",
                app_id=f"app-{i:03d}",
                title=f"App {i}",
                owner="bench@example.com",
                team_id=team.id,
                cost_center_id=cost_center,
                require_signatures=i % 2 == 0,
                created_by="bench",
            )
            session.add(app)
            session.flush()
            session.add(
                AppAssignment(
                    tenant_id="bench",
                    app_pk=app.id,
                    team_id=team.id,
                    cost_center_id=cost_center,
                    valid_from=datetime(2020, 1, 1, tzinfo=UTC),
                )
            )
            session.commit()
            key = create_signing_key(app, server_key=runtime.server_key, session=session)
            made.append(SigningApp(app.app_id, key.key_id, bytes.fromhex(key.secret_hex)))
    return token, made


def _event(rng: random.Random, app: SigningApp, now: datetime) -> dict[str, Any]:
    moment = now - timedelta(milliseconds=rng.randint(1, 60_000))  # a collector's last minute
    roll = rng.random()
    if roll < 0.7:
        event_type, data = (
            "qm.invocation.usage",
            {
                "app_id": app.app_id,
                "actor_id": f"user-{rng.randint(1, 500)}",
                "environment": "production",
                "tokens": rng.randint(10, 5000),
                "compute_units": f"{rng.random():.4f}",
                "duration_ms": rng.randint(5, 3000),
            },
        )
    elif roll < 0.9:
        event_type, data = (
            "qm.resource.usage",
            {
                "resource_id": f"{app.app_id}-worker-{rng.randint(1, 4)}",
                "app_id": app.app_id,
                "cpu_seconds": f"{rng.random() * 60:.3f}",
                "memory_gb_hours": f"{rng.random():.5f}",
                "network_bytes": rng.randint(0, 10**7),
            },
        )
    else:
        event_type, data = (
            "qm.request.trace",
            {
                "app_id": app.app_id,
                "request_id": uuid.uuid4().hex,
                "bytes_in": rng.randint(100, 10_000),
                "bytes_out": rng.randint(100, 100_000),
                "duration_ms": rng.randint(1, 900),
                "status": 200,
            },
        )
    event = {
        "specversion": "1.0",
        "id": uuid.uuid4().hex,
        "source": f"app://bench/{app.app_id}",
        "type": event_type,
        "time": moment.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
        "datacontenttype": "application/json",
        "data": data,
    }
    return sign_event(event, key_id=app.key_id, secret=app.secret)


def build_requests(
    apps: list[SigningApp], *, batches: int, port: int, path: str, token: str | None, seed: int
) -> list[bytes]:
    rng = random.Random(seed)
    now = datetime.now(UTC)
    requests = []
    for _ in range(batches):
        body = orjson.dumps([_event(rng, rng.choice(apps), now) for _ in range(EVENTS_PER_BATCH)])
        requests.append(_request_bytes(path, body, port=port, token=token))
    return requests


def _request_bytes(path: str, body: bytes, *, port: int, token: str | None) -> bytes:
    headers = [
        f"POST {path} HTTP/1.1",
        f"Host: 127.0.0.1:{port}",
        "Content-Type: application/cloudevents-batch+json",
        f"Content-Length: {len(body)}",
    ]
    if token:
        headers.append(f"Authorization: Bearer {token}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


def retarget(request: bytes, path: str) -> bytes:
    _request_line, _, rest = request.partition(b" HTTP/1.1\r\n")
    return b"POST " + path.encode() + b" HTTP/1.1\r\n" + rest


async def _exchange(
    reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes
) -> tuple[int, bytes]:
    writer.write(request)
    await writer.drain()
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split()[1])
    length = 0
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value)
    body = await reader.readexactly(length) if length else b""
    return status, body


def process_cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process and its live child processes (the validation
    workers) from Linux /proc, to report figures that other load on the machine does not
    distort."""
    return sum(process_tree_cpu(pid).values())


def process_tree_cpu(pid: int) -> dict[int, float]:
    """Each live process's own user + system CPU seconds: `pid` and its descendants."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    found = {pid: (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")}
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            children = (task / "children").read_text().split()
        except OSError:
            continue  # the thread ended
        for child in children:
            try:
                found.update(process_tree_cpu(int(child)))
            except OSError:
                continue  # the child ended
    return found


def measure(
    server: subprocess.Popen[bytes],
    port: int,
    requests: list[bytes],
    *,
    connections: int,
    expect: int,
    route: str,
) -> Measurement:
    before = process_tree_cpu(server.pid)
    measured = asyncio.run(
        drive(port, requests, connections=connections, expect=expect, route=route)
    )
    after = process_tree_cpu(server.pid)
    # A process that started or ended meanwhile counts what it used while it was seen.
    used = {pid: cpu - before.get(pid, 0.0) for pid, cpu in after.items()}
    names = {pid: "server" if pid == server.pid else f"child {pid}" for pid in used}
    return Measurement(
        measured.route,
        measured.batches,
        measured.events,
        measured.seconds,
        measured.latencies,
        sum(used.values()),
        {names[pid]: cpu for pid, cpu in sorted(used.items(), key=lambda item: item[0])},
    )


async def drive(
    port: int, requests: list[bytes], *, connections: int, expect: int, route: str
) -> Measurement:
    """Send every request once over `connections` keep-alive connections; time the whole."""
    queue = list(reversed(requests))
    latencies: list[float] = []

    async def worker() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            while queue:
                request = queue.pop()
                started = time.perf_counter()
                status, body = await _exchange(reader, writer, request)
                latencies.append(time.perf_counter() - started)
                if status != expect:
                    raise RuntimeError(f"{route}: HTTP {status}: {body[:300]!r}")
        finally:
            writer.close()

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(connections)))
    seconds = time.perf_counter() - started
    return Measurement(route, len(requests), len(requests) * EVENTS_PER_BATCH, seconds, latencies)


def qm_command() -> list[str]:
    qm = Path(sys.executable).with_name("qm")
    return [str(qm)] if qm.exists() else [sys.executable, "-m", "quartermaster.cli.main"]


def server_env(settings: Settings) -> dict[str, str]:
    return dict(
        os.environ,
        QM_DATA_DIR=str(settings.data_dir),
        QM_DATABASE_URL=settings.resolved_database_url,
        QM_BENCH_ROUTES_ENABLED="true",
        QM_PIPELINE_ENABLED="false",
        # The server shares the benchmark's terminal: only what needs a look, not its
        # services starting and stopping between the tables.
        QM_LOG_LEVEL="warning",
    )


def start_server(settings: Settings, port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [*qm_command(), "serve", "--port", str(port)], env=server_env(settings)
    )
    deadline = time.monotonic() + 120  # start-up takes 30 s and more on a loaded machine
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.1)
        if process.poll() is not None:
            break
    process.kill()
    raise RuntimeError("the server did not start")


def report(
    ingest: Measurement,
    floor: Measurement,
    *,
    backend: str,
    stored: int,
    bound: IrreducibleCost | None = None,
) -> bool:
    console = Console(width=max(Console().width, 150))
    table = Table(title=f"Ingest over loopback HTTP ({backend}, batches of {EVENTS_PER_BATCH:,})")
    columns = (
        "route",
        "batches",
        "events",
        "seconds",
        "events/s",
        "p50 ms",
        "p99 ms",
        "server CPU s",
        "events/CPU-s",
    )
    for column in columns:
        table.add_column(column, justify="right" if column != "route" else "left")
    for m in (ingest, floor):
        table.add_row(
            m.route,
            f"{m.batches:,}",
            f"{m.events:,}",
            f"{m.seconds:.2f}",
            f"{m.events_per_second:,.0f}",
            f"{m.percentile(0.5) * 1e3:.1f}",
            f"{m.percentile(0.99) * 1e3:.1f}",
            f"{m.server_cpu_seconds:.2f}",
            f"{m.events_per_server_cpu_second:,.0f}",
        )
    console.print(table)
    load = os.getloadavg()
    console.print(
        f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} on {os.cpu_count()} CPUs "
        "(other work on the machine slows both routes; the CPU columns are the server's own)"
    )
    busy = ingest.busy()
    # (the pool's resource tracker is a child too, idle)
    shares = ", ".join(f"{name} {share:.2f}" for name, share in busy.items() if share >= 0.01)
    console.print(
        f"{ingest.route}: each server process's CPU seconds per wall second: {shares} "
        f"({sum(busy.values()):.2f} of {os.cpu_count()} CPUs; a child is a "
        "validation worker). Below 1 each, the pipeline leaves a core idle."
    )
    ratio = ingest.events_per_second / floor.events_per_second
    meets_rate = ingest.events_per_second >= TARGET_EVENTS_PER_SECOND
    meets_ratio = ratio >= TARGET_FLOOR_RATIO
    console.print(
        f"ingest / floor = {ratio:.3f}  "
        f"(targets: >= {TARGET_EVENTS_PER_SECOND:,} events/s "
        f"\\[{'met' if meets_rate else 'NOT met'}], >= {TARGET_FLOOR_RATIO} of the floor "
        f"\\[{'met' if meets_ratio else 'NOT met'}]); rows stored: {stored:,}"
    )
    if bound is not None and floor.server_cpu_seconds:
        report_bound(bound, floor_us=1e6 / floor.events_per_server_cpu_second, console=console)
    return meets_rate and meets_ratio


def report_bound(bound: IrreducibleCost, *, floor_us: float, console: Console) -> None:
    """What ratio to the floor is reachable at all (bench/ingest_bound.py)."""
    table = Table(title="Least work per event of any ingest of this design (bare primitives)")
    for column in ("work", "CPU µs / event", "best ingest / floor"):
        table.add_column(column, justify="left" if column == "work" else "right")
    table.add_row("floor route: HTTP read + parse (server CPU)", f"{floor_us:.2f}", "")
    table.add_row(
        "serialize + HMAC + content hash (under the GIL)",
        f"{bound.serialize_and_hash_us:.2f}",
        f"{bound.best_ratio(floor_us, with_append=False):.2f}",
    )
    table.add_row(
        f"+ SQLite append + commit (wall {bound.append_wall_us:.2f})",
        f"{bound.append_us:.2f}",
        f"{bound.best_ratio(floor_us, with_append=True):.2f}",
    )
    console.print(table)
    console.print(
        f"one core at floor + all of the above: at most "
        f"{1e6 / (floor_us + bound.serialize_and_hash_us + bound.append_us):,.0f} events/s"
    )


def measure_rounds(
    server: subprocess.Popen[bytes],
    port: int,
    requests: list[bytes],
    floor_requests: list[bytes],
    *,
    rounds: int,
    connections: int,
) -> list[tuple[Measurement, Measurement]]:
    """The ingest requests and the floor's in `rounds` slices, each ingest slice followed by
    its floor slice: a machine whose speed drifts during the run (it does, by up to half,
    docs/performance.md) moves both measurements of a round alike, so each round's ratio
    is one taken at one speed."""
    pairs = []
    for index in range(rounds):
        ingest = measure(
            server,
            port,
            requests[index::rounds],
            connections=connections,
            expect=200,
            route="POST /v1/events",
        )
        floor = measure(
            server,
            port,
            floor_requests[index::rounds],
            connections=connections,
            expect=202,
            route="POST /v1/_bench/parse (floor)",
        )
        pairs.append((ingest, floor))
    return pairs


def combined(parts: list[Measurement]) -> Measurement:
    """One route's rounds as one measurement: their events over their summed seconds."""
    cpu: dict[str, float] = {}
    for part in parts:
        for name, seconds in part.process_cpu.items():
            cpu[name] = cpu.get(name, 0.0) + seconds
    return Measurement(
        parts[0].route,
        sum(p.batches for p in parts),
        sum(p.events for p in parts),
        sum(p.seconds for p in parts),
        [latency for p in parts for latency in p.latencies],
        sum(p.server_cpu_seconds for p in parts),
        cpu,
    )


def report_rounds(pairs: list[tuple[Measurement, Measurement]], *, console: Console) -> None:
    """Each round's ingest and floor rates and their ratio, and the median ratio."""
    table = Table(title="Rounds: each ingest slice, then its floor slice")
    for column in ("round", "ingest events/s", "floor events/s", "ratio"):
        table.add_column(column, justify="right")
    ratios = []
    for number, (ingest, floor) in enumerate(pairs, start=1):
        ratio = ingest.events_per_second / floor.events_per_second
        ratios.append(ratio)
        table.add_row(
            str(number),
            f"{ingest.events_per_second:,.0f}",
            f"{floor.events_per_second:,.0f}",
            f"{ratio:.3f}",
        )
    console.print(table)
    console.print(f"median ratio of the rounds: {statistics.median(ratios):.3f}")


def run(
    *,
    batches: int,
    floor_batches: int,
    connections: int,
    database_url: str | None,
    rounds: int = 3,
) -> tuple[Measurement, Measurement]:
    with tempfile.TemporaryDirectory(prefix="qm-bench-") as tmp:
        settings = Settings(data_dir=Path(tmp), database_url=database_url)
        subprocess.run(
            [*qm_command(), "init"], env=server_env(settings), check=True, capture_output=True
        )
        runtime = build_runtime(settings, migrate=False)
        try:
            token, apps = setup_tenant(runtime, apps=20)
            port = _free_port()
            warmup = 8
            console = Console()
            console.print(f"signing {(batches + warmup) * EVENTS_PER_BATCH:,} events ...")
            requests = build_requests(
                apps, batches=batches + warmup, port=port, path="/v1/events", token=token, seed=7
            )
            floor_requests = [retarget(r, "/v1/_bench/parse") for r in requests[warmup:]]
            floor_requests = (floor_requests * (floor_batches // len(floor_requests) + 1))[
                :floor_batches
            ]
            server = start_server(settings, port)
            try:
                asyncio.run(
                    drive(port, requests[:warmup], connections=2, expect=200, route="warmup")
                )
                asyncio.run(
                    drive(port, floor_requests[:warmup], connections=2, expect=202, route="w")
                )
                pairs = measure_rounds(
                    server,
                    port,
                    requests[warmup:],
                    floor_requests,
                    rounds=rounds,
                    connections=connections,
                )
            finally:
                server.terminate()
                server.wait(timeout=30)
            with runtime.session_factory() as session:
                stored = session.scalar(select(func.count()).select_from(EventLogEntry)) or 0
            expected = (batches + warmup) * EVENTS_PER_BATCH
            if stored != expected:
                raise RuntimeError(f"stored {stored} events, sent {expected}")
            backend = runtime.engine.dialect.name
            bound = measure_irreducible(
                [r.partition(b"\r\n\r\n")[2] for r in requests[warmup:]],
                secret=apps[0].secret,
                work_dir=Path(tmp),
            )
            ingest = combined([i for i, _ in pairs])
            floor = combined([f for _, f in pairs])
            wide = Console(width=max(Console().width, 150))
            report(ingest, floor, backend=backend, stored=stored)
            if len(pairs) > 1:
                report_rounds(pairs, console=wide)
            if floor.server_cpu_seconds:
                floor_us = 1e6 / floor.events_per_server_cpu_second
                report_bound(bound, floor_us=floor_us, console=wide)
            return ingest, floor
        finally:
            runtime.close()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--batches", type=int, default=150, help="measured ingest batches")
    parser.add_argument("--floor-batches", type=int, default=600, help="measured floor batches")
    parser.add_argument("--connections", type=int, default=4, help="concurrent connections")
    parser.add_argument(
        "--rounds", type=int, default=3, help="ingest/floor pairs the batches are split into"
    )
    parser.add_argument("--database-url", default=os.environ.get("QM_BENCH_DATABASE_URL"))
    args = parser.parse_args(argv)
    run(
        batches=args.batches,
        floor_batches=args.floor_batches,
        connections=args.connections,
        database_url=args.database_url,
        rounds=max(1, args.rounds),
    )


if __name__ == "__main__":
    main()
