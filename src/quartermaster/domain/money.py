"""Money is Decimal, rounded once at the invoice line with banker's rounding to 1e-6.

Arithmetic on amounts and quantities runs in a wide decimal context (`money_context`): the
default one has 28 significant digits, so it silently rounds sums beyond them and raises
`InvalidOperation` when quantizing a value of 10^22 or more to 1e-6. Limits (docs/billing.md):
the usage store holds quantities below 10^26 (DuckDB DECIMAL(38, 12)) and a price book's
numbers have at most 30 digits before the point, so an amount the pricing engine computes
from them is below 10^56; the ledger stores amounts as text of at most 64 characters, which
holds every amount below `MAX_AMOUNT` (10^56) with its 6 places and a sign.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from decimal import ROUND_HALF_EVEN, Context, Decimal, InvalidOperation, localcontext
from typing import Annotated

from pydantic import AfterValidator, PlainSerializer

LINE_QUANTUM = Decimal("0.000001")
CENT = Decimal("0.01")
# Significant digits of `money_context`: a product of a quantity (38 digits) and a price (60)
# is exact, and so is rounding any value below 10^100 to 1e-6 or a sum of such values.
MONEY_PRECISION = 120
AMOUNT_DIGITS = 56
MAX_AMOUNT = Decimal(10) ** AMOUNT_DIGITS  # exclusive: what a ledger amount must stay below
_WIDE = Context(prec=MONEY_PRECISION, rounding=ROUND_HALF_EVEN)


class AmountOutOfRangeError(ValueError):
    """An amount too large to round or to store (see `MAX_AMOUNT`); the message names it."""


@contextmanager
def money_context() -> Iterator[Context]:
    """A local decimal context of `MONEY_PRECISION` digits, for exact money arithmetic."""
    with localcontext(_WIDE) as context:
        yield context


def fixed_point(value: Decimal) -> str:
    """A decimal written out in full (`0.000000000077`, never `7.7E-11`)."""
    return format(value, "f")


def plain_text(value: Decimal) -> str:
    """A decimal in full without trailing zeros (`42.000000000000` -> `42`, `1E+18` ->
    `1000000000000000000`), exactly: `normalize()` would round it to the context's 28 digits
    (a store quantity has up to 38)."""
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


# A Decimal that an API response writes as fixed-point text, as the exports write it, so
# that the same value reads the same in both.
FixedDecimal = Annotated[Decimal, PlainSerializer(fixed_point, return_type=str, when_used="json")]


def written_out(value: Decimal) -> Decimal:
    """`value` without an exponent (`1e3` -> `1000`, `1.5E-2` -> `0.015`), exactly, as the
    database stores it: an answer then reads the same before and after a round trip."""
    return Decimal(fixed_point(value))


# A Decimal a request gives, held written out (see `written_out`).
WrittenDecimal = Annotated[Decimal, AfterValidator(written_out)]


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


def quantize_to(
    value: Decimal, quantum: Decimal, *, rounding: str = ROUND_HALF_EVEN, what: str = "amount"
) -> Decimal:
    """`value` rounded to the places of `quantum` (half to even unless `rounding` says
    otherwise), in the wide context: exact for every value below 10^100 / `quantum`, where
    the default context gives up from 10^(28 - places). Beyond, `AmountOutOfRangeError`
    naming `what`."""
    try:
        return value.quantize(quantum, rounding=rounding, context=_WIDE)
    except InvalidOperation:
        raise AmountOutOfRangeError(
            f"{what} {value} cannot be rounded to {fixed_point(quantum)}: it has more than "
            f"{MONEY_PRECISION} digits"
        ) from None


def round_line(amount: Decimal) -> Decimal:
    """Round a line amount once, to 1e-6 of the currency unit, half to even."""
    return quantize_to(amount, LINE_QUANTUM, what="line amount")


def money_text(value: Decimal, currency: str = "") -> str:
    """An amount to the cent (half to even), in full, with its currency: "12.30 USD", as
    alerts and reasons quote budgets, caps and costs, for any amount (the default context
    failed from 10^26)."""
    return f"{fixed_point(quantize_to(value, CENT))} {currency}".strip()


def money_sum(values: Iterable[Decimal]) -> Decimal:
    """The exact sum of `values` (a total of lines), whatever their size."""
    with money_context():
        return sum(values, Decimal(0))


def check_amount(value: Decimal, *, what: str) -> Decimal:
    """`value` if the ledger (or a budget or cap) can hold it (|value| < `MAX_AMOUNT`), else
    `AmountOutOfRangeError` naming `what` (e.g. the line's app and meter) and the limit."""
    if value.copy_abs() >= MAX_AMOUNT:  # abs() would round to the context's precision
        raise AmountOutOfRangeError(
            f"{what}: amount {fixed_point(value)} is not below 10^{AMOUNT_DIGITS}, the largest "
            "amount Quartermaster stores (docs/billing.md, Limits)"
        )
    return value
