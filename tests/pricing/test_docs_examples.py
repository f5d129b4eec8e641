"""The worked examples of docs/pricing.md, priced with docs/examples/pricebook.yaml."""

from __future__ import annotations

from decimal import Decimal as D

from quartermaster.pricing.engine import price_usage
from quartermaster.pricing.lines import LineKind, PlatformCostItem, PricingResult, UsageRow
from quartermaster.pricing.loader import parse_price_book
from tests.pricing.support import EXAMPLE, JANUARY

GIB = 1073741824
EXAMPLE_BOOK = parse_price_book(EXAMPLE.read_text(), "yaml")


def row(
    app: str, meter: str, quantity: int, team: str = "web", life: str = "persistent"
) -> UsageRow:
    return UsageRow("cc-web", team, app, meter, D(quantity), life)


def amount_of(result: PricingResult, app: str | None, cost_type: str, team: str | None = None) -> D:
    (line,) = [
        x
        for x in result.lines
        if x.app == app and x.cost_type == cost_type and (team is None or x.team == team)
    ]
    return line.amount


def test_usage_examples() -> None:
    rows = [
        row("a", "invocations", 250_000),
        row("a", "tokens", 10_000_000),
        row("b", "tokens", 2_500_000),
        row("a", "compute_units", 12_000),
        row("b", "compute_units", 10_000),
        row("a", "network_bytes", 5 * GIB + GIB // 2),
        row("a", "duration_ms", 10_000_000),
        row("f", "cpu_seconds", 1_000_000, team="facilities", life="ephemeral"),
    ]
    result = price_usage(EXAMPLE_BOOK, JANUARY, rows)
    assert amount_of(result, "a", "invocations") == D("24.00")
    assert amount_of(result, "a", "tokens") == D("14.40")
    assert amount_of(result, "b", "tokens") == D("3.60")
    assert amount_of(result, "a", "compute_units") == D("72.00")
    assert amount_of(result, "b", "compute_units") == D("80.00")
    assert amount_of(result, "a", "network_bytes") == D("0.45")
    assert amount_of(result, "a", "duration_ms") == D("1.14")
    (spot,) = [x for x in result.lines if x.app == "f"]
    assert (spot.gross_amount, spot.discount_amount, spot.amount) == (
        D("30"),
        D("12.15"),
        D("17.85"),
    )
    assert spot.discounts == "ephemeral-spot 30%, nonprofit-programme 15%"


def test_platform_cost_examples() -> None:
    rows = [
        row("a", "requests", 600_000),
        row("b", "requests", 300_000),
        row("c", "requests", 100_000),
        row("a", "network_bytes", 2 * GIB),
        row("b", "network_bytes", GIB),
        row("a", "invocations", 300_000),
        row("b", "invocations", 100_000),
        row("c", "invocations", 100_000),
    ]
    costs = [
        PlatformCostItem("lb", D("100.00")),
        PlatformCostItem("cdn", D("90.00")),
        PlatformCostItem("control_plane", D("10.00")),
        PlatformCostItem("security_review", D("1.00")),  # no policy of its own: "*" is even
    ]
    result = price_usage(EXAMPLE_BOOK, JANUARY, rows, costs)
    expected = {
        "lb": ("60", "30", "10"),
        "cdn": ("51", "30", "9"),
        "control_plane": ("5.80", "2.10", "2.10"),
        "security_review": ("0.333334", "0.333333", "0.333333"),
    }
    for cost_type, (a, b, c) in expected.items():
        got = tuple(amount_of(result, app, cost_type) for app in ("a", "b", "c"))
        assert got == (D(a), D(b), D(c)), cost_type


def test_reservation_example() -> None:
    book = EXAMPLE_BOOK.model_copy(
        update={
            "reservations": [EXAMPLE_BOOK.reservations[0].model_copy(update={"credit": D(100)})]
        }
    )
    rows = [
        row("x1", "cpu_seconds", 3_000_000, team="x"),
        row("y1", "cpu_seconds", 2_000_000, team="y"),
    ]
    result = price_usage(book, JANUARY, rows)
    credits = {x.team: x.amount for x in result.lines if x.kind is LineKind.RESERVATION}
    assert credits == {"x": D("-60"), "y": D("-40")}
    bigger = book.model_copy(
        update={"reservations": [book.reservations[0].model_copy(update={"credit": D(200)})]}
    )
    assert price_usage(bigger, JANUARY, rows).unused_reservation_credit == {
        "compute-commitment-2026": D("50")
    }
    # team y's usage free of charge: x gets back all it paid (90), y nothing, 10 unused
    free_y = book.model_copy(
        update={
            "discounts": [
                *book.discounts,
                book.discounts[0].model_copy(
                    update={
                        "name": "y-free",
                        "percent": D(100),
                        "applies_to": book.discounts[0].applies_to.model_copy(
                            update={"lifecycle": None, "team": "y"}
                        ),
                        "meters": None,
                    }
                ),
            ]
        }
    )
    result = price_usage(free_y, JANUARY, rows)
    credits = {x.team: x.amount for x in result.lines if x.kind is LineKind.RESERVATION}
    assert credits == {"x": D("-90")}
    assert result.unused_reservation_credit == {"compute-commitment-2026": D("10")}
