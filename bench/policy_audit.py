"""Policy audit benchmark: `POST /v1/policies/audit` over ~1,000 published apps.

The catalog is bench.search's (`load_catalog`: simulator manifests written as published
versions), with the three shipped publish policies (docs/examples/policies/*.rego) uploaded
and a `gpu` exception for one team. Measured, one after another in the same run:

- **audit over HTTP**: `qm serve` on a random port, the audit read page by page (`limit`
  apps a request, as `qm policy audit` does), every app evaluated in the server's budgeted
  worker processes;
- **audit in-process**: `policy.audit.audit_apps` page by page in this process with its own
  worker sandbox (no HTTP): the part that is the audit itself;
- **floor**: the bare evaluation of the same inputs (each app's input built beforehand as the
  audit builds it), every policy's compiled bundle queried on one `InputBatch` per app,
  in-process, one thread, no worker, no database.

It prints apps/s of each and the ratio of each to the floor (audit apps/s / floor apps/s).

    python -m bench.policy_audit [--apps 1000] [--page 200] [--database-url URL]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import select

from bench.ingest import _free_port, qm_command, server_env, start_server
from bench.search import POLICIES, TENANT, load_catalog
from quartermaster.catalog.models import App
from quartermaster.catalog.publish_models import AppVersion, VersionState
from quartermaster.config import Settings
from quartermaster.domain.timeutil import utc_now
from quartermaster.policy import audit, service
from quartermaster.policy.engine import CompiledPolicy, InputBatch, PolicyCache
from quartermaster.policy.sandbox import PolicySandbox
from quartermaster.runtime import Runtime, build_runtime
from quartermaster.tenancy.models import Role, Team
from quartermaster.tenancy.service import AuthContext

ADMIN = AuthContext(
    tenant_id=TENANT,
    principal_id="bench",
    principal_name="bench",
    role=Role.ADMIN,
    team_id=None,
    app_slug=None,
)


def setup(runtime: Runtime, apps: int) -> tuple[str, int]:
    """The catalog, the shipped publish policies and a gpu exception for the first team."""
    token, indexed = load_catalog(runtime, apps)
    with runtime.session_factory() as session:
        for path in sorted(POLICIES.glob("*.rego")):
            service.upload_policy(ADMIN, path.stem, path.read_text(), session=session)
        team = session.scalars(
            select(Team.slug).where(Team.tenant_id == TENANT).order_by(Team.slug)
        ).first()
        service.grant_exception(
            ADMIN,
            "gpu",
            reason="bench",
            expires_at=utc_now().replace(year=utc_now().year + 1),
            team=team,
            session=session,
        )
    return token, indexed


def audit_http(port: int, token: str, page: int) -> tuple[float, dict[str, int]]:
    totals: dict[str, int] = {}
    params: dict[str, object] = {"limit": page}
    headers = {"Authorization": f"Bearer {token}"}
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", headers=headers, timeout=600) as http:
        http.post("/v1/policies/audit", params={"limit": 1}).raise_for_status()  # warm workers
        started = time.perf_counter()
        while True:
            response = http.post("/v1/policies/audit", params=params)
            response.raise_for_status()
            body = response.json()
            for name, count in body["totals"].items():
                totals[name] = totals.get(name, 0) + count
            if body["next_after"] is None:
                break
            params["after"] = body["next_after"]
        return time.perf_counter() - started, totals


def audit_in_process(runtime: Runtime, page: int) -> tuple[float, int]:
    cache = PolicyCache(sandbox=PolicySandbox())
    try:
        with runtime.read_session_factory() as session:
            audit.audit_apps(ADMIN, limit=1, cache=cache, session=session)  # warm workers
        started = time.perf_counter()
        after: str | None = None
        apps = 0
        while True:
            with runtime.read_session_factory() as session:
                result = audit.audit_apps(
                    ADMIN, after=after, limit=page, cache=cache, session=session
                )
            apps += result.totals.apps
            if result.next_after is None:
                return time.perf_counter() - started, apps
            after = result.next_after
    finally:
        assert cache.sandbox is not None
        cache.sandbox.close()


def floor(runtime: Runtime) -> tuple[float, int]:
    """Every app's input built as the audit builds it (untimed), then the bare evaluation."""
    with runtime.read_session_factory() as session:
        rows = session.execute(
            select(AppVersion, App.app_id, Team.slug)
            .join(App, App.id == AppVersion.app_pk)
            .join(Team, Team.id == App.team_id)
            .where(
                AppVersion.tenant_id == TENANT,
                AppVersion.state == VersionState.PUBLISHED.value,
            )
        ).all()
        keys = service.exception_keys_at(TENANT, at=utc_now(), session=session)
        documents = [
            audit.version_input(
                version, exceptions=keys.keys(team=team, app_id=app_id), approved=False
            )
            for version, app_id, team in rows
        ]
        sources = [(p.name, p.source) for p in service.publish_policies(TENANT, session=session)]
    compiled = [CompiledPolicy(source, name=name) for name, source in sources]
    for document in documents[:50]:  # warm-up
        batch = InputBatch(document)
        [batch.evaluate(policy) for policy in compiled]
    started = time.perf_counter()
    for document in documents:
        batch = InputBatch(document)
        [batch.evaluate(policy) for policy in compiled]
    return time.perf_counter() - started, len(documents)


def report(
    apps: int, http: tuple[float, dict[str, int]], local: tuple[float, int], bare: float
) -> None:
    console = Console()
    floor_rate = apps / bare
    table = Table(title=f"Policy audit, {apps:,} published apps, 3 shipped policies")
    for column in ("what", "seconds", "apps/s", "x floor"):
        table.add_column(column, justify="left" if column == "what" else "right")
    for name, seconds in (
        ("audit over HTTP (POST /v1/policies/audit, pages)", http[0]),
        ("audit in-process (audit_apps, worker sandbox)", local[0]),
        ("floor: bare evaluation of the same inputs, in-process", bare),
    ):
        table.add_row(
            name, f"{seconds:.2f}", f"{apps / seconds:,.0f}", f"{apps / seconds / floor_rate:.2f}"
        )
    console.print(table)
    totals = http[1]
    console.print(
        f"totals: {totals.get('apps', 0):,} apps, {totals.get('allow', 0):,} allowed, "
        f"{totals.get('violations', 0):,} violations, {totals.get('error', 0):,} errors, "
        f"{totals.get('excepted', 0):,} excepted"
    )
    load = os.getloadavg()
    console.print(f"load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f}")


def run(*, apps: int, page: int, database_url: str | None) -> None:
    with tempfile.TemporaryDirectory(prefix="qm-bench-audit-") as tmp:
        settings = Settings(data_dir=Path(tmp), database_url=database_url)
        subprocess.run(
            [*qm_command(), "init"], env=server_env(settings), check=True, capture_output=True
        )
        runtime = build_runtime(settings, migrate=False)
        try:
            token, indexed = setup(runtime, apps)
            port = _free_port()
            server = start_server(settings, port)
            try:
                http = audit_http(port, token, page)
            finally:
                server.terminate()
                server.wait(timeout=30)
            if http[1].get("apps") != indexed:
                raise RuntimeError(f"the audit saw {http[1].get('apps')} apps of {indexed}")
            local = audit_in_process(runtime, page)
            bare, evaluated = floor(runtime)
            if evaluated != indexed or local[1] != indexed:
                raise RuntimeError("the floor or the in-process audit saw another set of apps")
        finally:
            runtime.close()
    report(indexed, http, local, bare)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--apps", type=int, default=1000)
    parser.add_argument("--page", type=int, default=audit.DEFAULT_PAGE * 2)
    parser.add_argument("--database-url", default=os.environ.get("QM_BENCH_DATABASE_URL"))
    args = parser.parse_args(argv)
    run(apps=args.apps, page=args.page, database_url=args.database_url)


if __name__ == "__main__":
    main()
