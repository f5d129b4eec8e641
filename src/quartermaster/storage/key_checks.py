"""Which keys a database's sealed data belongs to, recorded in the database itself.

Every server of one database needs the same server key, root keys and identity key (the keys
live in each data dir, never in the database). Checking a data dir against what the database
has sealed only works once something is sealed: on a new database a second server with fresh
keys started, and the first secret or signing key one server wrote was a 500 on the other.
So the first server to start claims each kind of key here with a check value (an HMAC under
the key, which reveals nothing of it), and every later one must present the same key.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import String, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Mapped, Session, mapped_column, sessionmaker

from quartermaster.domain.timeutil import utc_now
from quartermaster.storage.base import Base, UTCDateTime


class KeyCheck(Base):
    """One row per kind of key ("server", "root", "identity"). `key_id` names the root key
    new data keys are wrapped with (None for the kinds that have one key)."""

    __tablename__ = "key_checks"

    kind: Mapped[str] = mapped_column(String(32), primary_key=True)
    key_id: Mapped[str | None] = mapped_column(String(64))
    check_value: Mapped[str] = mapped_column(String(64))
    updated_at: Mapped[datetime] = mapped_column(UTCDateTime(), default=utc_now)


@dataclass(frozen=True, slots=True)
class ClaimedKey:
    key_id: str | None
    check_value: str


def check_value(key: bytes, kind: str) -> str:
    """A value that shows whether two servers hold the same key, without revealing it."""
    return hmac.new(key, b"quartermaster key check\x00" + kind.encode(), hashlib.sha256).hexdigest()


def claim_key(
    kind: str, key_id: str | None, value: str, *, session_factory: sessionmaker[Session]
) -> ClaimedKey:
    """The database's key of this kind: the one recorded, or this one if none is yet. Of two
    servers claiming at once one insert wins and both get the winner's."""
    with session_factory() as session:
        found = _recorded(kind, session=session)
        if found is not None:
            return found
        session.add(KeyCheck(kind=kind, key_id=key_id, check_value=value, updated_at=utc_now()))
        try:
            session.commit()
        except IntegrityError:
            session.rollback()
            winner = _recorded(kind, session=session)
            if winner is None:  # pragma: no cover - the conflicting row cannot vanish
                raise
            return winner
    return ClaimedKey(key_id, value)


def record_key(
    kind: str, key_id: str | None, value: str, *, session_factory: sessionmaker[Session]
) -> None:
    """Make this the database's key of this kind (a root-key rotation)."""
    with session_factory() as session:
        row = session.get(KeyCheck, kind)
        if row is None:
            session.add(KeyCheck(kind=kind, key_id=key_id, check_value=value, updated_at=utc_now()))
        else:
            row.key_id, row.check_value, row.updated_at = key_id, value, utc_now()
        session.commit()


def recorded_key(kind: str, *, session_factory: sessionmaker[Session]) -> ClaimedKey | None:
    with session_factory() as session:
        return _recorded(kind, session=session)


def _recorded(kind: str, *, session: Session) -> ClaimedKey | None:
    row = session.execute(
        select(KeyCheck.key_id, KeyCheck.check_value).where(KeyCheck.kind == kind)
    ).first()
    return None if row is None else ClaimedKey(row[0], str(row[1]))
