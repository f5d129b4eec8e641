"""The broker's per-process parts (keys, caches, connections), built from a Runtime."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from datetime import datetime

from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from quartermaster.audit.failed_auth import FailedAuthLimiter
from quartermaster.config import ConfigurationError, Settings
from quartermaster.domain.timeutil import utc_now
from quartermaster.runtime import Runtime
from quartermaster.secrets.envelope import (
    fingerprint,
    fingerprint_key,
    new_data_key,
    unwrap_data_key,
    wrap_data_key,
)
from quartermaster.secrets.identity import IdentitySigner, identity_key_path, load_identity_key
from quartermaster.secrets.keys import KeyProvider, build_key_provider, keyring_path
from quartermaster.secrets.models import DataKey
from quartermaster.secrets.postgres import PostgresConnections
from quartermaster.storage.key_checks import check_value, claim_key, record_key, recorded_key


class DataKeyStore:
    """Unwraps each tenant's data key once per process. The row is still read on every use
    (a primary-key lookup) and the cache entry is only trusted for the exact wrapped bytes it
    came from, so a key created in a transaction that rolled back is never used again."""

    def __init__(self, provider: KeyProvider) -> None:
        self.provider = provider
        self._cache: dict[str, tuple[bytes, bytes, bytes]] = {}  # tenant -> (wrapped, dk, fpk)
        self._lock = threading.Lock()

    def _load(self, tenant_id: str, *, session: Session) -> tuple[bytes, bytes] | None:
        row = session.execute(
            select(DataKey.root_key_id, DataKey.wrapped_key).where(DataKey.tenant_id == tenant_id)
        ).first()
        if row is None:
            return None
        root_key_id, wrapped = str(row[0]), bytes(row[1])
        cached = self._cache.get(tenant_id)
        if cached is not None and cached[0] == wrapped:
            return cached[1], cached[2]
        data_key = unwrap_data_key(self.provider.root_key(root_key_id), wrapped, tenant_id)
        fp_key = fingerprint_key(data_key)
        with self._lock:
            self._cache[tenant_id] = (wrapped, data_key, fp_key)
        return data_key, fp_key

    def data_key(self, tenant_id: str, *, session: Session) -> bytes | None:
        pair = self._load(tenant_id, session=session)
        return None if pair is None else pair[0]

    def ensure(self, tenant_id: str, *, session: Session) -> bytes:
        """The tenant's data key, created in this transaction if it has none yet. Call it with
        the tenant's audit lock held so two first writes cannot both create one."""
        existing = self.data_key(tenant_id, session=session)
        if existing is not None:
            return existing
        data_key = new_data_key()
        root_id = self.provider.active_key_id
        session.add(
            DataKey(
                tenant_id=tenant_id,
                root_key_id=root_id,
                wrapped_key=wrap_data_key(self.provider.root_key(root_id), data_key, tenant_id),
                created_at=utc_now(),
            )
        )
        session.flush()
        return data_key

    def forget(self, tenant_id: str) -> None:
        with self._lock:
            self._cache.pop(tenant_id, None)

    def fingerprint(self, tenant_id: str, value: str, *, session: Session) -> str | None:
        pair = self._load(tenant_id, session=session)
        return None if pair is None else fingerprint(pair[1], value)

    def fingerprint_key(self, tenant_id: str, *, session: Session) -> bytes | None:
        pair = self._load(tenant_id, session=session)
        return None if pair is None else pair[1]


@dataclass(frozen=True, slots=True)
class RewrapReport:
    active_key_id: str
    rewrapped: int
    remaining_by_key: dict[str, int] = field(default_factory=dict)


def rewrap_data_keys(
    provider: KeyProvider, *, session_factory: sessionmaker[Session], batch: int = 100
) -> RewrapReport:
    """Re-wrap every data key not yet under the active root key, a batch per transaction.

    Online: each row is updated only if it still names the key it was read with, and readers
    can unwrap either version of a row because the provider holds both keys meanwhile."""
    active = provider.active_key_id
    active_key = provider.root_key(active)
    # From now on every server must hold the active key: a server that does not is refused
    # at its next start (check_root_keys_match_database) rather than failing to unwrap.
    record_key("root", active, check_value(active_key, "root"), session_factory=session_factory)
    done = 0
    while True:
        with session_factory() as session:
            rows = session.execute(
                select(DataKey.tenant_id, DataKey.root_key_id, DataKey.wrapped_key)
                .where(DataKey.root_key_id != active)
                .limit(batch)
            ).all()
            if not rows:
                break
            now: datetime = utc_now()
            for tenant_id, old_id, wrapped in rows:
                data_key = unwrap_data_key(provider.root_key(old_id), wrapped, tenant_id)
                result = session.execute(
                    update(DataKey)
                    .where(DataKey.tenant_id == tenant_id, DataKey.root_key_id == old_id)
                    .values(
                        root_key_id=active,
                        wrapped_key=wrap_data_key(active_key, data_key, tenant_id),
                        rewrapped_at=now,
                    )
                )
                done += int(getattr(result, "rowcount", 0) or 0)
            session.commit()
    return RewrapReport(
        active_key_id=active,
        rewrapped=done,
        remaining_by_key=count_by_root_key(session_factory=session_factory),
    )


def count_by_root_key(*, session_factory: sessionmaker[Session]) -> dict[str, int]:
    from sqlalchemy import func

    with session_factory() as session:
        rows = session.execute(
            select(DataKey.root_key_id, func.count()).group_by(DataKey.root_key_id)
        ).all()
    return {str(key_id): int(count) for key_id, count in rows}


@dataclass
class SecretsContext:
    settings: Settings
    session_factory: sessionmaker[Session]
    data_keys: DataKeyStore
    signer: IdentitySigner
    postgres: PostgresConnections
    # Refused identity tokens recorded per tenant and minute (audit/failed_auth.py).
    failed_auth: FailedAuthLimiter = field(default_factory=FailedAuthLimiter)

    def close(self) -> None:
        self.postgres.close()


def check_secrets_keys(settings: Settings) -> None:
    """Raise ConfigurationError now if the root keys or the identity key cannot be used
    (missing, malformed, readable by others): `qm serve` checks before anything starts."""
    _ = build_key_provider(settings).active_key_id
    path = identity_key_path(settings)
    if path.exists() or path.is_symlink():  # a missing one: check_identity_key_matches_database
        load_identity_key(settings)


def check_root_keys_match_database(
    settings: Settings, *, session_factory: sessionmaker[Session]
) -> None:
    """Raise ConfigurationError when this server's root keys are not the database's: some data
    keys are wrapped with root keys it does not hold, or it lacks the root key the database's
    first server recorded (storage/key_checks.py), which new data keys are wrapped with. A
    server with another keyring on a shared database had started, and answered every secret
    read with a 500, the other servers too once it had wrapped a data key."""
    provider = build_key_provider(settings)
    if settings.secrets_key_provider == "env":
        source = settings.secrets_root_key_env
        advice = f"give every server the same keys in {source} (docs/secrets.md)"
    else:
        source = str(keyring_path(settings))
        advice = (
            "copy root-keys.json from the data dir of the server that created them, or give "
            "every server the same keys (QM_SECRETS_KEY_PROVIDER=env; docs/secrets.md)"
        )
    held = set(provider.key_ids())
    wrapped = count_by_root_key(session_factory=session_factory)
    missing = {key_id: n for key_id, n in wrapped.items() if key_id not in held}
    if missing:
        raise ConfigurationError(
            f"{sum(missing.values())} tenant data key(s) of this database are wrapped with root "
            f"key(s) {', '.join(sorted(missing))} that this server's root keys ({source}) do "
            f"not hold: {advice}"
        )
    active = provider.active_key_id
    mine = check_value(provider.root_key(active), "root")
    recorded = claim_key("root", active, mine, session_factory=session_factory)
    if recorded.key_id is None or recorded.key_id not in held:
        raise ConfigurationError(
            f"this database wraps tenant data keys with root key {recorded.key_id}, which this "
            f"server's root keys ({source}) do not hold: {advice}"
        )
    if check_value(provider.root_key(recorded.key_id), "root") != recorded.check_value:
        raise ConfigurationError(
            f"root key {recorded.key_id} of {source} is not the key of that id this database "
            f"recorded: {advice}"
        )


def check_identity_key_matches_database(
    settings: Settings, *, session_factory: sessionmaker[Session], replace: bool = False
) -> None:
    """Raise ConfigurationError when this server's identity key is not the one the database's
    first server recorded: a workload token issued by one server would not verify on another.
    `replace` records this one instead: a lost identity key, unlike the others, seals nothing,
    and only the tokens issued under it stop verifying."""
    path = identity_key_path(settings)
    missing = not replace and not path.exists() and not path.is_symlink()
    if missing and recorded_key("identity", session_factory=session_factory) is not None:
        # Generated now, it could not be the recorded one: said before it is written.
        raise ConfigurationError(
            f"no identity key at {path}, and this database's first server recorded one: "
            f"restoring a backup, copy {path.name} from it; adding a server, copy it from "
            "the data dir of the server that created the database (docs/operations.md). "
            "If it is lost, `qm init --replace-identity-key` makes a new one the "
            "database's (workload tokens issued under the old one stop verifying)"
        )
    public = load_identity_key(settings).public_key().public_bytes_raw()
    mine = check_value(public, "identity")
    if replace:
        record_key("identity", None, mine, session_factory=session_factory)
        return
    if claim_key("identity", None, mine, session_factory=session_factory).check_value != mine:
        raise ConfigurationError(
            f"the identity key {identity_key_path(settings)} is not the one this database's "
            "first server recorded: every server of one database needs the same server.key, "
            "root keys and identity-ed25519.pem; copy them from the data dir of the server "
            "that created the database (docs/operations.md). If that identity key is lost, "
            "`qm init --replace-identity-key` makes this one the database's (workload tokens "
            "issued under the old one stop verifying)"
        )


def build_secrets_context(runtime: Runtime) -> SecretsContext:
    settings = runtime.settings
    return SecretsContext(
        settings=settings,
        session_factory=runtime.session_factory,
        data_keys=DataKeyStore(build_key_provider(settings)),
        signer=IdentitySigner(load_identity_key(settings), issuer=settings.secrets_identity_issuer),
        postgres=PostgresConnections(),
    )
