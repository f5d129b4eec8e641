"""Several servers on one database: a data dir whose keys are not the database's is refused
by `qm init` (and `qm serve`) in one line, naming what to copy. Unchecked, such a server
started and answered signed events, signing-key and secret reads with 500s."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

from quartermaster.catalog.models import App
from quartermaster.catalog.signing_keys import create_signing_key
from quartermaster.config import Settings
from quartermaster.runtime import Runtime
from quartermaster.secrets import kv
from quartermaster.secrets.context import SecretsContext
from tests.cli.test_main import QM, _env
from tests.secrets.conftest import World


@pytest.fixture
def db_url(fresh_db_url: str) -> str:
    return fresh_db_url


def _init(data_dir: Path, database_url: str) -> subprocess.CompletedProcess[str]:
    env = _env(QM_DATA_DIR=str(data_dir), QM_DATABASE_URL=database_url)
    return subprocess.run([*QM, "init"], env=env, capture_output=True, text=True, timeout=120)


def test_a_second_data_dir_needs_the_first_ones_keys(
    settings: Settings, runtime: Runtime, ctx: SecretsContext, world: World, tmp_path: Path
) -> None:
    with runtime.session_factory() as session:
        kv.write_secret(world.admin(), "apps/billing/db", "s3cret", ctx=ctx, session=session)
        app = session.query(App).filter_by(tenant_id=world.tenant_id, app_id="billing").one()
        create_signing_key(app, server_key=runtime.server_key, session=session)
        session.commit()
    url = settings.resolved_database_url
    second = tmp_path / "second-host"

    fresh = _init(second, url)
    assert fresh.returncode == 1
    said = " ".join(fresh.stderr.split())
    assert f"error: the server key {second / 'server.key'} is not the one this database's" in said
    assert "copy them from the data dir of the server that created the database" in said
    assert "Traceback" not in fresh.stderr
    assert not (second / "server.key").exists()  # the refused init's own keys are gone

    shutil.copy(settings.data_dir / "server.key", second / "server.key")
    root_keys = _init(second, url)
    assert root_keys.returncode == 1
    said = " ".join(root_keys.stderr.split())
    assert "1 tenant data key(s) of this database are wrapped with root key(s)" in said
    assert f"({second / 'root-keys.json'}) do not hold" in said

    shutil.copy(settings.data_dir / "root-keys.json", second / "root-keys.json")
    matching = _init(second, url)
    assert matching.returncode == 0, matching.stderr
    # the refused inits left no key of their own behind: the copied keys are kept
    assert "created the identity key" in " ".join(matching.stdout.split())
    assert (second / "server.key").read_bytes() == (settings.data_dir / "server.key").read_bytes()


def _said(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr
    return " ".join(result.stderr.split())


def test_on_a_new_database_a_second_server_needs_the_first_ones_keys(
    fresh_db_url: str, tmp_path: Path
) -> None:
    """Nothing sealed yet: the keys the first server recorded are what a second one is checked
    against. Unchecked, whichever server wrote the first secret or signing key broke the other."""
    first, second = tmp_path / "first-host", tmp_path / "second-host"
    assert _init(first, fresh_db_url).returncode == 0
    # No keys at all (a restored database, a new server): refused before it writes any,
    # which the database would refuse and which were left there to be overwritten.
    empty = _init(second, fresh_db_url)
    assert empty.returncode == 1
    said = _said(empty)
    assert (
        "error: this database already has its keys, and this data dir lacks the server key "
        "(server.key), root keyring (root-keys.json), identity key (identity-ed25519.pem)"
    ) in said
    assert "Restoring a backup: copy server.key, root-keys.json, identity-ed25519.pem" in said
    assert not (second / "server.key").exists()
    assert not (second / "identity-ed25519.pem").exists()
    assert _init(second, f"sqlite:///{tmp_path / 'other.db'}").returncode == 0  # its own keys

    server_key = _init(second, fresh_db_url)
    assert server_key.returncode == 1
    said = _said(server_key)
    assert f"the server key {second / 'server.key'} is not the one this database's first" in said

    shutil.copy(first / "server.key", second / "server.key")
    root_keys = _init(second, fresh_db_url)
    assert root_keys.returncode == 1
    said = _said(root_keys)
    first_root = json.loads((first / "root-keys.json").read_text())["active"]
    assert f"this database wraps tenant data keys with root key {first_root}" in said
    assert f"({second / 'root-keys.json'}) do not hold: copy root-keys.json" in said

    shutil.copy(first / "root-keys.json", second / "root-keys.json")
    identity = _init(second, fresh_db_url)
    assert identity.returncode == 1
    assert "identity-ed25519.pem is not the one this database's first server" in _said(identity)

    shutil.copy(first / "identity-ed25519.pem", second / "identity-ed25519.pem")
    matching = _init(second, fresh_db_url)
    assert matching.returncode == 0, matching.stderr


def test_after_a_rotation_a_server_without_the_new_root_key_is_refused(
    fresh_db_url: str, tmp_path: Path
) -> None:
    first, second = tmp_path / "first-host", tmp_path / "second-host"
    env = _env(QM_DATA_DIR=str(first), QM_DATABASE_URL=fresh_db_url)
    assert _init(first, fresh_db_url).returncode == 0
    shutil.copytree(first, second)
    old = json.loads((first / "root-keys.json").read_text())["active"]
    rotate = subprocess.run(
        [*QM, "secret", "root-key", "rotate"], env=env, capture_output=True, text=True, timeout=120
    )
    assert rotate.returncode == 0, rotate.stderr
    new = json.loads((first / "root-keys.json").read_text())["active"]

    stale = _init(second, fresh_db_url)
    assert stale.returncode == 1
    assert f"wraps tenant data keys with root key {new}, which this server's" in _said(stale)
    assert _init(first, fresh_db_url).returncode == 0

    # the old key can go (no data key under it); the database's own key cannot
    retire = [*QM, "secret", "root-key", "retire"]
    refused = subprocess.run([*retire, new], env=env, capture_output=True, text=True, timeout=120)
    assert refused.returncode == 1
    assert "is the active key" in _said(refused)
    retired = subprocess.run([*retire, old], env=env, capture_output=True, text=True, timeout=120)
    assert retired.returncode == 0, retired.stderr


def test_with_the_env_provider_init_writes_no_keyring_and_names_the_variable(
    fresh_db_url: str, tmp_path: Path
) -> None:
    first, second = tmp_path / "first-host", tmp_path / "second-host"

    def qm(data_dir: Path, keys: str, *args: str) -> subprocess.CompletedProcess[str]:
        env = _env(
            QM_DATA_DIR=str(data_dir),
            QM_DATABASE_URL=fresh_db_url,
            QM_SECRETS_KEY_PROVIDER="env",
            QM_SECRETS_ROOT_KEYS=keys,
        )
        return subprocess.run([*QM, *args], env=env, capture_output=True, text=True, timeout=120)

    def init(data_dir: Path, keys: str) -> subprocess.CompletedProcess[str]:
        return qm(data_dir, keys, "init")

    created = init(first, "rk_one:" + "11" * 32)
    assert created.returncode == 0, created.stderr
    assert "root keyring" not in created.stdout
    assert not (first / "root-keys.json").exists()

    second.mkdir()
    shutil.copy(first / "server.key", second / "server.key")
    shutil.copy(first / "identity-ed25519.pem", second / "identity-ed25519.pem")
    other = init(second, "rk_two:" + "22" * 32)
    assert other.returncode == 1
    said = _said(other)
    assert "with root key rk_one, which this server's root keys (QM_SECRETS_ROOT_KEYS)" in said
    assert "give every server the same keys in QM_SECRETS_ROOT_KEYS" in said
    assert not (second / "root-keys.json").exists()

    # Rotation under the env provider: the new key deployed first (the database's key is
    # still the old one, which cannot be retired), then rewrap makes the new one the database's.
    rotated = "rk_new:" + "33" * 32 + ",rk_one:" + "11" * 32
    assert init(first, rotated).returncode == 0
    early = qm(first, rotated, "secret", "root-key", "retire", "rk_one")
    assert early.returncode == 1
    assert "rk_one is the root key this database wraps new data keys with" in _said(early)
    assert qm(first, rotated, "secret", "root-key", "rewrap").returncode == 0
    retired = qm(first, rotated, "secret", "root-key", "retire", "rk_one")
    assert retired.returncode == 0, retired.stderr
    assert "remove it from QM_SECRETS_ROOT_KEYS on every server" in retired.stdout
    assert init(first, "rk_one:" + "11" * 32).returncode == 1


def test_a_restored_data_dir_missing_a_key_is_told_to_copy_it_not_to_run_init(
    fresh_db_url: str, tmp_path: Path
) -> None:
    """`qm init` makes new keys, which a restored database refuses: the messages of a data dir
    lacking one say to copy it from the backup, and nothing is generated in its place."""
    first, restored = tmp_path / "backup", tmp_path / "restored"
    assert _init(first, fresh_db_url).returncode == 0
    restored.mkdir(mode=0o700)
    env = _env(QM_DATA_DIR=str(restored), QM_DATABASE_URL=fresh_db_url)

    def serve() -> str:
        result = subprocess.run(
            [*QM, "serve", "--port", "0"], env=env, capture_output=True, text=True, timeout=120
        )
        assert result.returncode == 1, result.stderr
        return _said(result)

    shutil.copy(first / "server.key", restored / "server.key")
    said = serve()
    assert f"no root keyring at {restored / 'root-keys.json'}: restoring a backup, copy " in said
    assert "root-keys.json from it" in said

    shutil.copy(first / "root-keys.json", restored / "root-keys.json")
    said = serve()
    assert f"no identity key at {restored / 'identity-ed25519.pem'}, and this database's" in said
    assert "restoring a backup, copy identity-ed25519.pem from it" in said
    assert not (restored / "identity-ed25519.pem").exists()  # not generated, then refused
