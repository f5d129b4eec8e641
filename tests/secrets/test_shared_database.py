"""Several servers on one database: a data dir whose keys are not the database's is refused
by `qm init` (and `qm serve`) in one line, naming what to copy. Unchecked, such a server
started and answered signed events, signing-key and secret reads with 500s."""

from __future__ import annotations

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

    shutil.copy(settings.data_dir / "server.key", second / "server.key")
    root_keys = _init(second, url)
    assert root_keys.returncode == 1
    said = " ".join(root_keys.stderr.split())
    assert "1 tenant data key(s) of this database are wrapped with root key(s)" in said
    assert f"({second / 'root-keys.json'}) do not hold" in said

    shutil.copy(settings.data_dir / "root-keys.json", second / "root-keys.json")
    matching = _init(second, url)
    assert matching.returncode == 0, matching.stderr
    assert "already initialized" in matching.stdout
