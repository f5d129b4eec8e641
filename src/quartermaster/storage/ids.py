"""Ids by unique prefix, as git takes short hashes: the CLI prints 12 characters of the ids of
billing runs and lines, enforcements, approvals, policy exceptions and cost previews, and a
prefix of 8 or more names the row it begins, within the caller's tenant."""

from __future__ import annotations

import re
from typing import Any, TypeVar

from sqlalchemy import Select
from sqlalchemy.orm import InstrumentedAttribute, Session

from quartermaster.errors import InvalidInputError

MIN_PREFIX = 8
ID_PREFIX = re.compile(rf"^[0-9a-f]{{{MIN_PREFIX},31}}$")
# What looks like a prefix cut too short to name a row (4 to 7 hex characters).
TOO_SHORT = re.compile(rf"^[0-9a-f]{{4,{MIN_PREFIX - 1}}}$")

Row = TypeVar("Row")


def unique_by_prefix(
    query: Select[Row],
    id_column: InstrumentedAttribute[Any],
    prefix: str,
    *,
    what: str,
    field: str,
    session: Session,
) -> Row | None:
    """The one row of `query` whose id starts with `prefix`; None when there is none; an
    InvalidInputError (422) naming `what` when several share it."""
    matches = session.scalars(
        query.where(id_column.startswith(prefix, autoescape=True)).limit(2)
    ).all()
    if len(matches) > 1:
        raise InvalidInputError(
            f"{what} id prefix {prefix!r} is ambiguous: several start with it; give more of the id",
            field=field,
        )
    return matches[0] if matches else None


def by_id_or_prefix(
    query: Select[Row],
    id_column: InstrumentedAttribute[Any],
    given: str,
    *,
    what: str,
    field: str,
    session: Session,
) -> Row | None:
    """The row of `query` whose id is `given`, else (for 8 to 31 hex characters) the one
    whose id begins with it; None when there is none."""
    exact = session.scalars(query.where(id_column == given)).first()
    if exact is not None:
        return exact
    if TOO_SHORT.match(given):
        raise InvalidInputError(
            f"{what} id prefix {given!r} is too short: give {MIN_PREFIX} characters or more",
            field=field,
        )
    if not ID_PREFIX.match(given):
        return None
    return unique_by_prefix(query, id_column, given, what=what, field=field, session=session)
