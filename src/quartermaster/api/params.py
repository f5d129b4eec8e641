"""Bounded integer types and string choices for request parameters and bodies."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated

from pydantic import Field, WithJsonSchema

INT64_MAX = 2**63 - 1

# Ids, cursors and versions are stored as 64-bit integers (SQL BIGINT): a larger one cannot
# exist, and binding it overflows the database driver (a 500). Bounded here it is a 422
# naming the parameter.
Int64 = Annotated[int, Field(le=INT64_MAX)]


def one_of(values: Iterable[str]) -> WithJsonSchema:
    """`Annotated[str, one_of(...)]`: the spec lists a string's accepted values as an `enum`
    (a generated client gets a typed choice) while the service still checks them, so a wrong
    one keeps its 422 naming the field and the choices in the service's words."""
    return WithJsonSchema({"type": "string", "enum": [str(value) for value in values]})
