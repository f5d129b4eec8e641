"""App HMAC signing keys: create, rotate (at most two active), retire, and the per-tenant
lookup that ingestion uses to verify event signatures."""

from __future__ import annotations

import secrets
from collections.abc import Collection
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from sqlalchemy import ColumnElement, select
from sqlalchemy.orm import Session, sessionmaker

from quartermaster.catalog.models import App, AppSigningKey, SigningKeyStatus
from quartermaster.catalog.sealing import seal, unseal
from quartermaster.config import ConfigurationError
from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import ConflictError, NotFoundError
from quartermaster.metering.signing import SIGNING_SECRET_BYTES
from quartermaster.storage.key_checks import check_value, claim_key

_PURPOSE = b"qm app signing keys v1"
MAX_ACTIVE_KEYS = 2


@dataclass(frozen=True, slots=True)
class SigningKeyInfo:
    key_id: str
    app_id: str  # the app slug
    secret: bytes


@dataclass(frozen=True, slots=True)
class NewSigningKey:
    """Shown once at creation: the secret is what the app signs with."""

    key_id: str
    app_id: str
    secret_hex: str


def create_signing_key(app: App, *, server_key: bytes, session: Session) -> NewSigningKey:
    active = session.scalars(
        select(AppSigningKey.id).where(
            AppSigningKey.app_pk == app.id, AppSigningKey.status == SigningKeyStatus.ACTIVE.value
        )
    ).all()
    if len(active) >= MAX_ACTIVE_KEYS:
        raise ConflictError(
            f"app {app.app_id!r} already has {MAX_ACTIVE_KEYS} active signing keys "
            f"({', '.join(active)}): retire one before creating another"
        )
    key_id = f"sk_{secrets.token_hex(8)}"
    secret = secrets.token_bytes(SIGNING_SECRET_BYTES)
    session.add(
        AppSigningKey(
            id=key_id,
            tenant_id=app.tenant_id,
            app_pk=app.id,
            sealed_secret=seal(
                secret, server_key=server_key, purpose=_PURPOSE, context=key_id.encode()
            ),
            status=SigningKeyStatus.ACTIVE.value,
            created_at=utc_now(),
        )
    )
    session.commit()
    return NewSigningKey(key_id=key_id, app_id=app.app_id, secret_hex=secret.hex())


def retire_signing_key(tenant_id: str, key_id: str, *, session: Session) -> None:
    key = session.scalar(
        select(AppSigningKey).where(
            AppSigningKey.tenant_id == tenant_id, AppSigningKey.id == key_id
        )
    )
    if key is None:
        raise NotFoundError(f"signing key {key_id!r} not found", field="key_id")
    if key.status != SigningKeyStatus.RETIRED.value:
        key.status = SigningKeyStatus.RETIRED.value
        key.retired_at = utc_now()
    session.commit()


def active_signing_keys(
    tenant_id: str, *, server_key: bytes, session: Session
) -> dict[str, SigningKeyInfo]:
    """key id -> key, for every active key of the tenant's apps."""
    rows = session.execute(
        select(AppSigningKey.id, AppSigningKey.sealed_secret, App.app_id)
        .join(App, App.id == AppSigningKey.app_pk)
        .where(
            AppSigningKey.tenant_id == tenant_id,
            AppSigningKey.status == SigningKeyStatus.ACTIVE.value,
        )
    ).all()
    return {
        key_id: SigningKeyInfo(
            key_id=key_id,
            app_id=app_id,
            secret=unseal(sealed, server_key=server_key, purpose=_PURPOSE, context=key_id.encode()),
        )
        for key_id, sealed, app_id in rows
    }


def apps_requiring_signatures(tenant_id: str, *, session: Session) -> set[str]:
    return set(
        session.scalars(
            select(App.app_id).where(App.tenant_id == tenant_id, App.require_signatures.is_(True))
        )
    )


def signing_keys_by_id(
    tenant_id: str, key_ids: Collection[str], *, server_key: bytes, session: Session
) -> dict[str, SigningKeyInfo]:
    """key id -> key, for the active keys among `key_ids` only (ingestion unseals just the
    keys a batch names, not every key of the tenant)."""
    if not key_ids:
        return {}
    rows = session.execute(
        select(AppSigningKey.id, AppSigningKey.sealed_secret, App.app_id)
        .join(App, App.id == AppSigningKey.app_pk)
        .where(
            AppSigningKey.tenant_id == tenant_id,
            AppSigningKey.status == SigningKeyStatus.ACTIVE.value,
            AppSigningKey.id.in_(sorted(key_ids)),
        )
    ).all()
    return {
        key_id: SigningKeyInfo(
            key_id=key_id,
            app_id=app_id,
            secret=unseal(sealed, server_key=server_key, purpose=_PURPOSE, context=key_id.encode()),
        )
        for key_id, sealed, app_id in rows
    }


def signature_policies_among(
    tenant_id: str, app_ids: Collection[str], *, session: Session
) -> dict[str, bool]:
    """The registered apps among `app_ids` (slugs), each with whether it requires signed
    events."""
    if not app_ids:
        return {}
    query = select(App.app_id, App.require_signatures).where(
        App.tenant_id == tenant_id, App.app_id.in_(sorted(app_ids))
    )
    return {app_id: bool(required) for app_id, required in session.execute(query)}


def team_apps_among(
    tenant_id: str, team_id: str, app_ids: Collection[str], *, session: Session
) -> set[str]:
    """The apps among `app_ids` (slugs) that belong to team `team_id` now."""
    return _apps_among(tenant_id, app_ids, App.team_id == team_id, session=session)


def _apps_among(
    tenant_id: str,
    app_ids: Collection[str],
    condition: ColumnElement[bool],
    *,
    session: Session,
) -> set[str]:
    if not app_ids:
        return set()
    query = select(App.app_id).where(
        App.tenant_id == tenant_id, condition, App.app_id.in_(sorted(app_ids))
    )
    return set(session.scalars(query))


def check_server_key(
    server_key: bytes, *, session_factory: sessionmaker[Session], key_source: str
) -> None:
    """Raise ConfigurationError when this data dir's server key is not the database's: not the
    one its app signing keys or its webhooks are sealed with, or not the one its first server
    recorded (storage/key_checks.py). A second server given a fresh `qm init` on a shared
    database had started, and answered every signed event and key read with a 500."""
    advice = (
        "every server of one database needs the same server.key, root keys and "
        "identity-ed25519.pem; copy them from the data dir of the server that created the "
        "database (docs/operations.md)"
    )
    with session_factory() as session:
        row = session.execute(
            select(AppSigningKey.id, AppSigningKey.sealed_secret).limit(1)
        ).first()
    if row is not None:
        key_id, sealed = row
        try:
            unseal(sealed, server_key=server_key, purpose=_PURPOSE, context=key_id.encode())
        except InvalidTag:
            raise ConfigurationError(
                f"the server key {key_source} is not the one this database's app signing keys "
                f"are sealed with: {advice}"
            ) from None
    from quartermaster.guardrails.webhooks import check_webhooks_open

    if not check_webhooks_open(server_key, session_factory=session_factory):
        raise ConfigurationError(
            f"the server key {key_source} is not the one this database's webhooks (their URLs "
            f"and signing secrets) are sealed with: {advice}"
        )
    mine = check_value(server_key, "server")
    if claim_key("server", None, mine, session_factory=session_factory).check_value != mine:
        raise ConfigurationError(
            f"the server key {key_source} is not the one this database's first server "
            f"recorded: {advice}"
        )
