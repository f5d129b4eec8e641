"""A platform cost's `currency` must be an active ISO 4217 code: a code that is only three
capitals (`XYZ`) was accepted, and every billing of its period then failed."""

from __future__ import annotations

import pytest

from quartermaster.domain.currencies import ACTIVE_CURRENCIES
from quartermaster.metering.validation import RejectReason, event_checks, validate_batch
from tests.metering.test_validation import accepted, context, event, rejected


def cost(currency: str | None, **extra: str) -> dict[str, object]:
    data: dict[str, object] = {"cost_type": "lb", "amount": "5", **extra}
    if currency is not None:
        data["currency"] = currency
    return event(id=f"cost-{currency}", type="qm.platform.cost", data=data)


@pytest.mark.parametrize("currency", ["XYZ", "HRK", "XXX", "XTS", "ABC"])
def test_a_code_that_is_not_an_active_currency_is_rejected_naming_the_field(
    currency: str,
) -> None:
    rejection = rejected(cost(currency), RejectReason.INVALID_DATA, "data.currency")
    assert rejection.message == (
        f"data.currency: {currency!r} is not an active ISO 4217 currency code (e.g. USD, EUR)"
    )


def test_the_rest_of_the_batch_is_stored() -> None:
    bad, good = cost("XYZ"), cost("EUR")
    stored, rejections = validate_batch([bad, good], context([bad, good]))
    assert [a.record.event_id for a in stored] == ["cost-EUR"]
    assert [(r.id, r.field) for r in rejections] == [("cost-XYZ", "data.currency")]


@pytest.mark.parametrize("currency", ["USD", "EUR", "JPY", "CHF", "XCG", "ZWG", None])
def test_active_codes_and_the_default_are_accepted(currency: str | None) -> None:
    accepted(cost(currency))


def test_the_fast_path_decides_the_code_with_a_set_lookup() -> None:
    """Platform costs keep the fast path (no pydantic per event); it refuses what pydantic
    refuses and sends nothing valid to the slow path."""
    check = event_checks().data["qm.platform.cost"]
    assert check is not None
    for code in ACTIVE_CURRENCIES:
        assert check({"cost_type": "lb", "amount": "1", "currency": code}), code
    for code in ("XYZ", "HRK", "usd", "US", "USDX", 840):
        assert not check({"cost_type": "lb", "amount": "1", "currency": code}), code


def test_the_set_is_iso_4217_shaped() -> None:
    assert len(ACTIVE_CURRENCIES) > 150
    assert all(len(c) == 3 and c.isascii() and c.isupper() for c in ACTIVE_CURRENCIES)
    assert {"USD", "EUR", "GBP", "JPY", "XCG", "ZWG"} <= ACTIVE_CURRENCIES
    assert not {"XYZ", "HRK", "BGN", "ANG", "ZWL", "XXX", "XTS"} & ACTIVE_CURRENCIES
