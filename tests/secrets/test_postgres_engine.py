"""The dynamic PostgreSQL engine against the real server on 127.0.0.1:5432: the credential
logs in while its lease lives, cannot after revocation or expiry, and sessions opened before
are terminated."""

from __future__ import annotations

import base64
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from fastapi.testclient import TestClient
from psycopg import sql

from quartermaster.audit.log import list_records
from quartermaster.config import Settings
from quartermaster.errors import ConflictError, InvalidInputError, ServiceUnavailableError
from quartermaster.runtime import Runtime, build_runtime
from quartermaster.secrets import dynamic, engines, leases, revocation
from quartermaster.secrets.context import SecretsContext, build_secrets_context
from quartermaster.secrets.engines import parse_grants
from quartermaster.secrets.identity import generate_identity_key
from quartermaster.secrets.keys import generate_root_keyring
from quartermaster.secrets.postgres import GrantSpec, new_password, scram_sha256_verifier
from quartermaster.secrets.reaper import reap_once
from tests.conftest import PG_ADMIN_DSN, make_settings
from tests.secrets.conftest import World

pytestmark = pytest.mark.postgresql

ENGINE_PATH = "apps/billing/db"
SERVER = PG_ADMIN_DSN.rsplit("/", 1)[0]  # postgresql://postgres@127.0.0.1:5432


@pytest.fixture(scope="module")
def target_db() -> Iterator[str]:
    """A database with a granted and an ungranted table; only granted roles may connect."""
    name = f"qm_target_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    url = f"{SERVER}/{name}"
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            sql.SQL("REVOKE CONNECT ON DATABASE {} FROM PUBLIC").format(sql.Identifier(name))
        )
        conn.execute("CREATE TABLE orders (id int primary key, total numeric)")
        conn.execute("INSERT INTO orders VALUES (1, 9.5)")
        conn.execute("CREATE TABLE salaries (id int primary key, amount numeric)")
    yield url
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        leftovers = conn.execute(
            "SELECT rolname FROM pg_roles WHERE rolname LIKE 'qm\\_%%' "
            "AND has_database_privilege(rolname, %s, 'CONNECT')",
            (name,),
        ).fetchall()
        conn.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )
        for (role,) in leftovers:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(role)))
    assert leftovers == [], f"roles outlived their leases: {leftovers}"


GRANTS = [
    {"on": "database", "name": "", "privileges": ["CONNECT"]},
    {"on": "schema", "name": "public", "privileges": ["USAGE"]},
    {"on": "table", "name": "public.orders", "privileges": ["SELECT"]},
]


def _grants(target_db: str) -> list[GrantSpec]:
    raw = [dict(g) for g in GRANTS]
    raw[0]["name"] = target_db.rsplit("/", 1)[1]
    return parse_grants(raw)


def _mount(
    world: World, ctx: SecretsContext, runtime: Runtime, target_db: str, *, max_ttl: int = 3600
) -> None:
    with runtime.session_factory() as session:
        engines.configure_postgres_engine(
            world.admin(),
            ENGINE_PATH,
            grants=_grants(target_db),
            connection_url=target_db,
            default_ttl_seconds=300,
            max_ttl_seconds=max_ttl,
            ctx=ctx,
            session=session,
        )


def _login(target_db: str, user: str, password: str) -> psycopg.Connection:
    host_part = target_db.split("@", 1)[1]
    return psycopg.connect(f"postgresql://{user}:{password}@{host_part}", connect_timeout=5)


def _role_exists(role: str) -> bool:
    with psycopg.connect(PG_ADMIN_DSN) as conn:
        return (
            conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (role,)).fetchone()
            is not None
        )


def test_credential_works_while_leased_and_not_after_revocation(
    world: World, ctx: SecretsContext, runtime: Runtime, target_db: str
) -> None:
    _mount(world, ctx, runtime, target_db)
    with runtime.session_factory() as session:
        cred = dynamic.issue_postgres_credential(
            world.workload("billing"), ENGINE_PATH, ttl_seconds=120, ctx=ctx, session=session
        )
    assert cred.username.startswith("qm_")
    assert cred.lease.ttl_seconds() <= 120
    session_before = _login(target_db, cred.username, cred.password)
    assert session_before.execute("SELECT count(*) FROM orders").fetchone() == (1,)
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        session_before.execute("SELECT * FROM salaries")
    session_before.rollback()
    with psycopg.connect(PG_ADMIN_DSN) as admin:
        valid_until = admin.execute(
            "SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s", (cred.username,)
        ).fetchone()
    assert valid_until is not None
    assert abs((valid_until[0] - cred.lease.expires_at).total_seconds()) < 1

    with runtime.session_factory() as session:
        result = revocation.revoke_lease(
            world.workload("billing"), cred.lease.id, ctx=ctx, session=session
        )
    assert (result.status, result.cleanup_pending) == ("revoked", False)
    with pytest.raises(psycopg.OperationalError):
        session_before.execute("SELECT 1")  # terminated at revocation
    session_before.close()
    with pytest.raises(psycopg.OperationalError, match=r"does not exist|authentication failed"):
        _login(target_db, cred.username, cred.password)
    assert not _role_exists(cred.username)


def test_expiry_terminates_sessions_and_drops_the_role(
    world: World, ctx: SecretsContext, runtime: Runtime, target_db: str
) -> None:
    _mount(world, ctx, runtime, target_db)
    with runtime.session_factory() as session:
        cred = dynamic.issue_postgres_credential(
            world.admin(), ENGINE_PATH, ttl_seconds=1, ctx=ctx, session=session
        )
    opened = _login(target_db, cred.username, cred.password)
    time.sleep(1.2)
    report = reap_once(ctx)
    assert report.expired >= 1
    with pytest.raises(psycopg.OperationalError):
        opened.execute("SELECT 1")
    opened.close()
    with pytest.raises(psycopg.OperationalError):
        _login(target_db, cred.username, cred.password)
    with runtime.session_factory() as session:
        info = leases.get_lease(world.admin(), cred.lease.id, session=session)
    assert (info.state, info.end_reason, info.cleanup_pending) == ("ended", "expired", False)


def test_renew_moves_valid_until_within_max_ttl(
    world: World, ctx: SecretsContext, runtime: Runtime, target_db: str
) -> None:
    _mount(world, ctx, runtime, target_db, max_ttl=600)
    with runtime.session_factory() as session:
        cred = dynamic.issue_postgres_credential(
            world.admin(), ENGINE_PATH, ttl_seconds=60, ctx=ctx, session=session
        )
        renewed = leases.renew_lease(
            world.admin(), cred.lease.id, increment_seconds=10_000, ctx=ctx, session=session
        )
        assert renewed.expires_at == renewed.max_expires_at
        with psycopg.connect(PG_ADMIN_DSN) as admin:
            row = admin.execute(
                "SELECT rolvaliduntil FROM pg_roles WHERE rolname = %s", (cred.username,)
            ).fetchone()
        assert row is not None
        assert abs((row[0] - renewed.expires_at).total_seconds()) < 1
        revocation.revoke_prefix(world.admin(), "apps/billing", ctx=ctx, session=session)
    assert not _role_exists(cred.username)


def test_unreachable_database_leaves_cleanup_to_the_reaper(
    world: World, ctx: SecretsContext, runtime: Runtime, target_db: str
) -> None:
    _mount(world, ctx, runtime, target_db)
    with runtime.session_factory() as session:
        cred = dynamic.issue_postgres_credential(
            world.admin(), ENGINE_PATH, ctx=ctx, session=session
        )
        engines.configure_postgres_engine(
            world.admin(),
            ENGINE_PATH,
            grants=_grants(target_db),
            # The same database, reached as an admin it refuses (another database is refused
            # while the engine has live leases).
            connection_url=target_db.replace("postgres@", "qm_no_such_admin@", 1),
            default_ttl_seconds=300,
            max_ttl_seconds=3600,
            ctx=ctx,
            session=session,
        )
        result = revocation.revoke_lease(world.admin(), cred.lease.id, ctx=ctx, session=session)
        assert (result.status, result.cleanup_pending) == ("revoked", True)
        assert _role_exists(cred.username)
        # Revoking again is still success; the lease is over for the broker either way.
        assert (
            revocation.revoke_lease(world.admin(), cred.lease.id, ctx=ctx, session=session).status
            == "already_ended"
        )
    _mount(world, ctx, runtime, target_db)
    report = reap_once(ctx)
    assert report.cleaned >= 1
    assert not _role_exists(cred.username)


def test_a_database_that_cannot_be_reached_is_503_and_one_that_refuses_is_409(
    world: World, ctx: SecretsContext, runtime: Runtime, target_db: str
) -> None:
    def issue_through(url: str) -> None:
        _mount_as(world, ctx, runtime, target_db, url)
        with runtime.session_factory() as session:
            try:
                dynamic.issue_postgres_credential(
                    world.admin(), ENGINE_PATH, ctx=ctx, session=session
                )
            finally:
                live = leases.list_leases(world.admin(), prefix=ENGINE_PATH, session=session)
                assert [lease for lease in live if lease.state != "ended"] == []

    # Nothing listens on port 1: an outage, worth asking again later.
    closed = target_db.replace("@127.0.0.1:5432/", "@127.0.0.1:1/", 1)
    assert closed != target_db
    with pytest.raises(ServiceUnavailableError, match=r"cannot be reached: .*Connection refused"):
        issue_through(closed)
    # The server answers and refuses the login: a refusal, not an outage.
    refused = target_db.replace("postgres@", "qm_no_such_admin@", 1)
    with pytest.raises(ConflictError, match=r'refused the credential: .*role "qm_no_such_admin"'):
        issue_through(refused)


def test_a_failing_grant_leaves_no_role_and_no_live_lease(
    world: World, ctx: SecretsContext, runtime: Runtime, target_db: str
) -> None:
    bad = parse_grants([{"on": "table", "name": "public.missing", "privileges": ["SELECT"]}])
    with runtime.session_factory() as session:
        engines.configure_postgres_engine(
            world.admin(),
            ENGINE_PATH,
            grants=bad,
            connection_url=target_db,
            default_ttl_seconds=60,
            max_ttl_seconds=600,
            ctx=ctx,
            session=session,
        )
        with pytest.raises(ConflictError, match="does not exist"):
            dynamic.issue_postgres_credential(world.admin(), ENGINE_PATH, ctx=ctx, session=session)
        live = leases.list_leases(world.admin(), prefix=ENGINE_PATH, session=session)
        ended = leases.list_leases(
            world.admin(), prefix=ENGINE_PATH, live_only=False, session=session
        )
    assert live == []
    assert [(i.state, i.end_reason) for i in ended] == [("ended", "issue_failed")]


def test_grant_templates_are_validated() -> None:
    with pytest.raises(InvalidInputError, match="does not apply to schema"):
        parse_grants([{"on": "schema", "name": "public", "privileges": ["SELECT"]}])
    with pytest.raises(InvalidInputError, match="takes no privileges"):
        parse_grants([{"on": "role", "name": "readers", "privileges": ["SELECT"]}])
    spec = parse_grants([{"on": "table", "name": 'odd"name', "privileges": ["select"]}])[0]
    from quartermaster.secrets.postgres import grant_statement

    with psycopg.connect(PG_ADMIN_DSN) as conn:
        text = grant_statement(spec, "qm_x").as_string(conn)
    assert text == 'GRANT SELECT ON TABLE "odd""name" TO "qm_x"'


def test_server_wide_connection_is_used_when_an_engine_has_none(
    world: World, tmp_path: Path, db_url: str, target_db: str
) -> None:
    settings: Settings = make_settings(
        tmp_path / "srv", db_url, pipeline_enabled=False, secrets_postgres_url=target_db
    )
    generate_root_keyring(settings)
    generate_identity_key(settings)
    runtime = build_runtime(settings, migrate=False)
    ctx = build_secrets_context(runtime)
    try:
        with runtime.session_factory() as session:
            info = engines.configure_postgres_engine(
                world.admin(),
                ENGINE_PATH,
                grants=_grants(target_db),
                connection_url=None,
                default_ttl_seconds=None,
                max_ttl_seconds=None,
                ctx=ctx,
                session=session,
            )
            assert not info.has_own_connection
            cred = dynamic.issue_postgres_credential(
                world.admin(), ENGINE_PATH, ctx=ctx, session=session
            )
            _login(target_db, cred.username, cred.password).close()
            revocation.revoke_lease(world.admin(), cred.lease.id, ctx=ctx, session=session)
    finally:
        ctx.close()
        runtime.close()


def test_reaper_cleans_up_an_issue_interrupted_by_a_crash(
    world: World, ctx: SecretsContext, runtime: Runtime, target_db: str
) -> None:
    """A crash after the role was created but before the lease became active: the reaper
    finds the lease still `issuing`, drops the role and ends the lease."""
    from datetime import timedelta

    from sqlalchemy import update

    from quartermaster.domain.timeutil import utc_now
    from quartermaster.secrets.leases import issue_lease, lease_terms
    from quartermaster.secrets.models import LeaseKind, LeaseState, SecretLease
    from quartermaster.secrets.postgres import create_role, new_password, new_role_name

    _mount(world, ctx, runtime, target_db)
    role = new_role_name()
    with runtime.session_factory() as session:
        engine = engines.find_engine(world.tenant_id, ENGINE_PATH, session=session)
        assert engine is not None
        lease = issue_lease(
            world.admin(),
            kind=LeaseKind.POSTGRES,
            path=ENGINE_PATH,
            version=None,
            terms=lease_terms(600, default_ttl=600, max_ttl=3600),
            ctx=ctx,
            session=session,
            state=LeaseState.ISSUING,
            engine_id=engine.id,
            role_name=role,
        )
        session.commit()
    password = new_password()
    with psycopg.connect(target_db) as conn:
        create_role(
            conn,
            role=role,
            password=password,
            valid_until=lease.expires_at,
            grants=_grants(target_db),
        )
    # ... and the process died here. A minute later:
    with runtime.session_factory() as session:
        session.execute(
            update(SecretLease)
            .where(SecretLease.id == lease.id)
            .values(issued_at=utc_now() - timedelta(minutes=2))
        )
        session.commit()
    report = reap_once(ctx)
    assert report.abandoned >= 1
    assert not _role_exists(role)
    with runtime.session_factory() as session:
        info = leases.get_lease(world.admin(), lease.id, session=session)
    assert (info.state, info.end_reason, info.cleanup_pending) == ("ended", "abandoned", False)


@pytest.fixture(scope="module")
def least_admin(target_db: str) -> Iterator[str]:
    """An engine admin with exactly the privileges docs/secrets.md lists, not a superuser:
    CREATEROLE, membership in pg_signal_backend, and what it grants WITH GRANT OPTION."""
    name = f"qmadmin_{uuid.uuid4().hex[:10]}"
    ident = sql.Identifier(name)
    database = target_db.rsplit("/", 1)[1]
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN CREATEROLE PASSWORD {}").format(
                ident, sql.Literal("admin-pw")
            )
        )
        conn.execute(sql.SQL("GRANT pg_signal_backend TO {}").format(ident))
    with psycopg.connect(target_db, autocommit=True) as conn:
        conn.execute(
            sql.SQL("GRANT CONNECT ON DATABASE {} TO {} WITH GRANT OPTION").format(
                sql.Identifier(database), ident
            )
        )
        conn.execute(sql.SQL("GRANT USAGE ON SCHEMA public TO {} WITH GRANT OPTION").format(ident))
        conn.execute(sql.SQL("GRANT SELECT ON orders TO {} WITH GRANT OPTION").format(ident))
    host_part = target_db.split("@", 1)[1]
    yield f"postgresql://{name}:admin-pw@{host_part}"
    with psycopg.connect(target_db, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(ident))
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(ident))


def _mount_as(
    world: World, ctx: SecretsContext, runtime: Runtime, target_db: str, connection_url: str
) -> None:
    with runtime.session_factory() as session:
        engines.configure_postgres_engine(
            world.admin(),
            ENGINE_PATH,
            grants=_grants(target_db),
            connection_url=connection_url,
            default_ttl_seconds=300,
            max_ttl_seconds=3600,
            ctx=ctx,
            session=session,
        )


def _role_row(role: str) -> tuple[bool, object] | None:
    with psycopg.connect(PG_ADMIN_DSN) as conn:
        row = conn.execute(
            "SELECT rolcanlogin, rolvaliduntil FROM pg_roles WHERE rolname = %s", (role,)
        ).fetchone()
    return None if row is None else (bool(row[0]), row[1])


def test_revocation_with_the_documented_privileges_ends_the_credential(
    world: World, ctx: SecretsContext, runtime: Runtime, target_db: str, least_admin: str
) -> None:
    """Not a superuser: the engine admin has only what the docs list, and revoking still
    ends the sessions, refuses the login and drops the role (PostgreSQL 15 refused
    REASSIGN OWNED to a non-member, which used to undo the whole revocation)."""
    _mount_as(world, ctx, runtime, target_db, least_admin)
    with runtime.session_factory() as session:
        cred = dynamic.issue_postgres_credential(
            world.workload("billing"), ENGINE_PATH, ctx=ctx, session=session
        )
    opened = _login(target_db, cred.username, cred.password)
    assert opened.execute("SELECT count(*) FROM orders").fetchone() == (1,)
    with runtime.session_factory() as session:
        result = revocation.revoke_lease(
            world.workload("billing"), cred.lease.id, ctx=ctx, session=session
        )
    assert (result.status, result.cleanup_pending) == ("revoked", False)
    with pytest.raises(psycopg.OperationalError):
        opened.execute("SELECT 1")
    opened.close()
    with pytest.raises(psycopg.OperationalError, match=r"does not exist|authentication failed"):
        _login(target_db, cred.username, cred.password)
    assert not _role_exists(cred.username)


def test_a_failed_drop_leaves_the_role_unable_to_log_in_and_the_reaper_finishes(
    world: World,
    ctx: SecretsContext,
    runtime: Runtime,
    target_db: str,
    least_admin: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The drop is refused (the role holds a privilege in another database, which DROP OWNED
    in the target cannot revoke): the login is disabled all the same, in its own committed
    step, the failure is logged at WARNING and shown on the lease, and the reaper drops the
    role once the obstacle is gone."""
    _mount_as(world, ctx, runtime, target_db, least_admin)
    with runtime.session_factory() as session:
        cred = dynamic.issue_postgres_credential(
            world.workload("billing"), ENGINE_PATH, ctx=ctx, session=session
        )
    role = sql.Identifier(cred.username)
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute(sql.SQL("GRANT CONNECT ON DATABASE postgres TO {}").format(role))
    opened = _login(target_db, cred.username, cred.password)
    try:
        with (
            caplog.at_level("WARNING", logger="quartermaster.secrets"),
            runtime.session_factory() as session,
        ):
            result = revocation.revoke_lease(world.admin(), cred.lease.id, ctx=ctx, session=session)
        assert (result.status, result.cleanup_pending) == ("revoked", True)
        warned = [r for r in caplog.records if r.levelname == "WARNING"]
        assert any(cred.username in r.getMessage() for r in warned), caplog.text
        assert "cannot be dropped" in caplog.text
        row = _role_row(cred.username)
        assert row is not None
        can_login, valid_until = row
        assert not can_login
        assert str(valid_until).startswith("1970-01-01")
        with pytest.raises(psycopg.OperationalError):
            opened.execute("SELECT 1")  # terminated although the drop failed
        with pytest.raises(psycopg.OperationalError, match="not permitted to log in"):
            _login(target_db, cred.username, cred.password)
        with runtime.session_factory() as session:
            info = leases.get_lease(world.admin(), cred.lease.id, session=session)
        assert info.cleanup_pending
        assert info.cleanup_error is not None
        assert "disabled" in info.cleanup_error
        assert "not dropped" in info.cleanup_error
        with runtime.session_factory() as session:
            record = list_records(world.tenant_id, action="revoke", session=session)[0].record
        assert record.detail["role_dropped"] is False
        assert record.detail["cleanup_error"] == info.cleanup_error
        # Still refused: the reaper retries, and the role stays unusable meanwhile.
        assert reap_once(ctx).still_pending >= 1
        assert _role_row(cred.username) is not None
    finally:
        opened.close()
        with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("REVOKE CONNECT ON DATABASE postgres FROM {}").format(role))
    assert reap_once(ctx).cleaned >= 1
    assert not _role_exists(cred.username)
    with runtime.session_factory() as session:
        info = leases.get_lease(world.admin(), cred.lease.id, session=session)
    assert (info.cleanup_pending, info.cleanup_error) == (False, None)


def test_the_reaper_drops_expired_roles_with_the_documented_privileges(
    world: World, ctx: SecretsContext, runtime: Runtime, target_db: str, least_admin: str
) -> None:
    _mount_as(world, ctx, runtime, target_db, least_admin)
    with runtime.session_factory() as session:
        cred = dynamic.issue_postgres_credential(
            world.workload("billing"), ENGINE_PATH, ttl_seconds=1, ctx=ctx, session=session
        )
    opened = _login(target_db, cred.username, cred.password)
    time.sleep(1.2)
    assert reap_once(ctx).expired >= 1
    with pytest.raises(psycopg.OperationalError):
        opened.execute("SELECT 1")
    opened.close()
    with pytest.raises(psycopg.OperationalError, match=r"does not exist|authentication failed"):
        _login(target_db, cred.username, cred.password)
    assert not _role_exists(cred.username)
    with runtime.session_factory() as session:
        info = leases.get_lease(world.admin(), cred.lease.id, session=session)
    assert (info.state, info.end_reason, info.cleanup_pending) == ("ended", "expired", False)


def test_a_new_connection_is_refused_while_the_engine_has_live_leases(
    client: TestClient, world: World, target_db: str
) -> None:
    """Re-mounting with a connection_url to another database moved the engine under its live
    leases (200), leaving their roles where renew, revoke and the reaper no longer looked; as
    DELETE, it is a 409 naming them. The same database again (another admin login to it too),
    or new grants and TTLs, are a re-mount."""
    url = f"/v1/secrets/engines/{ENGINE_PATH}"
    grants = [g.model_dump() for g in _grants(target_db)]
    body = {"connection_url": target_db, "grants": grants, "default_ttl_seconds": 300}
    h = world.headers
    assert client.put(url, json=body, headers=h).status_code == 200
    cred = client.post(f"/v1/secrets/creds/{ENGINE_PATH}", json={}, headers=h)
    assert cred.status_code == 200, cred.text
    lease_id = cred.json()["lease"]["id"]
    same = {**body, "default_ttl_seconds": 600, "connection_url": f" {target_db} "}
    again = client.put(url, json=same, headers=h)
    assert (again.status_code, again.json()["default_ttl_seconds"]) == (200, 600)
    # Another admin login (a rotated password) to the same database is a re-mount too.
    relogin = {**body, "connection_url": target_db.replace("postgres@", "postgres:pw@", 1)}
    assert client.put(url, json=relogin, headers=h).status_code == 200
    assert client.put(url, json=body, headers=h).status_code == 200
    elsewhere = f"{SERVER}/postgres"
    refused = client.put(url, json={**body, "connection_url": elsewhere}, headers=h)
    assert refused.status_code == 409, refused.text
    error = refused.json()["error"]
    assert error["field"] == "connection_url"
    assert f"has 1 live lease (e.g. {lease_id})" in error["message"]
    assert f"qm lease revoke-prefix {ENGINE_PATH}" in error["message"]
    deleted = client.delete(url, headers=h)
    assert deleted.status_code == 409
    assert f"still has 1 live lease (e.g. {lease_id})" in deleted.json()["error"]["message"]
    assert client.post(f"/v1/leases/{lease_id}/revoke", headers=h).json()["status"] == "revoked"
    moved_now = client.put(url, json={**body, "connection_url": elsewhere}, headers=h)
    assert moved_now.status_code == 200, moved_now.text
    assert client.delete(url, headers=h).status_code == 204


def test_scram_verifier_is_the_one_postgresql_computes() -> None:
    """Same salt and iterations as a verifier PostgreSQL made itself from the password: the
    same StoredKey and ServerKey, so the server accepts the password against ours."""
    role = f"qm_scram_{uuid.uuid4().hex[:8]}"
    password = new_password()
    with psycopg.connect(PG_ADMIN_DSN, autocommit=True) as conn:
        conn.execute("SET password_encryption = 'scram-sha-256'")
        conn.execute(
            sql.SQL("CREATE ROLE {} PASSWORD {}").format(
                sql.Identifier(role), sql.Literal(password)
            )
        )
        try:
            stored = _stored_verifier(conn, role)
        finally:
            conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))
    iterations, salt = _verifier_salt(stored)
    assert scram_sha256_verifier(password, salt=salt, iterations=iterations) == stored
    assert scram_sha256_verifier(password) != scram_sha256_verifier(password)  # random salt
    with pytest.raises(ValueError, match="printable ASCII"):
        scram_sha256_verifier("pässword")


def test_the_password_is_never_sent_to_the_database(
    world: World,
    ctx: SecretsContext,
    runtime: Runtime,
    target_db: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """CREATE ROLE carried the password in plain text, which the server logs with
    log_statement = ddl (or when the statement fails): it now carries the SCRAM verifier, and
    the credential still logs in with the password."""
    sent: list[str] = []
    execute = psycopg.Connection.execute

    def capture(self: psycopg.Connection, query: Any, *args: Any, **kwargs: Any) -> Any:
        sent.append(query if isinstance(query, str) else query.as_string(self))
        return execute(self, query, *args, **kwargs)

    monkeypatch.setattr(psycopg.Connection, "execute", capture)
    _mount(world, ctx, runtime, target_db)
    with runtime.session_factory() as session:
        cred = dynamic.issue_postgres_credential(
            world.workload("billing"), ENGINE_PATH, ctx=ctx, session=session
        )
    monkeypatch.undo()
    creates = [s for s in sent if s.startswith("CREATE ROLE")]
    assert len(creates) == 1
    assert "SCRAM-SHA-256$4096:" in creates[0]
    assert not [s for s in sent if cred.password in s]
    with psycopg.connect(PG_ADMIN_DSN) as conn:
        stored = _stored_verifier(conn, cred.username)
    iterations, salt = _verifier_salt(stored)
    assert stored == scram_sha256_verifier(cred.password, salt=salt, iterations=iterations)
    with _login(target_db, cred.username, cred.password) as conn:
        assert conn.execute("SELECT count(*) FROM orders").fetchone() == (1,)
    with runtime.session_factory() as session:
        revocation.revoke_lease(world.admin(), cred.lease.id, ctx=ctx, session=session)


def _stored_verifier(conn: psycopg.Connection, role: str) -> str:
    row = conn.execute("SELECT rolpassword FROM pg_authid WHERE rolname = %s", (role,)).fetchone()
    assert row is not None
    assert row[0].startswith("SCRAM-SHA-256$"), row
    return str(row[0])


def _verifier_salt(verifier: str) -> tuple[int, bytes]:
    iterations, salt = verifier.split("$")[1].split(":")
    return int(iterations), base64.b64decode(salt)
