"""`qm init` on a data dir whose keys are there but cannot be used: every bad key is named in
one refusal, exit status 1, and nothing is written (no key file replaced or added, no schema)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from quartermaster.cli.init_keys import key_files, key_problems
from quartermaster.config import Settings
from tests.cli.test_main import QM, _env
from tests.conftest import BACKENDS, create_pg_database

KEY_FILES = ("server.key", "root-keys.json", "identity-ed25519.pem")


def _init(env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run([*QM, "init"], env=env, capture_output=True, text=True, timeout=120)


def _snapshot(data_dir: Path) -> dict[str, tuple[bytes, int, int]]:
    """Every file's content, mode and modification time."""
    return {
        path.name: (path.read_bytes(), path.stat().st_mode, path.stat().st_mtime_ns)
        for path in sorted(data_dir.iterdir())
    }


def _write(path: Path, content: str, mode: int = 0o600) -> None:
    path.write_text(content)
    path.chmod(mode)


@pytest.fixture
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[str, str]]:
    """An empty database of each backend: (QM_DATABASE_URL, SQLAlchemy URL)."""
    if request.param == "postgresql":
        url, drop = create_pg_database()
        yield url, url
        drop()
    else:
        url = f"sqlite:///{tmp_path / 'empty.db'}"
        yield url, url


def _tables(url: str) -> list[str]:
    engine = sqlalchemy.create_engine(url)
    try:
        return sqlalchemy.inspect(engine).get_table_names()
    finally:
        engine.dispose()


@pytest.mark.parametrize("database", BACKENDS, indirect=True)
def test_init_names_every_bad_key_and_writes_nothing(
    tmp_path: Path, database: tuple[str, str]
) -> None:
    data_dir = tmp_path / "qm"
    data_dir.mkdir(mode=0o700)
    env = _env(QM_DATA_DIR=str(data_dir), QM_DATABASE_URL=database[0])
    # The identity key is missing: it must not be created beside the two bad ones.
    _write(data_dir / "server.key", "not hex at all\n")
    _write(data_dir / "root-keys.json", "{bad json")
    before = _snapshot(data_dir)

    refused = _init(env)

    assert refused.returncode == 1
    said = " ".join(refused.stderr.split())
    assert "Traceback" not in refused.stderr
    assert "error: qm init changed nothing: 2 keys cannot be used" in said
    assert (
        f"the server key: {data_dir / 'server.key'} does not hold a server key "
        "(64 hexadecimal digits)"
    ) in said
    assert f"the root keyring: {data_dir / 'root-keys.json'} is not a keyring" in said
    assert "identity" not in said  # a missing key is not a problem, and not created either
    assert _snapshot(data_dir) == before
    assert _tables(database[1]) == []  # no schema either

    # Fixed one, the other is still named, alone; still nothing written.
    (data_dir / "server.key").unlink()
    refused = _init(env)
    assert refused.returncode == 1
    said = " ".join(refused.stderr.split())
    assert "a key cannot be used" in said
    assert "root-keys.json is not a keyring" in said
    assert "server.key" not in said
    assert sorted(p.name for p in data_dir.iterdir()) == ["root-keys.json"]

    # All bad files moved away: the keys are made and the schema created.
    (data_dir / "root-keys.json").unlink()
    made = _init(env)
    assert made.returncode == 0, made.stderr
    assert sorted(p.name for p in data_dir.iterdir() if p.name in KEY_FILES) == sorted(KEY_FILES)
    assert "alembic_version" in _tables(database[1])


def test_a_fresh_data_dir_gets_every_key_and_a_second_init_changes_nothing(
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "qm"
    env = _env(QM_DATA_DIR=str(data_dir))
    first = _init(env)
    assert first.returncode == 0, first.stderr
    for name in KEY_FILES:
        assert (data_dir / name).stat().st_mode & 0o777 == 0o600
    keys = {name: v for name, v in _snapshot(data_dir).items() if name in KEY_FILES}

    again = _init(env)
    assert again.returncode == 0, again.stderr
    assert "already initialized: its keys are kept as they were" in " ".join(again.stdout.split())
    assert {name: v for name, v in _snapshot(data_dir).items() if name in KEY_FILES} == keys


def test_a_malformed_root_key_variable_is_named_and_no_data_dir_is_made(tmp_path: Path) -> None:
    data_dir = tmp_path / "qm"
    env = _env(
        QM_DATA_DIR=str(data_dir),
        QM_SECRETS_KEY_PROVIDER="env",
        QM_SECRETS_ROOT_KEYS="rk_1:zz",
    )
    refused = _init(env)
    assert refused.returncode == 1
    said = " ".join(refused.stderr.split())
    assert (
        "the root keys (QM_SECRETS_KEY_PROVIDER=env): QM_SECRETS_ROOT_KEYS: key 'rk_1' is "
        "not hexadecimal"
    ) in said
    assert not data_dir.exists()


# --- each kind of bad key, in-process -------------------------------------------------------


@pytest.fixture
def key_settings(tmp_path: Path) -> Settings:
    data_dir = tmp_path / "qm"
    data_dir.mkdir(mode=0o700)
    return Settings(data_dir=data_dir)  # type: ignore[call-arg]


def _problems(settings: Settings) -> list[str]:
    return key_problems(settings, key_files(settings))


def test_an_empty_or_missing_set_of_keys_has_no_problems(key_settings: Settings) -> None:
    assert _problems(key_settings) == []


@pytest.mark.parametrize(
    ("content", "mode", "reason"),
    [
        ("abcd", 0o600, "holds a key shorter than 32 bytes"),
        ("x" * 64, 0o600, "does not hold a server key (64 hexadecimal digits)"),
        ("ab" * 32, 0o644, "is readable by other users: chmod 600 it"),
    ],
)
def test_a_bad_server_key_is_named_with_its_path(
    key_settings: Settings, content: str, mode: int, reason: str
) -> None:
    path = key_settings.data_dir / "server.key"
    _write(path, content, mode)
    assert _problems(key_settings) == [f"the server key: {path} {reason}"]


def test_a_keyring_whose_active_key_is_not_in_it_is_named_with_its_path(
    key_settings: Settings,
) -> None:
    path = key_settings.data_dir / "root-keys.json"
    _write(path, '{"active": "rk_b", "keys": {"rk_a": "' + "00" * 32 + '"}}')
    assert _problems(key_settings) == [
        f"the root keyring: {path}: active root key 'rk_b' is not in the keyring"
    ]


def test_identity_keys_that_are_not_ed25519_pem_are_named(key_settings: Settings) -> None:
    path = key_settings.data_dir / "identity-ed25519.pem"
    _write(path, "-----BEGIN PRIVATE KEY-----\ngarbage\n-----END PRIVATE KEY-----\n")
    assert _problems(key_settings) == [
        f"the identity key: {path} does not hold an unencrypted PEM private key (Ed25519)"
    ]
    rsa_pem = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        .private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        .decode()
    )
    _write(path, rsa_pem)
    assert _problems(key_settings) == [
        f"the identity key: {path} does not hold an Ed25519 private key"
    ]


def test_a_directory_or_dangling_link_in_place_of_a_key_is_named(key_settings: Settings) -> None:
    (key_settings.data_dir / "server.key").mkdir()
    (key_settings.data_dir / "identity-ed25519.pem").symlink_to(key_settings.data_dir / "nowhere")
    assert _problems(key_settings) == [
        f"the server key: {key_settings.data_dir / 'server.key'} is not a file",
        f"the identity key: {key_settings.data_dir / 'identity-ed25519.pem'} is a link to nothing",
    ]


def test_the_env_provider_has_no_keyring_file_and_its_variable_is_checked(
    key_settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    env_settings = key_settings.model_copy(update={"secrets_key_provider": "env"})
    assert [key.name for key in key_files(env_settings)] == ["server key", "identity key"]
    monkeypatch.setenv(env_settings.secrets_root_key_env, "no-colon")
    assert _problems(env_settings) == [
        "the root keys (QM_SECRETS_KEY_PROVIDER=env): "
        f"{env_settings.secrets_root_key_env}: entry 1 is not id:hex"
    ]
    monkeypatch.setenv(env_settings.secrets_root_key_env, "rk_1:" + "00" * 32)
    assert _problems(env_settings) == []


def test_an_init_that_lost_the_race_for_a_new_database_leaves_no_keys(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two `qm init`s of new data dirs on one new database: the one whose keys were recorded
    second is refused, and the keys it had just made (no one's) are not left behind."""
    from typer.testing import CliRunner

    import quartermaster.storage.key_checks as key_checks
    from quartermaster.cli.main import app

    url = f"sqlite:///{tmp_path / 'shared.db'}"
    first = _init(_env(QM_DATA_DIR=str(tmp_path / "a"), QM_DATABASE_URL=url))
    assert first.returncode == 0, first.stderr
    # the second read the database before the first recorded its keys
    monkeypatch.setattr(key_checks, "recorded_key", lambda *_args, **_kwargs: None)
    late = tmp_path / "b"
    env = {"QM_DATA_DIR": str(late), "QM_DATABASE_URL": url, "COLUMNS": "200"}
    result = CliRunner().invoke(app, ["init"], env=env)
    # `qm`'s main turns the refusal into one line (tests above); here it is the exception
    assert "is not the one this database's first server recorded" in str(result.exception)
    assert not any((late / name).exists() for name in KEY_FILES)
