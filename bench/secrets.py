"""Secrets benchmark: lease issuance latency (p50/p99) for KV secrets and for dynamic PostgreSQL
credentials, each against floors measured in the same run.

KV (in-process service calls, a new session per call as the API does):
- floor "bare read": look the version up and decrypt it (no authorization, lease or audit);
- floor "durable write": one INSERT + COMMIT of a row the size of a lease (the unavoidable
  cost of recording anything durably on this database);
- measured: `kv.read_secret` = authorize + decrypt + quota check + lease + hash-chained audit
  record, committed together.

Dynamic PostgreSQL (target: the server on 127.0.0.1:5432):
- floor: a bare CREATE ROLE (same grants) / DROP ROLE round trip on an open connection;
- measured: `issue_postgres_credential` (lease committed before and after the role exists) and
  `revoke_lease` (terminate sessions, reassign/drop owned, drop role, audit).

    python -m bench.secrets [--kv 2000] [--pg 200] [--database-url URL] [--pg-admin URL]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import psycopg
from psycopg import sql
from rich.console import Console
from rich.table import Table
from sqlalchemy import select, text

from quartermaster.catalog.models import App
from quartermaster.config import Settings, generate_server_key
from quartermaster.runtime import Runtime, build_runtime
from quartermaster.secrets import dynamic, engines, kv, revocation
from quartermaster.secrets.access import Requester, RequesterKind
from quartermaster.secrets.context import SecretsContext, build_secrets_context
from quartermaster.secrets.engines import parse_grants
from quartermaster.secrets.envelope import open_sealed, value_aad
from quartermaster.secrets.identity import generate_identity_key
from quartermaster.secrets.keys import generate_root_keyring
from quartermaster.secrets.models import SecretEntry, SecretVersion
from quartermaster.secrets.postgres import create_role, new_password, new_role_name
from quartermaster.tenancy.models import CostCenter, Role, Team
from quartermaster.tenancy.service import bootstrap_tenant

PATH = "apps/bench/db-password"
ENGINE_PATH = "apps/bench/db"


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


def timed(name: str, count: int, step: Callable[[], object], *, warmup: int = 20) -> Series:
    for _ in range(warmup):
        step()
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        step()
        samples.append(time.perf_counter() - started)
    return Series(name, samples)


def _setup(database_url: str | None, workdir: Path) -> tuple[Runtime, SecretsContext, Requester]:
    settings = Settings(  # type: ignore[call-arg]
        data_dir=workdir / "qm",
        database_url=database_url or f"sqlite:///{workdir / 'qm.db'}",
        secrets_max_leases_per_app=10_000_000,
        pipeline_enabled=False,
    )
    generate_server_key(settings)
    generate_root_keyring(settings)
    generate_identity_key(settings)
    runtime = build_runtime(settings)
    tenant_id = f"bench-{uuid.uuid4().hex[:8]}"
    with runtime.session_factory() as session:
        bootstrap_tenant(tenant_id, session=session)
        cost_center = session.scalar(select(CostCenter.id).where(CostCenter.tenant_id == tenant_id))
        team = Team(tenant_id=tenant_id, slug="bench", name="Bench")
        session.add(team)
        session.flush()
        session.add(
            App(
                tenant_id=tenant_id,
                app_id="bench",
                title="Bench",
                owner="bench",
                team_id=team.id,
                cost_center_id=cost_center,
                created_by="bench",
            )
        )
        session.commit()
    ctx = build_secrets_context(runtime)
    admin = Requester(
        tenant_id=tenant_id,
        kind=RequesterKind.PRINCIPAL,
        actor="principal:bench",
        role=Role.ADMIN,
        principal_id="bench",
    )
    with runtime.session_factory() as session:
        kv.write_secret(admin, PATH, "bench-" + uuid.uuid4().hex, ctx=ctx, session=session)
    return runtime, ctx, admin


def bench_kv(runtime: Runtime, ctx: SecretsContext, admin: Requester, count: int) -> list[Series]:
    workload = Requester(
        tenant_id=admin.tenant_id, kind=RequesterKind.WORKLOAD, actor="app:bench", app="bench"
    )
    tenant_id = admin.tenant_id

    def bare_read() -> object:
        with runtime.session_factory() as session:
            row = session.execute(
                select(SecretVersion.ciphertext, SecretVersion.version)
                .join(SecretEntry, SecretEntry.id == SecretVersion.entry_id)
                .where(SecretEntry.tenant_id == tenant_id, SecretEntry.path == PATH)
                .where(SecretVersion.version == SecretEntry.current_version)
            ).one()
            data_key = ctx.data_keys.data_key(tenant_id, session=session)
            assert data_key is not None
            assert row[0] is not None
            return open_sealed(data_key, row[0], value_aad(tenant_id, PATH, row[1]))

    with runtime.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE IF NOT EXISTS bench_durable "
                "(id VARCHAR(32) PRIMARY KEY, body VARCHAR(600))"
            )
        )

    def durable_write() -> object:
        with runtime.session_factory() as session:
            session.execute(
                text("INSERT INTO bench_durable VALUES (:i, :b)"),
                {"i": uuid.uuid4().hex, "b": "x" * 500},
            )
            session.commit()
        return None

    def issue() -> object:
        with runtime.session_factory() as session:
            return kv.read_secret(workload, PATH, ctx=ctx, session=session)

    return [
        timed("KV floor: bare read + decrypt", count, bare_read),
        timed("KV floor: one durable INSERT+COMMIT", count, durable_write),
        timed("KV read with lease + audit", count, issue),
    ]


def _target_database(admin_url: str) -> tuple[str, Callable[[], None]]:
    name = f"qm_bench_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(admin_url, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"{admin_url.rsplit('/', 1)[0]}/{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE orders (id int primary key)")

    def drop() -> None:
        with psycopg.connect(admin_url, autocommit=True) as conn:
            conn.execute(
                sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
            )

    return url, drop


def bench_postgres(
    runtime: Runtime, ctx: SecretsContext, admin: Requester, count: int, admin_url: str
) -> list[Series]:
    target, drop_target = _target_database(admin_url)
    grants = parse_grants(
        [
            {"on": "database", "name": target.rsplit("/", 1)[1], "privileges": ["CONNECT"]},
            {"on": "schema", "name": "public", "privileges": ["USAGE"]},
            {"on": "table", "name": "public.orders", "privileges": ["SELECT"]},
        ]
    )
    try:
        with runtime.session_factory() as session:
            engines.configure_postgres_engine(
                admin,
                ENGINE_PATH,
                grants=grants,
                connection_url=target,
                default_ttl_seconds=600,
                max_ttl_seconds=3600,
                ctx=ctx,
                session=session,
            )
        conn = psycopg.connect(target)
        floor_create, floor_drop = [], []
        for index in range(count + 10):
            role = new_role_name()
            started = time.perf_counter()
            with conn.transaction():
                create_role(
                    conn,
                    role=role,
                    password=new_password(),
                    valid_until=datetime.now(UTC) + timedelta(minutes=10),
                    grants=grants,
                )
            middle = time.perf_counter()
            with conn.transaction():
                conn.execute(
                    sql.SQL("DROP OWNED BY {0}; DROP ROLE {0}").format(sql.Identifier(role))
                )
            ended = time.perf_counter()
            if index >= 10:
                floor_create.append(middle - started)
                floor_drop.append(ended - middle)
        conn.close()

        issue_times, revoke_times = [], []
        for index in range(count + 10):
            started = time.perf_counter()
            with runtime.session_factory() as session:
                cred = dynamic.issue_postgres_credential(
                    admin, ENGINE_PATH, ctx=ctx, session=session
                )
            middle = time.perf_counter()
            with runtime.session_factory() as session:
                revocation.revoke_lease(admin, cred.lease.id, ctx=ctx, session=session)
            ended = time.perf_counter()
            if index >= 10:
                issue_times.append(middle - started)
                revoke_times.append(ended - middle)
        # Checks that the figures are of real work: a revoked role is gone.
        with psycopg.connect(admin_url) as check:
            gone = check.execute(
                "SELECT 1 FROM pg_roles WHERE rolname = %s", (cred.username,)
            ).fetchone()
        assert gone is None, "revoked role still exists"
    finally:
        drop_target()
    return [
        Series("PG floor: bare CREATE ROLE + grants", floor_create),
        Series("PG issue credential (lease + role)", issue_times),
        Series("PG floor: bare DROP OWNED + DROP ROLE", floor_drop),
        Series("PG revoke (terminate + drop + audit)", revoke_times),
    ]


def _report(
    console: Console, kv_series: list[Series], pg_series: list[Series], backend: str
) -> None:
    table = Table(title=f"lease issuance latency (control plane: {backend})")
    for column in ("operation", "n", "p50 ms", "p99 ms", "p50 / floor", "p99 / floor"):
        table.add_column(column, justify="left" if column == "operation" else "right")

    def row(series: Series, floor: Series | None) -> None:
        ratios = (
            ("", "")
            if floor is None
            else (f"{series.p50 / floor.p50:.1f}x", f"{series.p99 / floor.p99:.1f}x")
        )
        table.add_row(
            series.name, str(len(series.seconds)), f"{series.p50:.2f}", f"{series.p99:.2f}", *ratios
        )

    if kv_series:
        bare, durable, issued = kv_series
        row(bare, None)
        row(durable, None)
        row(issued, bare)
        table.add_row(
            "  (same, against the durable-write floor)",
            "",
            "",
            "",
            f"{issued.p50 / durable.p50:.1f}x",
            f"{issued.p99 / durable.p99:.1f}x",
        )
    if pg_series:
        floor_create, issue, floor_drop, revoke = pg_series
        row(floor_create, None)
        row(issue, floor_create)
        row(floor_drop, None)
        row(revoke, floor_drop)
    console.print(table)


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.secrets", description=__doc__)
    parser.add_argument("--kv", type=int, default=2000, help="KV reads per series")
    parser.add_argument("--pg", type=int, default=200, help="dynamic credentials per series")
    parser.add_argument("--database-url", default=None, help="control plane (default: SQLite)")
    parser.add_argument(
        "--pg-admin",
        default="postgresql://postgres@127.0.0.1:5432/postgres",
        help="admin connection for the dynamic engine's target server",
    )
    args = parser.parse_args(argv)
    console = Console()
    with tempfile.TemporaryDirectory(prefix="qm-bench-secrets-") as workdir:
        runtime, ctx, admin = _setup(args.database_url, Path(workdir))
        try:
            kv_series = bench_kv(runtime, ctx, admin, args.kv) if args.kv > 0 else []
            pg_series = (
                bench_postgres(runtime, ctx, admin, args.pg, args.pg_admin) if args.pg > 0 else []
            )
        finally:
            ctx.close()
            runtime.close()
    backend = "PostgreSQL" if args.database_url else "SQLite (synchronous=FULL)"
    _report(console, kv_series, pg_series, backend)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
