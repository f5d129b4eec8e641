"""Money is Decimal, rounded once at the invoice line with banker's rounding to 1e-6."""

from __future__ import annotations

from decimal import ROUND_HALF_EVEN, Decimal, InvalidOperation
from typing import Annotated

from pydantic import PlainSerializer

LINE_QUANTUM = Decimal("0.000001")


def fixed_point(value: Decimal) -> str:
    """A decimal written out in full (`0.000000000077`, never `7.7E-11`)."""
    return format(value, "f")


# A Decimal that an API response writes as fixed-point text, as the exports write it, so
# that the same value reads the same in both.
FixedDecimal = Annotated[Decimal, PlainSerializer(fixed_point, return_type=str, when_used="json")]


def to_decimal(value: object, *, field: str = "amount") -> Decimal:
    """Parse a money or quantity value exactly; floats are refused because they are inexact."""
    if isinstance(value, bool):
        raise ValueError(f"{field}: expected a number, got a boolean")
    if isinstance(value, Decimal):
        result = value
    elif isinstance(value, int):
        result = Decimal(value)
    elif isinstance(value, str):
        try:
            result = Decimal(value.strip())
        except InvalidOperation:
            raise ValueError(f"{field}: {value!r} is not a decimal number") from None
    elif isinstance(value, float):
        # JSON numbers arrive as floats; repr gives the shortest exact decimal spelling.
        result = Decimal(repr(value))
    else:
        raise ValueError(f"{field}: expected a number, got {type(value).__name__}")
    if not result.is_finite():
        raise ValueError(f"{field}: {value!r} is not finite")
    return result


def round_line(amount: Decimal) -> Decimal:
    """Round a line amount once, to 1e-6 of the currency unit, half to even."""
    return amount.quantize(LINE_QUANTUM, rounding=ROUND_HALF_EVEN)
