"""Catalog search and policy benchmark.

Search: latency (p50/p95/p99) of `GET /v1/apps/search` over HTTP against an index of 10,000
published apps, on the real server (`qm serve`: uvicorn, one process, random port; SQLite by
default, `--database-url` for PostgreSQL). Floor, same run, same server and connection:
`GET /healthz` (the HTTP stack with no work). Target: p95 < 20 ms.

The 10,000 apps come from the simulator (sim/catalog.py manifests, usage signals from its
weights). Publishing them one by one through the API would take minutes (checks and policies
per version), so the rows are written directly and each app is indexed by the same service
function every publish calls (`search_index.sync_app`), in one transaction per 500 apps.
Queries are drawn (seeded) from what people type: word prefixes, topic words, topic and
function pairs, tags.

Policy: evaluations/s of the shipped example policies (docs/examples/policies) with compiled
bundles reused (`CompiledPolicy`, as the publish path's cache does) on a real publish input set
once per publish (`InputBatch`; also measured: set per policy), and as a publish evaluates them
since the budgeted worker processes (all of them in one request to a worker process:
`PolicyCache.evaluate_many`), against a floor: regopy's bare evaluation of a trivial policy
(`allow := true`, empty input) with a reused bundle.

In-process (`--in-process`, with `--data-dir` of an indexed catalog): the search function
alone (`search_index.search`, a read session per query, no HTTP), the same queries, wall
and CPU time per query: the part of a request's latency that is the search itself; then the
same for searches without text (browse): no filter, and each team, pricing model, capability
and the 20 commonest tags of the catalog as the only filter, in turn; then the 20 tags alone
(no text), and the text queries each with one of them.

    python -m bench.search [--apps 10000] [--queries 2000] [--evaluations 5000]
                           [--database-url URL] [--data-dir DIR] [--in-process]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import regopy
from rich.console import Console
from rich.table import Table
from sqlalchemy import select, text

from bench.ingest import _free_port, qm_command, server_env, start_server
from quartermaster.catalog import search_index
from quartermaster.catalog.checks import checks_for_zip
from quartermaster.catalog.manifest import Manifest
from quartermaster.catalog.models import App, AppAssignment
from quartermaster.catalog.publish_models import AppSearchDoc, AppVersion, VersionState
from quartermaster.catalog.search_index import SearchFilters
from quartermaster.catalog.versions import manifest_document, policy_input
from quartermaster.config import Settings
from quartermaster.domain.timeutil import utc_now
from quartermaster.policy.engine import CompiledPolicy, InputBatch, PolicyCache, canonical_json
from quartermaster.policy.sandbox import PolicySandbox
from quartermaster.runtime import Runtime, build_runtime
from quartermaster.sim.catalog import (
    DOMAIN_GLOSSES,
    FUNCTION_PHRASES,
    FUNCTION_TAGS,
    catalog_apps,
    manifest,
    usage_signals,
)
from quartermaster.sim.model import SimConfig
from quartermaster.sim.platform import build_platform
from quartermaster.tenancy.models import CostCenter, Team
from quartermaster.tenancy.service import bootstrap_tenant

POLICIES = Path(__file__).resolve().parents[1] / "docs" / "examples" / "policies"
TARGET_P95_MS = 20.0
TENANT = "bench"


@dataclass(frozen=True)
class Latencies:
    name: str
    seconds: list[float]

    def ms(self, q: float) -> float:
        ordered = sorted(self.seconds)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000


def _platform(apps: int) -> Any:
    # Few staging copies and previews: almost every simulated app is a catalog entry.
    config = SimConfig(
        start=datetime(2026, 1, 1, tzinfo=UTC),
        apps=int(apps * 1.03) + 10,
        teams=40,
        ephemeral_share=0.02,
        staging_share=0.0,
    )
    return build_platform(config)


def load_catalog(runtime: Runtime, apps: int) -> tuple[str, int]:
    """Tenant `bench` with `apps` published apps, indexed; returns (admin token, indexed)."""
    platform = _platform(apps)
    specs = catalog_apps(platform)[:apps]
    if len(specs) < apps:
        raise RuntimeError(f"the simulator made only {len(specs)} catalog apps")
    now = utc_now()
    with runtime.session_factory() as session:
        token = bootstrap_tenant(TENANT, session=session).token
        centers = {}
        for spec in platform.cost_centers:
            center = CostCenter(tenant_id=TENANT, slug=spec.slug, name=spec.name)
            session.add(center)
            centers[spec.slug] = center
        session.flush()
        teams = {}
        for team_spec in platform.teams:
            team = Team(
                tenant_id=TENANT,
                slug=team_spec.slug,
                name=team_spec.name,
                cost_center_id=centers[team_spec.cost_center].id,
            )
            session.add(team)
            teams[team_spec.slug] = team
        session.commit()
        decision = json.dumps({"result": "allow", "audit_only": [], "policies": []})
        for start in range(0, len(specs), 500):
            chunk = specs[start : start + 500]
            rows = []
            for spec in chunk:
                body = manifest_document(Manifest.model_validate(manifest(spec, platform)))
                team = teams[spec.team]
                app = App(
                    tenant_id=TENANT,
                    app_id=spec.app_id,
                    title=body["title"],
                    owner=body["owner"],
                    team_id=team.id,
                    cost_center_id=centers[spec.cost_center].id,
                    lifecycle=spec.lifecycle,
                    created_by="bench",
                    created_at=now,
                    updated_at=now,
                )
                session.add(app)
                rows.append((app, body))
            session.flush()
            for app, body in rows:
                session.add(
                    AppAssignment(
                        tenant_id=TENANT,
                        app_pk=app.id,
                        team_id=app.team_id,
                        cost_center_id=app.cost_center_id,
                        valid_from=now,
                    )
                )
                manifest_text = canonical_json(body)
                session.add(
                    AppVersion(
                        tenant_id=TENANT,
                        app_pk=app.id,
                        version=body["version"],
                        state=VersionState.PUBLISHED.value,
                        manifest=manifest_text,
                        manifest_digest="bench",
                        checks="[]",
                        decision=decision,
                        checked_at=now,
                        published_at=now,
                        created_by="bench",
                    )
                )
            session.flush()
            for app, _body in rows:
                search_index.sync_app(TENANT, app.id, session=session)
            session.commit()
        search_index.set_signals(TENANT, usage_signals(platform), at=now, session=session)
        # Planner statistics, as autovacuum would gather after such a load: without them
        # PostgreSQL guesses a handful of rows per tenant and filters the heap instead of
        # using the full-text indexes.
        session.execute(text("ANALYZE app_search_docs"))
        session.execute(text("ANALYZE app_search_tags"))
        session.commit()
        indexed = len(
            list(session.scalars(select(AppVersion.id).where(AppVersion.tenant_id == TENANT)))
        )
    return token, indexed


def queries(count: int, seed: int = 11) -> list[str]:
    rng = random.Random(seed)
    words = sorted(DOMAIN_GLOSSES)
    functions = sorted(FUNCTION_PHRASES)
    tags = sorted(set(FUNCTION_TAGS.values()))
    out = []
    for _ in range(count):
        word = rng.choice(words).replace("-", " ")
        pick = rng.random()
        if pick < 0.3:  # typing: a prefix of a topic word
            out.append(word.split()[0][: rng.randint(3, 7)])
        elif pick < 0.55:
            out.append(word)
        elif pick < 0.8:
            out.append(f"{word} {rng.choice(functions)}")
        elif pick < 0.9:
            out.append(rng.choice(tags))
        else:  # a phrase from a description
            gloss = DOMAIN_GLOSSES[rng.choice(words)].split()
            out.append(" ".join(gloss[:3]))
    return out


def measure_http(port: int, token: str, texts: list[str]) -> tuple[Latencies, Latencies, int]:
    headers = {"Authorization": f"Bearer {token}"}
    base = f"http://127.0.0.1:{port}"
    search_times: list[float] = []
    floor_times: list[float] = []
    hits = 0
    with httpx.Client(base_url=base, headers=headers, timeout=30) as http:
        for text in texts[:100]:  # warm-up: connection, caches, the OS page cache
            http.get("/v1/apps/search", params={"q": text}).raise_for_status()
            http.get("/healthz").raise_for_status()
        for text in texts:
            started = time.perf_counter()
            response = http.get("/healthz")
            floor_times.append(time.perf_counter() - started)
            response.raise_for_status()
            started = time.perf_counter()
            response = http.get("/v1/apps/search", params={"q": text})
            search_times.append(time.perf_counter() - started)
            response.raise_for_status()
            hits += 1 if response.json()["hits"] else 0
    return (
        Latencies("GET /v1/apps/search (20 hits)", search_times),
        Latencies("GET /healthz (floor)", floor_times),
        hits,
    )


def browse_filters(runtime: Runtime) -> list[SearchFilters]:
    """Searches without text: no filter, then each team, pricing model, capability and the 20
    commonest tags of the catalog as the only filter."""
    with runtime.read_session_factory() as session:
        docs = session.execute(
            select(AppSearchDoc.team, AppSearchDoc.pricing_model, AppSearchDoc.tags).where(
                AppSearchDoc.tenant_id == TENANT
            )
        ).all()
    tags = Counter(tag for doc in docs for tag in json.loads(doc.tags))
    return [
        SearchFilters(),
        *(SearchFilters(team=team) for team in sorted({doc.team for doc in docs})),
        *(SearchFilters(pricing_model=p) for p in sorted({doc.pricing_model for doc in docs})),
        *(SearchFilters(capability=c) for c in ("read", "write", "export")),
        *(SearchFilters(tag=tag) for tag, _ in tags.most_common(20)),
    ]


def measure_in_process(
    runtime: Runtime, searches: list[tuple[str, SearchFilters]], name: str
) -> tuple[Latencies, float]:
    """The search function alone, one read session per query: (wall times, mean CPU s)."""
    wall: list[float] = []
    cpu = 0.0
    for warm in (True, False):
        for query, filters in searches[:100] if warm else searches:
            with runtime.read_session_factory() as session:
                started, cpu_started = time.perf_counter(), time.process_time()
                search_index.search(TENANT, query, filters=filters, session=session)
                if not warm:
                    wall.append(time.perf_counter() - started)
                    cpu += time.process_time() - cpu_started
    return Latencies(name, wall), cpu / len(searches)


def run_in_process(*, apps: int, count: int, database_url: str | None, data_dir: Path) -> None:
    settings = Settings(data_dir=data_dir, database_url=database_url)
    prepare(settings, apps)
    runtime = build_runtime(settings, migrate=False)
    try:
        texts = [(text, SearchFilters()) for text in queries(count)]
        measured = [measure_in_process(runtime, texts, "search_index.search in-process")]
        browse = browse_filters(runtime)
        rounds = max(1, count // len(browse))  # about as many searches as with text
        measured.append(
            measure_in_process(runtime, [("", f) for f in browse] * rounds, "without text")
        )
        tags = [f for f in browse if f.tag is not None]
        rounds = max(1, count // len(tags))
        measured.append(
            measure_in_process(runtime, [("", f) for f in tags] * rounds, "a tag, no text")
        )
        tagged = [(text, tags[i % len(tags)]) for i, (text, _) in enumerate(texts)]
        measured.append(measure_in_process(runtime, tagged, "text and a tag"))
    finally:
        runtime.close()
    for series, cpu in measured:
        load = os.getloadavg()
        Console().print(
            f"{series.name}: {len(series.seconds):,} queries, p50 {series.ms(0.5):.2f}, "
            f"p95 {series.ms(0.95):.2f}, p99 {series.ms(0.99):.2f} ms; mean CPU "
            f"{cpu * 1000:.2f} ms; load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}"
        )


def rate(step: Callable[[], object], count: int) -> float:
    for _ in range(min(200, count)):
        step()
    started = time.perf_counter()
    for _ in range(count):
        step()
    return count / (time.perf_counter() - started)


def bench_policy(count: int) -> list[tuple[str, float]]:
    interpreter = regopy.Interpreter()
    interpreter.add_module("trivial.rego", "package bench\n\nallow := true\n")
    bundle = interpreter.build("data.bench")
    interpreter.set_input_term("{}")

    def bare() -> object:
        return interpreter.query_bundle(bundle)

    platform = _platform(40)
    spec = catalog_apps(platform)[0]
    body = manifest(spec, platform)
    body["estimated_compute_profile"] = {"tier": "gpu", "gpu": 1}
    checked = Manifest.model_validate(body)
    document = policy_input(checked, checks_for_zip(checked, None), exceptions=[], approved=False)
    compiled = [
        CompiledPolicy(path.read_text(), name=path.stem) for path in sorted(POLICIES.glob("*.rego"))
    ]
    denies = compiled[0].evaluate(document).deny  # the GPU rule: the input exercises a deny
    if not denies:
        raise RuntimeError("the GPU policy did not deny a GPU request without an exception")

    def one() -> object:
        return compiled[0].evaluate(document)

    def publish_set() -> object:  # as policy.service.evaluate: the input set once per publish
        batch = InputBatch(document)
        return [batch.evaluate(policy) for policy in compiled]

    def input_per_policy() -> object:  # the input set again for every policy (before)
        return [policy.evaluate(document) for policy in compiled]

    # As a publish evaluates since the budgeted worker processes: every policy in one request
    # to a worker (policy.service.evaluate -> PolicyCache.evaluate_many -> PolicySandbox).
    sandboxed = PolicyCache(sandbox=PolicySandbox())
    stored = [(path.stem, 1, path.read_text()) for path in sorted(POLICIES.glob("*.rego"))]

    def in_worker() -> object:
        return sandboxed.evaluate_many(TENANT, stored, document)

    try:
        return [
            ("floor: regopy bare query_bundle, trivial policy", rate(bare, count)),
            ("CompiledPolicy.evaluate, GPU rule, input set for it", rate(one, count)),
            (
                f"a publish's {len(compiled)} shipped policies, input set once (evaluations/s)",
                rate(publish_set, count // len(compiled)) * len(compiled),
            ),
            (
                f"the same {len(compiled)} policies, input set per policy (evaluations/s)",
                rate(input_per_policy, count // len(compiled)) * len(compiled),
            ),
            (
                f"the same {len(compiled)} policies in a worker process, one request "
                "(as a publish; evaluations/s)",
                rate(in_worker, count // len(compiled)) * len(compiled),
            ),
        ]
    finally:
        assert sandboxed.sandbox is not None
        sandboxed.sandbox.close()


def report(
    search: Latencies, floor: Latencies, hits: int, policy: list[tuple[str, float]], *, backend: str
) -> None:
    console = Console()
    table = Table(title=f"Catalog search over HTTP ({backend}, sequential, one connection)")
    for column in ("route", "requests", "p50 ms", "p95 ms", "p99 ms"):
        table.add_column(column, justify="left" if column == "route" else "right")
    for series in (search, floor):
        table.add_row(
            series.name,
            f"{len(series.seconds):,}",
            f"{series.ms(0.5):.2f}",
            f"{series.ms(0.95):.2f}",
            f"{series.ms(0.99):.2f}",
        )
    console.print(table)
    p95 = search.ms(0.95)
    console.print(
        f"search p95 {p95:.2f} ms = {p95 / floor.ms(0.95):.1f}x the floor's p95; "
        f"p50 {search.ms(0.5) / floor.ms(0.5):.1f}x; target p95 < {TARGET_P95_MS:.0f} ms "
        f"\\[{'met' if p95 < TARGET_P95_MS else 'NOT met'}]; {hits:,} of "
        f"{len(search.seconds):,} queries had hits"
    )
    policy_table = Table(title="Policy evaluation (one thread, compiled bundles reused)")
    policy_table.add_column("what")
    policy_table.add_column("evaluations/s", justify="right")
    policy_table.add_column("x floor", justify="right")
    floor_rate = policy[0][1]
    for name, value in policy:
        policy_table.add_row(name, f"{value:,.0f}", f"{value / floor_rate:.2f}")
    console.print(policy_table)
    load = os.getloadavg()
    console.print(f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")


def prepare(settings: Settings, apps: int) -> tuple[str, str]:
    """A data directory with `apps` indexed apps: (admin token, backend). A directory that
    already holds a catalog from an earlier run (its token file) is reused as it is."""
    console = Console()
    token_file = settings.data_dir / "bench-search-token"
    if token_file.exists():
        backend = (
            "postgresql" if settings.resolved_database_url.startswith("postgres") else "sqlite"
        )
        console.print(f"reusing the catalog indexed in {settings.data_dir}")
        return token_file.read_text(), backend
    subprocess.run(
        [*qm_command(), "init"], env=server_env(settings), check=True, capture_output=True
    )
    runtime = build_runtime(settings, migrate=False)
    try:
        started = time.perf_counter()
        token, indexed = load_catalog(runtime, apps)
        console.print(
            f"indexed {indexed:,} apps in {time.perf_counter() - started:.1f} s "
            "(rows written directly, each app indexed by search_index.sync_app)"
        )
        backend = runtime.engine.dialect.name
    finally:
        runtime.close()
    token_file.write_text(token)
    return token, backend


def run(
    *, apps: int, count: int, evaluations: int, database_url: str | None, data_dir: Path | None
) -> None:
    with tempfile.TemporaryDirectory(prefix="qm-bench-search-") as tmp:
        settings = Settings(data_dir=data_dir or Path(tmp), database_url=database_url)
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        token, backend = prepare(settings, apps)
        port = _free_port()
        server = start_server(settings, port)
        try:
            search, floor, hits = measure_http(port, token, queries(count))
        finally:
            server.terminate()
            server.wait(timeout=30)
    report(search, floor, hits, bench_policy(evaluations), backend=backend)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--apps", type=int, default=10_000)
    parser.add_argument("--queries", type=int, default=2_000)
    parser.add_argument("--evaluations", type=int, default=5_000)
    parser.add_argument("--database-url", default=os.environ.get("QM_BENCH_DATABASE_URL"))
    parser.add_argument(
        "--data-dir",
        type=Path,
        help="keep the indexed catalog here and reuse it on later runs (loading takes minutes)",
    )
    parser.add_argument(
        "--in-process",
        action="store_true",
        help="time the search function alone on the --data-dir catalog (no server, no policy)",
    )
    args = parser.parse_args(argv)
    if args.in_process:
        if args.data_dir is None:
            parser.error("--in-process needs --data-dir (an indexed catalog)")
        run_in_process(
            apps=args.apps,
            count=args.queries,
            database_url=args.database_url,
            data_dir=args.data_dir,
        )
        return
    run(
        apps=args.apps,
        count=args.queries,
        evaluations=args.evaluations,
        database_url=args.database_url,
        data_dir=args.data_dir,
    )


if __name__ == "__main__":
    main()
