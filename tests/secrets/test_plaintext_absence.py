"""Nothing is stored in plaintext: after writing, reading, rotating and configuring, a known
secret value is nowhere in the SQLite files' bytes or in any PostgreSQL table's contents."""

from __future__ import annotations

import secrets
from pathlib import Path

import psycopg
from psycopg import sql
from sqlalchemy import text

from quartermaster.runtime import Runtime
from quartermaster.secrets import engines, kv, kv_lifecycle, leases
from quartermaster.secrets.context import SecretsContext
from quartermaster.secrets.engines import parse_grants
from quartermaster.secrets.envelope import fingerprint
from quartermaster.secrets.postgres import libpq_url
from tests.secrets.conftest import World


def _needles(value: str) -> list[bytes]:
    raw = value.encode()
    return [raw, raw.hex().encode(), raw.hex().upper().encode(), value.encode("utf-16-le")]


def _exercise(world: World, ctx: SecretsContext, runtime: Runtime) -> tuple[str, str, str]:
    value = f"plain-{secrets.token_hex(16)}"
    rotated = f"rotated-{secrets.token_hex(16)}"
    db_password = f"pw-{secrets.token_hex(12)}"
    admin = world.admin()
    with runtime.session_factory() as session:
        kv.write_secret(admin, "apps/billing/needle", value, ctx=ctx, session=session)
        lease = kv.read_secret(admin, "apps/billing/needle", ctx=ctx, session=session).lease
        leases.renew_lease(admin, lease.id, increment_seconds=60, ctx=ctx, session=session)
        kv_lifecycle.rotate_secret(admin, "apps/billing/needle", rotated, ctx=ctx, session=session)
        kv.read_secret(admin, "apps/billing/needle", ctx=ctx, session=session)
        engines.configure_postgres_engine(
            admin,
            "apps/billing/db",
            grants=parse_grants([]),
            connection_url=f"postgresql://admin:{db_password}@127.0.0.1:5432/x",
            default_ttl_seconds=None,
            max_ttl_seconds=None,
            ctx=ctx,
            session=session,
        )
    return value, rotated, db_password


def test_no_plaintext_in_the_database(
    world: World, ctx: SecretsContext, runtime: Runtime, db_url: str
) -> None:
    values = _exercise(world, ctx, runtime)
    with runtime.session_factory() as session:
        # The stored fingerprint is the keyed HMAC: proves the value really went in.
        fp_key = ctx.data_keys.fingerprint_key(world.tenant_id, session=session)
        assert fp_key is not None
        stored = session.execute(text("SELECT fingerprint FROM secret_versions")).scalars().all()
    assert fingerprint(fp_key, values[0]) in stored

    if db_url.startswith("sqlite"):
        base = Path(db_url.removeprefix("sqlite:///"))
        files = [p for p in (base, Path(f"{base}-wal"), Path(f"{base}-shm")) if p.exists()]
        assert base in files
        haystacks = {str(p): p.read_bytes() for p in files}
    else:
        haystacks = _postgres_contents(db_url)
    assert haystacks
    for value in values:
        for needle in _needles(value):
            for where, hay in haystacks.items():
                assert needle not in hay, f"{value!r} found in plaintext in {where}"


def _postgres_contents(db_url: str) -> dict[str, bytes]:
    contents: dict[str, bytes] = {}
    with psycopg.connect(libpq_url(db_url)) as conn:
        tables = conn.execute(
            "SELECT tablename FROM pg_tables WHERE schemaname = 'public'"
        ).fetchall()
        for (table,) in tables:
            rows = conn.execute(
                sql.SQL("SELECT t::text FROM {} AS t").format(sql.Identifier(table))
            ).fetchall()
            contents[table] = "\n".join(r[0] for r in rows).encode()
    assert "secret_versions" in contents
    assert "audit_records" in contents
    return contents
