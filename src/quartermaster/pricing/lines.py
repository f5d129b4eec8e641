"""The values the period pricing engine takes and returns (see engine.price_period)."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from types import MappingProxyType

from quartermaster.domain.money import money_sum
from quartermaster.domain.timeutil import Period
from quartermaster.errors import InvalidInputError
from quartermaster.pricing.book import Owner


class PricingError(InvalidInputError):
    """The usage or costs handed to the engine cannot be priced; the message says which."""


@dataclass(frozen=True, slots=True)
class UsageRow:
    """A quantity of one meter used by one owner. `at` is the start of the usage bucket (a
    rollup hour or day): it picks the price book version; None means the period's start."""

    cost_center: str
    team: str
    app: str
    meter: str
    quantity: Decimal
    lifecycle: str = "persistent"
    at: datetime | None = None

    @property
    def owner(self) -> Owner:
        return Owner(self.cost_center, self.team, self.app, self.lifecycle)


@dataclass(frozen=True, slots=True)
class PlatformCostItem:
    """A shared platform cost (the sum of qm.platform.cost events of one cost_type, or one
    event). `at` picks the price book version whose policy shares it (None: period start);
    `currency` None means the price book's."""

    cost_type: str
    amount: Decimal
    currency: str | None = None
    at: datetime | None = None


def _empty_teams() -> Mapping[str, str]:
    return MappingProxyType({})


def _empty_apps() -> Mapping[str, tuple[str, str]]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True)
class OwnerDirectory:
    """Optional: who owns teams and apps that may have no usage in the period, so that a
    direct platform-cost target lands on its own cost center. team -> cost center;
    app -> (cost center, team)."""

    teams: Mapping[str, str] = field(default_factory=_empty_teams)
    apps: Mapping[str, tuple[str, str]] = field(default_factory=_empty_apps)


class LineKind(enum.StrEnum):
    USAGE = "usage"  # a meter's charge for an owner
    PLATFORM = "platform"  # a share of a shared platform cost
    RESERVATION = "reservation"  # a share of a reserved-capacity credit (negative)


RESERVED_CAPACITY = "reserved_capacity"
_KIND_ORDER = {LineKind.USAGE: "0", LineKind.PLATFORM: "1", LineKind.RESERVATION: "2"}
ZERO_AMOUNT = Decimal("0.000000")


@dataclass(frozen=True, slots=True)
class PricedLine:
    """One priced line, ready for an invoice or a chargeback file.

    Amounts are final: rounded once to 1e-6, `amount = gross_amount - discount_amount`.
    `unit_price` is the effective price per unit after discounts, `list_unit_price` before
    them (the exact undiscounted charge / quantity: the rule's price, 0.01 for a per-unit
    0.01, where `gross_amount / quantity` is off by the rounding of the net and discount
    amounts); both display only, None when the quantity is 0 or the line is a share of a
    shared cost. `quantity` is the meter's
    usage for usage lines and the allocation basis (usage of the weighting meter, or 1)
    for shared-cost lines. `team` and `app` are None on lines charged to a team or a cost
    center as a whole (reservation credits, direct platform costs)."""

    kind: LineKind
    cost_center: str
    team: str | None
    app: str | None
    cost_type: str
    meter: str | None
    lifecycle: str | None
    quantity: Decimal
    unit_price: Decimal | None
    gross_amount: Decimal
    discount_amount: Decimal
    amount: Decimal
    pricing_rule: str
    allocation_method: str
    discounts: str
    versions: tuple[int, ...]
    list_unit_price: Decimal | None = None

    @property
    def sort_key(self) -> tuple[str, ...]:
        return (
            self.cost_center,
            self.team or "",
            self.app or "",
            _KIND_ORDER[self.kind],
            self.cost_type,
            self.meter or "",
            self.lifecycle or "",
        )


@dataclass(frozen=True, slots=True)
class UnpricedUsage:
    """Usage of a meter for which the price book version in force has no rule."""

    owner: Owner
    meter: str
    quantity: Decimal
    version: int


@dataclass(frozen=True, slots=True)
class UnpricedCost:
    """Platform costs of one cost type recorded in a currency other than the price book's.
    There is no currency conversion, so they are in no line (they do not stop the period
    from being priced); billing names them in the document's note."""

    cost_type: str
    amount: Decimal
    currency: str

    def describe(self) -> str:
        return f"{self.cost_type} {format(self.amount, 'f')} {self.currency}"


@dataclass(frozen=True, slots=True)
class PricingResult:
    price_book: str
    currency: str
    period: Period
    versions: tuple[int, ...]
    lines: tuple[PricedLine, ...]
    unpriced: tuple[UnpricedUsage, ...]
    unused_reservation_credit: Mapping[str, Decimal]
    # platform costs in another currency than the price book's: not priced, in no line
    unpriced_costs: tuple[UnpricedCost, ...] = ()

    @property
    def total(self) -> Decimal:
        """Exactly the sum of the lines."""
        return money_sum(line.amount for line in self.lines)
