"""`reproduce` compares a recomputed bill with the one issued: a unit price (derived, amount ÷
quantity) is compared at the precision it was issued with, since a later release may show
more digits; every other field exactly."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal

from quartermaster.billing.adjustments import _compare
from quartermaster.billing.lines import LineDraft
from quartermaster.billing.models import CostType

ISSUED = LineDraft(
    cost_type=CostType.USAGE,
    item="tokens",
    cost_center="cc-1",
    team="team-1",
    app="invoice-bot",
    lifecycle="persistent",
    meter="tokens",
    unit="tokens",
    quantity=Decimal("880245"),
    unit_price=Decimal("0.000001136047"),  # as an earlier release issued it (12 digits)
    amount=Decimal("1.000000"),
    pricing_rule="tiered",
    allocation_method="direct",
    versions=(1,),
)


def test_a_unit_price_shown_with_more_digits_now_still_reproduces() -> None:
    recomputed = replace(ISSUED, unit_price=Decimal("0.000001136046944"))
    assert _compare([ISSUED], [recomputed]) == []


def test_a_unit_price_that_differs_at_the_issued_precision_is_reported() -> None:
    recomputed = replace(ISSUED, unit_price=Decimal("0.000001136049944"))
    assert _compare([ISSUED], [recomputed]) == [
        f"{ISSUED.line_key}: unit_price 0.000001136047 != 0.000001136050"
    ]


def test_other_fields_are_compared_exactly() -> None:
    recomputed = replace(ISSUED, amount=Decimal("1.000001"), unit_price=None)
    assert _compare([ISSUED], [recomputed]) == [
        f"{ISSUED.line_key}: unit_price 0.000001136047 != None",
        f"{ISSUED.line_key}: amount 1.000000 != 1.000001",
    ]


# A discounted charge as an earlier release issued it: its unit price was its rounded amount
# (the net and the discount each rounded) / quantity, 0.000499999508 for a list price of 0.0005.
CHARGE = replace(
    ISSUED,
    item="requests",
    meter="requests",
    unit="request",
    quantity=Decimal("1523.8095"),
    unit_price=Decimal("0.000499999508"),
    amount=Decimal("0.761904"),
)
DISCOUNT = replace(
    CHARGE,
    cost_type=CostType.DISCOUNT,
    unit_price=None,
    amount=Decimal("-0.076190"),
    pricing_rule="discount: data-team 10%",
    parent_key=CHARGE.line_key,
)


def test_a_discounted_charge_issued_with_its_amounts_unit_price_still_reproduces() -> None:
    """A discounted charge now shows its list unit price; one issued before, with its rounded
    amount / quantity, is the same bill."""
    recomputed = replace(CHARGE, unit_price=Decimal("0.0005"))
    assert _compare([CHARGE, DISCOUNT], [recomputed, DISCOUNT]) == []
    # only a discounted charge's: on a line without a discount it is a difference
    assert _compare([CHARGE], [recomputed]) == [
        f"{CHARGE.line_key}: unit_price 0.000499999508 != 0.000500000000"
    ]
    # and only the unit price its amount gave
    other = replace(CHARGE, unit_price=Decimal("0.000499999509"))
    assert _compare([other, DISCOUNT], [recomputed, DISCOUNT]) == [
        f"{CHARGE.line_key}: unit_price 0.000499999509 != 0.000500000000"
    ]
