"""Billing lines from priced lines, their keys and audit keys, and adjustment diffs. Pure.

A line is identified across recomputations by its *line key* (cost type, cost center,
team, app, item, lifecycle). Every amount arrives from the pricing engine already rounded
once to 1e-6 (banker's rounding); nothing here rounds again, and a document's total is the
exact sum of its lines.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from decimal import Decimal
from fractions import Fraction

from quartermaster.billing.models import CostType
from quartermaster.domain.money import (
    AmountOutOfRangeError,
    check_amount,
    money_context,
    money_sum,
    round_line,
)
from quartermaster.domain.timeutil import Period
from quartermaster.pricing.lines import LineKind, PricedLine, PricingError, PricingResult
from quartermaster.pricing.rating import fmt, unit_price

ZERO = Decimal(0)
ZERO_LINE = Decimal("0.000000")  # 0 at LINE_QUANTUM
RESERVED_CAPACITY_ITEM = "reserved_capacity"
# How an adjustment line's reason starts when neither its usage nor its price book moved.
REALLOCATED = "reallocated"
RERATED = "re-rated"
# The reason of a line whose key is new, or no longer billed, and nothing else moved.
NEW_LINE = "new line"
REVERSED_LINE = "no longer billed under this key (reversal)"
NONE_MARK = "-"
# Lines of one owner read: usage, subscriptions, their discounts, then shared costs.
COST_TYPE_ORDER = {
    CostType.USAGE: 0,
    CostType.SUBSCRIPTION: 1,
    CostType.DISCOUNT: 2,
    CostType.PLATFORM: 3,
    CostType.ADJUSTMENT: 4,
}


@dataclass(frozen=True, slots=True)
class LineDraft:
    """A billing line before it is stored. `amount` is final (rounded once upstream)."""

    cost_type: CostType
    item: str
    cost_center: str
    team: str | None
    app: str | None
    lifecycle: str | None
    meter: str | None
    unit: str | None
    quantity: Decimal
    unit_price: Decimal | None
    amount: Decimal
    pricing_rule: str
    allocation_method: str
    versions: tuple[int, ...]
    parent_key: str | None = None
    # Adjustment lines only.
    adjusted_cost_type: CostType | None = None
    previous_quantity: Decimal | None = None
    previous_amount: Decimal | None = None
    reason: str | None = None

    @property
    def key_cost_type(self) -> CostType:
        """The cost type the line key uses: an adjustment keys as the line it corrects."""
        return self.adjusted_cost_type or self.cost_type

    @property
    def line_key(self) -> str:
        return make_line_key(
            self.key_cost_type, self.cost_center, self.team, self.app, self.item, self.lifecycle
        )

    @property
    def sort_key(self) -> tuple[str, str, str, int, str, str]:
        return (
            self.cost_center,
            self.team or "",
            self.app or "",
            COST_TYPE_ORDER[self.key_cost_type],
            self.item,
            self.lifecycle or "",
        )


def make_line_key(
    cost_type: CostType | str,
    cost_center: str,
    team: str | None,
    app: str | None,
    item: str,
    lifecycle: str | None,
) -> str:
    parts = (str(cost_type), cost_center, team, app, item, lifecycle)
    return "|".join(NONE_MARK if part is None else part for part in parts)


def versions_text(versions: Iterable[int]) -> str:
    return ",".join(str(v) for v in sorted(set(versions)))


def parse_versions(text: str) -> tuple[int, ...]:
    return tuple(int(part) for part in text.split(",") if part)


def line_id(document_id: str, line_key: str) -> str:
    return hashlib.sha256(f"{document_id}\x1f{line_key}".encode()).hexdigest()[:32]


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y%m%dT%H%MZ")


def audit_key(
    tenant_id: str, period: Period, as_of: datetime, line: LineDraft, *, key: str | None = None
) -> str:
    """Readable coordinates of the line plus a digest of what it was computed from (tenant,
    period, as_of, key, quantity, amount, price book versions): recomputing the same inputs
    gives the same key; `qm explain` resolves it to the rollups and raw events."""
    material = "\x1f".join(
        (
            tenant_id,
            period.start.isoformat(),
            period.end.isoformat(),
            as_of.isoformat(),
            key if key is not None else line.line_key,
            fmt(line.quantity),
            fmt(line.amount),
            versions_text(line.versions),
        )
    )
    digest = hashlib.sha256(material.encode()).hexdigest()[:16]
    owner = "/".join(part or NONE_MARK for part in (line.cost_center, line.team, line.app))
    return (
        f"{_stamp(period.start)}-{_stamp(period.end)}/{line.cost_type.value}/{owner}/"
        f"{line.item}/{digest}"
    )


def _check_rounded(line: PricedLine) -> None:
    for name in ("amount", "gross_amount", "discount_amount"):
        value: Decimal = getattr(line, name)
        if round_line(value) != value:
            raise ValueError(
                f"priced line {line.cost_type!r} of {line.app!r}: {name} {value} is not "
                "rounded to 1e-6 (the pricing engine rounds each line once)"
            )


def _unit_price(amount: Decimal, quantity: Decimal) -> Decimal | None:
    if quantity == 0:
        return None
    return unit_price(Fraction(amount), quantity)


def drafts_from_priced(
    line: PricedLine,
    *,
    is_subscription: Callable[[PricedLine], bool],
    units: Mapping[str, str],
) -> list[LineDraft]:
    """One priced line as billing lines: a discounted usage line becomes its undiscounted
    charge plus a negative discount line (the two sum to the priced amount exactly)."""
    _check_rounded(line)
    versions = tuple(line.versions)
    if line.kind is LineKind.PLATFORM:
        return [
            LineDraft(
                cost_type=CostType.PLATFORM,
                item=line.cost_type,
                cost_center=line.cost_center,
                team=line.team or None,
                app=line.app or None,
                lifecycle=line.lifecycle,
                meter=line.meter,
                unit=units.get(line.meter) if line.meter else None,
                quantity=line.quantity,
                unit_price=None,
                amount=line.amount,
                pricing_rule=line.pricing_rule,
                allocation_method=line.allocation_method,
                versions=versions,
            )
        ]
    if line.kind is LineKind.RESERVATION:
        return [
            LineDraft(
                cost_type=CostType.DISCOUNT,
                item=RESERVED_CAPACITY_ITEM,
                cost_center=line.cost_center,
                team=line.team or None,
                app=line.app or None,
                lifecycle=line.lifecycle,
                meter=line.meter,
                unit=units.get(line.meter) if line.meter else None,
                quantity=line.quantity,
                unit_price=None,
                amount=line.amount,
                pricing_rule=line.pricing_rule,
                allocation_method=line.allocation_method,
                versions=versions,
            )
        ]
    meter = line.meter or line.cost_type
    cost_type = CostType.SUBSCRIPTION if is_subscription(line) else CostType.USAGE
    charge = LineDraft(
        cost_type=cost_type,
        item=meter,
        cost_center=line.cost_center,
        team=line.team or None,
        app=line.app or None,
        lifecycle=line.lifecycle,
        meter=meter,
        unit=units.get(meter),
        quantity=line.quantity,
        # The engine's unit price is net of discounts: the same as gross when undiscounted.
        # A discounted charge shows the list price (the exact undiscounted charge / quantity),
        # its discount on the line below: its rounded amount / quantity read 0.010000131247
        # for a list price of 0.01.
        unit_price=(
            line.unit_price
            if line.discount_amount == 0 or line.list_unit_price is None
            else line.list_unit_price
        ),
        amount=line.gross_amount,
        pricing_rule=line.pricing_rule,
        allocation_method=line.allocation_method,
        versions=versions,
    )
    if line.discount_amount == 0:
        return [charge]
    discount = LineDraft(
        cost_type=CostType.DISCOUNT,
        item=meter,
        cost_center=line.cost_center,
        team=line.team or None,
        app=line.app or None,
        lifecycle=line.lifecycle,
        meter=meter,
        unit=units.get(meter),
        quantity=line.quantity,
        unit_price=None,
        amount=-line.discount_amount,
        pricing_rule=f"discount: {line.discounts}",
        allocation_method=line.allocation_method,
        versions=versions,
        parent_key=charge.line_key,
    )
    return [charge, discount]


def _joined(texts: Iterable[str]) -> str:
    seen: list[str] = []
    for text in texts:
        if text and text not in seen:
            seen.append(text)
    return "; ".join(seen)


def merge_same_key(drafts: Iterable[LineDraft]) -> list[LineDraft]:
    """Lines with the same key are one line: a shared cost split by a price book change
    within the period, or two reservations on one meter. Their amounts (each rounded once)
    add up exactly; the quantity is the allocation basis they share."""
    grouped: dict[str, list[LineDraft]] = {}
    for draft in drafts:
        grouped.setdefault(draft.line_key, []).append(draft)
    merged: list[LineDraft] = []
    for group in grouped.values():
        if len(group) == 1:
            merged.append(group[0])
            continue
        quantities = {d.quantity for d in group}
        quantity = group[0].quantity if len(quantities) == 1 else sum(quantities, ZERO)
        merged.append(
            replace(
                group[0],
                quantity=quantity,
                amount=sum((d.amount for d in group), ZERO),
                pricing_rule=_joined(d.pricing_rule for d in group),
                allocation_method=_joined(d.allocation_method for d in group),
                versions=tuple(sorted({v for d in group for v in d.versions})),
            )
        )
    return merged


@money_context()
def build_lines(
    result: PricingResult,
    *,
    is_subscription: Callable[[PricedLine], bool] = lambda _line: False,
    units: Mapping[str, str] | None = None,
) -> list[LineDraft]:
    """Billing lines of a priced period, ordered cost center → team → app → meter."""
    drafts: list[LineDraft] = []
    for line in result.lines:
        drafts.extend(drafts_from_priced(line, is_subscription=is_subscription, units=units or {}))
    return sorted(merge_same_key(drafts), key=lambda d: d.sort_key)


def total_of(lines: Iterable[LineDraft]) -> Decimal:
    """The exact sum of the lines, refused (PricingError) if the ledger cannot hold it."""
    try:
        # Lines are rounded to LINE_QUANTUM and so is their sum; starting from a 0 of that
        # quantum writes an empty document's total 0.000000, as every other total is written.
        total = money_sum([ZERO_LINE, *(line.amount for line in lines)])
        return check_amount(total, what="document total")
    except AmountOutOfRangeError as error:
        raise PricingError(str(error), field="total") from None


@dataclass(frozen=True, slots=True)
class IssuedLine:
    """What was billed so far under one line key: the run's line plus earlier adjustments."""

    template: LineDraft  # the most recent line issued under the key (for its coordinates)
    quantity: Decimal
    amount: Decimal
    line_id: str | None  # the run's line, when the run had one under this key


@money_context()
def issued_by_key(
    documents: Sequence[Sequence[tuple[LineDraft, str]]],
) -> dict[str, IssuedLine]:
    """Sum lines per key over a run and its adjustment documents (in issue order); each
    element is (line, stored line id)."""
    issued: dict[str, IssuedLine] = {}
    for position, lines in enumerate(documents):
        for line, stored_id in lines:
            key = line.line_key
            before = issued.get(key)
            template = replace(line, cost_type=line.key_cost_type, adjusted_cost_type=None)
            if line.cost_type is CostType.ADJUSTMENT and before is not None:
                # An adjustment keeps the coordinates; its rule and versions are the latest.
                template = replace(
                    before.template,
                    pricing_rule=line.pricing_rule,
                    allocation_method=line.allocation_method,
                    versions=line.versions,
                )
            issued[key] = IssuedLine(
                template=template,
                quantity=(before.quantity if before else ZERO) + line.quantity,
                amount=(before.amount if before else ZERO) + line.amount,
                line_id=before.line_id if before else (stored_id if position == 0 else None),
            )
    return issued


def _prices_changed(
    current: LineDraft | None, issued: IssuedLine | None, known: frozenset[int] | None
) -> bool:
    """Whether the line prices by price book versions other than those it was last issued
    under and costs something under one of them. A version already known when the run or
    the last adjustment was issued was settled then, even on a key that adjustment left
    alone because its amount did not move: `known` (the versions of the last document
    issued) counts as issued, so a later adjustment does not re-report it."""
    if current is None or issued is None or current.versions == issued.template.versions:
        return False
    if current.amount == ZERO and issued.amount == ZERO:
        # Priced 0 before and after (a free tier, an unpriced meter): no version changed
        # what it costs, so it is no re-rating, and its added units have a price, 0.
        return False
    return known is None or not set(current.versions) <= known


def _reason(
    current: LineDraft | None,
    issued: IssuedLine | None,
    as_of: datetime,
    known: frozenset[int] | None,
) -> str:
    parts: list[str] = []
    old_quantity = issued.quantity if issued else ZERO
    new_quantity = current.quantity if current else ZERO
    if current is None:
        parts.append(REVERSED_LINE)
    elif issued is None:
        parts.append(NEW_LINE)
    shape = current if current is not None else issued.template if issued is not None else None
    # A shared cost's share that appears or goes: its quantity is the allocation basis (1 per
    # app for an even share), not usage recorded late.
    whole_share = (
        (current is None or issued is None)
        and shape is not None
        and shape.key_cost_type is CostType.PLATFORM
    )
    if old_quantity != new_quantity and not whole_share:
        parts.append(
            f"quantity {fmt(old_quantity)} → {fmt(new_quantity)} "
            f"(usage recorded after {as_of.isoformat()})"
        )
    if current is not None and issued is not None and _prices_changed(current, issued, known):
        old_versions = versions_text(issued.template.versions)
        new_versions = versions_text(current.versions)
        parts.append(f"price book versions {old_versions} → {new_versions}")
    if parts:
        return "; ".join(parts)
    if current is not None and current.key_cost_type is CostType.PLATFORM:
        return f"{REALLOCATED}: the shared cost's split moved (its basis or floor changed)"
    return f"{RERATED}: the same usage now prices differently (pooled, tiered or shared)"


def _change_unit_price(
    current: LineDraft | None, issued: IssuedLine | None, known: frozenset[int] | None
) -> Decimal | None:
    """The unit price of an adjustment line, so that its quantity x unit price is its amount:
    the average price of the units added or taken away (amount change / quantity change),
    when the change is one of quantity alone, on a line that has a unit price. None when the
    quantity did not change (a re-rating: the amount is a price difference on the same
    units), when prices changed too (the amount mixes both), and for the lines that carry no
    unit price (platform shares, discounts and credits)."""
    shape = current if current is not None else issued.template if issued is not None else None
    if shape is None or shape.unit_price is None:
        return None
    if _prices_changed(current, issued, known):
        return None
    quantity = (current.quantity if current else ZERO) - (issued.quantity if issued else ZERO)
    amount = (current.amount if current else ZERO) - (issued.amount if issued else ZERO)
    return _unit_price(amount, quantity)


@money_context()
def adjustment_lines(
    current: Sequence[LineDraft],
    issued: Mapping[str, IssuedLine],
    *,
    issued_as_of: datetime,
    issued_versions: Iterable[int] | None = None,
) -> list[LineDraft]:
    """(lines as recomputed now) minus (what was issued) per line key, as adjustment lines.
    Keys whose quantity and amount are unchanged give nothing, so an adjustment computed
    twice over the same inputs is empty the second time. `issued_versions`: the price book
    versions of the last document issued (the run or its latest adjustment); None compares
    each line with its own issued versions only."""
    known = frozenset(issued_versions) if issued_versions is not None else None
    now = {line.line_key: line for line in current}
    lines: list[LineDraft] = []
    for key in sorted(set(now) | set(issued)):
        new = now.get(key)
        old = issued.get(key)
        new_amount = new.amount if new else ZERO
        new_quantity = new.quantity if new else ZERO
        old_amount = old.amount if old else ZERO
        old_quantity = old.quantity if old else ZERO
        if new_amount == old_amount and new_quantity == old_quantity:
            continue
        if new is not None:
            base = new
        elif old is not None:
            base = old.template
        else:  # the key came from one of the two mappings
            continue
        lines.append(
            replace(
                base,
                cost_type=CostType.ADJUSTMENT,
                adjusted_cost_type=base.key_cost_type,
                quantity=new_quantity - old_quantity,
                amount=new_amount - old_amount,
                unit_price=_change_unit_price(new, old, known),
                previous_quantity=old_quantity,
                previous_amount=old_amount,
                reason=_reason(new, old, issued_as_of, known),
                parent_key=None,
            )
        )
    return sorted(lines, key=lambda d: d.sort_key)
