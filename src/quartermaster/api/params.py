"""Bounded integer types for request parameters and bodies."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

INT64_MAX = 2**63 - 1

# Ids, cursors and versions are stored as 64-bit integers (SQL BIGINT): a larger one cannot
# exist, and binding it overflows the database driver (a 500). Bounded here it is a 422
# naming the parameter.
Int64 = Annotated[int, Field(le=INT64_MAX)]
