"""Pricing a period: pools, scopes, discounts, versions, shared costs and reservations,
against amounts computed by hand (the arithmetic is in the comments)."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from decimal import Decimal as D
from typing import Any

import pytest

from quartermaster.domain.timeutil import Period
from quartermaster.pricing.engine import price_period, price_usage
from quartermaster.pricing.history import (
    NoVersionInForceError,
    PriceBookHistory,
    PriceBookVersion,
)
from quartermaster.pricing.lines import (
    LineKind,
    OwnerDirectory,
    PlatformCostItem,
    PricedLine,
    PricingError,
    PricingResult,
    UsageRow,
)
from tests.pricing.support import JANUARY, book

FREE_THEN_0_002 = {
    "model": "graduated",
    "tiers": [{"up_to": 1000, "unit_price": "0.00"}, {"unit_price": "0.002"}],
}


def row(
    app: str,
    meter: str,
    quantity: Any,
    *,
    team: str = "t1",
    cc: str = "cc1",
    lifecycle: str = "persistent",
    at: datetime | None = None,
) -> UsageRow:
    return UsageRow(cc, team, app, meter, D(quantity), lifecycle, at)


def usage_line(result: PricingResult, app: str, meter: str, team: str | None = None) -> PricedLine:
    found = [
        line
        for line in result.lines
        if line.kind is LineKind.USAGE
        and line.app == app
        and line.meter == meter
        and (team is None or line.team == team)
    ]
    assert len(found) == 1, found
    return found[0]


def amounts(result: PricingResult, kind: LineKind, cost_type: str) -> dict[Any, D]:
    return {
        (line.team, line.app) if kind is LineKind.PLATFORM else line.team: line.amount
        for line in result.lines
        if line.kind is kind and line.cost_type == cost_type
    }


def day(d: int, month: int = 1) -> datetime:
    return datetime(2026, month, d, tzinfo=UTC)


def test_a_team_pool_climbs_the_tiers_together() -> None:
    document = book({"meter": "tokens", "pool": "team", **FREE_THEN_0_002})
    result = price_usage(document, JANUARY, [row("a1", "tokens", 3000), row("a2", "tokens", 1000)])
    # team t1 uses 4000: 1000 @ 0 + 3000 @ 0.002 = 6.00, shared 3000:1000
    a1, a2 = usage_line(result, "a1", "tokens"), usage_line(result, "a2", "tokens")
    assert (a1.amount, a2.amount) == (D("4.500000"), D("1.500000"))
    assert a1.pricing_rule == "graduated: 1000 @ 0.00 + 3000 @ 0.002"
    assert a1.allocation_method == "pooled by team 't1': 3000 of 4000 units"
    assert a1.unit_price == D("0.0015")  # 4.5 / 3000
    assert result.total == D("6")


def test_by_default_each_app_has_its_own_tiers() -> None:
    document = book({"meter": "tokens", **FREE_THEN_0_002})
    result = price_usage(document, JANUARY, [row("a1", "tokens", 3000), row("a2", "tokens", 1000)])
    # a1: 1000 @ 0 + 2000 @ 0.002 = 4; a2: 1000 @ 0 = 0
    assert usage_line(result, "a1", "tokens").amount == D("4")
    assert usage_line(result, "a2", "tokens").amount == D("0")
    assert usage_line(result, "a1", "tokens").allocation_method == "usage"


def test_the_most_specific_scope_wins() -> None:
    document = book(
        {"meter": "cpu", "model": "per_unit", "unit_price": "1"},
        {
            "meter": "cpu",
            "scope": {"lifecycle": "ephemeral"},
            "model": "per_unit",
            "unit_price": "2",
        },
        {"meter": "cpu", "scope": {"cost_center": "cc9"}, "model": "per_unit", "unit_price": "3"},
        {"meter": "cpu", "scope": {"team": "t9"}, "model": "per_unit", "unit_price": "4"},
        {"meter": "cpu", "scope": {"app": "a9"}, "model": "per_unit", "unit_price": "5"},
    )
    rows = [
        row("plain", "cpu", 1),
        row("eph", "cpu", 1, lifecycle="ephemeral"),
        row("in-cc9", "cpu", 1, cc="cc9", lifecycle="ephemeral"),
        row("in-t9", "cpu", 1, team="t9", cc="cc9"),
        row("a9", "cpu", 1, team="t9", cc="cc9", lifecycle="ephemeral"),
    ]
    result = price_usage(document, JANUARY, rows)
    prices = {line.app: line.amount for line in result.lines}
    assert prices == {"plain": 1, "eph": 2, "in-cc9": 3, "in-t9": 4, "a9": 5}


def test_discounts_compound_and_are_shown_on_the_line() -> None:
    document = book(
        {"meter": "tokens", "model": "per_unit", "unit_price": "0.01"},
        {"meter": "cpu", "model": "per_unit", "unit_price": "0.01"},
        discounts=[
            {"name": "team-deal", "percent": 10, "applies_to": {"team": "t1"}},
            {
                "name": "spot",
                "percent": 30,
                "applies_to": {"lifecycle": "ephemeral"},
                "meters": ["tokens"],
            },
        ],
    )
    rows = [row("a1", "tokens", 1000, lifecycle="ephemeral"), row("a1", "cpu", 1000)]
    result = price_usage(document, JANUARY, rows)
    tokens = usage_line(result, "a1", "tokens")
    # 1000 * 0.01 = 10; -10% = 9; -30% = 6.30
    assert (tokens.gross_amount, tokens.discount_amount, tokens.amount) == (
        D("10.000000"),
        D("3.700000"),
        D("6.300000"),
    )
    assert tokens.discounts == "team-deal 10%, spot 30%"
    assert tokens.unit_price == D("0.0063")
    cpu = usage_line(result, "a1", "cpu")  # persistent: the team discount only
    assert (cpu.amount, cpu.discounts) == (D("9.000000"), "team-deal 10%")


def test_usage_without_a_rule_is_listed_unpriced() -> None:
    document = book({"meter": "tokens", "model": "per_unit", "unit_price": "1"})
    result = price_usage(document, JANUARY, [row("a1", "gpu_hours", 7)])
    line = usage_line(result, "a1", "gpu_hours")
    assert line.amount == 0
    assert line.pricing_rule.startswith("unpriced")
    assert [(u.owner.app, u.meter, u.quantity) for u in result.unpriced] == [
        ("a1", "gpu_hours", D(7))
    ]


def test_identical_usage_is_billed_the_same_and_each_line_rounds_half_to_even() -> None:
    # The walkthrough's September: volume tier 1 @ 1; a, b and c each 0.0000005, ds1
    # 0.0000025. All lines of the meter were rounded together by largest remainder: a
    # 0.000001, b and c 0 for the same usage, ds1 0.000003. Each app is its own pool: each
    # line is its own exact amount rounded half to even.
    document = book({"meter": "compute_units", "model": "volume", "tiers": [{"unit_price": "1"}]})
    rows = [row(app, "compute_units", "0.0000005") for app in ("a", "b", "c")]
    rows.append(row("ds1", "compute_units", "0.0000025", team="t2"))
    result = price_usage(document, JANUARY, rows)
    assert {x.app: x.amount for x in result.lines} == {
        "a": D("0"),
        "b": D("0"),
        "c": D("0"),
        "ds1": D("0.000002"),
    }
    assert {x.allocation_method for x in result.lines} == {"usage"}
    assert result.total == D("0.000002")


def test_a_pooled_charge_split_by_largest_remainder_says_which_line_took_the_rounding() -> None:
    document = book({"meter": "cpu", "model": "per_unit", "unit_price": "1", "pool": "team"})
    rows = [row(app, "cpu", "0.0000005") for app in ("a1", "a2", "a3")]
    result = price_usage(document, JANUARY, rows)
    # one charge of 0.0000015 -> 0.000002 split three ways (0.0000005 each, half-even 0):
    # the two millionths go to a1 and a2 (equal remainders: cost center, team, app order)
    assert [(x.app, x.amount) for x in result.lines] == [
        ("a1", D("0.000001")),
        ("a2", D("0.000001")),
        ("a3", D("0")),
    ]
    pooled = "pooled by team 't1': 0.0000005 of 0.0000015 units"
    assert result.lines[0].allocation_method == (
        f"{pooled}; rounded up 0.000001 so that the split's parts sum to its total (largest "
        "remainders first, equal ones in cost center, team, app order)"
    )
    assert result.lines[2].allocation_method == pooled


def test_a_subscription_fee_is_charged_on_zero_usage() -> None:
    document = book({"meter": "cpu", "model": "subscription", "fee": "10", "included": 3600})
    line = usage_line(price_usage(document, JANUARY, [row("a1", "cpu", 0)]), "a1", "cpu")
    assert line.amount == D("10")
    assert line.unit_price is None


def test_a_pooled_fee_is_split_exactly() -> None:
    document = book({"meter": "cpu", "model": "subscription", "fee": "1", "pool": "tenant"})
    rows = [row(app, "cpu", 5) for app in ("a1", "a2", "a3")]
    result = price_usage(document, JANUARY, rows)
    # 1 / 3 each: 0.333333 three times and the last millionth to the first in key order
    assert [line.amount for line in result.lines] == [
        D("0.333334"),
        D("0.333333"),
        D("0.333333"),
    ]
    assert result.total == D("1")


def test_an_app_that_changed_team_is_charged_to_each_for_its_part() -> None:
    document = book({"meter": "tokens", **FREE_THEN_0_002})
    rows = [row("a1", "tokens", 1000, team="t1"), row("a1", "tokens", 3000, team="t2", cc="cc2")]
    result = price_usage(document, JANUARY, rows)
    # the app's 4000 tokens: 1000 @ 0 + 3000 @ 0.002 = 6, split 1000:3000
    assert usage_line(result, "a1", "tokens", team="t1").amount == D("1.5")
    assert usage_line(result, "a1", "tokens", team="t2").amount == D("4.5")


def _history(
    *versions: tuple[dict[str, Any], int, datetime, datetime], **extra: Any
) -> PriceBookHistory:
    return PriceBookHistory(
        PriceBookVersion(
            book(rule, version=number, **extra).model_copy(update={"effective_from": effective}),
            recorded,
        )
        for rule, number, effective, recorded in versions
    )


def test_a_version_change_within_the_period_blends_by_usage() -> None:
    v1 = {
        "meter": "tokens",
        "model": "graduated",
        "tiers": [{"up_to": 200, "unit_price": "0.01"}, {"unit_price": "0.005"}],
    }
    v2 = {"meter": "tokens", "model": "per_unit", "unit_price": "0.02"}
    history = _history((v1, 1, day(1), day(1)), (v2, 2, day(16), day(1)))
    rows = [row("a1", "tokens", 100, at=day(5)), row("a1", "tokens", 300, at=day(20))]
    result = price_period(history, JANUARY, rows)
    line = usage_line(result, "a1", "tokens")
    # Both versions rate the month's 400 units; each applies to the units used under it.
    # v1: 200 @ 0.01 + 200 @ 0.005 = 3.00 for 400, so 100 units -> 0.75
    # v2: 400 @ 0.02 = 8.00 for 400, so 300 units -> 6.00
    assert line.amount == D("6.75")
    assert line.versions == (1, 2)
    assert line.pricing_rule == (
        "v1 (100 units): graduated: 200 @ 0.01 + 200 @ 0.005; v2 (300 units): per-unit: 400 @ 0.02"
    )


def test_a_back_dated_change_is_visible_only_after_it_was_recorded() -> None:
    v1 = {"meter": "tokens", "model": "per_unit", "unit_price": "0.01"}
    v2 = {"meter": "tokens", "model": "per_unit", "unit_price": "0.02"}
    # v2 recorded on Feb 3, back-dated to the start of January.
    history = _history((v1, 1, day(1), day(1)), (v2, 2, day(1), day(3, 2)))
    rows = [row("a1", "tokens", 100, at=day(10))]
    as_issued = price_period(history, JANUARY, rows, as_of=day(1, 2))
    corrected = price_period(history, JANUARY, rows)
    assert as_issued.total == D("1")  # 100 @ 0.01
    assert corrected.total == D("2")  # 100 @ 0.02
    assert corrected.total - as_issued.total == D("1")  # what an adjustment line carries


def test_usage_outside_the_period_or_before_any_version_is_refused() -> None:
    history = _history(
        ({"meter": "tokens", "model": "per_unit", "unit_price": "1"}, 1, day(10), day(10))
    )
    with pytest.raises(PricingError, match="outside the period"):
        price_period(history, JANUARY, [row("a1", "tokens", 1, at=day(1, 2))])
    with pytest.raises(NoVersionInForceError, match="no version in force at 2026-01-05"):
        price_period(history, JANUARY, [row("a1", "tokens", 1, at=day(5))])
    with pytest.raises(PricingError, match="must be a finite number >= 0"):
        price_period(history, JANUARY, [row("a1", "tokens", -1, at=day(12))])


def test_a_version_recorded_after_the_cut_off_is_named_in_the_refusal() -> None:
    """A price book loaded moments before a run is not in the run's cut-off (what was recorded
    a few seconds before it started); the refusal says so instead of "no version"."""
    rule = {"meter": "tokens", "model": "per_unit", "unit_price": "1"}
    recorded = datetime(2026, 1, 3, 12, tzinfo=UTC)
    history = _history((rule, 1, day(1), recorded))
    rows = [row("a1", "tokens", 1, at=day(2))]
    with pytest.raises(NoVersionInForceError) as refused:
        price_period(history, JANUARY, rows, as_of=recorded - timedelta(hours=1))
    assert "as recorded by 2026-01-03T11:00:00+00:00" in refused.value.message
    assert "version 1 was recorded at 2026-01-03T12:00:00+00:00" in refused.value.message
    assert "run again in a few seconds" in refused.value.message
    later = recorded + timedelta(hours=1)
    assert price_period(history, JANUARY, rows, as_of=later).total == D("1")
    december = Period(datetime(2025, 12, 1, tzinfo=UTC), day(1))
    with pytest.raises(NoVersionInForceError) as before_any:
        price_period(history, december, [], as_of=later)
    assert "recorded at" not in before_any.value.message


PLATFORM_BOOK = {
    "platform_costs": [
        {"cost_type": "lb", "method": "proportional", "meter": "requests"},
        {"cost_type": "cdn", "method": "hybrid", "meter": "requests", "proportional_share": "0.5"},
        {
            "cost_type": "control_plane",
            "method": "floor_plus_share",
            "floor": 2,
            "meter": "invocations",
        },
        {"cost_type": "oncall", "method": "direct", "to": {"team": "t2"}},
    ]
}
PLATFORM_USAGE = [
    row("a1", "requests", 100),
    row("a1", "invocations", 300),
    row("a2", "requests", 300),
    row("a2", "invocations", 100),
    row("a3", "tokens", 50, team="t2", cc="cc2"),
]


def _platform(*costs: PlatformCostItem, usage: list[UsageRow] = PLATFORM_USAGE) -> PricingResult:
    document = book(
        {"meter": "requests", "model": "per_unit", "unit_price": "0"},
        {"meter": "invocations", "model": "per_unit", "unit_price": "0"},
        {"meter": "tokens", "model": "per_unit", "unit_price": "0"},
        **PLATFORM_BOOK,
    )
    return price_usage(document, JANUARY, usage, costs)


def test_proportional_platform_cost() -> None:
    result = _platform(PlatformCostItem("lb", D("30")), PlatformCostItem("lb", D("10")))
    # 40 by requests 100:300:0
    assert amounts(result, LineKind.PLATFORM, "lb") == {
        ("t1", "a1"): D("10"),
        ("t1", "a2"): D("30"),
        ("t2", "a3"): D("0"),
    }
    line = next(x for x in result.lines if x.cost_type == "lb" and x.app == "a1")
    assert line.allocation_method == "proportional to requests: 100 of 400"
    assert line.pricing_rule == "platform cost lb: 40 USD shared by 3 active apps"


def test_hybrid_platform_cost() -> None:
    result = _platform(PlatformCostItem("cdn", D("40")))
    # 20 by requests: 5, 15, 0; 20 evenly: 6.666666.. each. Exact 11.66.., 21.66.., 6.66..;
    # the two leftover millionths go to a1, a2 (equal remainders, key order)
    assert amounts(result, LineKind.PLATFORM, "cdn") == {
        ("t1", "a1"): D("11.666667"),
        ("t1", "a2"): D("21.666667"),
        ("t2", "a3"): D("6.666666"),
    }


def test_floor_plus_share_platform_cost() -> None:
    result = _platform(PlatformCostItem("control_plane", D("10")))
    # floors 3 * 2 = 6; the other 4 by invocations 300:100:0 = 3, 1, 0
    assert amounts(result, LineKind.PLATFORM, "control_plane") == {
        ("t1", "a1"): D("5"),
        ("t1", "a2"): D("3"),
        ("t2", "a3"): D("2"),
    }


def test_floors_not_covered_are_shared_evenly_and_the_line_says_so() -> None:
    # 5 < 3 floors of 2: shared evenly, 1.666666.. each (the leftover millionths to a1, a2);
    # nobody paid a floor and nothing was shared by invocations, and the lines must not say so
    result = _platform(PlatformCostItem("control_plane", D("5")))
    assert amounts(result, LineKind.PLATFORM, "control_plane") == {
        ("t1", "a1"): D("1.666667"),
        ("t1", "a2"): D("1.666667"),
        ("t2", "a3"): D("1.666666"),
    }
    methods = {x.app: x.allocation_method for x in result.lines if x.cost_type == "control_plane"}
    evenly = "even per active app: 5 is not more than the floors (3 active apps x floor 2)"
    assert methods == {
        "a1": evenly,
        "a2": evenly,
        # 5/3 rounds to 1.666667 on its own; the split's last millionth went to a1 and a2
        "a3": evenly
        + "; rounded down 0.000001 so that the split's parts sum to its total (largest "
        "remainders first, equal ones in cost center, team, app order)",
    }
    # exactly the floors: each pays its floor, which is the even share too
    exact = _platform(PlatformCostItem("control_plane", D("6")))
    assert set(amounts(exact, LineKind.PLATFORM, "control_plane").values()) == {D("2")}
    assert {x.allocation_method for x in exact.lines if x.cost_type == "control_plane"} == {
        "even per active app: 6 is not more than the floors (3 active apps x floor 2)"
    }


def test_direct_platform_cost_goes_to_the_team() -> None:
    result = _platform(PlatformCostItem("oncall", D("7")))
    lines = [x for x in result.lines if x.cost_type == "oncall"]
    assert [(x.cost_center, x.team, x.app, x.amount) for x in lines] == [
        ("cc2", "t2", None, D("7"))
    ]
    assert lines[0].allocation_method == "direct to team 't2'"


def test_direct_target_from_the_directory_or_the_default_cost_center() -> None:
    document = book(
        {"meter": "tokens", "model": "per_unit", "unit_price": "1"},
        platform_costs=[{"cost_type": "x", "method": "direct", "to": {"team": "ops"}}],
    )
    costs = [PlatformCostItem("x", D(1))]
    history = PriceBookHistory.single(document)
    known = price_period(
        history, JANUARY, [], costs, directory=OwnerDirectory(teams={"ops": "cc-ops"})
    )
    assert [(x.cost_center, x.team) for x in known.lines] == [("cc-ops", "ops")]
    unknown = price_period(history, JANUARY, [], costs)
    assert [(x.cost_center, x.team) for x in unknown.lines] == [("default", "ops")]


def test_a_cost_type_without_policy_is_shared_evenly() -> None:
    result = _platform(PlatformCostItem("dns", D("3")))
    assert set(amounts(result, LineKind.PLATFORM, "dns").values()) == {D("1")}
    line = next(x for x in result.lines if x.cost_type == "dns")
    assert line.allocation_method == "even per active app (no policy for cost_type 'dns')"


def test_a_platform_cost_with_no_active_app_goes_to_the_default_cost_center() -> None:
    result = _platform(PlatformCostItem("lb", D("5")), usage=[row("a1", "requests", 0)])
    lines = [x for x in result.lines if x.kind is LineKind.PLATFORM]
    assert [(x.cost_center, x.team, x.app, x.amount) for x in lines] == [
        ("default", None, None, D("5"))
    ]


UNATTRIBUTED = [  # booked to the default cost center with no team or app, as attribution does
    row("", "requests", 600, team="", cc="default"),
    row("", "invocations", 100, team="", cc="default"),
]


def test_unattributed_usage_is_no_active_app_for_shared_costs() -> None:
    # docs/pricing.md: shared costs are split over the active apps; the default cost center's
    # unattributed usage (and an environment override's, with no app either) is no app, so it
    # takes no share and does not shrink the apps' shares (it took 1/(N+1) of an even split)
    override = row("", "requests", 50, team="", cc="cc9")
    usage = [*PLATFORM_USAGE, *UNATTRIBUTED, override]
    result = _platform(
        PlatformCostItem("dns", D("3")),
        PlatformCostItem("lb", D("40")),
        PlatformCostItem("control_plane", D("10")),
        usage=usage,
    )
    assert amounts(result, LineKind.PLATFORM, "dns") == {
        ("t1", "a1"): D("1"),
        ("t1", "a2"): D("1"),
        ("t2", "a3"): D("1"),
    }
    # by requests among the apps only: 100:300:0, not 100:300:0:600:50
    assert amounts(result, LineKind.PLATFORM, "lb") == {
        ("t1", "a1"): D("10"),
        ("t1", "a2"): D("30"),
        ("t2", "a3"): D("0"),
    }
    assert amounts(result, LineKind.PLATFORM, "control_plane") == {
        ("t1", "a1"): D("5"),
        ("t1", "a2"): D("3"),
        ("t2", "a3"): D("2"),
    }
    line = next(x for x in result.lines if x.cost_type == "lb" and x.app == "a1")
    assert line.pricing_rule == "platform cost lb: 40 USD shared by 3 active apps"
    assert line.allocation_method == "proportional to requests: 100 of 400"
    # the unattributed usage itself is still billed to the default cost center
    assert {(x.cost_center, x.meter) for x in result.lines if x.kind is LineKind.USAGE} >= {
        ("default", "requests"),
        ("cc9", "requests"),
    }
    assert result.total == sum(x.amount for x in result.lines)


def test_a_platform_cost_with_only_unattributed_usage_goes_to_the_default_cost_center() -> None:
    result = _platform(PlatformCostItem("dns", D("5")), usage=UNATTRIBUTED)
    lines = [x for x in result.lines if x.kind is LineKind.PLATFORM]
    assert [(x.cost_center, x.team, x.app, x.amount) for x in lines] == [
        ("default", None, None, D("5"))
    ]
    assert lines[0].allocation_method == (
        "unallocated: no active apps in the period (default cost center)"
    )


def test_a_platform_cost_in_another_currency_is_not_priced_but_reported() -> None:
    # There is no currency conversion: the EUR costs (and a code that is no currency) are in
    # no line, summed per cost type and currency; the USD ones (and those without a
    # currency: the book's) are shared as usual. It used to fail the whole period.
    result = _platform(
        PlatformCostItem("lb", D("30"), currency="USD"),
        PlatformCostItem("lb", D("10")),
        PlatformCostItem("lb", D("5"), currency="EUR"),
        PlatformCostItem("lb", D("2.5"), currency="EUR"),
        PlatformCostItem("dns", D("7"), currency="XYZ"),
    )
    assert amounts(result, LineKind.PLATFORM, "lb") == {
        ("t1", "a1"): D("10"),
        ("t1", "a2"): D("30"),
        ("t2", "a3"): D("0"),
    }
    assert not [line for line in result.lines if line.cost_type == "dns"]
    assert [(c.cost_type, c.amount, c.currency) for c in result.unpriced_costs] == [
        ("dns", D("7"), "XYZ"),
        ("lb", D("7.5"), "EUR"),
    ]
    assert result.unpriced_costs[1].describe() == "lb 7.5 EUR"
    assert result.total == D("40")
    assert _platform(PlatformCostItem("lb", D("1"))).unpriced_costs == ()


def test_a_platform_cost_in_another_currency_must_still_be_in_the_period() -> None:
    with pytest.raises(PricingError, match="outside the period"):
        _platform(PlatformCostItem("lb", D("5"), currency="EUR", at=day(1, 2)))


def test_an_app_whose_owner_changed_counts_once_among_the_active_apps() -> None:
    # The walkthrough's June: app c moved from team web to team idle on June 15 (2
    # invocations before, 3 after), app a 1 invocation. misc 1.2 even, control_plane 3 floor
    # 0.25 + share by invocations. Counted once per owner, c paid two even shares and two
    # floors among "3 active apps" (a got 0.625 of control_plane, c 2.375).
    document = book(
        {"meter": "invocations", "model": "per_unit", "unit_price": "0.5", "free_allowance": 3},
        platform_costs=[
            {"cost_type": "*", "method": "even"},
            {
                "cost_type": "control_plane",
                "method": "floor_plus_share",
                "floor": "0.25",
                "meter": "invocations",
            },
        ],
    )
    rows = [
        row("c", "invocations", 2, team="web", cc="cc-eng"),
        row("c", "invocations", 3, team="idle", cc="cc-idle"),
        row("a", "invocations", 1, team="web", cc="cc-eng"),
    ]
    costs = [PlatformCostItem("misc", D("1.2")), PlatformCostItem("control_plane", D("3"))]
    result = price_usage(document, JANUARY, rows, costs)
    # c's invocations: 5 - 3 free = 2 x 0.5 = 1.00, split 2:3 -> web 0.40, idle 0.60
    assert usage_line(result, "c", "invocations", team="web").amount == D("0.4")
    # misc: 2 apps, 0.60 each; c's 0.60 split by its usage charges 0.40 : 0.60
    assert amounts(result, LineKind.PLATFORM, "misc") == {
        ("web", "a"): D("0.6"),
        ("web", "c"): D("0.24"),
        ("idle", "c"): D("0.36"),
    }
    # control_plane: floors 2 x 0.25; the other 2.50 by invocations 5:1 -> c 7/3, a 2/3;
    # c's 7/3 split by its invocations 2:3 -> web 14/15, idle 7/5
    assert amounts(result, LineKind.PLATFORM, "control_plane") == {
        ("web", "a"): D("0.666667"),
        ("web", "c"): D("0.933333"),
        ("idle", "c"): D("1.4"),
    }
    lines = {(x.cost_type, x.team, x.app): x for x in result.lines}
    web_c = lines[("control_plane", "web", "c")]
    assert web_c.pricing_rule == "platform cost control_plane: 3 USD shared by 2 active apps"
    assert web_c.allocation_method == (
        "floor 0.25 + share of the rest by invocations: 5 of 6; app 'c' had 2 owners in the "
        "period, this one's part by invocations: 2 of 5"
    )
    assert web_c.quantity == D(2)
    assert lines[("misc", "idle", "c")].allocation_method == (
        "even per active app; app 'c' had 2 owners in the period, this one's part by its "
        "usage charges: 0.6 of 1"
    )
    assert lines[("misc", "web", "a")].allocation_method == "even per active app"


def test_an_app_with_two_owners_and_no_charges_splits_its_share_evenly() -> None:
    document = book(
        {"meter": "invocations", "model": "per_unit", "unit_price": "0"},
        platform_costs=[
            {"cost_type": "*", "method": "even"},
            {"cost_type": "ops", "method": "direct", "to": {"app": "c"}},
        ],
    )
    rows = [
        row("c", "invocations", 2, team="web"),
        row("c", "invocations", 3, team="idle"),
        row("a", "invocations", 1),
    ]
    costs = [PlatformCostItem("misc", D("1")), PlatformCostItem("ops", D("1"))]
    result = price_usage(document, JANUARY, rows, costs)
    assert amounts(result, LineKind.PLATFORM, "misc") == {
        ("t1", "a"): D("0.5"),
        ("idle", "c"): D("0.25"),
        ("web", "c"): D("0.25"),
    }
    assert amounts(result, LineKind.PLATFORM, "ops") == {
        ("idle", "c"): D("0.5"),
        ("web", "c"): D("0.5"),
    }
    ops = next(x for x in result.lines if x.cost_type == "ops" and x.team == "web")
    assert ops.allocation_method == (
        "direct to app 'c'; app 'c' had 2 owners in the period, this one's part evenly "
        "(no usage of the basis, no usage charges)"
    )


RESERVED_CPU = {"meter": "cpu_seconds", "model": "per_unit", "unit_price": "0.01"}
CPU_USAGE = [
    row("a1", "cpu_seconds", 1000),
    row("a2", "cpu_seconds", 3000, team="t2", cc="cc2"),
]


def test_reserved_capacity_credit_goes_to_the_teams_that_used_the_meter() -> None:
    document = book(
        RESERVED_CPU, reservations=[{"name": "ri", "meter": "cpu_seconds", "credit": 8}]
    )
    result = price_usage(document, JANUARY, CPU_USAGE)
    # charges 10 + 30; the credit 8 is shared by usage 1000:3000
    assert amounts(result, LineKind.RESERVATION, "reserved_capacity") == {
        "t1": D("-2"),
        "t2": D("-6"),
    }
    assert result.total == D("32")
    assert result.unused_reservation_credit == {"ri": D("0")}


def test_a_credit_never_exceeds_the_meters_charges() -> None:
    document = book(
        RESERVED_CPU, reservations=[{"name": "ri", "meter": "cpu_seconds", "credit": 50}]
    )
    result = price_usage(document, JANUARY, CPU_USAGE)
    # only 40 was charged: 40 is credited (10:30) and 10 is unused
    assert amounts(result, LineKind.RESERVATION, "reserved_capacity") == {
        "t1": D("-10"),
        "t2": D("-30"),
    }
    assert result.unused_reservation_credit == {"ri": D("10")}
    assert result.total == 0


def test_a_team_that_paid_nothing_for_the_meter_gets_no_credit() -> None:
    # The walkthrough's July: where2eat (team facilities) 1000 cpu-s under a 100% discount
    # (paid 0), app a (team web) 100 cpu-s = 1.00; credit 15. Split by quantity it gave
    # facilities -0.909091 (its cost center ended negative) and web -0.090909 of its 1.00.
    document = book(
        RESERVED_CPU,
        discounts=[{"name": "w2e-eval", "percent": 100, "applies_to": {"app": "where2eat"}}],
        reservations=[{"name": "cpu-commit", "meter": "cpu_seconds", "credit": 15}],
    )
    rows = [
        row("where2eat", "cpu_seconds", 1000, team="facilities", cc="cc-fin"),
        row("a", "cpu_seconds", 100, team="web", cc="cc-eng"),
    ]
    result = price_usage(document, JANUARY, rows)
    credits = [x for x in result.lines if x.kind is LineKind.RESERVATION]
    assert [(x.cost_center, x.team, x.amount, x.quantity) for x in credits] == [
        ("cc-eng", "web", D("-1"), D("100"))
    ]
    assert (
        credits[0].allocation_method == "proportional to the team's charges for cpu_seconds: 1 of 1"
    )
    assert credits[0].pricing_rule == (
        "reserved capacity 'cpu-commit': credit 1 on cpu_seconds (capped at the meter's charges)"
    )
    assert result.unused_reservation_credit == {"cpu-commit": D("14")}
    for center in ("cc-eng", "cc-fin"):
        assert sum(x.amount for x in result.lines if x.cost_center == center) == 0


def test_a_credit_is_shared_by_what_each_team_paid_not_by_quantity() -> None:
    # Same quantities, t2 pays three times t1's price: 10.00 and 30.00; credit 8 -> 2 : 6.
    # A third team under a 100% discount used the most and gets nothing.
    document = book(
        RESERVED_CPU,
        {
            "meter": "cpu_seconds",
            "scope": {"team": "t2"},
            "model": "per_unit",
            "unit_price": "0.03",
        },
        discounts=[{"name": "free", "percent": 100, "applies_to": {"team": "t3"}}],
        reservations=[{"name": "ri", "meter": "cpu_seconds", "credit": 8}],
    )
    rows = [
        row("a1", "cpu_seconds", 1000),
        row("a2", "cpu_seconds", 1000, team="t2", cc="cc2"),
        row("a3", "cpu_seconds", 9000, team="t3", cc="cc3"),
    ]
    result = price_usage(document, JANUARY, rows)
    assert amounts(result, LineKind.RESERVATION, "reserved_capacity") == {
        "t1": D("-2"),
        "t2": D("-6"),
    }
    assert result.total == D("32")


def test_a_second_reservation_shares_what_the_first_left_of_each_team() -> None:
    # charges t1 10, t2 30. ri-1 20 -> 5 : 15, leaving 5 : 15; ri-2 30 -> capped at the
    # 20 left, 5 : 15; each team's credits come to exactly its charges, 10 of ri-2 unused
    document = book(
        RESERVED_CPU,
        reservations=[
            {"name": "ri-1", "meter": "cpu_seconds", "credit": 20},
            {"name": "ri-2", "meter": "cpu_seconds", "credit": 30},
        ],
    )
    result = price_usage(document, JANUARY, CPU_USAGE)
    credits = {
        (x.team, x.pricing_rule.split("'")[1]): x.amount
        for x in result.lines
        if x.kind is LineKind.RESERVATION
    }
    assert credits == {
        ("t1", "ri-1"): D("-5"),
        ("t2", "ri-1"): D("-15"),
        ("t1", "ri-2"): D("-5"),
        ("t2", "ri-2"): D("-15"),
    }
    assert result.unused_reservation_credit == {"ri-1": D("0"), "ri-2": D("10")}
    assert result.total == 0


def test_a_credit_is_prorated_across_versions() -> None:
    history = _history(
        (RESERVED_CPU, 1, day(1), day(1)),
        (RESERVED_CPU, 2, day(16), day(1)),
        reservations=[{"name": "ri", "meter": "cpu_seconds", "credit": 31}],
    )
    bigger = history.versions[1].document.model_copy(
        update={
            "reservations": [
                history.versions[1].document.reservations[0].model_copy(update={"credit": D(62)})
            ]
        }
    )
    history = PriceBookHistory([history.versions[0], PriceBookVersion(bigger, day(1))])
    rows = [row("a1", "cpu_seconds", 10000, at=day(2))]
    result = price_period(history, JANUARY, rows)
    # 31 for 15 of 31 days + 62 for 16 of 31 days = 15 + 32 = 47 (charges: 100)
    assert amounts(result, LineKind.RESERVATION, "reserved_capacity") == {"t1": D("-47")}


def test_lines_are_sorted_and_total_is_their_sum() -> None:
    result = _platform(PlatformCostItem("lb", D("4")), PlatformCostItem("oncall", D("1")))
    assert [line.sort_key for line in result.lines] == sorted(
        line.sort_key for line in result.lines
    )
    assert result.total == sum(line.amount for line in result.lines)
    assert result.total == D("5")


def _platform_history(v2_platform: dict[str, Any]) -> PriceBookHistory:
    prices = [
        {"meter": m, "model": "per_unit", "unit_price": "0"} for m in ("requests", "invocations")
    ]
    v1 = book(*prices, **PLATFORM_BOOK)
    v2 = book(*prices, version=2, **v2_platform).model_copy(update={"effective_from": day(16)})
    return PriceBookHistory([PriceBookVersion(v1, day(1)), PriceBookVersion(v2, day(1))])


def test_a_version_that_keeps_a_cost_types_policy_leaves_its_allocation_as_it_was() -> None:
    # v2 changes nothing of control_plane's policy: one allocation over the whole month, one
    # floor per app. Split at Jan 16 (as it had been), every app got two floors of 2: 12 of
    # the 20 instead of 6.
    usage = [replace(r, at=day(5)) for r in PLATFORM_USAGE[:4]]
    costs = [
        PlatformCostItem("control_plane", D("10"), at=day(5)),
        PlatformCostItem("control_plane", D("10"), at=day(20)),
    ]
    single = price_usage(
        _platform_history(PLATFORM_BOOK).versions[0].document, JANUARY, usage, costs
    )
    both = price_period(_platform_history(PLATFORM_BOOK), JANUARY, usage, costs)
    # floors 2 + 2; the other 16 by invocations 300:100 = 12, 4
    expected = {("t1", "a1"): D("14"), ("t1", "a2"): D("6")}
    assert amounts(single, LineKind.PLATFORM, "control_plane") == expected
    assert amounts(both, LineKind.PLATFORM, "control_plane") == expected
    line = next(x for x in both.lines if x.cost_type == "control_plane" and x.app == "a1")
    assert line.versions == (1, 2)
    assert line.pricing_rule == "platform cost control_plane: 20 USD shared by 2 active apps"


def test_a_changed_policy_shares_each_part_with_its_floor_pro_rata() -> None:
    # v2 (from Jan 16, 16 of January's 31 days) raises the floor to 4. v1's part: floor
    # 2 x 15/31 each, v2's part: 4 x 16/31 each.
    changed = {
        "platform_costs": [
            {
                "cost_type": "control_plane",
                "method": "floor_plus_share",
                "floor": 4,
                "meter": "invocations",
            },
        ]
    }
    usage = [replace(r, at=day(5)) for r in PLATFORM_USAGE[:4]]
    costs = [
        PlatformCostItem("control_plane", D("31"), at=day(5)),
        PlatformCostItem("control_plane", D("31"), at=day(20)),
    ]
    result = price_period(_platform_history(changed), JANUARY, usage, costs)
    lines = [x for x in result.lines if x.cost_type == "control_plane"]
    by_version = {(x.versions, x.app): x.amount for x in lines}
    # v1: floors 30/31 each; 31 - 60/31 = 901/31 by 300:100 -> a1 30/31 + 2703/124
    # = 2823/124 = 22.766129.., a2 30/31 + 901/124 = 1021/124 = 8.233870..
    assert by_version[((1,), "a1")] == D("22.766129")
    assert by_version[((1,), "a2")] == D("8.233871")
    # v2: floors 64/31 each; 31 - 128/31 = 833/31 by 300:100 -> a1 64/31 + 2499/124
    # = 2755/124 = 22.217741.., a2 64/31 + 833/124 = 1089/124 = 8.782258..
    assert by_version[((2,), "a1")] == D("22.217742")
    assert by_version[((2,), "a2")] == D("8.782258")
    assert sum(x.amount for x in lines) == D("62")
    a1_v1 = next(x for x in lines if x.versions == (1,) and x.app == "a1")
    assert a1_v1.allocation_method.startswith(
        "floor 2 x 48.39% of the period (its part under this policy) + share of the rest"
    )
