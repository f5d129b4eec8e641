"""Look-ups on one price book version: which rule prices an owner's meter, which discounts
apply, which policy shares a platform cost. Pure."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal

from quartermaster.pricing.document import (
    AnyPolicy,
    AnyRule,
    Discount,
    PoolBasis,
    PriceBookDocument,
    Selector,
)
from quartermaster.pricing.rating import exact_context

# A scoped rule beats a broader one: app, then team, then cost center, then lifecycle.
SCOPE_PRECEDENCE = ("app", "team", "cost_center", "lifecycle")
ANY_COST_TYPE = "*"


@dataclass(frozen=True, slots=True, order=True)
class Owner:
    """Who a usage line belongs to (slugs, as the catalog and the rollups name them)."""

    cost_center: str
    team: str
    app: str
    lifecycle: str = "persistent"

    def attribute(self, kind: str) -> str:
        value: str = getattr(self, kind)
        return value

    def matches(self, selector: Selector) -> bool:
        named = selector.named()
        return bool(named) and all(self.attribute(kind) == value for kind, value in named)


@dataclass(frozen=True, slots=True)
class AppliedDiscount:
    name: str
    percent: Decimal
    amount: Decimal  # taken off, unrounded


@dataclass(frozen=True, slots=True)
class DiscountOutcome:
    gross: Decimal
    net: Decimal
    applied: tuple[AppliedDiscount, ...]

    @property
    def factor(self) -> Decimal:
        """net / gross as an exact product of (1 - percent/100)."""
        with exact_context():
            result = Decimal(1)
            for discount in self.applied:
                result *= 1 - discount.percent / 100
            return result

    def describe(self) -> str:
        return ", ".join(f"{d.name} {d.percent}%" for d in self.applied)


def apply_discounts(amount: Decimal, discounts: Sequence[Discount]) -> DiscountOutcome:
    """Discounts compound in document order: each takes its percent off what the previous
    ones left, so together they never exceed 100%. Pure and unrounded."""
    applied: list[AppliedDiscount] = []
    with exact_context():
        net = amount
        for discount in discounts:
            off = net * discount.percent / 100
            net -= off
            applied.append(AppliedDiscount(discount.name, discount.percent, off))
    return DiscountOutcome(gross=amount, net=net, applied=tuple(applied))


def pool_value(basis: PoolBasis, owner: Owner) -> str:
    if basis is PoolBasis.TENANT:
        return "*"
    return owner.attribute(basis.value)


class CompiledBook:
    """A price book version indexed for pricing many lines."""

    def __init__(self, document: PriceBookDocument) -> None:
        self.document = document
        self._default: dict[str, tuple[int, AnyRule]] = {}
        self._scoped: dict[tuple[str, str, str], tuple[int, AnyRule]] = {}
        for index, rule in enumerate(document.prices):
            if rule.scope is None:
                self._default[rule.meter] = (index, rule)
            else:
                ((kind, value),) = rule.scope.named()
                self._scoped[(rule.meter, kind, value)] = (index, rule)
        self._policies: dict[str, AnyPolicy] = {p.cost_type: p for p in document.platform_costs}

    @property
    def label(self) -> str:
        return f"{self.document.name} v{self.document.version}"

    def rule_for(self, meter: str, owner: Owner) -> tuple[int, AnyRule] | None:
        """The most specific rule for the owner's meter, with its index in `prices`."""
        for kind in SCOPE_PRECEDENCE:
            found = self._scoped.get((meter, kind, owner.attribute(kind)))
            if found is not None:
                return found
        return self._default.get(meter)

    def discounts_for(self, owner: Owner, meter: str) -> list[Discount]:
        return [
            d
            for d in self.document.discounts
            if owner.matches(d.applies_to) and (d.meters is None or meter in d.meters)
        ]

    def policy_for(self, cost_type: str) -> AnyPolicy | None:
        return self._policies.get(cost_type) or self._policies.get(ANY_COST_TYPE)
