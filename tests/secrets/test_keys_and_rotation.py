"""Root keys, envelope binding, and root-key rotation without downtime."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from quartermaster.api.errors import status_for
from quartermaster.config import ConfigurationError, Settings
from quartermaster.errors import ConflictError, NotFoundError
from quartermaster.secrets.envelope import (
    SealError,
    new_data_key,
    open_sealed,
    seal,
    unwrap_data_key,
    value_aad,
    wrap_data_key,
)
from quartermaster.secrets.keys import (
    EnvKeyProvider,
    FileKeyProvider,
    UnknownRootKeyError,
    add_root_key,
    generate_root_keyring,
    read_keyring_file,
    remove_root_key,
)


def test_keyring_is_private_and_never_overwritten(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d")  # type: ignore[call-arg]
    path = generate_root_keyring(settings)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    before = path.read_bytes()
    generate_root_keyring(settings)
    assert path.read_bytes() == before
    os.chmod(path, 0o644)
    with pytest.raises(ConfigurationError, match="chmod 600"):
        read_keyring_file(path)


def test_missing_keyring_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match="run `qm init`"):
        FileKeyProvider(tmp_path / "nope.json")


def test_env_provider() -> None:
    key_a, key_b = "11" * 32, "22" * 32
    provider = EnvKeyProvider("K", {"K": f"new:{key_b}, old:{key_a}"})
    assert provider.active_key_id == "new"
    assert provider.root_key("old") == bytes.fromhex(key_a)
    with pytest.raises(UnknownRootKeyError, match="'gone' is not in this server's keyring") as e:
        provider.root_key("gone")
    # Another server of the database rotated: a 503 saying what to copy, not a 500.
    assert status_for(e.value) == 503
    assert e.value.code == "service_unavailable"
    assert "copy root-keys.json from that server's data dir" in e.value.message
    with pytest.raises(ConfigurationError, match="K is not set"):
        EnvKeyProvider("K", {})
    with pytest.raises(ConfigurationError, match="AES-256 needs 32"):
        EnvKeyProvider("K", {"K": "short:abcd"})


def test_ciphertexts_are_bound_to_tenant_path_and_version() -> None:
    key = new_data_key()
    sealed = seal(key, b"v", value_aad("acme", "apps/a/x", 3))
    assert open_sealed(key, sealed, value_aad("acme", "apps/a/x", 3)) == b"v"
    for aad in (
        value_aad("acme", "apps/a/x", 4),
        value_aad("acme", "apps/a/y", 3),
        value_aad("other", "apps/a/x", 3),
    ):
        with pytest.raises(SealError):
            open_sealed(key, sealed, aad)
    with pytest.raises(SealError):
        open_sealed(new_data_key(), sealed, value_aad("acme", "apps/a/x", 3))
    root = new_data_key()
    wrapped = wrap_data_key(root, key, "acme")
    assert unwrap_data_key(root, wrapped, "acme") == key
    with pytest.raises(SealError):
        unwrap_data_key(root, wrapped, "other")
    tampered = bytearray(sealed)
    tampered[-1] ^= 1
    with pytest.raises(SealError):
        open_sealed(key, bytes(tampered), value_aad("acme", "apps/a/x", 3))


def test_file_provider_sees_a_key_added_while_running(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path / "d")  # type: ignore[call-arg]
    path = generate_root_keyring(settings)
    provider = FileKeyProvider(path)
    old = provider.active_key_id
    new = add_root_key(path)
    assert provider.active_key_id == new
    assert provider.root_key(old) == read_keyring_file(path).keys[old]
    remove_root_key(path, old)
    with pytest.raises(UnknownRootKeyError):
        provider.root_key(old)
    with pytest.raises(ConflictError, match="is the active key: run `qm secret root-key rotate`"):
        remove_root_key(path, new)
    with pytest.raises(ConflictError, match=f"root key '{old}' is already retired"):
        remove_root_key(path, old)
    with pytest.raises(
        NotFoundError, match=rf"no root key 'nosuch' in .* \(its keys: {new} \(active\)\)"
    ):
        remove_root_key(path, "nosuch")
    assert read_keyring_file(path).retired == (old,)
