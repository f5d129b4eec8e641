"""The re-arming rule as a property: whatever sequence of budget changes, lifts and
evaluation passes a period sees, a budget has at most one enforcement in force, never two at
one hard limit, and after a lift a new one starts only at a limit no lift of the period had
(crossings.py `_forestalls`, `rearmed`)."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from quartermaster.domain.timeutil import Period
from quartermaster.guardrails.crossings import _forestalls, lifted_in, rearmed

PERIOD = Period(datetime(2026, 12, 1, tzinfo=UTC), datetime(2027, 1, 1, tzinfo=UTC))
UNIQUE = ("budget_id", "period_start", "hard_limit")
LIMITS = st.sampled_from([Decimal("10"), Decimal("15"), Decimal("30")])
# ("limit", L): the budget changed to L; ("lift",): the one in force lifted; ("pass",): an
# evaluation pass with the spend over every limit.
STEPS = st.lists(
    st.one_of(
        st.tuples(st.just("limit"), LIMITS),
        st.tuples(st.just("lift")),
        st.tuples(st.just("pass")),
    ),
    max_size=30,
)


def _row(limit: Decimal) -> dict[str, Any]:
    return {
        "budget_id": "b1",
        "cap_id": None,
        "scope": "web",
        "period_start": PERIOD.start,
        "ends_at": PERIOD.end,
        "hard_limit": limit,
        "lifted_at": None,
    }


@given(LIMITS, STEPS)
def test_one_enforcement_in_force_and_one_per_limit(
    first: Decimal, steps: list[tuple[Any, ...]]
) -> None:
    limit = first
    rows: list[dict[str, Any]] = []
    for step in steps:
        if step[0] == "limit":
            limit = step[1]
        elif step[0] == "lift":
            for row in rows:
                if row["lifted_at"] is None:
                    row["lifted_at"] = PERIOD.start
        else:
            wanted = _row(limit)
            lifted = lifted_in(
                [
                    (r["period_start"], r["ends_at"], r["hard_limit"])
                    for r in rows
                    if r["lifted_at"] is not None
                ],
                PERIOD,
            )
            starts = not any(_forestalls(row, wanted, UNIQUE) for row in rows)
            if starts:
                # a start after a lift is a re-arm, keyed (and alerted) by its limit
                assert not lifted or rearmed(lifted, limit)
                rows.append(wanted)
            else:
                assert any(r["lifted_at"] is None for r in rows) or limit in lifted
        assert sum(1 for r in rows if r["lifted_at"] is None) <= 1
        limits = [r["hard_limit"] for r in rows]
        assert len(limits) == len(set(limits))
