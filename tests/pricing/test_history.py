"""Effective dating: which version is in force, over which parts of a period, as known when."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from quartermaster.domain.timeutil import Period
from quartermaster.pricing.history import (
    NoVersionInForceError,
    PriceBookHistory,
    PriceBookVersion,
)
from tests.pricing.support import JANUARY, book

RULE = {"meter": "tokens", "model": "per_unit", "unit_price": "1"}


def day(d: int, month: int = 1, hour: int = 0) -> datetime:
    return datetime(2026, month, d, hour, tzinfo=UTC)


def version(number: int, effective: datetime, recorded: datetime) -> PriceBookVersion:
    document = book(RULE, version=number).model_copy(update={"effective_from": effective})
    return PriceBookVersion(document, recorded)


@pytest.fixture
def history() -> PriceBookHistory:
    # v1 from Jan 1; v2 from Jan 20 (recorded in advance, Jan 10); v3 recorded Feb 3,
    # back-dated to Jan 15: it replaces v1 from the 15th and v2 entirely.
    return PriceBookHistory(
        [
            version(2, day(20), day(10)),
            version(1, day(1), day(1)),
            version(3, day(15), day(3, 2)),
        ]
    )


def test_effective_at_picks_the_highest_version_in_effect(history: PriceBookHistory) -> None:
    assert history.effective_at(day(14, hour=23)).version == 1
    assert history.effective_at(day(15)).version == 3
    assert history.effective_at(day(25)).version == 3  # v2 is superseded by v3
    with pytest.raises(NoVersionInForceError, match="first version takes effect 2026-01-01"):
        history.effective_at(datetime(2025, 12, 31, tzinfo=UTC))


def test_as_of_reproduces_what_was_known(history: PriceBookHistory) -> None:
    before_correction = day(1, month=2)
    assert history.effective_at(day(25), as_of=before_correction).version == 2
    assert history.effective_at(day(16), as_of=before_correction).version == 1
    assert history.effective_at(day(25), as_of=day(5)).version == 1  # v2 not yet recorded


def test_segments_split_the_period_at_version_changes(history: PriceBookHistory) -> None:
    parts = [(p.start, p.end, v.version) for p, v in history.segments(JANUARY)]
    assert parts == [(day(1), day(15), 1), (day(15), day(1, 2), 3)]
    as_billed = [(p.start, p.end, v.version) for p, v in history.segments(JANUARY, as_of=day(1, 2))]
    assert as_billed == [(day(1), day(20), 1), (day(20), day(1, 2), 2)]


def test_segments_leave_out_time_before_the_first_version() -> None:
    late = PriceBookHistory([version(1, day(10), day(10))])
    parts = [(p.start, v.version) for p, v in late.segments(JANUARY)]
    assert parts == [(day(10), 1)]
    assert late.segments(Period(day(1), day(5))) == []


def test_in_force_intervals(history: PriceBookHistory) -> None:
    assert history.in_force_interval(1) == (day(1), day(15))
    assert history.in_force_interval(2) is None  # superseded before it took effect
    assert history.in_force_interval(3) == (day(15), None)
    assert history.in_force_interval(2, as_of=day(1, 2)) == (day(20), None)


def test_back_dated_flag(history: PriceBookHistory) -> None:
    flags = {v.version: v.back_dated for v in history.versions}
    assert flags == {1: False, 2: False, 3: True}


def test_changed_after_detects_a_back_dated_change_for_a_billed_period(
    history: PriceBookHistory,
) -> None:
    billed_at = day(1, 2)  # January finalized on Feb 1; v3 recorded Feb 3
    assert [v.version for v in history.changed_after(JANUARY, billed_at)] == [3]
    assert history.changed_after(JANUARY, day(4, 2)) == []
    february = Period(day(1, 2), day(1, 3))
    assert history.changed_after(february, day(1, 2)) == [history.versions[2]]


def test_a_history_needs_one_book_with_distinct_versions() -> None:
    with pytest.raises(ValueError, match="at least one"):
        PriceBookHistory([])
    with pytest.raises(ValueError, match="duplicate"):
        PriceBookHistory([version(1, day(1), day(1)), version(1, day(2), day(2))])
    other = book(RULE).model_copy(update={"name": "other"})
    with pytest.raises(ValueError, match="several price books"):
        PriceBookHistory([version(1, day(1), day(1)), PriceBookVersion(other, day(1))])
