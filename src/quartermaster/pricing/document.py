"""The price book document: the schema users write (YAML or JSON) and the engine reads.

Structural rules live in the pydantic models (extra fields are refused everywhere); rules
that relate several fields (tier order, duplicate scopes, references between sections) are
checked by `semantic_issues`, which names the exact path of each bad field. The file format
is documented in docs/pricing.md.
"""

from __future__ import annotations

import enum
from collections.abc import Collection, Iterable
from decimal import Decimal
from typing import Annotated, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    SerializationInfo,
    StringConstraints,
)
from pydantic_core import PydanticCustomError

from quartermaster.domain.timeutil import RequestMoment, ensure_utc

MeterName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,63}$")]
Ref = Annotated[str, StringConstraints(pattern=r"^[a-z0-9][a-z0-9._-]{0,63}$")]
CostType = Annotated[str, StringConstraints(pattern=r"^([a-z][a-z0-9_]{0,31}|\*)$")]
Label = Annotated[str, StringConstraints(min_length=1, max_length=200)]
MAX_DIGITS_EACH_SIDE = 30  # of a number's decimal point, in a price book
NORMALIZED_NUMBERS = "normalized_numbers"  # serialization context key, see _write_number


def plain_decimal(value: Decimal, *, normalized: bool = False) -> str:
    """The number as plain digits, never in exponent form (9E-7 -> "0.0000009", 1E+2 ->
    "100"), keeping the places it was written with (0.50 -> "0.50"). `normalized`: also
    without trailing zeros, one text for every way of writing the number (0.010 and 0.01 ->
    "0.01", 150.00 -> "150")."""
    text = format(value, "f")  # exact: no rounding, no exponent
    if normalized:
        if value.is_zero():
            return "0"
        return text.rstrip("0").rstrip(".") if "." in text else text
    return text


def _write_number(value: Decimal, info: SerializationInfo) -> str:
    context = info.context
    normalized = isinstance(context, dict) and bool(context.get(NORMALIZED_NUMBERS))
    return plain_decimal(value, normalized=normalized)


def _bounded(value: Decimal) -> Decimal:
    """Refuse numbers whose plain form would be huge (1E+999999 is 1,000,000 digits)."""
    _, digits, exponent = value.as_tuple()
    if isinstance(exponent, int) and not value.is_zero():  # an int exponent: finite
        trailing_zeros = len(digits) - len("".join(map(str, digits)).rstrip("0"))
        last = exponent + trailing_zeros  # the place of the last non-zero digit
        if value.adjusted() >= MAX_DIGITS_EACH_SIDE or last < -MAX_DIGITS_EACH_SIDE:
            raise PydanticCustomError(
                "decimal_too_long",
                "must have at most {limit} digits before and {limit} after the decimal point",
                {"limit": MAX_DIGITS_EACH_SIDE},
            )
    return value


# Every number of a document: written back (stored, returned) as plain digits, as written.
_Number = Annotated[
    Decimal,
    AfterValidator(_bounded),
    PlainSerializer(_write_number, return_type=str, when_used="json"),
]
Money = Annotated[_Number, Field(ge=0, allow_inf_nan=False)]
Units = Annotated[_Number, Field(ge=0, allow_inf_nan=False)]
PositiveUnits = Annotated[_Number, Field(gt=0, allow_inf_nan=False)]
Percent = Annotated[_Number, Field(gt=0, le=100, allow_inf_nan=False)]
Fraction01 = Annotated[_Number, Field(ge=0, le=1, allow_inf_nan=False)]
UtcDatetime = Annotated[RequestMoment, AfterValidator(ensure_utc)]

# Discriminator values: they appear in pydantic error locations and are stripped from paths.
MODEL_TAGS = ("per_unit", "graduated", "volume", "package", "subscription")
OVERAGE_MODEL_TAGS = ("per_unit", "graduated", "volume", "package")  # UsageModel's
METHOD_TAGS = ("direct", "proportional", "even", "floor_plus_share", "hybrid")


class _Doc(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoolBasis(enum.StrEnum):
    """Over which usage a rule's tiers, allowance, packages and fee apply, per period."""

    APP = "app"
    TEAM = "team"
    COST_CENTER = "cost_center"
    TENANT = "tenant"


class Selector(_Doc):
    """Names exactly one owner attribute: a team, an app, a cost center or a lifecycle."""

    team: Ref | None = None
    app: Ref | None = None
    cost_center: Ref | None = None
    lifecycle: Literal["ephemeral", "persistent"] | None = None

    def named(self) -> list[tuple[str, str]]:
        pairs = [
            ("app", self.app),
            ("team", self.team),
            ("cost_center", self.cost_center),
            ("lifecycle", self.lifecycle),
        ]
        return [(kind, value) for kind, value in pairs if value is not None]

    def describe(self) -> str:
        return ", ".join(f"{kind}={value}" for kind, value in self.named()) or "default"


class Tier(_Doc):
    """Units up to and including `up_to` (omitted: unbounded, only on the last tier)."""

    up_to: PositiveUnits | None = None
    unit_price: Money


# Pricing models. Each is usable on its own (as a subscription's overage) and as a rule.


class PerUnit(_Doc):
    model: Literal["per_unit"]
    unit_price: Money
    free_allowance: Units = Decimal(0)


class Graduated(_Doc):
    model: Literal["graduated"]
    tiers: list[Tier] = Field(min_length=1)
    free_allowance: Units = Decimal(0)


class Volume(_Doc):
    model: Literal["volume"]
    tiers: list[Tier] = Field(min_length=1)
    free_allowance: Units = Decimal(0)


class Package(_Doc):
    model: Literal["package"]
    package_size: PositiveUnits
    package_price: Money
    free_allowance: Units = Decimal(0)


UsageModel = Annotated[PerUnit | Graduated | Volume | Package, Field(discriminator="model")]


class Subscription(_Doc):
    """A flat fee per period that includes some usage; usage beyond it is rated by `overage`
    (no overage rule: usage beyond the included amount is not charged)."""

    model: Literal["subscription"]
    fee: Money
    included: Units = Decimal(0)
    overage: UsageModel | None = None


PricingModel = PerUnit | Graduated | Volume | Package | Subscription


class _RuleFields(_Doc):
    meter: MeterName
    scope: Selector | None = None
    pool: PoolBasis = PoolBasis.APP
    note: Label | None = None


class PerUnitRule(PerUnit, _RuleFields):
    pass


class GraduatedRule(Graduated, _RuleFields):
    pass


class VolumeRule(Volume, _RuleFields):
    pass


class PackageRule(Package, _RuleFields):
    pass


class SubscriptionRule(Subscription, _RuleFields):
    pass


PriceRule = Annotated[
    PerUnitRule | GraduatedRule | VolumeRule | PackageRule | SubscriptionRule,
    Field(discriminator="model"),
]
AnyRule = PerUnitRule | GraduatedRule | VolumeRule | PackageRule | SubscriptionRule


class Discount(_Doc):
    """A percentage off the usage charges of the owners `applies_to` selects."""

    name: Label
    percent: Percent
    applies_to: Selector
    meters: list[MeterName] | None = None  # None: every meter


# Shared platform cost policies, one per cost_type ("*": any cost_type without its own).


class _PolicyFields(_Doc):
    cost_type: CostType


class DirectPolicy(_PolicyFields):
    method: Literal["direct"]
    to: Selector


class ProportionalPolicy(_PolicyFields):
    method: Literal["proportional"]
    meter: MeterName


class EvenPolicy(_PolicyFields):
    method: Literal["even"]


class FloorPlusSharePolicy(_PolicyFields):
    """Each active app pays `floor`; the rest is shared in proportion to `meter` (or evenly)."""

    method: Literal["floor_plus_share"]
    floor: Money
    meter: MeterName | None = None


class HybridPolicy(_PolicyFields):
    """`proportional_share` of the cost by `meter` usage, the rest evenly per active app."""

    method: Literal["hybrid"]
    meter: MeterName
    proportional_share: Fraction01


PlatformCostPolicy = Annotated[
    DirectPolicy | ProportionalPolicy | EvenPolicy | FloorPlusSharePolicy | HybridPolicy,
    Field(discriminator="method"),
]
AnyPolicy = DirectPolicy | ProportionalPolicy | EvenPolicy | FloorPlusSharePolicy | HybridPolicy


class Reservation(_Doc):
    """Reserved capacity: the commitment earns `credit` per period on `meter`, shared by the
    teams that used the meter in proportion to their usage."""

    name: Label
    meter: MeterName
    credit: PositiveUnits


class PriceBookDocument(_Doc):
    name: Ref
    currency: Annotated[str, StringConstraints(pattern=r"^[A-Z]{3}$")]
    version: Annotated[int, Field(ge=1)]
    effective_from: UtcDatetime
    description: Annotated[str, StringConstraints(max_length=2000)] | None = None
    prices: list[PriceRule] = Field(min_length=1)
    discounts: list[Discount] = Field(default_factory=list)
    platform_costs: list[PlatformCostPolicy] = Field(default_factory=list)
    reservations: list[Reservation] = Field(default_factory=list)


Issue = tuple[str, str]  # (path, message)


def _tier_issues(tiers: list[Tier], path: str) -> list[Issue]:
    issues: list[Issue] = []
    previous: Decimal | None = None
    for index, tier in enumerate(tiers):
        here = f"{path}[{index}].up_to"
        last = index == len(tiers) - 1
        if tier.up_to is None and not last:
            issues.append((here, "only the last tier may be unbounded (omit up_to there only)"))
        elif tier.up_to is not None and last:
            issues.append((here, f"the last tier must be unbounded: remove up_to ({tier.up_to})"))
        if tier.up_to is not None and previous is not None and tier.up_to <= previous:
            issues.append((here, f"must be greater than the previous tier ({previous})"))
        if tier.up_to is not None:
            previous = tier.up_to
    return issues


def _model_issues(model: PricingModel, path: str) -> list[Issue]:
    if isinstance(model, Graduated | Volume):
        return _tier_issues(model.tiers, f"{path}.tiers" if path else "tiers")
    if isinstance(model, Subscription) and model.overage is not None:
        return _model_issues(model.overage, f"{path}.overage")
    return []


def _selector_issue(selector: Selector, path: str) -> list[Issue]:
    if len(selector.named()) != 1:
        return [(path, "must name exactly one of team, app, cost_center, lifecycle")]
    return []


def semantic_issues(doc: PriceBookDocument) -> list[Issue]:
    """Rules between fields; each issue names the path of the field that breaks it."""
    return section_issues(
        prices=enumerate(doc.prices),
        discounts=enumerate(doc.discounts),
        platform_costs=enumerate(doc.platform_costs),
        reservations=enumerate(doc.reservations),
        priced={rule.meter for rule in doc.prices},
    )


def section_issues(
    *,
    prices: Iterable[tuple[int, AnyRule]],
    discounts: Iterable[tuple[int, Discount]],
    platform_costs: Iterable[tuple[int, AnyPolicy]],
    reservations: Iterable[tuple[int, Reservation]],
    priced: Collection[str] | None,
) -> list[Issue]:
    """`semantic_issues` over the items of each section that are valid on their own, with
    their index in the document; so a document with bad fields elsewhere still has these
    rules checked. `priced`: the meters that have a price rule (None: not known, the checks
    that need it are skipped)."""
    issues: list[Issue] = []
    seen_rules: dict[tuple[str, str], int] = {}
    for index, rule in prices:
        path = f"prices[{index}]"
        issues.extend(_model_issues(rule, path))
        if rule.scope is not None:
            issues.extend(_selector_issue(rule.scope, f"{path}.scope"))
        scope = rule.scope.describe() if rule.scope is not None else "default"
        first = seen_rules.setdefault((rule.meter, scope), index)
        if first != index:
            issues.append(
                (
                    path,
                    f"duplicate rule for meter {rule.meter!r} with scope {scope} "
                    f"(already at prices[{first}])",
                )
            )
    seen_names: dict[str, int] = {}
    for index, discount in discounts:
        path = f"discounts[{index}]"
        issues.extend(_selector_issue(discount.applies_to, f"{path}.applies_to"))
        first = seen_names.setdefault(discount.name, index)
        if first != index:
            issues.append(
                (f"{path}.name", f"duplicate discount {discount.name!r} (discounts[{first}])")
            )
        for position, meter in enumerate(discount.meters or ()):
            if priced is not None and meter not in priced:
                issues.append((f"{path}.meters[{position}]", f"no price rule for meter {meter!r}"))
    seen_costs: dict[str, int] = {}
    for index, policy in platform_costs:
        path = f"platform_costs[{index}]"
        first = seen_costs.setdefault(policy.cost_type, index)
        if first != index:
            issues.append(
                (
                    f"{path}.cost_type",
                    f"duplicate policy for cost_type {policy.cost_type!r} "
                    f"(platform_costs[{first}])",
                )
            )
        if isinstance(policy, DirectPolicy):
            issues.extend(_direct_target_issues(policy.to, f"{path}.to"))
    seen_reservations: dict[str, int] = {}
    for index, reservation in reservations:
        path = f"reservations[{index}]"
        first = seen_reservations.setdefault(reservation.name, index)
        if first != index:
            issues.append(
                (
                    f"{path}.name",
                    f"duplicate reservation {reservation.name!r} (reservations[{first}])",
                )
            )
        if priced is not None and reservation.meter not in priced:
            issues.append((f"{path}.meter", f"no price rule for meter {reservation.meter!r}"))
    return issues


def _direct_target_issues(target: Selector, path: str) -> list[Issue]:
    if target.lifecycle is not None:
        return [(f"{path}.lifecycle", "a direct target is a team, an app or a cost center")]
    return _selector_issue(target, path)
