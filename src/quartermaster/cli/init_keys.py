"""`qm init`'s look at the keys a data dir already holds, before it writes anything.

A key file that is there but cannot be used (corrupt, the wrong kind, readable by others) is
never replaced nor joined by new files: what it sealed or signed would be lost with it. Every
such key is named at once, with the root-key variable of the env provider, so one run shows
all there is to fix.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from quartermaster.config import SERVER_KEY_FILE, ConfigurationError, Settings, read_server_key


@dataclass(frozen=True, slots=True)
class KeyFile:
    name: str  # as `qm init` says it: "the server key"
    path: Path
    read: Callable[[Path], object]  # raises ConfigurationError naming what is wrong


def key_files(settings: Settings) -> list[KeyFile]:
    """The data dir's key files `qm init` creates. With the env provider the root keys are the
    variable's: a keyring file would be unused."""
    from quartermaster.secrets.identity import identity_key_path, read_identity_key
    from quartermaster.secrets.keys import keyring_path, read_keyring_file

    files = [KeyFile("server key", settings.data_dir / SERVER_KEY_FILE, read_server_key)]
    if settings.secrets_key_provider != "env":
        files.append(KeyFile("root keyring", keyring_path(settings), read_keyring_file))
    files.append(KeyFile("identity key", identity_key_path(settings), read_identity_key))
    return files


def present(path: Path) -> bool:
    """There, even as a link to nothing (which `qm init` must not write through)."""
    return path.exists() or path.is_symlink()


def key_problems(settings: Settings, files: list[KeyFile]) -> list[str]:
    """What is wrong with each key that is there (missing ones are not problems: `qm init`
    creates them), and with the env provider's variable; empty when all can be used."""
    problems = [problem for key in files if (problem := _file_problem(key)) is not None]
    if settings.secrets_key_provider == "env":
        from quartermaster.secrets.keys import EnvKeyProvider

        try:
            EnvKeyProvider(settings.secrets_root_key_env)
        except ConfigurationError as exc:
            problems.append(f"the root keys (QM_SECRETS_KEY_PROVIDER=env): {exc}")
    return problems


def _file_problem(key: KeyFile) -> str | None:
    if not present(key.path):
        return None
    if not key.path.is_file():
        what = "a link to nothing" if not key.path.exists() else "not a file"
        return f"the {key.name}: {key.path} is {what}"
    try:
        key.read(key.path)
    except ConfigurationError as exc:
        reason = str(exc)
    except OSError as exc:  # no permission, say
        reason = f"{key.path} cannot be read: {exc.strerror or exc}"
    else:
        return None
    if str(key.path) not in reason:
        reason = f"{key.path}: {reason}"
    return f"the {key.name}: {reason}"


def refusal(problems: list[str]) -> str:
    """`qm init`'s one message for the keys it cannot use."""
    lines = "\n".join(f"  - {problem}" for problem in problems)
    count = "a key" if len(problems) == 1 else f"{len(problems)} keys"
    return (
        f"qm init changed nothing: {count} cannot be used\n{lines}\n"
        "Fix each one (or restore it from a backup) and run `qm init` again: a new key would "
        "not open what the old one sealed or signed. Move a key file away only if nothing was "
        "made with it; `qm init` then creates a new one."
    )


# The kind under which the database records each key file's check value (storage/key_checks).
RECORDED_KIND = {"server key": "server", "root keyring": "root", "identity key": "identity"}


def missing_recorded_keys(
    files: list[KeyFile], recorded: Callable[[str], bool], *, replace_identity_key: bool
) -> list[KeyFile]:
    """The key files this data dir lacks that the database already has a key of (`recorded`
    says, by kind): a new key would not be that one, so `qm init` must not write it. A lost
    identity key may be replaced (`--replace-identity-key`)."""
    return [
        key
        for key in files
        if not present(key.path)
        and recorded(RECORDED_KIND[key.name])
        and not (replace_identity_key and key.name == "identity key")
    ]


def copy_keys_refusal(missing: list[KeyFile]) -> str:
    names = ", ".join(f"{key.name} ({key.path.name})" for key in missing)
    return (
        f"this database already has its keys, and this data dir lacks the {names}: a new key "
        "would not open what the database has sealed. Restoring a backup: copy "
        f"{', '.join(key.path.name for key in missing)} from the backup into "
        f"{missing[0].path.parent}; adding a server: copy them from the data dir of the "
        "server that created the database (docs/operations.md). Nothing was written"
        + (
            ". If the identity key is lost, `qm init --replace-identity-key` makes a new one "
            "the database's (workload tokens issued under the old one stop verifying)"
            if any(key.name == "identity key" for key in missing)
            else ""
        )
    )
