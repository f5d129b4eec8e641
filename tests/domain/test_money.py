"""Money helpers: API responses write decimals as the exports do."""

from __future__ import annotations

from decimal import Decimal

from pydantic import BaseModel

from quartermaster.domain.money import FixedDecimal


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
