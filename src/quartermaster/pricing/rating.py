"""Rate a quantity with one pricing model. Pure: Decimal in, Decimal out, nothing rounded.

Arithmetic runs in a wide decimal context (domain.money.money_context) so that products and
sums of the document's numbers are exact (a quantity of the usage store's 38 significant
digits times a price book number of 60 is at most 98).
"""

from __future__ import annotations

import decimal
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from fractions import Fraction

from quartermaster.domain.money import money_context, plain_text
from quartermaster.pricing.document import (
    Graduated,
    Package,
    PerUnit,
    PricingModel,
    Subscription,
    Tier,
    Volume,
)

# Display only: an effective unit price is a quotient and may not terminate.
UNIT_PRICE_QUANTUM = Decimal("1e-12")
ZERO = Decimal(0)


@contextmanager
def exact_context() -> Iterator[decimal.Context]:
    with money_context() as context:
        yield context


@dataclass(frozen=True, slots=True)
class TierCharge:
    """Units charged at one tier (1-based `tier`) of a graduated or volume model."""

    tier: int
    units: Decimal
    unit_price: Decimal
    amount: Decimal


@dataclass(frozen=True, slots=True)
class RatedCharge:
    """The charge for `quantity` under one model, unrounded.

    `billable` is the quantity after the free allowance (or a subscription's included
    usage); `fee` is a subscription's flat fee (part of `amount`); `rule` says how the
    amount was computed, e.g. "graduated: 1000 @ 0.00 + 4000 @ 0.002"."""

    quantity: Decimal
    billable: Decimal
    amount: Decimal
    unit_price: Decimal
    rule: str
    tiers: tuple[TierCharge, ...] = ()
    fee: Decimal = ZERO


def fmt(value: Decimal) -> str:
    """Plain notation, no exponent; trailing zeros of computed values dropped."""
    return plain_text(value)


def price_text(value: Decimal) -> str:
    """A price as the document wrote it (0.00 stays 0.00)."""
    return format(value, "f")


def unit_price_quantum(quantity: Decimal) -> Decimal:
    """Where a unit price that does not terminate is cut: at 1e-12, or finer for a quantity
    of 100,000 units or more, so that quantity x unit price stays within 1e-7 of the amount
    (amounts are to 1e-6). At 1e-12, 18,980,610,118 bytes at a price shown as 8.1e-11 came
    to 1.537429 for an amount of 1.53."""
    whole_digits = max(quantity.adjusted() + 1, 0)
    return min(UNIT_PRICE_QUANTUM, Decimal(1).scaleb(-(7 + whole_digits)))


def unit_price(amount: Fraction, quantity: Decimal) -> Decimal:
    """A line's unit price, amount / quantity (quantity > 0): exact when it terminates within
    its quantum (`unit_price_quantum`), else rounded to it, half to even."""
    exact = amount / Fraction(quantity)
    with exact_context():
        rate = Decimal(exact.numerator) / Decimal(exact.denominator)
        shown = rate.quantize(unit_price_quantum(quantity), rounding=ROUND_HALF_EVEN)
    return Decimal(fmt(shown)) if Fraction(shown) == exact else shown


def effective_unit_price(amount: Decimal, quantity: Decimal) -> Decimal:
    return ZERO if quantity == 0 else unit_price(Fraction(amount), quantity)


def _graduated(billable: Decimal, tiers: list[Tier]) -> tuple[TierCharge, ...]:
    charges: list[TierCharge] = []
    lower = ZERO
    for number, tier in enumerate(tiers, start=1):
        if billable <= lower:
            break
        upper = billable if tier.up_to is None else min(billable, tier.up_to)
        units = upper - lower
        charges.append(TierCharge(number, units, tier.unit_price, units * tier.unit_price))
        if tier.up_to is None:
            break
        lower = tier.up_to
    return tuple(charges)


def volume_tier(billable: Decimal, tiers: list[Tier]) -> int:
    """1-based tier whose range (previous up_to, up_to] holds the billable quantity."""
    for number, tier in enumerate(tiers, start=1):
        if tier.up_to is None or billable <= tier.up_to:
            return number
    return len(tiers)


def _rate_usage(billable: Decimal, model: PerUnit | Graduated | Volume | Package) -> RatedCharge:
    """Rate the quantity left after the free allowance (`billable`)."""
    if isinstance(model, PerUnit):
        amount = billable * model.unit_price
        return RatedCharge(
            billable,
            billable,
            amount,
            ZERO,
            f"per-unit: {fmt(billable)} @ {price_text(model.unit_price)}",
        )
    if isinstance(model, Graduated):
        charges = _graduated(billable, model.tiers)
        amount = sum((c.amount for c in charges), ZERO)
        parts = " + ".join(f"{fmt(c.units)} @ {price_text(c.unit_price)}" for c in charges)
        return RatedCharge(
            billable, billable, amount, ZERO, f"graduated: {parts or '0 units'}", charges
        )
    if isinstance(model, Volume):
        number = volume_tier(billable, model.tiers)
        tier = model.tiers[number - 1]
        amount = billable * tier.unit_price
        bound = "unbounded" if tier.up_to is None else f"up to {fmt(tier.up_to)}"
        return RatedCharge(
            billable,
            billable,
            amount,
            ZERO,
            f"volume: {fmt(billable)} @ {price_text(tier.unit_price)} (tier {number}, {bound})",
            (TierCharge(number, billable, tier.unit_price, amount),),
        )
    whole, remainder = divmod(billable, model.package_size)
    packages = whole + (1 if remainder else 0)
    amount = packages * model.package_price
    return RatedCharge(
        billable,
        billable,
        amount,
        ZERO,
        f"package: {fmt(packages)} x {fmt(model.package_size)} units "
        f"@ {price_text(model.package_price)} ({fmt(billable)} units, rounded up)",
    )


def rate_quantity(quantity: Decimal, model: PricingModel) -> RatedCharge:
    """The charge for `quantity` units in one period under `model` (a rule or an overage).

    Free allowance first (`free_allowance` units are free, then the model applies to the
    rest); a subscription charges its fee, includes `included` units and rates the rest with
    its overage model."""
    if quantity < 0:
        raise ValueError(f"quantity {quantity} is negative")
    with exact_context():
        if isinstance(model, Subscription):
            over = max(ZERO, quantity - model.included)
            overage = _rate_overage(over, model)
            amount = model.fee + overage.amount
            rule = (
                f"subscription: fee {price_text(model.fee)}, "
                f"{fmt(model.included)} included, overage {overage.rule}"
            )
            return RatedCharge(
                quantity,
                over,
                amount,
                effective_unit_price(amount, quantity),
                rule,
                overage.tiers,
                model.fee,
            )
        free = min(quantity, model.free_allowance)
        rated = _rate_usage(quantity - free, model)
        rule = rated.rule if model.free_allowance == 0 else f"{fmt(free)} free + {rated.rule}"
        return RatedCharge(
            quantity,
            rated.billable,
            rated.amount,
            effective_unit_price(rated.amount, quantity),
            rule,
            rated.tiers,
        )


def _rate_overage(over: Decimal, model: Subscription) -> RatedCharge:
    if model.overage is None:
        return RatedCharge(over, over, ZERO, ZERO, f"none ({fmt(over)} units not charged)")
    return rate_quantity(over, model.overage)
