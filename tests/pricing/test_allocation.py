"""Allocation: hand-computed shares for each method, and properties over random inputs."""

from __future__ import annotations

from decimal import Decimal as D
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quartermaster.domain.money import LINE_QUANTUM, round_line
from quartermaster.pricing.allocation import AllocationMethod, allocate, exact_shares, round_exact

M = AllocationMethod


def test_proportional_gives_the_leftover_quantum_to_the_largest_remainder() -> None:
    # exact: 33.3333333..., 66.6666666...; floors 33.333333 + 66.666666 = 99.999999,
    # the last millionth goes to b (remainder .67 beats a's .33)
    assert allocate(D("100.00"), {"a": D(1), "b": D(2)}) == {
        "a": D("33.333333"),
        "b": D("66.666667"),
    }


def test_even_ties_go_in_key_order() -> None:
    # 1 / 3 = 0.333333 each, 0.000001 left over; equal remainders: the first key gets it
    shares = allocate(D(1), {"c": D(5), "b": D(0), "a": D(9)}, M.EVEN)
    assert shares == {"a": D("0.333334"), "b": D("0.333333"), "c": D("0.333333")}


def test_proportional_with_zero_weights_falls_back_to_even() -> None:
    assert allocate(D(10), {"a": D(0), "b": D(0)}) == {"a": D(5), "b": D(5)}


def test_floor_plus_share() -> None:
    # 3 apps pay the floor 1 each; the remaining 7 goes 3:1 to b and c
    shares = allocate(D(10), {"a": D(0), "b": D(3), "c": D(1)}, M.FLOOR_PLUS_SHARE, floor=D(1))
    assert shares == {"a": D(1), "b": D("6.25"), "c": D("2.75")}


def test_floor_plus_share_when_the_total_does_not_cover_the_floors() -> None:
    # 2 < 3 floors of 1: shared evenly, 0.666666 each and two leftover millionths to a, b
    shares = allocate(D(2), {"a": D(5), "b": D(0), "c": D(1)}, M.FLOOR_PLUS_SHARE, floor=D(1))
    assert shares == {"a": D("0.666667"), "b": D("0.666667"), "c": D("0.666666")}


def test_hybrid() -> None:
    # 70 by usage 1:3 = 17.5 and 52.5; 30 evenly = 15 each
    shares = allocate(D(100), {"a": D(1), "b": D(3)}, M.HYBRID, proportional_share=D("0.7"))
    assert shares == {"a": D("32.5"), "b": D("67.5")}


def test_direct() -> None:
    shares = allocate(D(5), {"a": D(1), "b": D(2)}, M.DIRECT, target="ops")
    assert shares == {"a": D(0), "b": D(0), "ops": D(5)}


def test_a_negative_total_is_shared_like_its_absolute_value() -> None:
    shares = allocate(D(-1), {"a": D(1), "b": D(1), "c": D(1)}, M.EVEN)
    assert shares == {"a": D("-0.333334"), "b": D("-0.333333"), "c": D("-0.333333")}


def test_the_total_is_rounded_once_half_to_even() -> None:
    assert allocate(D("0.0000015"), {"a": D(1)}) == {"a": D("0.000002")}
    assert allocate(D("0.0000025"), {"a": D(1)}) == {"a": D("0.000002")}


def test_invalid_inputs_are_refused() -> None:
    with pytest.raises(ValueError, match="negative"):
        allocate(D(1), {"a": D(-1)})
    with pytest.raises(ValueError, match="no keys"):
        allocate(D(1), {})
    with pytest.raises(ValueError, match="target"):
        allocate(D(1), {"a": D(1)}, M.DIRECT)
    with pytest.raises(ValueError, match="proportional_share"):
        allocate(D(1), {"a": D(1)}, M.HYBRID, proportional_share=D(2))


def test_round_exact_keeps_the_rounded_sum() -> None:
    exact = {"a": Fraction(1, 3), "b": Fraction(1, 3), "c": Fraction(1, 3)}
    # in millionths: 333333.33 each, total exactly 1000000
    shares = round_exact({k: v / 1_000_000 for k, v in exact.items()})
    assert sum(shares.values()) == D("0.000001")
    with pytest.raises(ValueError, match="mix"):
        round_exact({"a": Fraction(1), "b": Fraction(-1)})


amounts = st.decimals(min_value=0, max_value=10**9, places=6, allow_nan=False, allow_infinity=False)
weights = st.dictionaries(
    st.text("abcdefgh", min_size=1, max_size=3),
    st.decimals(min_value=0, max_value=10**7, places=4, allow_nan=False, allow_infinity=False),
    min_size=1,
    max_size=25,
)
methods = st.sampled_from([M.PROPORTIONAL, M.EVEN, M.FLOOR_PLUS_SHARE, M.HYBRID, M.DIRECT])
floors = st.decimals(min_value=0, max_value=1000, places=2, allow_nan=False, allow_infinity=False)
shares_01 = st.decimals(min_value=0, max_value=1, places=3, allow_nan=False, allow_infinity=False)


@settings(max_examples=150, deadline=None)
@given(total=amounts, weights=weights, method=methods, floor=floors, share=shares_01)
def test_every_method_distributes_exactly_the_total(
    total: D, weights: dict[str, D], method: AllocationMethod, floor: D, share: D
) -> None:
    target = sorted(weights)[0]
    result = allocate(total, weights, method, floor=floor, proportional_share=share, target=target)
    assert sum(result.values()) == round_line(total)
    assert set(result) == set(weights)
    for value in result.values():
        assert value >= 0
        assert value == value.quantize(LINE_QUANTUM)  # no fraction of the quantum
    # each share is the floor or the ceiling of its exact share
    exact = exact_shares(
        Fraction(round_line(total)) / Fraction(LINE_QUANTUM),
        weights,
        method,
        floor=Fraction(floor) / Fraction(LINE_QUANTUM),
        proportional_share=share,
        target=target,
    )
    for key, value in result.items():
        assert abs(Fraction(value) / Fraction(LINE_QUANTUM) - exact[key]) < 1


@settings(max_examples=100, deadline=None)
@given(total=amounts, weights=weights, method=methods)
def test_allocation_does_not_depend_on_key_order(
    total: D, weights: dict[str, D], method: AllocationMethod
) -> None:
    target = sorted(weights)[-1]
    forward = allocate(total, weights, method, target=target)
    backward = allocate(total, dict(reversed(list(weights.items()))), method, target=target)
    assert forward == backward
    assert list(forward) == sorted(forward)


@settings(max_examples=100, deadline=None)
@given(total=amounts, weights=weights)
def test_a_credit_is_the_mirror_of_a_charge(total: D, weights: dict[str, D]) -> None:
    charge = allocate(total, weights)
    credit = allocate(-total, weights)
    assert credit == {key: -value for key, value in charge.items()}
