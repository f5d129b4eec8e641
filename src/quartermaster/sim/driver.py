"""Drive a running Quartermaster through its public HTTP API with a simulated platform.

`set_up` registers cost centers, teams, apps (back-dated to when they began), their signing
keys, resources and leases; `send` streams the generator's batches to `POST /v1/events` over a
few concurrent connections, performing the stream's control actions (late registrations, an
ownership change) in order between batches. Every call retries connection errors, 5xx and 429
with capped exponential backoff; that is safe because ingestion deduplicates on (source, id)
and the control-plane creates treat "already exists" after a retry as done."""

from __future__ import annotations

import queue
import random
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any
from urllib.parse import urlencode

import httpx
import orjson
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TaskID,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from quartermaster.sim.factory import AppKey, Credentials
from quartermaster.sim.generator import (
    ChangeOwner,
    ControlAction,
    EventBatch,
    RegisterResource,
    StreamItem,
)
from quartermaster.sim.model import AppSpec, Platform, Registration, ResourceSpec

BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
MAX_ATTEMPTS = 8
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})


class DriverError(RuntimeError):
    """The server refused something the simulation needs; the message says what and why."""


def _iso(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json()["error"]["message"])
    except (ValueError, KeyError, TypeError):
        return response.text[:300]


def _backoff(attempt: int, response: httpx.Response | None) -> float:
    if response is not None:
        retry_after = response.headers.get("retry-after", "")
        if retry_after.replace(".", "", 1).isdigit():
            return min(float(retry_after), 30.0)
    jitter: float = random.uniform(0.5, 1.0)  # spreads the retries of concurrent senders
    return min(5.0, 0.1 * (1 << attempt)) * jitter


def request(
    client: httpx.Client,
    method: str,
    path: str,
    *,
    json: Any = None,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
    accept: Iterable[int] = (200, 201),
    on_retry: Callable[[], None] | None = None,
) -> httpx.Response:
    """One API call with retries; returns a response whose status is in `accept`."""
    accepted = set(accept)
    for attempt in range(MAX_ATTEMPTS):
        response: httpx.Response | None = None
        try:
            response = client.request(method, path, json=json, content=content, headers=headers)
        except httpx.TransportError as exc:
            failure = f"{type(exc).__name__}: {exc}"
        else:
            if response.status_code in accepted:
                return response
            if response.status_code not in RETRY_STATUSES:
                raise DriverError(
                    f"{method} {path} -> {response.status_code}: {_message(response)}"
                )
            failure = f"{response.status_code}: {_message(response)}"
        if attempt + 1 == MAX_ATTEMPTS:
            raise DriverError(f"{method} {path} failed after {MAX_ATTEMPTS} attempts ({failure})")
        if on_retry is not None:
            on_retry()
        time.sleep(_backoff(attempt, response))
    raise AssertionError("unreachable")


def _create(client: httpx.Client, path: str, body: dict[str, Any]) -> dict[str, Any] | None:
    """POST a create; None when it already exists (a retried create that had succeeded, or a
    re-run against a kept data dir)."""
    response = request(client, "POST", path, json=body, accept=(200, 201, 409))
    if response.status_code == 409:
        return None
    created: dict[str, Any] = response.json()
    return created


# --- setup -----------------------------------------------------------------------------------


def _app_body(app: AppSpec) -> dict[str, Any]:
    return {
        "app_id": app.app_id,
        "title": app.title,
        "owner": app.owner,
        "team": app.team,
        "cost_center": app.cost_center,
        "lifecycle": app.lifecycle,
        "environment": app.environment,
        "require_signatures": app.require_signatures,
        "owned_since": _iso(app.active_from),
    }


def _resource_body(resource: ResourceSpec) -> dict[str, Any]:
    return {
        "resource_id": resource.resource_id,
        "app_id": resource.app_id,
        "valid_from": _iso(resource.valid_from),
        "valid_to": _iso(resource.valid_to) if resource.valid_to else None,
        "environment": resource.environment,
    }


def register_app(client: httpx.Client, app: AppSpec) -> AppKey:
    _create(client, "/v1/apps", _app_body(app))
    key = request(client, "POST", f"/v1/apps/{app.app_id}/signing-keys").json()
    return AppKey(key_id=key["key_id"], secret=bytes.fromhex(key["secret"]))


def register_resource(client: httpx.Client, resource: ResourceSpec) -> str | None:
    """Register a resource; for a leased one, open its lease and return the token."""
    if resource.registration is not Registration.LEASED:
        _create(client, "/v1/resources", _resource_body(resource))
        return None
    assert resource.valid_to is not None
    lease = request(
        client,
        "POST",
        "/v1/resource-leases",
        json={
            "resource_id": resource.resource_id,
            "app_id": resource.app_id,
            "ttl_seconds": int((resource.valid_to - resource.valid_from).total_seconds()),
            "issued_at": _iso(resource.valid_from),
            "environment": resource.environment,
        },
    ).json()
    token: str = lease["token"]
    return token


def set_up(
    client: httpx.Client,
    platform: Platform,
    *,
    progress: Progress | None = None,
    workers: int = 4,
) -> Credentials:
    """Register the platform as it stood at the start of the period. Resources registered
    late or never are left out: the stream registers the late ones when their time comes."""
    initial = [
        r
        for r in platform.resources
        if r.registration in (Registration.AT_START, Registration.LEASED)
    ]
    steps = len(platform.cost_centers) + len(platform.teams) + len(platform.apps) + len(initial)
    task = progress.add_task("setting up the platform", total=steps) if progress else None

    def advance(_: object = None) -> None:
        if progress is not None and task is not None:
            progress.advance(task)

    for center in platform.cost_centers:
        _create(client, "/v1/cost-centers", {"slug": center.slug, "name": center.name})
        advance()
    for team in platform.teams:
        body = {"slug": team.slug, "name": team.name, "cost_center": team.cost_center}
        _create(client, "/v1/teams", body)
        advance()
    keys: dict[str, AppKey] = {}
    leases: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=workers) as pool:
        for app, key in zip(
            platform.apps, pool.map(lambda a: register_app(client, a), platform.apps), strict=True
        ):
            keys[app.app_id] = key
            advance()
        for resource, token in zip(
            initial, pool.map(lambda r: register_resource(client, r), initial), strict=True
        ):
            if token is not None:
                leases[resource.resource_id] = token
            advance()
    return Credentials(keys=keys, leases=leases)


def apply(client: httpx.Client, action: ControlAction) -> None:
    """Perform a control action of the stream through the API."""
    if isinstance(action, RegisterResource):
        _create(client, "/v1/resources", _resource_body(action.resource))
    elif isinstance(action, ChangeOwner):
        move = action.move
        body = {
            "team": move.to_team,
            "cost_center": move.to_cost_center,
            "effective_at": _iso(move.at),
        }
        request(client, "PATCH", f"/v1/apps/{move.app_id}", json=body)


# --- sending ---------------------------------------------------------------------------------


@dataclass
class SendSummary:
    """What the server said about every event sent (each event's final verdict)."""

    sent: int = 0
    accepted: int = 0
    duplicates: int = 0
    rejected: Counter[str] = field(default_factory=Counter)
    requests: int = 0
    retries: int = 0
    actions: int = 0
    seconds: float = 0.0

    @property
    def rejected_total(self) -> int:
        return sum(self.rejected.values())

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        return {
            "sent": self.sent,
            "accepted": self.accepted,
            "duplicates": self.duplicates,
            "rejected": dict(self.rejected),
            "requests": self.requests,
            "retries": self.retries,
            "actions": self.actions,
            "seconds": round(self.seconds, 3),
            "events_per_second": round(self.rate),
        }


def post_batch(
    client: httpx.Client, body: bytes, *, on_retry: Callable[[], None] | None = None
) -> dict[str, Any]:
    """POST one batch; the ingest report (a 422 means every event was rejected, and carries
    the same report)."""
    response = request(
        client,
        "POST",
        "/v1/events",
        content=body,
        headers={"Content-Type": BATCH_CONTENT_TYPE},
        accept=(200, 422),
        on_retry=on_retry,
    )
    report: dict[str, Any] = response.json()
    if "accepted" not in report:
        raise DriverError(f"POST /v1/events -> {response.status_code}: {_message(response)}")
    return report


class _Sender:
    """A pool of threads posting batches from a bounded queue (so generation stays at most a
    few batches ahead), aggregating the reports."""

    def __init__(self, client: httpx.Client, connections: int, on_done: Callable[[int], None]):
        self.client = client
        self.summary = SendSummary()
        self.lock = threading.Lock()
        self.failure: BaseException | None = None
        self.queue: queue.Queue[tuple[bytes, int] | None] = queue.Queue(maxsize=2 * connections)
        self.on_done = on_done
        self.threads = [
            threading.Thread(target=self._work, name=f"sim-sender-{n}", daemon=True)
            for n in range(connections)
        ]
        for thread in self.threads:
            thread.start()

    def _retried(self) -> None:
        with self.lock:
            self.summary.retries += 1

    def _work(self) -> None:
        while True:
            item = self.queue.get()
            try:
                if item is None:
                    return
                if self.failure is not None:
                    continue  # drain: the run is failing, send nothing more
                body, count = item
                try:
                    report = post_batch(self.client, body, on_retry=self._retried)
                except BaseException as exc:
                    self.failure = exc
                    continue
                with self.lock:
                    summary = self.summary
                    summary.requests += 1
                    summary.sent += count
                    summary.accepted += int(report["accepted"])
                    summary.duplicates += int(report["duplicates"])
                    summary.rejected.update(r["reason"] for r in report["rejected"])
                    self.on_done(count)
            finally:
                self.queue.task_done()

    def put(self, body: bytes, count: int) -> None:
        self._check()
        self.queue.put((body, count))

    def drain(self) -> None:
        """Wait until every queued batch has its answer (before a control action)."""
        self.queue.join()
        self._check()

    def close(self) -> None:
        for _ in self.threads:
            self.queue.put(None)
        for thread in self.threads:
            thread.join()

    def _check(self) -> None:
        if self.failure is not None:
            raise self.failure


@contextmanager
def _maybe_open(path: Path | None) -> Iterator[IO[bytes] | None]:
    if path is None:
        yield None
        return
    with path.open("wb") as handle:
        yield handle


def send(
    client: httpx.Client,
    items: Iterable[StreamItem],
    *,
    hours: int,
    connections: int = 4,
    progress: Progress | None = None,
    jsonl: Path | None = None,
) -> SendSummary:
    """Send a stream: batches concurrently, control actions in order between them. With
    `jsonl`, every event sent is also written there, one per line."""
    task: TaskID | None = None
    sent = 0
    started = time.perf_counter()
    hours_done: set[datetime] = set()

    def on_done(count: int) -> None:
        nonlocal sent  # called under the sender's lock
        sent += count
        if progress is not None and task is not None:
            elapsed = max(time.perf_counter() - started, 1e-9)
            progress.update(task, events=f"{sent:,}", rate=f"{sent / elapsed:,.0f}")

    if progress is not None:
        task = progress.add_task("sending events", total=hours, events="0", rate="-")
    sender = _Sender(client, connections, on_done)
    actions = 0
    try:
        with _maybe_open(jsonl) as out:
            for item in items:
                if isinstance(item, EventBatch):
                    body = orjson.dumps(item.events)
                    if out is not None:
                        out.write(b"\n".join(orjson.dumps(e) for e in item.events) + b"\n")
                    sender.put(body, len(item.events))
                    if item.delivered_at not in hours_done:
                        hours_done.add(item.delivered_at)
                        if progress is not None and task is not None:
                            progress.update(task, completed=min(len(hours_done), hours))
                else:
                    sender.drain()
                    apply(client, item)
                    actions += 1
            sender.drain()
    finally:
        sender.close()
    summary = sender.summary
    summary.actions = actions
    summary.seconds = time.perf_counter() - started
    if progress is not None and task is not None:
        progress.update(task, completed=hours)
    return summary


class _EventRateColumn(ProgressColumn):
    """`12,345 events · 23,456 events/s` for the sending task, nothing for the others."""

    def render(self, task: Task) -> Text:
        events = task.fields.get("events")
        if events is None:
            return Text("")
        return Text(f"{events} events · {task.fields.get('rate', '-')} events/s")


def demo_progress(**kwargs: Any) -> Progress:
    """The progress display of the demo's stages: a bar each, events/s while sending."""
    return Progress(
        TextColumn("[bold]{task.description:<24}"),
        BarColumn(),
        MofNCompleteColumn(),
        _EventRateColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        **kwargs,
    )


def fetch_reconciliation(client: httpx.Client, start: datetime, end: datetime) -> dict[str, Any]:
    """The tenant's reconciliation counters for the hours of receipt in [start, end)."""
    query = urlencode({"start": _iso(start), "end": _iso(end)})
    result: dict[str, Any] = request(client, "GET", f"/v1/reconciliation?{query}").json()
    return result
