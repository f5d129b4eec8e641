"""Keyset pages of the lists paged by the X-Next-After header (alerts, the action log, webhook
deliveries, the policy decision log): newest first in a total order (the last column is
unique, so ties in time keep one order), and the cursor of the next page is the id of the
last row of this one."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from sqlalchemy import ColumnElement, Select, and_, or_, select
from sqlalchemy.orm import InstrumentedAttribute, Session

from quartermaster.errors import InvalidInputError

RowT = TypeVar("RowT")

# (column, descending) pairs, most significant first; the last one is unique.
Order = Sequence[tuple[InstrumentedAttribute[Any], bool]]


@dataclass(frozen=True)
class Page(Generic[RowT]):
    """A page of rows and the cursor of the next (None: this is the last)."""

    rows: list[RowT]
    next_after: str | None


def position_of(
    after: object | None,
    order: Order,
    *where: ColumnElement[bool],
    noun: str,
    session: Session,
) -> tuple[Any, ...] | None:
    """The `order` values of the row `where` picks (the row named by `after`; None: from the
    newest); no such row is a 422 naming `after`."""
    if after is None:
        return None
    row = session.execute(select(*(column for column, _ in order)).where(*where)).first()
    if row is None:
        raise InvalidInputError(
            f"after {after!r} is not one of this tenant's {noun}: pass the X-Next-After of "
            "the previous page",
            field="after",
        )
    return tuple(row)


def _past(order: Order, position: Sequence[Any]) -> ColumnElement[bool]:
    """Rows that come after `position` in `order` (lexicographic)."""
    clauses: list[ColumnElement[bool]] = []
    for n, (column, descending) in enumerate(order):
        same = [earlier == value for (earlier, _), value in zip(order[:n], position, strict=False)]
        beyond = column < position[n] if descending else column > position[n]
        clauses.append(and_(*same, beyond))
    return or_(*clauses)


def read_page(
    query: Select[RowT],
    *,
    order: Order,
    position: Sequence[Any] | None,
    limit: int,
    cursor: Callable[[RowT], str],
    session: Session,
) -> Page[RowT]:
    """At most `limit` rows of `query` past `position` in `order`, and the next cursor."""
    if position is not None:
        query = query.where(_past(order, position))
    ordering = [column.desc() if descending else column.asc() for column, descending in order]
    rows = list(session.scalars(query.order_by(*ordering).limit(limit + 1)))
    more = len(rows) > limit
    return Page(rows[:limit], cursor(rows[limit - 1]) if more else None)
