"""The cost-anomaly detector (pure): seasonal robust baseline, spikes found mid-hour, no alarm
on ordinary diurnal swings, new series, or small absolute changes; incidents from flags."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quartermaster.guardrails.anomaly import (
    AnomalyRule,
    Incident,
    active_history,
    baseline_of,
    incidents,
    score_hour,
)


def office_hours(days: int, *, day: str = "1.00", night: str = "0.05") -> list[Decimal]:
    """An app busy 09-18 and quiet otherwise, with a little deterministic noise."""
    series = []
    for hour in range(days * 24):
        level = Decimal(day) if 9 <= hour % 24 < 18 else Decimal(night)
        series.append(level * (1 + Decimal((hour * 7919) % 11 - 5) / 100))
    return series


def test_ordinary_days_raise_nothing_and_a_spike_is_found() -> None:
    history = office_hours(7)
    for hour_of_day in range(24):  # the eighth day, hour by hour, at its usual level
        usual = history[-24 + hour_of_day]
        score = score_hour(history + history[-24 : -24 + hour_of_day], usual)
        assert score is not None
        assert not score.anomalous, (hour_of_day, score)
    at_ten = history + history[-24:-14]
    spike = score_hour(at_ten, Decimal("4.0"))
    assert spike is not None
    assert spike.anomalous
    assert spike.baseline == pytest.approx(Decimal(1), rel=Decimal("0.06"))
    assert spike.ratio is not None
    assert spike.ratio > 3


def test_a_spike_is_seen_before_its_hour_closes() -> None:
    history = office_hours(7)
    at_ten = history + history[-24:-14]
    # A quarter of the way in, the hour has cost 2.5: already 2.5 normal hours.
    early = score_hour(at_ten, Decimal("2.5"), fraction=Decimal("0.25"))
    assert early is not None
    assert early.anomalous
    # At the same point an ordinary quarter hour (0.25) is not an anomaly.
    calm = score_hour(at_ten, Decimal("0.25"), fraction=Decimal("0.25"))
    assert calm is not None
    assert not calm.anomalous


def test_a_nightly_batch_hour_is_judged_against_its_own_past_nights() -> None:
    # Busy only at 01:00 (a nightly job): its usual 1.0 at 01:00 is no anomaly, though the
    # window's level is near zero; 4.0 at 01:00 is.
    history = [Decimal(1) if h % 24 == 1 else Decimal("0.01") for h in range(7 * 24)]
    at_one = history + history[-24:-23]
    baseline, _spread = baseline_of(at_one, AnomalyRule())
    assert baseline == 1
    assert not score_hour(at_one, Decimal("1.05")).anomalous  # type: ignore[union-attr]
    assert score_hour(at_one, Decimal(4)).anomalous  # type: ignore[union-attr]
    # And at 03:00 (a quiet hour), a cost below the minimum excess raises nothing.
    at_three = history + history[-24:-21]
    assert not score_hour(at_three, Decimal("0.025")).anomalous  # type: ignore[union-attr]


def test_small_absolute_changes_and_short_histories_are_not_alerts() -> None:
    tiny = [Decimal("0.001")] * 48
    assert score_hour(tiny, Decimal("0.01")) is not None
    assert not score_hour(tiny, Decimal("0.01")).anomalous  # type: ignore[union-attr]  # 10x, 0.009
    assert score_hour([Decimal(1)] * 10, Decimal(100)) is None  # under a day of history
    # A new app: its empty hours before it existed are not history.
    born = [Decimal(0)] * 100 + [Decimal(1)] * 5
    assert active_history(born) == [Decimal(1)] * 5
    assert score_hour(born, Decimal(50)) is None
    with pytest.raises(ValueError, match="fraction"):
        score_hour(office_hours(2), Decimal(1), fraction=Decimal(0))


def test_incidents_merge_consecutive_hours() -> None:
    flags = [False, True, True, False, True, False, False, True]
    assert incidents(flags) == [Incident(1, 3), Incident(4, 5), Incident(7, 8)]
    assert incidents([]) == []


@given(
    st.lists(st.decimals(min_value=0, max_value=1000, places=3), min_size=24, max_size=200),
    st.decimals(min_value=0, max_value=1000, places=3),
)
def test_never_anomalous_at_or_below_the_baseline(history: list[Decimal], value: Decimal) -> None:
    score = score_hour(history, value)
    if score is None:
        return
    if value <= score.baseline:
        assert not score.anomalous
    assert score.spread >= 0
