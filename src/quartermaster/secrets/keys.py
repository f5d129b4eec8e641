"""Root-key providers: where the keys that wrap every tenant's data key come from.

A provider holds a keyring: one active key (wraps new and re-wrapped data keys) and any older
keys still needed to unwrap data keys that have not been re-wrapped yet. Rotation therefore
never needs downtime: add a key, make it active, re-wrap, and retire the old key only once no
data key refers to it (docs/secrets.md, "Root-key rotation").
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from quartermaster.config import ConfigurationError, Settings
from quartermaster.errors import ConflictError, NotFoundError, ServiceUnavailableError
from quartermaster.secrets.envelope import KEY_BYTES

ROOT_KEYRING_FILE = "root-keys.json"


class UnknownRootKeyError(ServiceUnavailableError, LookupError):
    """A data key was wrapped by a root key this provider does not hold: typically another
    server of the same database rotated the root key and this one lacks its keyring (a 503
    naming the key and what to copy, not an internal error)."""


class KeyProvider(Protocol):
    """Source of root keys. Implementations must be safe to call from several threads."""

    @property
    def active_key_id(self) -> str: ...

    def root_key(self, key_id: str) -> bytes:
        """The key with this id; raises UnknownRootKeyError naming it when absent."""
        ...

    def key_ids(self) -> list[str]: ...


@dataclass(frozen=True, slots=True)
class Keyring:
    active: str
    keys: dict[str, bytes]
    # Ids removed by `qm secret root-key retire`, so retiring one again says so.
    retired: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if self.active not in self.keys:
            raise ConfigurationError(f"active root key {self.active!r} is not in the keyring")
        for key_id, key in self.keys.items():
            if len(key) != KEY_BYTES:
                raise ConfigurationError(
                    f"root key {key_id!r} is {len(key)} bytes; AES-256 needs {KEY_BYTES}"
                )

    def get(self, key_id: str) -> bytes:
        try:
            return self.keys[key_id]
        except KeyError:
            raise UnknownRootKeyError(
                f"root key {key_id!r} is not in this server's keyring (known: "
                f"{', '.join(self.keys)}): another server of this database rotated its root "
                "keys; give this server the same keys (copy root-keys.json from that server's "
                "data dir, or the same keys in the env provider's variable)"
            ) from None


def new_root_key_id() -> str:
    return f"rk_{secrets.token_hex(6)}"


def _parse_keyring_json(text: str, source: str) -> Keyring:
    try:
        raw = json.loads(text)
        keys = {str(k): bytes.fromhex(v) for k, v in raw["keys"].items()}
        retired = tuple(str(k) for k in raw.get("retired", ()))
        return Keyring(active=str(raw["active"]), keys=keys, retired=retired)
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        raise ConfigurationError(
            f"{source} is not a keyring ({{'active': id, 'keys': {{id: hex}}}}): {exc}"
        ) from None


def _keyring_json(keyring: Keyring) -> str:
    keys = {key_id: key.hex() for key_id, key in keyring.keys.items()}
    body: dict[str, object] = {"active": keyring.active, "keys": keys}
    if keyring.retired:
        body["retired"] = list(keyring.retired)
    return json.dumps(body, indent=2) + "\n"


def keyring_path(settings: Settings) -> Path:
    return settings.data_dir / ROOT_KEYRING_FILE


def _write_private(path: Path, text: str, *, exclusive: bool) -> None:
    """Write a mode-600 file; a replacement goes through a temp file and an atomic rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if exclusive:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(text)
            fh.flush()
            os.fsync(fh.fileno())
        return
    tmp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def generate_root_keyring(settings: Settings) -> Path:
    """Create the root keyring in the data dir once (`qm init`); never overwrite one."""
    path = keyring_path(settings)
    if not path.exists():
        key_id = new_root_key_id()
        keyring = Keyring(active=key_id, keys={key_id: secrets.token_bytes(KEY_BYTES)})
        # Another process may have created it first; theirs is the one.
        with contextlib.suppress(FileExistsError):
            _write_private(path, _keyring_json(keyring), exclusive=True)
    return path


def read_keyring_file(path: Path) -> Keyring:
    if not path.exists():
        raise ConfigurationError(
            f"no root keyring at {path}: restoring a backup, copy {path.name} from it (a "
            "new keyring cannot open the secrets the database holds); for a new "
            "installation run `qm init` for this data dir; or set "
            "QM_SECRETS_KEY_PROVIDER=env"
        )
    if path.stat().st_mode & 0o077:
        raise ConfigurationError(f"{path} is readable by other users: chmod 600 it")
    return _parse_keyring_json(path.read_text(), str(path))


def add_root_key(path: Path) -> str:
    """Add a fresh key and make it active (older keys stay for unwrapping). Returns its id."""
    current = read_keyring_file(path)
    key_id = new_root_key_id()
    keys = {key_id: secrets.token_bytes(KEY_BYTES), **current.keys}
    keyring = Keyring(active=key_id, keys=keys, retired=current.retired)
    _write_private(path, _keyring_json(keyring), exclusive=False)
    return key_id


def check_retirable(keyring: Keyring, key_id: str, *, source: Path | str) -> None:
    """Raise unless `key_id` is an inactive key of the keyring: the active key is retired by
    rotating first (`rewrap` keeps data keys under the active key), a retired one says so, an
    unknown one is named with the keys there are."""
    if key_id == keyring.active:
        raise ConflictError(
            f"root key {key_id!r} is the active key: run `qm secret root-key rotate` (a new "
            f"active key, every data key re-wrapped under it), then retire {key_id}"
        )
    if key_id in keyring.retired:
        raise ConflictError(f"root key {key_id!r} is already retired")
    if key_id not in keyring.keys:
        known = ", ".join(f"{k} (active)" if k == keyring.active else k for k in keyring.keys)
        raise NotFoundError(f"no root key {key_id!r} in {source} (its keys: {known})")


def remove_root_key(path: Path, key_id: str) -> None:
    """Retire an inactive root key: drop it from the keyring and remember its id."""
    current = read_keyring_file(path)
    check_retirable(current, key_id, source=path)
    keys = {k: v for k, v in current.keys.items() if k != key_id}
    keyring = Keyring(active=current.active, keys=keys, retired=(*current.retired, key_id))
    _write_private(path, _keyring_json(keyring), exclusive=False)


class FileKeyProvider:
    """The keyring file in the data dir. It is re-read when it changes on disk, so a running
    server picks up a key added by a rotation without a restart."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        self._stamp: tuple[int, int] = (-1, -1)
        self._keyring = self._load()

    def _load(self) -> Keyring:
        # Stat before reading: a write racing the read leaves an old stamp, forcing a re-read.
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            return read_keyring_file(self._path)  # raises, saying how to create it
        keyring = read_keyring_file(self._path)
        self._stamp = (stat.st_mtime_ns, stat.st_size)
        return keyring

    def _current(self) -> Keyring:
        try:
            stat = self._path.stat()
        except FileNotFoundError:
            return self._keyring  # keep serving from memory; a later write brings it back
        if (stat.st_mtime_ns, stat.st_size) != self._stamp:
            with self._lock:
                if (stat.st_mtime_ns, stat.st_size) != self._stamp:
                    self._keyring = self._load()
        return self._keyring

    @property
    def active_key_id(self) -> str:
        return self._current().active

    def root_key(self, key_id: str) -> bytes:
        try:
            return self._current().get(key_id)
        except UnknownRootKeyError:
            # The file may have changed within the clock's resolution: look once more.
            with self._lock:
                self._keyring = self._load()
            return self._keyring.get(key_id)

    def key_ids(self) -> list[str]:
        return list(self._current().keys)


class EnvKeyProvider:
    """Keys from an environment variable: `id:hex[,id:hex...]`, the first one active.

    Rotation: deploy `new:hex,old:hex` everywhere, run `qm secret root-key rewrap`, then drop
    `old` from the variable."""

    def __init__(self, variable: str, environ: dict[str, str] | None = None) -> None:
        env = os.environ if environ is None else environ
        raw = env.get(variable, "").strip()
        if not raw:
            raise ConfigurationError(f"{variable} is not set: it must hold id:hex[,id:hex...]")
        keys: dict[str, bytes] = {}
        order: list[str] = []
        for item in raw.split(","):
            key_id, sep, hex_key = item.strip().partition(":")
            if not sep or not key_id:
                raise ConfigurationError(f"{variable}: entry {len(order) + 1} is not id:hex")
            try:
                keys[key_id] = bytes.fromhex(hex_key)
            except ValueError:
                raise ConfigurationError(f"{variable}: key {key_id!r} is not hexadecimal") from None
            order.append(key_id)
        self._keyring = Keyring(active=order[0], keys=keys)

    @property
    def active_key_id(self) -> str:
        return self._keyring.active

    @property
    def keyring(self) -> Keyring:
        return self._keyring

    def root_key(self, key_id: str) -> bytes:
        return self._keyring.get(key_id)

    def key_ids(self) -> list[str]:
        return list(self._keyring.keys)


def build_key_provider(settings: Settings) -> KeyProvider:
    if settings.secrets_key_provider == "env":
        return EnvKeyProvider(settings.secrets_root_key_env)
    return FileKeyProvider(keyring_path(settings))
