"""Properties of rating, period pricing and the document format over random inputs."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from decimal import Decimal as D
from fractions import Fraction
from typing import Any

import yaml
from hypothesis import given, settings
from hypothesis import strategies as st

from quartermaster.domain.money import LINE_QUANTUM
from quartermaster.pricing.document import Graduated, Package, PerUnit, Tier, Volume
from quartermaster.pricing.engine import price_usage
from quartermaster.pricing.lines import LineKind, PlatformCostItem, PricedLine, UsageRow
from quartermaster.pricing.loader import (
    canonical_json,
    content_hash,
    document_from_json,
    parse_price_book,
    stored_json,
    validate_document,
)
from quartermaster.pricing.rating import rate_quantity, unit_price
from tests.pricing.support import JANUARY, book

quantities = st.decimals(
    min_value=0, max_value=10**9, places=3, allow_nan=False, allow_infinity=False
)
prices = st.decimals(min_value=0, max_value=100, places=6, allow_nan=False, allow_infinity=False)


@st.composite
def tier_lists(draw: st.DrawFn, *, non_increasing: bool = False) -> list[Tier]:
    bounds = sorted(
        draw(st.sets(st.integers(min_value=1, max_value=10**8), min_size=0, max_size=5))
    )
    tier_prices = draw(st.lists(prices, min_size=len(bounds) + 1, max_size=len(bounds) + 1))
    if non_increasing:
        tier_prices = sorted(tier_prices, reverse=True)
    ups: list[int | None] = [*bounds, None]
    return [
        Tier(up_to=None if up is None else D(up), unit_price=price)
        for up, price in zip(ups, tier_prices, strict=True)
    ]


@settings(max_examples=200, deadline=None)
@given(tiers=tier_lists(), a=quantities, b=quantities, free=quantities)
def test_graduated_is_monotonic_in_quantity(tiers: list[Tier], a: D, b: D, free: D) -> None:
    model = Graduated(model="graduated", tiers=tiers, free_allowance=free)
    low, high = sorted((a, b))
    assert rate_quantity(low, model).amount <= rate_quantity(high, model).amount


@settings(max_examples=200, deadline=None)
@given(tiers=tier_lists(non_increasing=True), quantity=quantities)
def test_volume_never_exceeds_graduated_when_prices_fall_with_volume(
    tiers: list[Tier], quantity: D
) -> None:
    graduated = rate_quantity(quantity, Graduated(model="graduated", tiers=tiers))
    volume = rate_quantity(quantity, Volume(model="volume", tiers=tiers))
    assert volume.amount <= graduated.amount
    # and within the first tier both are the same per-unit charge
    first = tiers[0].up_to
    if first is None or quantity <= first:
        assert volume.amount == graduated.amount


@settings(max_examples=200, deadline=None)
@given(price=prices, quantity=quantities, free=quantities)
def test_one_unbounded_tier_is_per_unit_pricing(price: D, quantity: D, free: D) -> None:
    tiers = [Tier(unit_price=price)]
    per_unit = rate_quantity(
        quantity, PerUnit(model="per_unit", unit_price=price, free_allowance=free)
    )
    for model in (
        Graduated(model="graduated", tiers=tiers, free_allowance=free),
        Volume(model="volume", tiers=tiers, free_allowance=free),
    ):
        assert rate_quantity(quantity, model).amount == per_unit.amount
    assert per_unit.amount == max(D(0), quantity - free) * price


@settings(max_examples=200, deadline=None)
@given(
    size=st.decimals(min_value="0.001", max_value=10**6, places=3, allow_nan=False),
    price=prices,
    quantity=quantities,
)
def test_package_charges_whole_packages(size: D, price: D, quantity: D) -> None:
    rated = rate_quantity(
        quantity, Package(model="package", package_size=size, package_price=price)
    )
    exact = Fraction(quantity) / Fraction(size) * Fraction(price)
    if price == 0:
        assert rated.amount == 0
        return
    assert exact <= Fraction(rated.amount) < exact + Fraction(price)
    packages = Fraction(rated.amount) / Fraction(price)
    assert packages.denominator == 1  # whole packages only


@st.composite
def usage_rows(draw: st.DrawFn) -> list[UsageRow]:
    owners = [
        ("cc1", "t1", "a1"),
        ("cc1", "t1", "a2"),
        ("cc2", "t2", "a3"),
        ("cc2", "t3", "a4"),
        ("default", "", ""),  # unattributed usage: no team, no app
    ]
    rows = draw(
        st.lists(
            st.tuples(
                st.sampled_from(owners),
                st.sampled_from(["tokens", "cpu", "requests"]),
                quantities,
                st.sampled_from(["persistent", "ephemeral"]),
            ),
            max_size=20,
        )
    )
    return [UsageRow(cc, team, app, meter, q, life) for (cc, team, app), meter, q, life in rows]


PROPERTY_BOOK = book(
    {
        "meter": "tokens",
        "pool": "team",
        "model": "graduated",
        "tiers": [
            {"up_to": 1000, "unit_price": "0.00"},
            {"up_to": 50000, "unit_price": "0.0021"},
            {"unit_price": "0.0013"},
        ],
    },
    {
        "meter": "cpu",
        "model": "subscription",
        "fee": "3.33",
        "included": 100,
        "pool": "tenant",
        "overage": {"model": "per_unit", "unit_price": "0.0007"},
    },
    {"meter": "requests", "model": "package", "package_size": 7, "package_price": "0.03"},
    discounts=[
        {"name": "spot", "percent": "33.3", "applies_to": {"lifecycle": "ephemeral"}},
        {"name": "t2", "percent": 5, "applies_to": {"team": "t2"}},
    ],
    platform_costs=[
        {"cost_type": "lb", "method": "hybrid", "meter": "requests", "proportional_share": "0.3"},
        {"cost_type": "cp", "method": "floor_plus_share", "floor": "0.7", "meter": "tokens"},
    ],
    reservations=[{"name": "ri", "meter": "cpu", "credit": "1.234567"}],
)


@settings(max_examples=100, deadline=None)
@given(
    rows=usage_rows(),
    lb=st.decimals(min_value=0, max_value=10**4, places=6, allow_nan=False),
    cp=st.decimals(min_value=0, max_value=10**4, places=6, allow_nan=False),
)
def test_period_pricing_is_exact_and_order_independent(rows: list[UsageRow], lb: D, cp: D) -> None:
    costs = [PlatformCostItem("lb", lb), PlatformCostItem("cp", cp)]
    result = price_usage(PROPERTY_BOOK, JANUARY, rows, costs)
    again = price_usage(PROPERTY_BOOK, JANUARY, list(reversed(rows)), list(reversed(costs)))
    assert again == result  # deterministic, whatever the input order
    assert result.total == sum(line.amount for line in result.lines)
    for line in result.lines:
        assert line.amount == line.amount.quantize(LINE_QUANTUM)
        assert line.amount == line.gross_amount - line.discount_amount
        if line.kind is LineKind.USAGE:
            assert line.amount >= 0
            assert line.discount_amount >= 0
    # unattributed usage (no app) is no active app: it takes no share of a platform cost
    active = {(r.cost_center, r.team, r.app) for r in rows if r.quantity > 0 and r.app}
    for cost_type, amount in (("lb", lb), ("cp", cp)):
        shared = sum(line.amount for line in result.lines if line.cost_type == cost_type)
        assert shared == (amount.quantize(LINE_QUANTUM) if amount else 0)
        if active and amount:
            assert {
                (x.cost_center, x.team, x.app) for x in result.lines if x.cost_type == cost_type
            } == active
    # a reservation's credit is either given out or reported unused, never both or neither
    credit = sum(line.amount for line in result.lines if line.kind is LineKind.RESERVATION)
    assert -credit + result.unused_reservation_credit["ri"] == D("1.234567")
    _requests_lines_match_their_exact_amounts(rows, result.lines)


def _requests_lines_match_their_exact_amounts(
    rows: list[UsageRow], lines: tuple[PricedLine, ...]
) -> None:
    """Recompute the app-pooled package meter independently: an app with one line (its own
    pool) is its exact amount rounded half to even; the lines of an app with several (one
    pool's charge split among them) are each within one quantum of their exact amounts and
    sum to their exact total rounded once."""
    rule = PROPERTY_BOOK.prices[2]
    per_line: dict[tuple[str, str, str, str], D] = {}
    per_app: dict[str, D] = {}
    for r in rows:
        if r.meter == "requests":
            key = (r.cost_center, r.team, r.app, r.lifecycle)
            per_line[key] = per_line.get(key, D(0)) + r.quantity
            per_app[r.app] = per_app.get(r.app, D(0)) + r.quantity
    exact: dict[tuple[str, str, str, str], Fraction] = {}
    for key, quantity in per_line.items():
        total = per_app[key[2]]
        charge = Fraction(rate_quantity(total, rule).amount)
        share = charge * Fraction(quantity) / Fraction(total) if total else charge
        factor = Fraction(1)
        if key[3] == "ephemeral":
            factor *= 1 - Fraction(D("33.3")) / 100
        if key[1] == "t2":
            factor *= 1 - Fraction(5, 100)
        exact[key] = share * factor
    got = {
        (x.cost_center, x.team or "", x.app or "", x.lifecycle or ""): x.amount
        for x in lines
        if x.kind is LineKind.USAGE and x.meter == "requests"
    }
    assert set(got) == set(exact)
    quantum = Fraction(LINE_QUANTUM)
    for app in {key[2] for key in got}:
        keys = [key for key in got if key[2] == app]
        if len(keys) == 1:
            assert Fraction(got[keys[0]]) == round(exact[keys[0]] / quantum) * quantum
        for key in keys:
            assert abs(Fraction(got[key]) - exact[key]) < quantum
        assert (
            Fraction(sum((got[key] for key in keys), D(0)))
            == round(sum((exact[key] for key in keys), Fraction(0)) / quantum) * quantum
        )


documents_data = st.fixed_dictionaries(
    {
        "name": st.from_regex(r"[a-z][a-z0-9-]{0,20}", fullmatch=True),
        "currency": st.sampled_from(["USD", "EUR", "JPY"]),
        "version": st.integers(min_value=1, max_value=10**6),
        "effective_from": st.datetimes(
            min_value=datetime(2000, 1, 1), max_value=datetime(2100, 1, 1), timezones=st.just(UTC)
        ).map(lambda d: d.isoformat()),
        "prices": st.lists(
            st.one_of(
                st.fixed_dictionaries(
                    {
                        "model": st.just("per_unit"),
                        "unit_price": prices.map(str),
                        "free_allowance": quantities.map(str),
                    }
                ),
                tier_lists().map(
                    lambda tiers: {
                        "model": "graduated",
                        "tiers": [t.model_dump(mode="json", exclude_none=True) for t in tiers],
                    }
                ),
                tier_lists().map(
                    lambda tiers: {
                        "model": "volume",
                        "tiers": [t.model_dump(mode="json", exclude_none=True) for t in tiers],
                    }
                ),
                st.fixed_dictionaries(
                    {
                        "model": st.just("package"),
                        "package_size": st.integers(1, 10**6),
                        "package_price": prices.map(str),
                    }
                ),
                st.fixed_dictionaries(
                    {
                        "model": st.just("subscription"),
                        "fee": prices.map(str),
                        "included": st.integers(0, 10**6),
                        "overage": st.fixed_dictionaries(
                            {"model": st.just("per_unit"), "unit_price": prices.map(str)}
                        ),
                    }
                ),
            ),
            min_size=1,
            max_size=6,
        ),
    }
)


def _with_meters(data: dict[str, Any]) -> dict[str, Any]:
    return {
        **data,
        "prices": [{"meter": f"m{i}", **rule} for i, rule in enumerate(data["prices"])],
    }


@settings(max_examples=60, deadline=None)
@given(data=documents_data)
def test_documents_round_trip_through_json_and_yaml(data: dict[str, Any]) -> None:
    document = validate_document(_with_meters(data))
    stored = canonical_json(document)
    assert document_from_json(stored) == document
    assert parse_price_book(stored, "json") == document
    as_yaml = yaml.safe_dump(json.loads(stored))
    assert parse_price_book(as_yaml, "yaml") == document
    assert canonical_json(parse_price_book(as_yaml, "yaml")) == stored


@given(
    amount=st.decimals(min_value=0, max_value=10**7, places=6),
    quantity=st.decimals(min_value=D("1e-12"), max_value=10**15, places=12),
)
def test_a_unit_price_times_its_quantity_gives_the_amount(amount: D, quantity: D) -> None:
    # FOCUS: ListUnitPrice x PricingQuantity must produce ListCost; a per-byte price cut at
    # 1e-12 (18,980,610,118 bytes, 1.53) had come to 1.537429.
    price = unit_price(Fraction(amount), quantity)
    assert abs(price * quantity - amount) <= D("1e-7")
    if Fraction(amount) / Fraction(quantity) == Fraction(price):
        return
    assert price.as_tuple().exponent >= -30  # never an endless expansion


_PLAIN_NUMBER = re.compile(r"^\d+(\.\d+)?$")
_NUMBER_FIELDS = frozenset(
    {"unit_price", "free_allowance", "up_to", "package_size", "package_price", "fee", "included"}
)


def _respell(value: D, style: int) -> str:
    """The same number written another way: exponent form, extra trailing zeros, or as is."""
    if style == 0:
        return f"{value:E}"
    if style == 1:
        return f"{value:f}" + ("0" * 3 if "." in f"{value:f}" else ".000")
    return str(value)


def _numbers(data: Any) -> list[str]:
    if isinstance(data, dict):
        found = [v for k, v in data.items() if k in _NUMBER_FIELDS and isinstance(v, str)]
        return found + [n for v in data.values() for n in _numbers(v)]
    if isinstance(data, list):
        return [n for v in data for n in _numbers(v)]
    return []


@settings(max_examples=80, deadline=None)
@given(
    price=st.decimals(min_value=0, max_value=10**6, places=9, allow_nan=False),
    allowance=st.decimals(min_value=0, max_value=10**9, places=3, allow_nan=False),
    styles=st.tuples(st.integers(0, 2), st.integers(0, 2), st.integers(0, 2), st.integers(0, 2)),
    fmt=st.sampled_from(["json", "yaml"]),
)
def test_spelling_of_a_number_changes_neither_hash_nor_plain_output(
    price: D, allowance: D, styles: tuple[int, int, int, int], fmt: str
) -> None:
    """0.010 and 0.01, 150.00 and 150, 9E-7 and 0.0000009 are the same price: the content hash
    does not depend on how it is written, and no stored or canonical text has an exponent."""

    def document(price_text: str, allowance_text: str) -> str:
        rule = f'"model":"per_unit","unit_price":{price_text},"free_allowance":{allowance_text}'
        return (
            '{"name":"b","currency":"EUR","version":1,'
            '"effective_from":"2026-01-01T00:00:00Z",'
            f'"prices":[{{"meter":"tokens",{rule}}}]}}'
        )

    first = document(_respell(price, styles[0]), _respell(allowance, styles[1]))
    second = document(_respell(price, styles[2]), _respell(allowance, styles[3]))
    if fmt == "yaml":  # the same document in YAML (JSON is YAML); numbers stay as written
        first, second = first.replace('":', '": '), second.replace('":', '": ')
    one = parse_price_book(first, fmt)  # type: ignore[arg-type]
    two = parse_price_book(second, fmt)  # type: ignore[arg-type]
    assert content_hash(one) == content_hash(two)
    assert canonical_json(one) == canonical_json(two)
    for text in (canonical_json(one), stored_json(one), stored_json(two)):
        numbers = _numbers(json.loads(text))
        assert len(numbers) == 2
        assert all(_PLAIN_NUMBER.match(n) for n in numbers), numbers
        assert (D(numbers[0]), D(numbers[1])) == (price, allowance)
    assert document_from_json(stored_json(one)) == two


@settings(max_examples=60, deadline=None)
@given(data=documents_data)
def test_stored_and_canonical_texts_never_have_an_exponent(data: dict[str, Any]) -> None:
    document = validate_document(_with_meters(data))
    for text in (canonical_json(document), stored_json(document)):
        numbers = _numbers(json.loads(text))
        assert numbers
        assert all(_PLAIN_NUMBER.match(n) for n in numbers), numbers


CREDIT_BOOK = book(
    {"meter": "cpu", "model": "per_unit", "unit_price": "0.01"},
    {"meter": "cpu", "scope": {"team": "t3"}, "model": "per_unit", "unit_price": "0.1"},
    {
        "meter": "cpu",
        "scope": {"team": "t4"},
        "model": "graduated",
        "tiers": [{"up_to": 500, "unit_price": "0"}, {"unit_price": "0.02"}],
    },
    discounts=[
        {"name": "free", "percent": 100, "applies_to": {"team": "t2"}},
        {"name": "spot", "percent": "33.3", "applies_to": {"lifecycle": "ephemeral"}},
    ],
    reservations=[
        {"name": "ri-1", "meter": "cpu", "credit": "7.777777"},
        {"name": "ri-2", "meter": "cpu", "credit": "3.5"},
    ],
)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(
                [("cc1", "t1", "a1"), ("cc2", "t2", "a2"), ("cc3", "t3", "a3"), ("cc3", "t4", "a4")]
            ),
            st.decimals(min_value=0, max_value=5000, places=2, allow_nan=False),
            st.sampled_from(["persistent", "ephemeral"]),
        ),
        max_size=12,
    ),
    scale=st.sampled_from([D(1), D("0.001"), D(100)]),
)
def test_no_team_is_credited_more_than_it_was_charged_for_the_meter(
    rows: list[tuple[tuple[str, str, str], D, str]], scale: D
) -> None:
    """A reserved-capacity credit line never exceeds what its (cost center, team) was charged
    for the meter, net of discounts: a team under a 100% discount (t2) gets nothing and no
    cost center goes below 0; what is not given out is reported unused."""
    usage = [UsageRow(cc, t, app, "cpu", q * scale, life) for (cc, t, app), q, life in rows]
    result = price_usage(CREDIT_BOOK, JANUARY, usage)
    charged: dict[tuple[str, str | None], D] = {}
    credited: dict[tuple[str, str | None], D] = {}
    for line in result.lines:
        into = credited if line.kind is LineKind.RESERVATION else charged
        into[(line.cost_center, line.team)] = (
            into.get((line.cost_center, line.team), D(0)) + line.amount
        )
    for pair, credit in credited.items():
        assert credit < 0
        assert -credit <= charged.get(pair, D(0)), pair
    assert ("cc2", "t2") not in credited
    for center in {cc for cc, _ in charged}:
        assert (
            sum(v for (cc, _), v in {**charged}.items() if cc == center)
            + sum(v for (cc, _), v in credited.items() if cc == center)
            >= 0
        )
    given_out = -sum(credited.values(), D(0))
    unused = sum(result.unused_reservation_credit.values(), D(0))
    assert given_out + unused == D("11.277777")
    assert given_out == min(D("11.277777"), sum(charged.values(), D(0)))


OWNERS_BOOK = book(
    {"meter": "requests", "model": "per_unit", "unit_price": "0.001"},
    {"meter": "tokens", "model": "per_unit", "unit_price": "0"},
    platform_costs=[
        {"cost_type": "ev", "method": "even"},
        {"cost_type": "fl", "method": "floor_plus_share", "floor": "0.5", "meter": "requests"},
    ],
)


@settings(max_examples=150, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(["a1", "a2", "a3"]),
            st.sampled_from([("cc1", "t1"), ("cc2", "t2"), ("cc2", "t3")]),
            st.sampled_from(["requests", "tokens"]),
            st.decimals(min_value=0, max_value=10**4, places=1, allow_nan=False),
        ),
        min_size=1,
        max_size=12,
    ),
    ev=st.decimals(min_value=0, max_value=100, places=6, allow_nan=False),
    fl=st.decimals(min_value=0, max_value=100, places=6, allow_nan=False),
)
def test_an_app_counts_once_however_many_owners_it_had(
    rows: list[tuple[str, tuple[str, str], str, D]], ev: D, fl: D
) -> None:
    """Each active app's lines of an even cost add up to one even share (within a quantum
    per line), and of a floor_plus_share cost to at least one floor when the floors are
    covered, never one per owner; every owner line it was active under has a line."""
    usage = [UsageRow(cc, team, app, meter, q) for app, (cc, team), meter, q in rows]
    result = price_usage(
        OWNERS_BOOK, JANUARY, usage, [PlatformCostItem("ev", ev), PlatformCostItem("fl", fl)]
    )
    active_keys = {(r.cost_center, r.team, r.app) for r in usage if r.quantity > 0}
    apps = {key[2] for key in active_keys}
    quantum = Fraction(LINE_QUANTUM)
    for cost_type, amount in (("ev", ev), ("fl", fl)):
        lines = [x for x in result.lines if x.cost_type == cost_type]
        assert sum(x.amount for x in lines) == amount
        if not apps or not amount:
            continue
        assert {(x.cost_center, x.team, x.app) for x in lines} == active_keys
        assert {x.pricing_rule.rsplit("shared by ", 1)[1] for x in lines} == {
            f"{len(apps)} active apps"
        }
        for app in apps:
            mine = [x for x in lines if x.app == app]
            paid = Fraction(sum(x.amount for x in mine))
            if cost_type == "ev":
                assert abs(paid - Fraction(amount) / len(apps)) <= len(mine) * quantum
            elif amount > D("0.5") * len(apps):
                assert paid >= Fraction(D("0.5")) - len(mine) * quantum
                assert (
                    paid
                    <= Fraction(amount) - (len(apps) - 1) * Fraction(D("0.5")) + len(mine) * quantum
                )


ROUNDING_BOOK = book(
    {"meter": "tokens", "model": "per_unit", "unit_price": "0.0000007"},
    {
        "meter": "cpu",
        "pool": "team",
        "model": "graduated",
        "tiers": [{"up_to": 10, "unit_price": "0.0000013"}, {"unit_price": "0.00000031"}],
    },
)


@settings(max_examples=200, deadline=None)
@given(
    rows=st.lists(
        st.tuples(
            st.sampled_from(
                [("cc1", "t1", "a1"), ("cc1", "t1", "a2"), ("cc2", "t2", "a3"), ("cc2", "t2", "a4")]
            ),
            st.sampled_from(["tokens", "cpu"]),
            st.decimals(min_value=0, max_value=10**4, places=3, allow_nan=False),
        ),
        max_size=12,
    )
)
def test_independent_lines_round_half_even_and_a_split_sums_to_its_charge(
    rows: list[tuple[tuple[str, str, str], str, D]],
) -> None:
    """DESIGN.md: money is rounded once, at the line, half to even. A line that is its own
    pool (tokens, per app) is its exact amount rounded half to even, so identical usage is
    billed identically; the lines a team pool's charge is split among (cpu) sum exactly to
    the charge rounded once; and the total is the sum of the lines."""
    usage = [UsageRow(cc, team, app, meter, q) for (cc, team, app), meter, q in rows]
    result = price_usage(ROUNDING_BOOK, JANUARY, usage)
    assert result.total == sum((line.amount for line in result.lines), D(0))
    quantum = Fraction(LINE_QUANTUM)
    tokens: dict[str, D] = {}
    cpu: dict[str, D] = {}
    for (_, team, app), meter, q in rows:
        into = tokens if meter == "tokens" else cpu
        key = app if meter == "tokens" else team
        into[key] = into.get(key, D(0)) + q
    for line in result.lines:
        if line.meter == "tokens":
            exact = Fraction(tokens[line.app or ""]) * Fraction(D("0.0000007"))
            assert Fraction(line.amount) == round(exact / quantum) * quantum
    for team, quantity in cpu.items():
        charge = Fraction(rate_quantity(quantity, ROUNDING_BOOK.prices[1]).amount)
        parts = [x.amount for x in result.lines if x.meter == "cpu" and x.team == team]
        assert Fraction(sum(parts, D(0))) == round(charge / quantum) * quantum
    # the same usage is billed the same
    by_quantity: dict[D, set[D]] = {}
    for line in result.lines:
        if line.meter == "tokens":
            by_quantity.setdefault(line.quantity, set()).add(line.amount)
    assert all(len(amounts) == 1 for amounts in by_quantity.values())
