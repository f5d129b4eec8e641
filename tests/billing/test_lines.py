"""Billing lines from the pricing engine: a hand-computed invoice and properties of totals,
shared-cost allocation and adjustment diffs."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from quartermaster.billing.calculator import PeriodInputs, PricingContext, price_inputs
from quartermaster.billing.lines import (
    LineDraft,
    adjustment_lines,
    audit_key,
    issued_by_key,
    total_of,
)
from quartermaster.billing.models import CostType
from quartermaster.domain.money import round_line
from quartermaster.pricing.history import PriceBookHistory, PriceBookVersion
from quartermaster.pricing.lines import PlatformCostItem, UsageRow
from tests.billing.support import (
    JANUARY,
    SMALL_COSTS,
    SMALL_PLATFORM,
    SMALL_TOTAL,
    book,
)

ISSUED_AT = datetime(2026, 2, 2, tzinfo=UTC)


def _price(rows: list[UsageRow], costs: list[PlatformCostItem]) -> list[LineDraft]:
    history = PriceBookHistory([PriceBookVersion(book(), datetime(2025, 12, 1, tzinfo=UTC))])
    context = PricingContext(history=history, units={"requests": "request"})
    inputs = PeriodInputs(tuple(rows), tuple(costs), as_of=ISSUED_AT)
    return list(price_inputs(context, JANUARY, inputs).lines)


def _by(lines: list[LineDraft], cost_type: CostType, app: str | None, item: str) -> LineDraft:
    (found,) = [
        line
        for line in lines
        if line.cost_type is cost_type and line.app == app and line.item == item
    ]
    return found


def test_small_platform_invoice_matches_the_hand_computation() -> None:
    lines = _price(SMALL_PLATFORM, SMALL_COSTS)
    expected = {
        (CostType.USAGE, "web", "cpu_seconds"): "8.000000",
        (CostType.USAGE, "web", "requests"): "10.000000",
        (CostType.USAGE, "api", "cpu_seconds"): "0.000000",
        (CostType.USAGE, "api", "requests"): "5.000000",
        (CostType.USAGE, "etl", "requests"): "2.000000",
        (CostType.DISCOUNT, "etl", "requests"): "-0.200000",
        (CostType.SUBSCRIPTION, "etl", "storage_gb_days"): "12.500000",
        (CostType.PLATFORM, "web", "lb"): "17.647059",
        (CostType.PLATFORM, "api", "lb"): "8.823529",
        (CostType.PLATFORM, "etl", "lb"): "3.529412",
        (CostType.PLATFORM, "web", "control_plane"): "3.000000",
        (CostType.PLATFORM, "api", "control_plane"): "3.000000",
        (CostType.PLATFORM, "etl", "control_plane"): "3.000000",
    }
    got = {(line.cost_type, line.app, line.item): str(line.amount) for line in lines}
    assert got == expected
    assert total_of(lines) == SMALL_TOTAL
    web_cpu = _by(lines, CostType.USAGE, "web", "cpu_seconds")
    assert web_cpu.pricing_rule == "graduated: 1000 @ 0 + 4000 @ 0.002"
    assert web_cpu.unit_price == Decimal("0.0016")
    discount = _by(lines, CostType.DISCOUNT, "etl", "requests")
    assert discount.parent_key == _by(lines, CostType.USAGE, "etl", "requests").line_key
    assert "data-team 10%" in discount.pricing_rule
    lb_web = _by(lines, CostType.PLATFORM, "web", "lb")
    assert lb_web.allocation_method == "proportional to requests: 20000 of 34000"
    assert lb_web.unit == "request"


def test_lines_are_ordered_cost_center_team_app_meter() -> None:
    lines = _price(SMALL_PLATFORM, SMALL_COSTS)
    assert [(line.cost_center, line.team, line.app) for line in lines][:3] == [
        ("analytics", "data", "etl")
    ] * 3
    assert lines == sorted(lines, key=lambda line: line.sort_key)
    assert len({line.line_key for line in lines}) == len(lines)


def test_audit_key_is_deterministic_and_names_the_line() -> None:
    first = _price(SMALL_PLATFORM, SMALL_COSTS)
    second = _price(SMALL_PLATFORM, SMALL_COSTS)
    keys = [audit_key("acme", JANUARY, ISSUED_AT, line) for line in first]
    assert keys == [audit_key("acme", JANUARY, ISSUED_AT, line) for line in second]
    assert len(set(keys)) == len(keys)
    web_cpu = _by(first, CostType.USAGE, "web", "cpu_seconds")
    key = audit_key("acme", JANUARY, ISSUED_AT, web_cpu)
    assert key.startswith("20260101T0000Z-20260201T0000Z/usage/eng/web/web/cpu_seconds/")
    assert key != audit_key("acme", JANUARY, datetime(2026, 2, 3, tzinfo=UTC), web_cpu)


APPS = [("eng", "web", "web"), ("eng", "web", "api"), ("analytics", "data", "etl")]
METERS = ["cpu_seconds", "requests", "storage_gb_days"]
quantities = st.decimals(min_value=0, max_value=10**7, places=3, allow_nan=False)
usage_rows = st.lists(
    st.builds(
        lambda owner, meter, quantity, day: UsageRow(
            owner[0], owner[1], owner[2], meter, quantity, at=datetime(2026, 1, day, tzinfo=UTC)
        ),
        st.sampled_from(APPS),
        st.sampled_from(METERS),
        quantities,
        st.integers(min_value=1, max_value=31),
    ),
    max_size=12,
)
platform_costs = st.lists(
    st.builds(
        lambda cost_type, amount: PlatformCostItem(
            cost_type, amount, "USD", at=datetime(2026, 1, 1, tzinfo=UTC)
        ),
        st.sampled_from(["lb", "control_plane"]),
        st.decimals(min_value=0, max_value=10**5, places=4, allow_nan=False),
    ),
    max_size=4,
)


@settings(max_examples=60, deadline=None)
@given(rows=usage_rows, costs=platform_costs)
def test_total_is_the_sum_of_lines_and_shared_costs_are_allocated_exactly(
    rows: list[UsageRow], costs: list[PlatformCostItem]
) -> None:
    lines = _price(rows, costs)
    assert total_of(lines) == sum((line.amount for line in lines), Decimal(0))
    for line in lines:
        assert round_line(line.amount) == line.amount  # rounded once, upstream, to 1e-6
    active = {(r.cost_center, r.team, r.app) for r in rows if r.quantity > 0}
    for cost_type in ("lb", "control_plane"):
        shared = sum((c.amount for c in costs if c.cost_type == cost_type), Decimal(0))
        allocated = sum(
            (
                line.amount
                for line in lines
                if line.cost_type is CostType.PLATFORM and line.item == cost_type
            ),
            Decimal(0),
        )
        # Every cent of the shared amount lands on a line: none created, none lost.
        assert allocated == round_line(shared) or (shared == 0 and allocated == 0)
        if shared > 0 and active:
            owners = {
                (line.cost_center, line.team, line.app)
                for line in lines
                if line.cost_type is CostType.PLATFORM and line.item == cost_type
            }
            assert owners == active


@settings(max_examples=60, deadline=None)
@given(before=usage_rows, late=usage_rows, costs=platform_costs)
def test_adjustments_bring_issued_lines_to_the_recomputed_ones_and_are_then_empty(
    before: list[UsageRow], late: list[UsageRow], costs: list[PlatformCostItem]
) -> None:
    issued_lines = _price(before, costs)
    current = _price(before + late, costs)
    issued = issued_by_key([[(line, f"id{i}") for i, line in enumerate(issued_lines)]])
    corrections = adjustment_lines(current, issued, issued_as_of=ISSUED_AT)
    assert all(line.cost_type is CostType.ADJUSTMENT for line in corrections)
    # issued + corrections == current, per key and in total.
    assert total_of(issued_lines) + total_of(corrections) == total_of(current)
    after = issued_by_key(
        [
            [(line, f"id{i}") for i, line in enumerate(issued_lines)],
            [(line, f"adj{i}") for i, line in enumerate(corrections)],
        ]
    )
    by_key = {line.line_key: line for line in current}
    for key, entry in after.items():
        expected = by_key.get(key)
        assert entry.amount == (expected.amount if expected else 0)
        assert entry.quantity == (expected.quantity if expected else 0)
    assert adjustment_lines(current, after, issued_as_of=ISSUED_AT) == []
    for line in corrections:
        _assert_consistent(line)


def _assert_consistent(line: LineDraft) -> None:
    """An adjustment line's quantity, unit price and amount agree: quantity x unit price is
    the amount (to the unit price's 1e-12), or there is no unit price."""
    if line.unit_price is None:
        return
    assert line.quantity != 0, line
    assert abs(line.quantity * line.unit_price - line.amount) <= abs(line.quantity) * Decimal(
        "0.5e-12"
    ), line


def test_late_usage_gives_one_adjustment_line_per_changed_key() -> None:
    issued_lines = _price(SMALL_PLATFORM, SMALL_COSTS)
    late = UsageRow("eng", "web", "api", "cpu_seconds", Decimal(1500), at=JANUARY.start)
    current = _price([*SMALL_PLATFORM, late], SMALL_COSTS)
    issued = issued_by_key([[(line, f"id-{line.item}") for line in issued_lines]])
    corrections = adjustment_lines(current, issued, issued_as_of=ISSUED_AT)
    assert len(corrections) == 1
    (line,) = corrections
    assert (line.adjusted_cost_type, line.app, line.item) == (CostType.USAGE, "api", "cpu_seconds")
    assert line.quantity == 1500
    assert line.amount == Decimal("2.000000")  # 2000 s: 1000 free + 1000 x 0.002
    assert line.previous_amount == 0
    assert line.previous_quantity == 500
    assert "quantity 500 → 2000" in (line.reason or "")
    # The 1500 s more cost 2.00: 0.001333… each, not the re-rated line's 2.00 / 2000 s.
    assert line.unit_price == Decimal("0.001333333333")
    _assert_consistent(line)


def test_a_re_rated_line_has_no_unit_price_of_its_own() -> None:
    """The same 20000 requests now cost 12.00 instead of 10.00: the adjustment is 2.00 for no
    units, so it has no unit price (0 @ 0.0006 is not 2.00); the run's line and the new rule
    say what each unit costs."""
    issued_lines = _price(SMALL_PLATFORM, SMALL_COSTS)
    web = _by(issued_lines, CostType.USAGE, "web", "requests")
    rerated = replace(web, amount=Decimal("12.000000"), unit_price=Decimal("0.0006"), versions=(2,))
    current = [rerated if line is web else line for line in issued_lines]
    issued = issued_by_key([[(line, f"id{i}") for i, line in enumerate(issued_lines)]])
    (line,) = adjustment_lines(current, issued, issued_as_of=ISSUED_AT)
    assert (line.quantity, line.amount, line.unit_price) == (0, Decimal("2.000000"), None)
    assert "price book versions 1 → 2" in (line.reason or "")
    # Late usage billed at new prices mixes the two: its amount is no price of its units.
    more = replace(rerated, quantity=Decimal(21000), amount=Decimal("12.600000"))
    current = [more if line is web else line for line in issued_lines]
    (line,) = adjustment_lines(current, issued, issued_as_of=ISSUED_AT)
    assert (line.quantity, line.amount, line.unit_price) == (1000, Decimal("2.600000"), None)


def test_a_key_no_longer_billed_is_reversed() -> None:
    issued_lines = _price(SMALL_PLATFORM, [])
    gone = [row for row in SMALL_PLATFORM if row.app != "api"]
    current = _price(gone, [])
    issued = issued_by_key([[(line, "x") for line in issued_lines]])
    corrections = adjustment_lines(current, issued, issued_as_of=ISSUED_AT)
    reversed_api = [line for line in corrections if line.app == "api"]
    assert {line.item for line in reversed_api} == {"cpu_seconds", "requests"}
    requests = next(line for line in reversed_api if line.item == "requests")
    assert requests.amount == Decimal("-5.000000")
    assert requests.quantity == -10000
    assert requests.unit_price == Decimal("0.0005")  # -10000 @ 0.0005 = -5.00
    for line in corrections:
        _assert_consistent(line)
    assert "reversal" in (requests.reason or "")
    assert replace(requests, reason=None).cost_type is CostType.ADJUSTMENT


def test_a_discounted_line_shows_the_list_unit_price_and_its_discount_apart() -> None:
    """etl's requests at 0.0005 with the data team's 10% off: 1,523.8095 requests cost
    0.76190475 before the discount, which the net and the discount each round to 1e-6
    (0.685714 + 0.076190). The charge's unit price was derived from that rounded sum,
    0.000499999508 for a list price of 0.0005; it is the list price, the discount on its own
    line, and the amounts are as before."""
    odd = UsageRow("analytics", "data", "etl", "requests", Decimal("1523.8095"), at=JANUARY.start)
    lines = _price([odd], [])
    charge = _by(lines, CostType.USAGE, "etl", "requests")
    discount = _by(lines, CostType.DISCOUNT, "etl", "requests")
    assert charge.unit_price == Decimal("0.0005")
    assert (charge.amount, discount.amount) == (Decimal("0.761904"), Decimal("-0.076190"))
    assert discount.unit_price is None
    assert discount.parent_key == charge.line_key
    assert total_of(lines) == Decimal("0.685714")  # the engine's net, rounded once
    # quantity x list price is the undiscounted charge before rounding (within 1e-6 of it)
    assert abs(charge.quantity * charge.unit_price - charge.amount) <= Decimal("0.000001")


def test_a_line_priced_0_under_both_versions_is_no_re_rating() -> None:
    """api's cpu within the free tier under versions 1 and 2, with late usage: the note
    counted it as "re-rated by price book changes" and its unit price was null."""
    issued_lines = _price(SMALL_PLATFORM, [])
    api = _by(issued_lines, CostType.USAGE, "api", "cpu_seconds")
    assert api.amount == 0
    more = replace(api, quantity=Decimal(800), versions=(2,))
    current = [more if line is api else line for line in issued_lines]
    issued = issued_by_key([[(line, f"id{i}") for i, line in enumerate(issued_lines)]])
    (line,) = adjustment_lines(current, issued, issued_as_of=ISSUED_AT, issued_versions=(1,))
    assert (line.quantity, line.amount, line.unit_price) == (300, 0, 0)
    assert "price book versions" not in (line.reason or "")
    assert "quantity 500 → 800" in (line.reason or "")
    # A line that costs something under the new version is still a re-rating.
    priced = replace(more, amount=Decimal("0.600000"))
    current = [priced if line is api else line for line in issued_lines]
    (line,) = adjustment_lines(current, issued, issued_as_of=ISSUED_AT, issued_versions=(1,))
    assert "price book versions 1 → 2" in (line.reason or "")
    assert line.unit_price is None
