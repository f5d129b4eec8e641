"""Decision-API latency over loopback HTTP, against the same server's no-op route.

One `qm` API (uvicorn, one worker, httptools when installed) serves on a random loopback port
in this process; one keep-alive HTTP client calls it sequentially. Measured in the same run:

- floor: `GET /healthz` (routing, the HTTP round trip and JSON, nothing else);
- decision allowed: `POST /v1/decisions` for an app with cpu/memory/runtime, charged to a
  tenant and a team quota (two conditional UPDATEs), the reservation inserted and committed;
  each is released afterwards (not timed) so the quotas never fill;
- decision denied: the same request over a limit range's max (no reservation; the denial is
  recorded in the action log and committed);
- release: `POST /v1/decisions/{id}/release` (give the quota back, idempotent);
- decision allowed + 1 admission policy: the allowed request again once the tenant has one
  Rego admission policy (docs/examples/policies/admission/gpu-needs-exception.rego): the
  policy query, its evaluation and its decision-log row committed with the reservation;
- decision allowed + 3 admission policies: the same with two more copies of it under other
  packages (all three go to a sandbox worker in one request, the input set once).

    python -m bench.decisions [--count 2000] [--database-url URL]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import uvicorn
from rich.console import Console
from rich.table import Table

from quartermaster.api.app import create_app
from quartermaster.config import Settings, generate_server_key
from quartermaster.runtime import build_runtime
from quartermaster.tenancy.service import bootstrap_tenant


@dataclass(frozen=True)
class Series:
    name: str
    seconds: list[float]

    def pct(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000

    @property
    def p50(self) -> float:
        return statistics.median(self.seconds) * 1000

    @property
    def p99(self) -> float:
        return self.pct(0.99)


def timed(
    name: str, count: int, step: Callable[[], object], *, after: Callable[[object], None] | None
) -> Series:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        result = step()
        samples.append(time.perf_counter() - started)
        if after is not None:
            after(result)
    return Series(name, samples)


POLICY = (
    Path(__file__).resolve().parents[1]
    / "docs"
    / "examples"
    / "policies"
    / "admission"
    / "gpu-needs-exception.rego"
)


def _serve(settings: Settings) -> tuple[uvicorn.Server, threading.Thread, str]:
    runtime = build_runtime(settings)
    app = create_app(settings, runtime=runtime)
    config = uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("the API server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    return server, thread, f"http://127.0.0.1:{port}"


def _check(response: httpx.Response) -> object:
    if not response.is_success:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
    return response.json() if response.content else None


def _world(http: httpx.Client) -> str:
    team, app = "bench-team", "bench-app"
    _check(http.post("/v1/teams", json={"slug": team}))
    body = {"app_id": app, "owner": "bench", "team": team, "cost_center": "default"}
    _check(http.post("/v1/apps", json=body))
    for scope in ({"scope_kind": "tenant"}, {"scope_kind": "team", "scope": team}):
        for resource, hard in (("cpu", "100000"), ("memory", "10000Gi")):
            _check(http.put("/v1/quotas", json={**scope, "resource": resource, "hard": hard}))
    limit = {"scope_kind": "tenant", "resource": "gpu", "max": "1"}
    _check(http.put("/v1/limit-ranges", json=limit))
    return app


def run(count: int, database_url: str | None) -> list[Series]:
    with tempfile.TemporaryDirectory(prefix="qm-bench-decisions-") as tmp:
        workdir = Path(tmp)
        settings = Settings(  # type: ignore[call-arg]
            data_dir=workdir / "qm",
            database_url=database_url or f"sqlite:///{workdir / 'qm.db'}",
            pipeline_enabled=False,
            guardrails_enabled=False,
        )
        generate_server_key(settings)
        setup = build_runtime(settings)
        tenant_id = f"bench-{uuid.uuid4().hex[:8]}"
        with setup.session_factory() as session:
            token = bootstrap_tenant(tenant_id, session=session).token
        setup.close()
        server, thread, url = _serve(settings)
        headers = {"Authorization": f"Bearer {token}"}
        try:
            with httpx.Client(base_url=url, headers=headers, timeout=30) as http:
                app = _world(http)
                allowed = {"app": app, "resources": {"cpu": "250m", "memory": "256Mi"}}
                denied = {"app": app, "resources": {"gpu": "2"}}
                issued: list[str] = []

                def floor() -> object:
                    return _check(http.get("/healthz"))

                def allow() -> object:
                    result = _check(http.post("/v1/decisions", json=allowed))
                    assert isinstance(result, dict)
                    assert result["allowed"], result
                    return result

                def release_later(result: object) -> None:
                    assert isinstance(result, dict)
                    issued.append(result["id"])

                def deny() -> object:
                    result = _check(http.post("/v1/decisions", json=denied))
                    assert isinstance(result, dict)
                    assert not result["allowed"], result
                    return result

                def release() -> object:
                    return _check(http.post(f"/v1/decisions/{issued.pop()}/release"))

                for step in (floor, allow, deny):  # warm up every path
                    for _ in range(50):
                        result = step()
                        if step is allow:
                            release_later(result)
                while issued:
                    release()
                series = [
                    timed("floor: GET /healthz", count, floor, after=None),
                    timed("decision allowed (quota reserved)", count, allow, after=release_later),
                    timed("release", count, release, after=None),
                    timed("decision denied (limit range)", count, deny, after=None),
                ]
                # The same allowed request once the tenant has an admission policy (Rego).
                source = POLICY.read_text()
                _check(http.post("/v1/policies", json={"name": "gpu", "source": source}))
                for _ in range(50):
                    release_later(allow())
                while issued:
                    release()
                with_policy = timed(
                    "decision allowed + 1 admission policy", count, allow, after=release_later
                )
                while issued:
                    release()
                # Two more (the same rules under other packages): three policies per decision,
                # evaluated together in one sandbox request (PolicyCache.evaluate_many).
                for n in (2, 3):
                    package = f"package qm.admission.gpu{n}"
                    more = source.replace("package qm.admission.gpu", package)
                    _check(http.post("/v1/policies", json={"name": f"gpu{n}", "source": more}))
                for _ in range(50):
                    release_later(allow())
                while issued:
                    release()
                with_three = timed(
                    "decision allowed + 3 admission policies", count, allow, after=release_later
                )
                while issued:
                    release()
                return [*series, with_policy, with_three]
        finally:
            server.should_exit = True
            thread.join(timeout=30)


def report(series: list[Series], backend: str) -> None:
    floor = series[0]
    table = Table(
        "operation",
        "p50 ms",
        "p99 ms",
        "x floor p50",
        "x floor p99",
        title=f"decisions ({backend})",
    )
    for item in series:
        table.add_row(
            item.name,
            f"{item.p50:.2f}",
            f"{item.p99:.2f}",
            f"{item.p50 / floor.p50:.1f}",
            f"{item.p99 / floor.p99:.1f}",
        )
    Console().print(table)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=2000)
    parser.add_argument("--database-url", default=None, help="Default: a fresh SQLite file.")
    args = parser.parse_args(argv)
    backend = "PostgreSQL" if args.database_url else "SQLite"
    report(run(args.count, args.database_url), backend)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
