"""Share an amount among keys, exactly at the 1e-6 quantum.

Shares are computed as exact fractions and rounded once with the largest-remainder method:
each key gets the floor of its exact share, then the quanta left over go one each to the
keys with the largest remainders (ties: the smaller key first, in sorted key order). So the
shares always sum to the total (itself rounded once, half to even, to the quantum), no share
is more than one quantum from its exact value, and the result does not depend on the order
the keys were given in. This is only for ONE amount split among several lines (a pool's
charge, a shared cost, a credit); a line that is nobody else's part is rounded half to even
on its own (a group of one key here). `rounding_note` says when the split moved a share off
its own half-even rounding, for the line's allocation_method.
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from decimal import Decimal
from fractions import Fraction
from typing import TYPE_CHECKING, TypeVar

from quartermaster.domain.money import LINE_QUANTUM, quantize_to
from quartermaster.pricing.rating import exact_context

if TYPE_CHECKING:
    from _typeshed import SupportsRichComparison

K = TypeVar("K", bound="SupportsRichComparison")


class AllocationMethod(enum.StrEnum):
    DIRECT = "direct"  # everything to one named key
    PROPORTIONAL = "proportional"  # in proportion to the weights
    EVEN = "even"  # the same to every key
    FLOOR_PLUS_SHARE = "floor_plus_share"  # a fixed floor each, the rest proportionally
    HYBRID = "hybrid"  # a weighted mix of proportional and even


def to_units(amount: Decimal | Fraction, quantum: Decimal = LINE_QUANTUM) -> Fraction:
    return Fraction(amount) / Fraction(quantum)


def from_units(units: int, quantum: Decimal = LINE_QUANTUM) -> Decimal:
    with exact_context():
        return Decimal(units) * quantum


def _round_half_even(value: Fraction) -> int:
    return round(value)  # Fraction.__round__ rounds half to even


def round_exact(
    exact: Mapping[K, Fraction | Decimal], quantum: Decimal = LINE_QUANTUM
) -> dict[K, Decimal]:
    """Round exact amounts to the quantum so that they sum to their exact total rounded once
    (half to even); each result is the floor or the ceiling of its exact amount.

    The amounts must all be >= 0 or all be <= 0."""
    if not exact:
        return {}
    values = {key: to_units(value, quantum) for key, value in exact.items()}
    negative = any(v < 0 for v in values.values())
    if negative and any(v > 0 for v in values.values()):
        raise ValueError("cannot round a mix of positive and negative amounts together")
    if negative:
        values = {key: -v for key, v in values.items()}
    target = _round_half_even(sum(values.values(), Fraction(0)))
    floors = {key: v.numerator // v.denominator for key, v in values.items()}
    left = target - sum(floors.values())
    # Largest remainder first; equal remainders go in sorted key order.
    remainders = {key: floors[key] - v for key, v in values.items()}  # in (-1, 0]
    order = sorted(values, key=lambda k: (remainders[k], k))
    for key in order[:left]:
        floors[key] += 1
    sign = -1 if negative else 1
    return {key: from_units(sign * floors[key], quantum) for key in sorted(values)}


SPLIT_TIE_BREAK = "largest remainders first, equal ones in cost center, team, app order"


def rounding_note(
    exact: Fraction | Decimal, rounded: Decimal, quantum: Decimal = LINE_QUANTUM
) -> str:
    """ "" when `rounded` is `exact` rounded half to even on its own; else what the split's
    largest-remainder rounding did to it and why, e.g. "; rounded up 0.000001 so that the
    split's parts sum to its total (largest remainders first, …)"."""
    own = from_units(_round_half_even(to_units(exact, quantum)), quantum)
    if rounded == own:
        return ""
    with exact_context():
        moved = rounded - own
    direction = "up" if moved > 0 else "down"
    return (
        f"; rounded {direction} {format(moved.copy_abs(), 'f')} so that the split's parts "
        f"sum to its total ({SPLIT_TIE_BREAK})"
    )


def exact_shares(
    total: Fraction,
    weights: Mapping[K, Decimal],
    method: AllocationMethod,
    *,
    floor: Fraction = Fraction(0),
    proportional_share: Decimal = Decimal(1),
    target: K | None = None,
) -> dict[K, Fraction]:
    """The unrounded share of each key; they sum exactly to `total`."""
    for key, weight in weights.items():
        if weight < 0:
            raise ValueError(f"weight of {key!r} is negative ({weight})")
    if method is AllocationMethod.DIRECT:
        if target is None:
            raise ValueError("direct allocation needs a target")
        shares = dict.fromkeys(weights, Fraction(0))
        shares[target] = total
        return shares
    if not weights:
        raise ValueError("nothing to allocate among: no keys")
    count = len(weights)
    even = dict.fromkeys(weights, total / count)
    weight_sum = Fraction(sum(weights.values(), Decimal(0)))
    if method is AllocationMethod.EVEN:
        return even

    def proportional(amount: Fraction) -> dict[K, Fraction]:
        if weight_sum == 0:  # nobody used the basis: share evenly instead
            return dict.fromkeys(weights, amount / count)
        return {key: amount * Fraction(w) / weight_sum for key, w in weights.items()}

    if method is AllocationMethod.PROPORTIONAL:
        return proportional(total)
    if method is AllocationMethod.FLOOR_PLUS_SHARE:
        floors = floor * count
        if total <= floors:  # the total cannot cover every floor: everyone pays the same
            return even
        rest = proportional(total - floors)
        return {key: floor + rest[key] for key in weights}
    if method is AllocationMethod.HYBRID:
        if not 0 <= proportional_share <= 1:
            raise ValueError(f"proportional_share {proportional_share} is not within [0, 1]")
        part = total * Fraction(proportional_share)
        by_usage = proportional(part)
        evenly = (total - part) / count
        return {key: by_usage[key] + evenly for key in weights}
    raise ValueError(f"unknown allocation method {method!r}")


def allocate(
    total: Decimal,
    weights: Mapping[K, Decimal],
    method: AllocationMethod = AllocationMethod.PROPORTIONAL,
    *,
    floor: Decimal | Fraction = Decimal(0),
    proportional_share: Decimal = Decimal(1),
    target: K | None = None,
    quantum: Decimal = LINE_QUANTUM,
) -> dict[K, Decimal]:
    """Distribute exactly `total` (rounded once, half to even, to `quantum`) among the keys.

    `weights` lists every participant with its weight (usage of the basis meter; ignored by
    even and direct). When all weights are zero, proportional shares fall back to even ones
    (and so do the proportional parts of floor_plus_share and hybrid). floor_plus_share
    gives each key `floor` and shares the rest proportionally; when the total does not
    cover every floor, it is shared evenly. hybrid shares `proportional_share` of the total
    proportionally and the rest evenly. direct gives everything to `target` (listed with
    0 for every other key). A negative total (a credit) is shared like its absolute value.
    """
    rounded = quantize_to(total, quantum)
    sign = -1 if rounded < 0 else 1
    units = Fraction(rounded.copy_abs()) / Fraction(quantum)
    shares = exact_shares(
        units,
        weights,
        method,
        floor=Fraction(floor) / Fraction(quantum),
        proportional_share=proportional_share,
        target=target,
    )
    rounded_units = round_exact({key: share * sign for key, share in shares.items()}, Decimal(1))
    return {key: from_units(int(value), quantum) for key, value in rounded_units.items()}
