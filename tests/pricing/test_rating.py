"""Each pricing model against amounts computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

from decimal import Decimal as D
from fractions import Fraction
from typing import Any

import pytest

from quartermaster.pricing.book import apply_discounts
from quartermaster.pricing.document import Discount, PricingModel
from quartermaster.pricing.rating import TierCharge, rate_quantity
from tests.pricing.support import book

GRADUATED_TIERS = [
    {"up_to": 1000, "unit_price": "0.00"},
    {"up_to": 10000, "unit_price": "0.002"},
    {"unit_price": "0.001"},
]
VOLUME_TIERS = [
    {"up_to": 1000, "unit_price": "0.010"},
    {"up_to": 10000, "unit_price": "0.008"},
    {"unit_price": "0.006"},
]


def rule(**fields: Any) -> PricingModel:
    return book({"meter": "tokens", **fields}).prices[0]


def test_per_unit() -> None:
    rated = rate_quantity(D(5000), rule(model="per_unit", unit_price="0.002"))
    assert rated.amount == D("10")  # 5000 * 0.002
    assert rated.unit_price == D("0.002")
    assert rated.rule == "per-unit: 5000 @ 0.002"


def test_per_unit_with_free_allowance() -> None:
    model = rule(model="per_unit", unit_price="0.002", free_allowance=1000)
    rated = rate_quantity(D(5000), model)
    assert rated.amount == D("8")  # (5000 - 1000 free) * 0.002
    assert rated.billable == D(4000)
    assert rated.unit_price == D("0.0016")  # 8 / 5000
    assert rated.rule == "1000 free + per-unit: 4000 @ 0.002"
    assert rate_quantity(D(600), model).amount == 0  # all within the allowance


@pytest.mark.parametrize(
    ("quantity", "amount", "text"),
    [
        # 1000 @ 0.00 + 4000 @ 0.002 = 0 + 8
        (D(5000), D("8"), "graduated: 1000 @ 0.00 + 4000 @ 0.002"),
        # 1000 @ 0 + 9000 @ 0.002 + 15000 @ 0.001 = 0 + 18 + 15
        (D(25000), D("33"), "graduated: 1000 @ 0.00 + 9000 @ 0.002 + 15000 @ 0.001"),
        # exactly the first boundary: only the free tier
        (D(1000), D("0"), "graduated: 1000 @ 0.00"),
        # 1000 @ 0 + 0.5 @ 0.002 = 0.001
        (D("1000.5"), D("0.001"), "graduated: 1000 @ 0.00 + 0.5 @ 0.002"),
        (D(0), D(0), "graduated: 0 units"),
    ],
)
def test_graduated(quantity: D, amount: D, text: str) -> None:
    rated = rate_quantity(quantity, rule(model="graduated", tiers=GRADUATED_TIERS))
    assert rated.amount == amount
    assert rated.rule == text


def test_graduated_tier_breakdown() -> None:
    rated = rate_quantity(D(25000), rule(model="graduated", tiers=GRADUATED_TIERS))
    assert rated.tiers == (
        TierCharge(1, D(1000), D("0.00"), D("0")),
        TierCharge(2, D(9000), D("0.002"), D("18")),
        TierCharge(3, D(15000), D("0.001"), D("15")),
    )


def test_graduated_allowance_comes_before_the_tiers() -> None:
    model = rule(model="graduated", tiers=GRADUATED_TIERS, free_allowance=500)
    rated = rate_quantity(D(5000), model)
    # 500 free, then 4500 billable: 1000 @ 0 + 3500 @ 0.002 = 7
    assert rated.amount == D("7")
    assert rated.rule == "500 free + graduated: 1000 @ 0.00 + 3500 @ 0.002"


@pytest.mark.parametrize(
    ("quantity", "amount", "tier"),
    [
        (D(1000), D("10"), 1),  # 1000 * 0.010: the boundary belongs to the lower tier
        (D(1001), D("8.008"), 2),  # 1001 * 0.008: every unit at tier 2's price
        (D(20000), D("120"), 3),  # 20000 * 0.006
        (D(0), D("0"), 1),
    ],
)
def test_volume(quantity: D, amount: D, tier: int) -> None:
    rated = rate_quantity(quantity, rule(model="volume", tiers=VOLUME_TIERS))
    assert rated.amount == amount
    assert rated.tiers[0].tier == tier


def test_volume_rule_text() -> None:
    rated = rate_quantity(D(1001), rule(model="volume", tiers=VOLUME_TIERS))
    assert rated.rule == "volume: 1001 @ 0.008 (tier 2, up to 10000)"


@pytest.mark.parametrize(
    ("quantity", "free", "amount", "packages"),
    [
        (D(450), 0, D("2.50"), 5),  # ceil(450 / 100) = 5 packages * 0.50
        (D(400), 0, D("2.00"), 4),  # exactly 4 packages
        (D(1), 0, D("0.50"), 1),  # a started package is a whole package
        (D(0), 0, D("0"), 0),
        (D(450), 100, D("2.00"), 4),  # 350 after the allowance: ceil(3.5) = 4 * 0.50
    ],
)
def test_package(quantity: D, free: int, amount: D, packages: int) -> None:
    model = rule(model="package", package_size=100, package_price="0.50", free_allowance=free)
    rated = rate_quantity(quantity, model)
    assert rated.amount == amount
    assert f"package: {packages} x 100 units @ 0.50" in rated.rule


def test_subscription_within_included_usage() -> None:
    model = rule(
        model="subscription",
        fee="10.00",
        included=1000,
        overage={"model": "per_unit", "unit_price": "0.01"},
    )
    rated = rate_quantity(D(800), model)
    assert rated.amount == D("10.00")  # the fee alone
    assert rated.fee == D("10.00")
    # 10 + (1500 - 1000) * 0.01 = 10 + 5
    assert rate_quantity(D(1500), model).amount == D("15")


def test_subscription_with_graduated_overage() -> None:
    model = rule(
        model="subscription",
        fee="10",
        included=1000,
        overage={
            "model": "graduated",
            "tiers": [{"up_to": 1000, "unit_price": "0.01"}, {"unit_price": "0.005"}],
        },
    )
    rated = rate_quantity(D(3500), model)
    # 2500 over: 1000 @ 0.01 + 1500 @ 0.005 = 10 + 7.5; plus the fee 10
    assert rated.amount == D("27.5")
    assert rated.rule == (
        "subscription: fee 10, 1000 included, overage graduated: 1000 @ 0.01 + 1500 @ 0.005"
    )


def test_subscription_without_overage_rule_does_not_charge_overage() -> None:
    model = rule(model="subscription", fee="10", included=1000)
    rated = rate_quantity(D(5000), model)
    assert rated.amount == D("10")
    assert "none (4000 units not charged)" in rated.rule


def test_zero_quantity_has_zero_unit_price() -> None:
    model = rule(model="subscription", fee="10")
    rated = rate_quantity(D(0), model)
    assert rated.amount == D("10")
    assert rated.unit_price == 0


def test_negative_quantity_is_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        rate_quantity(D(-1), rule(model="per_unit", unit_price="1"))


def test_products_are_exact_beyond_the_default_28_digits() -> None:
    quantity = D("123456789012345.123456")
    price = D("0.000001234567891234567")
    rated = rate_quantity(quantity, rule(model="per_unit", unit_price=price))
    # 21 + 22 significant digits: the default context (28 digits) would round the product.
    assert Fraction(rated.amount) == Fraction(quantity) * Fraction(price)
    assert rated.amount != quantity * price


def _discount(name: str, percent: str, **applies_to: str) -> Discount:
    return Discount(name=name, percent=D(percent), applies_to=applies_to)  # type: ignore[arg-type]


def test_discounts_compound_in_order() -> None:
    discounts = [_discount("a", "10", team="x"), _discount("b", "20", team="x")]
    outcome = apply_discounts(D(100), discounts)
    # 100 - 10% = 90; 90 - 20% = 72
    assert outcome.net == D(72)
    assert [d.amount for d in outcome.applied] == [D(10), D(18)]
    assert outcome.factor == D("0.72")
    assert outcome.describe() == "a 10%, b 20%"


def test_a_full_discount_leaves_nothing() -> None:
    outcome = apply_discounts(D("12.5"), [_discount("free", "100", app="demo")])
    assert outcome.net == 0
