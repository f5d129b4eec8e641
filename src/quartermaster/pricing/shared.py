"""Shared costs: platform costs shared among active apps by each cost_type's policy, and
reserved-capacity credits shared among the teams that used the reserved meter. Pure.

An app is active in the period when it used any meter (quantity > 0); usage with no app
(unattributed, or an environment override's) is no active app. An app counts once,
however many owners it had in the period: its even share, its floor and its weight (its usage
of the basis meter under every owner) are computed once, and its part is then split among its
owner lines (one per owner it was active under) by its usage of the basis meter under each,
as `pool: app` splits an app's charge; for a policy without a meter (or a meter the app did
not use) by its usage charges under each, and evenly when those are 0 too.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from fractions import Fraction

from quartermaster.domain.money import round_line
from quartermaster.domain.timeutil import Period, ensure_utc
from quartermaster.pricing.allocation import (
    AllocationMethod,
    exact_shares,
    round_exact,
    rounding_note,
)
from quartermaster.pricing.book import CompiledBook, Owner
from quartermaster.pricing.document import (
    AnyPolicy,
    DirectPolicy,
    EvenPolicy,
    FloorPlusSharePolicy,
    HybridPolicy,
    ProportionalPolicy,
    Selector,
)
from quartermaster.pricing.lines import (
    RESERVED_CAPACITY,
    ZERO_AMOUNT,
    LineKind,
    OwnerDirectory,
    PlatformCostItem,
    PricedLine,
    PricingError,
    UnpricedCost,
)
from quartermaster.pricing.rating import ZERO, fmt

_MICROSECOND = timedelta(microseconds=1)
AppKey = tuple[str, str, str]  # (cost center, team, app)
Target = tuple[str, str | None, str | None]  # (cost center, team or None, app or None)


@dataclass(frozen=True)
class SharedCostContext:
    period: Period
    segments: list[Period]
    books: list[CompiledBook]
    currency: str
    usage: Mapping[tuple[Owner, str], Decimal]  # per (owner, meter), whole period
    directory: OwnerDirectory
    default_cost_center: str
    # usage charges (net, rounded lines) per (cost center, team, app): how an app that had
    # several owners splits a share that no meter's usage splits
    charges: Mapping[AppKey, Decimal] = field(default_factory=dict)

    def meter_usage(self, meter: str | None) -> dict[AppKey, Decimal]:
        """Usage of `meter` per active app (every active app listed, 0 when unused).

        Usage with no app (unattributed usage booked to the default cost center, or an
        environment override's, both with app "") is no app: it makes no active app, so it
        takes no share of a platform cost nor lowers the apps' shares."""
        totals: dict[AppKey, Decimal] = defaultdict(Decimal)
        for (owner, used_meter), quantity in self.usage.items():
            key = (owner.cost_center, owner.team, owner.app)
            if quantity > 0 and owner.app:
                totals[key] += quantity if used_meter == meter else ZERO
        return dict(totals)

    def segment_of(self, item: PlatformCostItem) -> int:
        moment = self.period.start if item.at is None else ensure_utc(item.at)
        if not self.period.contains(moment):
            raise PricingError(
                f"platform cost {item.cost_type!r} at {moment.isoformat()} is outside the period",
                field="at",
            )
        for index, part in enumerate(self.segments):
            if part.contains(moment):
                return index
        raise PricingError(
            f"platform cost {item.cost_type!r} at {moment.isoformat()}: "
            "no price book version in force",
            field="at",
        )


def _method_of(policy: AnyPolicy | None) -> AllocationMethod:
    if isinstance(policy, DirectPolicy):
        return AllocationMethod.DIRECT
    if isinstance(policy, ProportionalPolicy):
        return AllocationMethod.PROPORTIONAL
    if isinstance(policy, FloorPlusSharePolicy):
        return AllocationMethod.FLOOR_PLUS_SHARE
    if isinstance(policy, HybridPolicy):
        return AllocationMethod.HYBRID
    return AllocationMethod.EVEN


def _direct_targets(ctx: SharedCostContext, to: Selector) -> tuple[list[Target], str]:
    active = ctx.meter_usage(None)
    if to.app is not None:
        owners: list[Target] = sorted(k for k in active if k[2] == to.app)
        if owners:
            return owners, f"direct to app {to.app!r}"
        known = ctx.directory.apps.get(to.app)
        if known is not None:
            return [(known[0], known[1], to.app)], f"direct to app {to.app!r}"
        return [(ctx.default_cost_center, None, to.app)], (
            f"direct to app {to.app!r} (owner unknown: default cost center)"
        )
    if to.team is not None:
        if to.team in ctx.directory.teams:
            return [(ctx.directory.teams[to.team], to.team, None)], f"direct to team {to.team!r}"
        centers = sorted({k[0] for k in active if k[1] == to.team})
        if centers:
            return [(c, to.team, None) for c in centers], f"direct to team {to.team!r}"
        return [(ctx.default_cost_center, to.team, None)], (
            f"direct to team {to.team!r} (cost center unknown: default cost center)"
        )
    center = to.cost_center or ctx.default_cost_center
    return [(center, None, None)], f"direct to cost center {center!r}"


def _floor(policy: AnyPolicy | None, share: _PlatformShare) -> Fraction:
    if not isinstance(policy, FloorPlusSharePolicy):
        return Fraction(0)
    return Fraction(policy.floor) * share.period_share


def _floors_covered(policy: AnyPolicy | None, share: _PlatformShare, apps: int) -> bool:
    """Whether the cost exceeds every active app's floor (else allocate() shares it evenly)."""
    return Fraction(round_line(share.total)) > _floor(policy, share) * apps


def _describe(
    policy: AnyPolicy | None, share: _PlatformShare, weight: Decimal, total: Decimal, apps: int
) -> str:
    cost_type = share.cost_type
    count_note = f"{fmt(weight)} of {fmt(total)}"
    if policy is None:
        return f"even per active app (no policy for cost_type {cost_type!r})"
    if isinstance(policy, EvenPolicy):
        return "even per active app"
    if isinstance(policy, ProportionalPolicy):
        if total == 0:
            return f"proportional to {policy.meter} (no usage: even per active app)"
        return f"proportional to {policy.meter}: {count_note}"
    if isinstance(policy, FloorPlusSharePolicy):
        basis = f"by {policy.meter}: {count_note}" if policy.meter else "evenly"
        floor = f"floor {policy.floor}"
        if share.period_share != 1:
            exact = Decimal(share.period_share.numerator * 100) / share.period_share.denominator
            percent = fmt(exact.quantize(Decimal("0.01")))
            floor = f"{floor} x {percent}% of the period (its part under this policy)"
        if not _floors_covered(policy, share, apps):
            return (
                f"even per active app: {fmt(share.total)} is not more than the floors "
                f"({apps} active apps x {floor})"
            )
        return f"{floor} + share of the rest {basis}"
    if isinstance(policy, HybridPolicy):
        by_usage = fmt(policy.proportional_share * 100)
        even = fmt((1 - policy.proportional_share) * 100)
        return f"hybrid: {by_usage}% proportional to {policy.meter} ({count_note}) + {even}% even"
    return "direct"


def _platform_line(
    target: Target,
    cost_type: str,
    meter: str | None,
    quantity: Decimal,
    amount: Decimal,
    rule: str,
    method: str,
    versions: tuple[int, ...],
) -> PricedLine:
    return PricedLine(
        kind=LineKind.PLATFORM,
        cost_center=target[0],
        team=target[1],
        app=target[2],
        cost_type=cost_type,
        meter=meter,
        lifecycle=None,
        quantity=quantity,
        unit_price=None,
        gross_amount=amount,
        discount_amount=ZERO_AMOUNT,
        amount=amount,
        pricing_rule=rule,
        allocation_method=method,
        discounts="",
        versions=versions,
    )


def allocate_platform_costs(
    ctx: SharedCostContext, items: list[PlatformCostItem]
) -> tuple[list[PricedLine], tuple[UnpricedCost, ...]]:
    """Each cost type's costs are shared once per policy: the costs incurred while the
    versions that hold one policy were in force, by that policy. A new version that leaves a
    cost type's policy as it was does not split its allocation (two halves each giving every
    app a floor would charge the floors twice); a floor is pro rata to the part of the period
    its policy was in force, as reserved-capacity credits are.

    Costs in another currency than the price book's are not priced (there is no currency
    conversion): they are returned, summed per cost type and currency, and the rest is
    priced as usual (one such cost must not stop billing, previews and budgets)."""
    totals: dict[tuple[int, str], Decimal] = defaultdict(Decimal)
    foreign: dict[tuple[str, str], Decimal] = defaultdict(Decimal)
    for item in items:
        if not item.amount.is_finite() or item.amount < 0:
            raise PricingError(
                f"platform cost {item.cost_type!r}: amount {item.amount} must be >= 0",
                field="amount",
            )
        if item.currency is not None and item.currency != ctx.currency:
            ctx.segment_of(item)  # still within the period
            foreign[(item.cost_type, item.currency)] += item.amount
            continue
        totals[(ctx.segment_of(item), item.cost_type)] += item.amount
    unpriced = tuple(
        UnpricedCost(cost_type, amount, currency)
        for (cost_type, currency), amount in sorted(foreign.items())
    )
    lines: list[PricedLine] = []
    for cost_type in sorted({cost_type for _, cost_type in totals}):
        for policy, share in _shares_by_policy(ctx, cost_type, totals):
            if share.total == 0:
                continue
            if isinstance(policy, DirectPolicy):
                lines.extend(_share_direct(ctx, policy, share))
            else:
                lines.extend(_share_among_apps(ctx, policy, share))
    return lines, unpriced


@dataclass(frozen=True)
class _PlatformShare:
    cost_type: str
    total: Decimal
    versions: tuple[int, ...]
    # the part of the period the versions holding this policy were in force (1: all of it)
    period_share: Fraction


def _shares_by_policy(
    ctx: SharedCostContext, cost_type: str, totals: Mapping[tuple[int, str], Decimal]
) -> list[tuple[AnyPolicy | None, _PlatformShare]]:
    whole = ctx.period.duration // _MICROSECOND
    groups: list[tuple[AnyPolicy | None, list[int]]] = []
    for index, book in enumerate(ctx.books):
        policy = book.policy_for(cost_type)
        group = next((segments for held, segments in groups if held == policy), None)
        if group is None:
            groups.append((policy, [index]))
        else:
            group.append(index)
    return [
        (
            policy,
            _PlatformShare(
                cost_type=cost_type,
                total=sum((totals.get((i, cost_type), ZERO) for i in segments), ZERO),
                versions=tuple(sorted({ctx.books[i].document.version for i in segments})),
                period_share=Fraction(
                    sum(ctx.segments[i].duration // _MICROSECOND for i in segments), whole
                ),
            ),
        )
        for policy, segments in groups
    ]


def _share_direct(
    ctx: SharedCostContext, policy: DirectPolicy, share: _PlatformShare
) -> list[PricedLine]:
    targets, method = _direct_targets(ctx, policy.to)
    rule = f"platform cost {share.cost_type}: {fmt(share.total)} {ctx.currency}"
    whole = Fraction(round_line(share.total))
    if len(targets) == 1 or policy.to.app is None:
        exact = {target: whole / len(targets) for target in targets}
        methods = dict.fromkeys(targets, method)
    else:  # an app that had several owners: its cost is split among them as its shares are
        app = policy.to.app or ""
        keys = {target: (target[0], target[1] or "", target[2] or "") for target in targets}
        parts, notes = _owner_parts(ctx, app, list(keys.values()), None, {})
        exact = {target: whole * parts[key] for target, key in keys.items()}
        methods = {target: f"{method}{notes[key]}" for target, key in keys.items()}
    amounts = round_exact(exact)
    methods = {
        target: methods[target] + rounding_note(exact[target], amount)
        for target, amount in amounts.items()
    }
    return [
        _platform_line(
            target, share.cost_type, None, Decimal(1), amount, rule, methods[target], share.versions
        )
        for target, amount in amounts.items()
    ]


def _owner_parts(
    ctx: SharedCostContext,
    app: str,
    keys: list[AppKey],
    meter: str | None,
    usage: Mapping[AppKey, Decimal],
) -> tuple[dict[AppKey, Fraction], dict[AppKey, str]]:
    """How an app that had several owner lines in the period splits its part among them (the
    parts sum to 1), and what each line's allocation method adds to say so: by its usage of
    `meter` under each owner, as `pool: app` splits a charge; else (no meter, or unused) by
    its usage charges under each; else evenly."""
    if len(keys) == 1:
        return {keys[0]: Fraction(1)}, {keys[0]: ""}
    owners = f"; app {app!r} had {len(keys)} owners in the period, this one's part"
    used = {key: usage.get(key, ZERO) for key in keys}
    charged = {key: ctx.charges.get(key, ZERO) for key in keys}
    if meter is not None and sum(used.values(), ZERO) > 0:
        basis, what = used, f"by {meter}"
    elif sum(charged.values(), ZERO) > 0:
        basis, what = charged, "by its usage charges"
    else:
        count = len(keys)
        return dict.fromkeys(keys, Fraction(1, count)), dict.fromkeys(
            keys, f"{owners} evenly (no usage of the basis, no usage charges)"
        )
    total = sum(basis.values(), ZERO)
    return (
        {key: Fraction(basis[key]) / Fraction(total) for key in keys},
        {key: f"{owners} {what}: {fmt(basis[key])} of {fmt(total)}" for key in keys},
    )


def _share_among_apps(
    ctx: SharedCostContext, policy: AnyPolicy | None, share: _PlatformShare
) -> list[PricedLine]:
    rule = f"platform cost {share.cost_type}: {fmt(share.total)} {ctx.currency}"
    meter: str | None = getattr(policy, "meter", None)
    usage = ctx.meter_usage(meter)
    if not usage:
        nobody: Target = (ctx.default_cost_center, None, None)
        rounded = round_line(share.total)
        method = "unallocated: no active apps in the period (default cost center)"
        return [
            _platform_line(
                nobody, share.cost_type, None, ZERO, rounded, rule, method, share.versions
            )
        ]
    # Each app once, whatever owners it had: its weight is its usage under all of them.
    owners: dict[str, list[AppKey]] = defaultdict(list)
    for key in sorted(usage):
        owners[key[2]].append(key)
    weights = {
        app: sum((usage[key] for key in keys), ZERO) if meter is not None else Decimal(1)
        for app, keys in owners.items()
    }
    total = round_line(share.total)
    by_app = exact_shares(
        Fraction(total),
        weights,
        _method_of(policy),
        floor=_floor(policy, share),
        proportional_share=(
            policy.proportional_share if isinstance(policy, HybridPolicy) else Decimal(1)
        ),
    )
    exact: dict[AppKey, Fraction] = {}
    notes: dict[AppKey, str] = {}
    for app, keys in owners.items():
        parts, said = _owner_parts(ctx, app, keys, meter, usage)
        for key in keys:
            exact[key] = by_app[app] * parts[key]
            notes[key] = said[key]
    amounts = round_exact(exact)
    weight_total = sum(weights.values(), ZERO)
    rule = f"{rule} shared by {len(weights)} active apps"
    return [
        _platform_line(
            key,
            share.cost_type,
            meter,
            usage[key] if meter is not None else Decimal(1),
            amount,
            rule,
            _describe(policy, share, weights[key[2]], weight_total, len(weights))
            + notes[key]
            + rounding_note(exact[key], amount),
            share.versions,
        )
        for key, amount in amounts.items()
    ]


def _credits(ctx: SharedCostContext) -> dict[tuple[str, str], tuple[Fraction, set[int]]]:
    """Each reservation's credit for the period, pro rata to the time each version held it."""
    whole = ctx.period.duration // _MICROSECOND
    credits: dict[tuple[str, str], tuple[Fraction, set[int]]] = {}
    for part, book in zip(ctx.segments, ctx.books, strict=True):
        share = Fraction(part.duration // _MICROSECOND, whole)
        for reservation in book.document.reservations:
            key = (reservation.name, reservation.meter)
            amount, versions = credits.get(key, (Fraction(0), set()))
            amount += Fraction(reservation.credit) * share
            credits[key] = (amount, versions | {book.document.version})
    return credits


def credit_lines(
    ctx: SharedCostContext, priced: list[PricedLine]
) -> tuple[list[PricedLine], dict[str, Decimal]]:
    """Reserved-capacity credits as negative lines per (cost center, team), in proportion to
    what each was charged for the reserved meter (its usage lines' amounts, after discounts).
    So no line exceeds its team's charges: a team whose usage was free (a 100% discount, a
    free tier) gets nothing, and no cost center goes negative on another's credit. A credit
    never exceeds what the meter was charged in the period (after earlier reservations on
    it, which also lower each team's charges left); the rest is reported unused."""
    charged: dict[str, dict[tuple[str, str], Decimal]] = defaultdict(lambda: defaultdict(Decimal))
    for line in priced:
        if line.kind is LineKind.USAGE and line.meter is not None and line.team is not None:
            charged[line.meter][(line.cost_center, line.team)] += line.amount
    used: dict[tuple[str, str, str], Decimal] = defaultdict(Decimal)
    for (owner, meter), quantity in ctx.usage.items():
        used[(meter, owner.cost_center, owner.team)] += quantity
    lines: list[PricedLine] = []
    unused: dict[str, Decimal] = {}
    for (name, meter), (exact, versions) in _credits(ctx).items():
        credit = _round(exact)
        left = {pair: amount for pair, amount in charged[meter].items() if amount > 0}
        total = sum(left.values(), ZERO)
        applied = min(credit, total)
        unused[name] = credit - applied
        if applied == 0:
            continue
        capped = " (capped at the meter's charges)" if applied < credit else ""
        rule = f"reserved capacity {name!r}: credit {fmt(applied)} on {meter}{capped}"
        split = {
            pair: -Fraction(applied) * Fraction(amount) / Fraction(total)
            for pair, amount in left.items()
        }
        for (center, team), amount in round_exact(split).items():
            charged[meter][(center, team)] += amount
            lines.append(
                PricedLine(
                    kind=LineKind.RESERVATION,
                    cost_center=center,
                    team=team,
                    app=None,
                    cost_type=RESERVED_CAPACITY,
                    meter=meter,
                    lifecycle=None,
                    quantity=used[(meter, center, team)],
                    unit_price=None,
                    gross_amount=amount,
                    discount_amount=ZERO_AMOUNT,
                    amount=amount,
                    pricing_rule=rule,
                    allocation_method=(
                        f"proportional to the team's charges for {meter}: "
                        f"{fmt(left[(center, team)])} of {fmt(total)}"
                        + rounding_note(split[(center, team)], amount)
                    ),
                    discounts="",
                    versions=tuple(sorted(versions)),
                )
            )
    return lines, unused


def _round(value: Fraction) -> Decimal:
    return round_exact({"": value})[""]
