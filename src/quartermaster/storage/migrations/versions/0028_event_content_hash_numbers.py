"""foundation: an event's content hash no longer depends on how its whole numbers are spelled

The content hash (what tells a resent event, a duplicate, from another event under the same
source and id, a conflict) was over the canonical form as parsed: `2.0` and `2`, or `1e16`
and `10000000000000000`, gave two hashes, so an event resent by another JSON library was
refused as a conflict although docs/events.md promised a hash over the parsed numbers. The
hash now writes each whole number as an integer (`metering.signing.spelling_free`).

Stored rows whose payload holds a whole float get the new hash here, so that resending them
still counts as a duplicate; rows without one keep theirs (it is unchanged). Only payloads
with `.0` or `e+` in them (where the canonical form writes a whole float) are read.

Revision ID: 0028
Revises: 0018
"""

import hashlib
from collections.abc import Sequence
from typing import Any

import orjson
import sqlalchemy as sa
from alembic import op

revision: str = "0028"
down_revision: str | Sequence[str] | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_CHUNK = 5_000
_INTEGER_RANGE = range(-(2**63), 2**64)


def _numbers_as_integers(value: Any) -> Any:
    # Frozen copy of quartermaster.metering.signing.numbers_as_integers (a test checks they
    # agree).
    if type(value) is float:
        if value.is_integer() and int(value) in _INTEGER_RANGE:
            return int(value)
        return value
    if type(value) is dict:
        return {k: _numbers_as_integers(v) for k, v in value.items()}
    if type(value) is list:
        return [_numbers_as_integers(v) for v in value]
    return value


def content_hash(payload: str, *, spelling_free: bool = True) -> str:
    """The content hash of a stored payload (the canonical form with `qmkeyid`, without
    `qmsignature`) as the application now computes it, or as it did before this revision."""
    event = orjson.loads(payload)
    if isinstance(event, dict):
        event.pop("qmkeyid", None)
        event.pop("qmsignature", None)
    if spelling_free:
        event = _numbers_as_integers(event)
    return hashlib.sha256(orjson.dumps(event, option=orjson.OPT_SORT_KEYS)).hexdigest()


def _rehash(*, spelling_free: bool) -> None:
    connection = op.get_bind()
    after = 0
    while True:
        rows = connection.execute(
            sa.text(
                "SELECT position, content_hash, payload FROM event_log WHERE position > :after"
                " AND (payload LIKE '%.0%' OR payload LIKE '%e+%') ORDER BY position LIMIT :n"
            ),
            {"after": after, "n": _CHUNK},
        ).all()
        if not rows:
            break
        changed = []
        for position, stored_hash, payload in rows:
            try:
                new_hash = content_hash(payload, spelling_free=spelling_free)
            except orjson.JSONDecodeError:
                continue  # not an event this application wrote: nothing to compare it with
            if new_hash != stored_hash:
                changed.append({"h": new_hash, "p": position})
        if changed:
            connection.execute(
                sa.text("UPDATE event_log SET content_hash = :h WHERE position = :p"), changed
            )
        after = rows[-1][0]


def upgrade() -> None:
    _rehash(spelling_free=True)


def downgrade() -> None:
    # The payload is the canonical form as parsed: the earlier hash is computed from it again.
    _rehash(spelling_free=False)
