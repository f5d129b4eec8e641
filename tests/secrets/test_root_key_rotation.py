"""Root-key rotation end to end: every data key re-wrapped while reads continue, and the
`qm secret root-key` commands against a running server.

Each test gets its own database: one database has one root keyring, and the shared test
database holds data keys wrapped by many test data dirs' keyrings."""

from __future__ import annotations

import threading

import pytest
from click.testing import Result
from sqlalchemy import select
from typer.testing import CliRunner

from quartermaster.cli.main import app
from quartermaster.config import Settings
from quartermaster.runtime import Runtime
from quartermaster.secrets import kv
from quartermaster.secrets.context import (
    SecretsContext,
    build_secrets_context,
    count_by_root_key,
    rewrap_data_keys,
)
from quartermaster.secrets.keys import (
    add_root_key,
    keyring_path,
    read_keyring_file,
    remove_root_key,
)
from quartermaster.secrets.models import DataKey
from quartermaster.secrets.revocation import revoke_lease
from tests.secrets.conftest import World, run_ok

PATH = "apps/billing/db-password"


@pytest.fixture
def db_url(fresh_db_url: str) -> str:
    return fresh_db_url


def test_rotation_rewraps_every_data_key_while_reads_continue(
    make_world: object, settings: Settings, runtime: Runtime, ctx: SecretsContext
) -> None:
    assert callable(make_world)
    worlds: list[World] = [make_world() for _ in range(3)]
    for index, world in enumerate(worlds):
        with runtime.session_factory() as session:
            kv.write_secret(
                world.admin(), "apps/billing/k", f"value-{index}", ctx=ctx, session=session
            )
    path = keyring_path(settings)
    old_key = read_keyring_file(path).active
    new_key = add_root_key(path)

    failures: list[BaseException] = []
    stop = threading.Event()

    def reader() -> None:
        # A separate context, as another server process would have: no warm cache.
        while not stop.is_set():
            fresh = build_secrets_context(runtime)
            try:
                for index, world in enumerate(worlds):
                    with runtime.session_factory() as session:
                        got = kv.read_secret(
                            world.admin(),
                            "apps/billing/k",
                            ttl_seconds=5,
                            ctx=fresh,
                            session=session,
                        )
                    assert got.value == f"value-{index}"
                    # Done with it, as a client should be: the loop runs as long as the
                    # rewrap does and would otherwise fill the principal's lease quota.
                    with runtime.session_factory() as session:
                        revoke_lease(world.admin(), got.lease.id, ctx=fresh, session=session)
            except BaseException as exc:
                failures.append(exc)
                return
            finally:
                fresh.close()

    thread = threading.Thread(target=reader)
    thread.start()
    try:
        report = rewrap_data_keys(
            ctx.data_keys.provider, session_factory=runtime.session_factory, batch=1
        )
    finally:
        stop.set()
        thread.join()
    assert failures == []
    assert report.rewrapped >= 3
    counts = count_by_root_key(session_factory=runtime.session_factory)
    assert set(counts) == {new_key}
    with runtime.session_factory() as session:
        mine = session.scalars(
            select(DataKey.root_key_id).where(DataKey.tenant_id.in_([w.tenant_id for w in worlds]))
        ).all()
    assert set(mine) == {new_key}

    remove_root_key(path, old_key)
    after = build_secrets_context(runtime)
    try:
        with runtime.session_factory() as session:
            value = kv.read_secret(worlds[0].admin(), "apps/billing/k", ctx=after, session=session)
        assert value.value == "value-0"
    finally:
        after.close()


def test_root_key_rotation_commands(qm: CliRunner, settings: Settings, world: World) -> None:
    run_ok(qm, "secret", "put", PATH, "--value", "survives-rotation")
    old = read_keyring_file(keyring_path(settings)).active
    data_dir = str(settings.data_dir)
    env = {"QM_DATABASE_URL": settings.resolved_database_url}
    rotated = qm.invoke(app, ["secret", "root-key", "rotate", "--data-dir", data_dir], env=env)
    assert rotated.exit_code == 0, rotated.output
    new = read_keyring_file(keyring_path(settings)).active
    assert new != old
    assert f"under {new}" in rotated.output
    # The running server re-reads the keyring: the secret is still readable.
    assert run_ok(qm, "secret", "get", PATH) == "survives-rotation\n"
    retired = qm.invoke(app, ["secret", "root-key", "retire", old, "--data-dir", data_dir], env=env)
    assert retired.exit_code == 0, retired.output
    refused = qm.invoke(app, ["secret", "root-key", "retire", new, "--data-dir", data_dir], env=env)
    assert refused.exit_code == 1
    assert "run `qm secret root-key rotate`" in refused.output
    assert "rewrap" not in refused.output  # it moves nothing off the active key
    again = qm.invoke(app, ["secret", "root-key", "retire", old, "--data-dir", data_dir], env=env)
    assert again.exit_code == 1
    assert f"root key '{old}' is already retired" in again.output
    unknown = qm.invoke(
        app, ["secret", "root-key", "retire", "nosuch", "--data-dir", data_dir], env=env
    )
    assert unknown.exit_code == 1
    assert "no root key 'nosuch'" in unknown.output
    assert f"its keys: {new} (active)" in " ".join(unknown.output.split())
    assert "retired root key" not in unknown.output
    status = qm.invoke(app, ["secret", "root-key", "status", "--data-dir", data_dir], env=env)
    assert new in status.output
    assert old not in status.output
    assert run_ok(qm, "secret", "get", PATH) == "survives-rotation\n"


def test_retire_under_the_env_provider_checks_and_says_where_to_remove_the_key(
    qm: CliRunner, settings: Settings
) -> None:
    # The keys are in a variable the command cannot change: it checks the key can go (no data
    # key under it, not the active one, one the variable holds) and names the variable.
    env = {
        "QM_DATABASE_URL": settings.resolved_database_url,
        "QM_SECRETS_KEY_PROVIDER": "env",
        "QM_SECRETS_ROOT_KEYS": f"new:{'ab' * 32},old:{'cd' * 32}",
    }
    data_dir = str(settings.data_dir)

    def retire(key_id: str) -> Result:
        return qm.invoke(
            app, ["secret", "root-key", "retire", key_id, "--data-dir", data_dir], env=env
        )

    removable = retire("old")
    assert removable.exit_code == 0, removable.output
    assert "remove it from QM_SECRETS_ROOT_KEYS on every server" in " ".join(
        removable.output.split()
    )
    assert "keyring" not in removable.output
    active = retire("new")
    assert active.exit_code == 1
    assert "'new' is the active key" in active.output
    unknown = retire("nosuch")
    assert unknown.exit_code == 1
    assert "no root key 'nosuch' in QM_SECRETS_ROOT_KEYS (its keys: new (active), old)" in " ".join(
        unknown.output.split()
    )
