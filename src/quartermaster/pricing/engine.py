"""Price a period's usage and shared costs with a price book history. Pure.

`price_period` is the entry point billing runs and previews use:

    result = price_period(history, period, usage_rows, platform_costs)
    for line in result.lines: ...   # final amounts, rule and allocation strings

How a usage line is priced (docs/pricing.md has worked examples):
1. Rows are summed per owner (cost center, team, app, lifecycle) and meter, and per price
   book version in force at each row's `at`.
2. For each version, each line's most specific rule is found; lines that share a rule and
   a pool (the rule's `pool`: app, team, cost center or tenant) are rated together on the
   pool's usage over the WHOLE period, so tiers, allowances, packages and fees are per
   period. The pool's charge is shared among its lines in proportion to their usage
   during the part of the period the version was in force (zero usage: evenly).
3. The version's discounts that apply to the owner compound on the line's share.
4. Each line is rounded once to 1e-6, half to even, on its own exact amount, unless it
   shares a pool with other lines (one charge split among them): then the pool's lines are
   rounded together with the largest-remainder method (pricing.allocation.round_exact), so
   they sum to the charge rounded once; a line that this moves off its own half-even
   rounding says so in its allocation_method.
Shared platform costs and reserved-capacity credits are then allocated (pricing.shared).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction

from quartermaster.domain.money import AmountOutOfRangeError, check_amount
from quartermaster.domain.timeutil import Period, ensure_utc
from quartermaster.pricing.allocation import round_exact, rounding_note
from quartermaster.pricing.book import CompiledBook, Owner, pool_value
from quartermaster.pricing.document import AnyRule, PoolBasis, PriceBookDocument
from quartermaster.pricing.history import NoVersionInForceError, PriceBookHistory
from quartermaster.pricing.lines import (
    LineKind,
    OwnerDirectory,
    PlatformCostItem,
    PricedLine,
    PricingError,
    PricingResult,
    UnpricedUsage,
    UsageRow,
)
from quartermaster.pricing.rating import ZERO, exact_context, fmt, rate_quantity, unit_price
from quartermaster.pricing.shared import SharedCostContext, allocate_platform_costs, credit_lines

LineKey = tuple[Owner, str]  # (owner, meter)


@dataclass
class _Pool:
    rule: AnyRule
    value: str
    total: Decimal = ZERO
    pairs: list[tuple[LineKey, int, Decimal]] = field(default_factory=list)


@dataclass
class _Line:
    quantity: Decimal = ZERO
    gross: Fraction = Fraction(0)
    net: Fraction = Fraction(0)
    rules: list[tuple[int, Decimal, str]] = field(default_factory=list)
    methods: list[str] = field(default_factory=list)
    discounts: list[str] = field(default_factory=list)
    versions: set[int] = field(default_factory=set)


def _segment_index(at: datetime | None, period: Period, segments: list[Period], name: str) -> int:
    moment = period.start if at is None else ensure_utc(at)
    if not period.contains(moment):
        raise PricingError(
            f"usage at {moment.isoformat()} is outside the period "
            f"[{period.start.isoformat()}, {period.end.isoformat()})",
            field="at",
        )
    for index, part in enumerate(segments):
        if part.contains(moment):
            return index
    raise NoVersionInForceError(
        f"price book {name!r} has no version in force at {moment.isoformat()}"
    )


def _pool_method(pool: _Pool, key: LineKey, members: int) -> str:
    if members == 1:
        return "usage"
    quantity = sum((q for k, _, q in pool.pairs if k == key), ZERO)
    where = (
        "across the tenant"
        if pool.rule.pool is PoolBasis.TENANT
        else f"by {pool.rule.pool.value} {pool.value!r}"
    )
    return f"pooled {where}: {fmt(quantity)} of {fmt(pool.total)} units"


def _price_usage(
    aggregated: dict[LineKey, dict[int, Decimal]],
    books: list[CompiledBook],
) -> tuple[dict[LineKey, _Line], list[UnpricedUsage], list[list[LineKey]]]:
    """The exact lines, the usage no rule prices, and the pools that split one charge among
    several lines (their keys)."""
    lines: dict[LineKey, _Line] = {key: _Line() for key in aggregated}
    unpriced: list[UnpricedUsage] = []
    shared: list[list[LineKey]] = []
    for key, by_segment in aggregated.items():
        lines[key].quantity = sum(by_segment.values(), ZERO)
    for segment, book in enumerate(books):
        version = book.document.version
        pools: dict[tuple[int, str], _Pool] = {}
        for key, by_segment in aggregated.items():
            owner, meter = key
            found = book.rule_for(meter, owner)
            if found is None:
                if segment in by_segment:
                    unpriced.append(UnpricedUsage(owner, meter, by_segment[segment], version))
                continue
            index, rule = found
            value = pool_value(rule.pool, owner)
            pool = pools.setdefault((index, value), _Pool(rule, value))
            for part, quantity in sorted(by_segment.items()):
                pool.pairs.append((key, part, quantity))
                pool.total += quantity
        for pool in pools.values():
            here = [(key, q) for key, part, q in pool.pairs if part == segment]
            if not here:
                continue
            rated = rate_quantity(pool.total, pool.rule)
            charge = Fraction(rated.amount)
            keys = sorted({key for key, _, _ in pool.pairs})
            members = len(keys)
            if members > 1:
                shared.append(keys)
            for key, quantity in here:
                if pool.total:
                    share = charge * Fraction(quantity) / Fraction(pool.total)
                else:  # nobody used the pool's meter: its fee is shared evenly
                    share = charge / len(pool.pairs)
                owner, meter = key
                discounts = book.discounts_for(owner, meter)
                factor = Fraction(1)
                for discount in discounts:
                    factor *= 1 - Fraction(discount.percent) / 100
                line = lines[key]
                line.gross += share
                line.net += share * factor
                line.rules.append((version, quantity, rated.rule))
                line.versions.add(version)
                method = _pool_method(pool, key, members)
                if method not in line.methods:
                    line.methods.append(method)
                for discount in discounts:
                    text = f"{discount.name} {discount.percent}%"
                    if text not in line.discounts:
                        line.discounts.append(text)
    return lines, unpriced, shared


def _rule_text(line: _Line) -> str:
    if not line.rules:
        return "unpriced: no rule for this meter"
    versions = {version for version, _, _ in line.rules}
    if len(versions) == 1:
        return line.rules[0][2]
    return "; ".join(f"v{version} ({fmt(q)} units): {rule}" for version, q, rule in line.rules)


def _rounding_groups(lines: Iterable[LineKey], shared: list[list[LineKey]]) -> list[list[LineKey]]:
    """Lines rounded together: those a pool's charge is split among (in any version), and
    every other line on its own."""
    parent = {key: key for key in lines}

    def root(key: LineKey) -> LineKey:
        while parent[key] != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for keys in shared:
        first = root(keys[0])
        for key in keys[1:]:
            parent[root(key)] = first
    groups: dict[LineKey, list[LineKey]] = defaultdict(list)
    for key in sorted(parent):
        groups[root(key)].append(key)
    return list(groups.values())


def _round_usage(lines: dict[LineKey, _Line], shared: list[list[LineKey]]) -> list[PricedLine]:
    """Each line's net and discount amounts rounded once: a line alone half to even, the
    lines of a split pool together by largest remainder (summing to the pool's total)."""
    net: dict[LineKey, Decimal] = {}
    off: dict[LineKey, Decimal] = {}
    notes: dict[LineKey, str] = {}
    for group in _rounding_groups(lines, shared):
        exact = {key: lines[key].net for key in group}
        net.update(round_exact(exact))
        off.update(round_exact({key: lines[key].gross - lines[key].net for key in group}))
        for key in group:
            notes[key] = rounding_note(exact[key], net[key])
    priced: list[PricedLine] = []
    for key in sorted(lines):
        owner, meter = key
        line = lines[key]
        price = unit_price(line.net, line.quantity) if line.quantity else None
        list_price = unit_price(line.gross, line.quantity) if line.quantity else None
        priced.append(
            PricedLine(
                kind=LineKind.USAGE,
                cost_center=owner.cost_center,
                team=owner.team,
                app=owner.app,
                cost_type=meter,
                meter=meter,
                lifecycle=owner.lifecycle,
                quantity=line.quantity,
                unit_price=price,
                gross_amount=net[key] + off[key],
                discount_amount=off[key],
                amount=net[key],
                pricing_rule=_rule_text(line),
                allocation_method=("; ".join(line.methods) or "usage") + notes[key],
                discounts=", ".join(line.discounts),
                versions=tuple(sorted(line.versions)),
                list_unit_price=list_price,
            )
        )
    return priced


def _recorded_too_late(history: PriceBookHistory, period: Period, as_of: datetime | None) -> str:
    """Why a version that covers the period does not count: it was recorded after `as_of`.
    A run counts what was recorded a few seconds before it started, so a price book loaded
    just before `qm bill run` is not yet in it; the user needs to hear that, not "none"."""
    if as_of is None:
        return ""
    later = [version for _, version in history.segments(period) if version.recorded_at > as_of]
    if not later:
        return ""
    first = min(later, key=lambda version: version.recorded_at)
    return (
        f" as recorded by {as_of.isoformat()}: version {first.version} was recorded at "
        f"{first.recorded_at.isoformat()}, after that; run again in a few seconds"
    )


def price_period(
    history: PriceBookHistory,
    period: Period,
    usage: Iterable[UsageRow],
    platform_costs: Iterable[PlatformCostItem] = (),
    *,
    as_of: datetime | None = None,
    directory: OwnerDirectory | None = None,
    default_cost_center: str = "default",
) -> PricingResult:
    """Price one period: usage lines per owner and meter, shares of platform costs per
    active app, reserved-capacity credits per team. `as_of` ignores price book versions
    recorded after it (reproduces a past bill as issued). Raises PricingError for usage
    outside the period and NoVersionInForceError where no version was in force, or a line
    whose amount is too large for the ledger (docs/billing.md, "Limits").

    Quantities are summed in the wide context (domain.money.money_context): the default one
    rounds sums past 28 digits, and a store quantity has up to 38."""
    with exact_context():
        result = _price_period(
            history,
            period,
            usage,
            platform_costs,
            as_of=as_of,
            directory=directory,
            default_cost_center=default_cost_center,
        )
    for line in result.lines:
        _check_line_amounts(line)
    return result


def _check_line_amounts(line: PricedLine) -> None:
    what = (
        f"{line.kind.value} line {line.cost_type!r} of cost center {line.cost_center!r}, "
        f"team {line.team!r}, app {line.app!r}, meter {line.meter!r}"
    )
    for amount in (line.gross_amount, line.amount):
        try:
            check_amount(amount, what=what)
        except AmountOutOfRangeError as error:
            raise PricingError(str(error), field="amount") from None


def _price_period(
    history: PriceBookHistory,
    period: Period,
    usage: Iterable[UsageRow],
    platform_costs: Iterable[PlatformCostItem],
    *,
    as_of: datetime | None,
    directory: OwnerDirectory | None,
    default_cost_center: str,
) -> PricingResult:
    segments = history.segments(period, as_of=as_of)
    if not segments:
        raise NoVersionInForceError(
            f"price book {history.name!r} has no version in force during "
            f"[{period.start.isoformat()}, {period.end.isoformat()})"
            + _recorded_too_late(history, period, as_of)
        )
    books = [CompiledBook(version.document) for _, version in segments]
    currencies = {book.document.currency for book in books}
    if len(currencies) != 1:
        raise PricingError(
            f"price book {history.name!r} changes currency within the period: {sorted(currencies)}"
        )
    currency = currencies.pop()
    parts = [part for part, _ in segments]
    aggregated: dict[LineKey, dict[int, Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for row in usage:
        if not row.quantity.is_finite() or row.quantity < 0:
            raise PricingError(
                f"usage of {row.meter!r} by app {row.app!r}: quantity {row.quantity} "
                "must be a finite number >= 0",
                field="quantity",
            )
        segment = _segment_index(row.at, period, parts, history.name)
        aggregated[(row.owner, row.meter)][segment] += row.quantity
    raw_lines, unpriced, split_pools = _price_usage(aggregated, books)
    lines = _round_usage(raw_lines, split_pools)
    context = SharedCostContext(
        period=period,
        segments=parts,
        books=books,
        currency=currency,
        usage={key: line.quantity for key, line in raw_lines.items()},
        directory=directory or OwnerDirectory(),
        default_cost_center=default_cost_center,
        charges=_charges(lines),
    )
    shared, unpriced_costs = allocate_platform_costs(context, list(platform_costs))
    lines.extend(shared)
    credits, unused = credit_lines(context, lines)
    lines.extend(credits)
    lines.sort(key=lambda line: line.sort_key)
    return PricingResult(
        price_book=history.name,
        currency=currency,
        period=period,
        versions=tuple(book.document.version for book in books),
        lines=tuple(lines),
        unpriced=tuple(unpriced),
        unused_reservation_credit=unused,
        unpriced_costs=unpriced_costs,
    )


def _charges(lines: list[PricedLine]) -> dict[tuple[str, str, str], Decimal]:
    """Usage charges (net) per (cost center, team, app)."""
    charges: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for line in lines:
        if line.kind is LineKind.USAGE and line.team is not None and line.app is not None:
            charges[(line.cost_center, line.team, line.app)] += line.amount
    return dict(charges)


def price_usage(
    document: PriceBookDocument,
    period: Period,
    usage: Iterable[UsageRow],
    platform_costs: Iterable[PlatformCostItem] = (),
) -> PricingResult:
    """Price a period with one price book version (its effective_from is ignored)."""
    pinned = document.model_copy(update={"effective_from": period.start})
    return price_period(PriceBookHistory.single(pinned), period, usage, platform_costs)
