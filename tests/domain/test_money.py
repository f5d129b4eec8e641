"""Money helpers: API responses write decimals as the exports do; rounding and sums are
exact for every amount a billing line can have."""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import BaseModel

from quartermaster.domain.money import (
    AMOUNT_DIGITS,
    LINE_QUANTUM,
    MAX_AMOUNT,
    AmountOutOfRangeError,
    FixedDecimal,
    check_amount,
    fixed_point,
    money_sum,
    money_text,
    plain_text,
    quantize_to,
    round_line,
)


class _Priced(BaseModel):
    unit_price: FixedDecimal | None
    quantity: FixedDecimal


def test_api_decimals_are_written_in_full_never_in_exponent_form() -> None:
    # str(Decimal) gives '7.7E-11' and '1E+3'; the CSV and FOCUS exports give the full form,
    # and an API client comparing the two must read the same text.
    priced = _Priced(unit_price=Decimal("7.7E-11"), quantity=Decimal("1E+3"))
    assert priced.model_dump_json() == '{"unit_price":"0.000000000077","quantity":"1000"}'
    assert _Priced(unit_price=None, quantity=Decimal(0)).model_dump(mode="json") == {
        "unit_price": None,
        "quantity": "0",
    }


# Amounts as large as a billing line can be: a store quantity (below 10^26, 12 places) times a
# price book number (below 10^30, 30 places). The default decimal context has 28 digits:
# quantizing 10^22 to 1e-6 raised InvalidOperation and sums past 28 digits were rounded.
_places = st.integers(min_value=0, max_value=40)
_amounts = st.builds(
    lambda units, places: Decimal(units).scaleb(-places),
    st.integers(min_value=-(10 ** (AMOUNT_DIGITS + 6)), max_value=10 ** (AMOUNT_DIGITS + 6)),
    _places,
)


def _half_even(value: Fraction, quantum: Fraction) -> Fraction:
    units = value / quantum
    floor = units.numerator // units.denominator
    rest = units - floor
    up = rest > Fraction(1, 2) or (rest == Fraction(1, 2) and floor % 2 == 1)
    return (floor + up) * quantum


@given(_amounts)
def test_round_line_rounds_any_amount_half_to_even_to_a_millionth(amount: Decimal) -> None:
    rounded = round_line(amount)
    assert Fraction(rounded) == _half_even(Fraction(amount), Fraction(LINE_QUANTUM))
    assert rounded.as_tuple().exponent == -6


@given(st.lists(_amounts, max_size=30))
def test_money_sum_is_the_exact_sum(amounts: list[Decimal]) -> None:
    assert Fraction(money_sum(amounts)) == sum((Fraction(a) for a in amounts), Fraction(0))


@given(_amounts)
def test_every_amount_below_the_limit_fits_the_ledger_column(amount: Decimal) -> None:
    rounded = round_line(amount)
    if rounded.copy_abs() < MAX_AMOUNT:
        assert check_amount(rounded, what="line") == rounded
        assert len(fixed_point(rounded)) <= 64  # storage.base.DecimalText is String(64)
    else:
        with pytest.raises(AmountOutOfRangeError):
            check_amount(rounded, what="line")


def test_a_line_of_ten_to_the_22_is_rounded_not_refused() -> None:
    assert round_line(Decimal("1e22") + Decimal("0.0000005")) == Decimal(
        "10000000000000000000000.000000"
    )
    assert round_line(Decimal("15000000000000000000000.0000015")) == Decimal(
        "15000000000000000000000.000002"
    )
    assert quantize_to(Decimal("99999999999999999999999999.99499"), Decimal("0.01")) == Decimal(
        "99999999999999999999999999.99"
    )


def test_a_sum_past_28_digits_is_not_rounded() -> None:
    lines = [Decimal("10000000000000000000000.000001"), Decimal("0.000001")]
    assert money_sum(lines) == Decimal("10000000000000000000000.000002")
    assert sum(lines, Decimal(0)) != Decimal("10000000000000000000000.000002")  # the trap


def test_an_amount_the_ledger_cannot_hold_is_refused_naming_it_and_the_limit() -> None:
    largest = Decimal("-" + "9" * AMOUNT_DIGITS + ".999999")
    assert check_amount(largest, what="x") == largest
    assert len(fixed_point(largest)) == 64
    with pytest.raises(AmountOutOfRangeError) as caught:
        check_amount(MAX_AMOUNT, what="usage line of app 'web', meter 'requests'")
    assert "app 'web', meter 'requests'" in str(caught.value)
    assert "10^56" in str(caught.value)


def test_a_value_too_long_to_round_is_a_clear_error_not_invalid_operation() -> None:
    with pytest.raises(AmountOutOfRangeError, match="budget amount 1E\\+130 cannot be rounded"):
        quantize_to(Decimal("1e130"), Decimal("0.01"), what="budget amount")


def test_money_text_quotes_any_amount_to_the_cent_in_full() -> None:
    assert money_text(Decimal("12.305"), "USD") == "12.30 USD"
    assert money_text(Decimal("1E+30")) == "1" + "0" * 30 + ".00"
    assert money_text(Decimal("-0.125"), "EUR") == "-0.12 EUR"


def test_plain_text_drops_trailing_zeros_without_rounding() -> None:
    quantity = Decimal("99999999999999999999999999.999999999990")  # a store quantity: 38 digits
    assert plain_text(quantity) == "99999999999999999999999999.99999999999"
    assert str(quantity.normalize()) == "1E+26"  # the trap: rounded to 28 digits
    assert plain_text(Decimal("1E+18")) == "1000000000000000000"
    assert plain_text(Decimal("42.000000000000")) == "42"
    assert plain_text(Decimal("0E-12")) == "0"
