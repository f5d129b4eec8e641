"""The cost-anomaly detector (pure): seasonal robust baseline, spikes found mid-hour, no alarm
on ordinary diurnal swings, new series, or small absolute changes; incidents from flags."""

from __future__ import annotations

import math
from collections import Counter
from statistics import median

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quartermaster.guardrails.anomaly import (
    AnomalyRule,
    Incident,
    Series,
    active_history,
    arrival_share,
    baseline_of,
    counting_noise,
    incident_start,
    incidents,
    may_be_anomalous,
    score_hour,
    score_scope,
)


def office_hours(days: int, *, day: float = 1.0, night: float = 0.05) -> list[float]:
    """An app busy 09-18 and quiet otherwise, with a little deterministic noise."""
    series = []
    for hour in range(days * 24):
        level = day if 9 <= hour % 24 < 18 else night
        series.append(level * (1 + ((hour * 7919) % 11 - 5) / 100))
    return series


def test_ordinary_days_raise_nothing_and_a_spike_is_found() -> None:
    history = office_hours(7)
    for hour_of_day in range(24):  # the eighth day, hour by hour, at its usual level
        usual = history[-24 + hour_of_day]
        score = score_hour(history + history[-24 : -24 + hour_of_day], usual)
        assert score is not None
        assert not score.anomalous, (hour_of_day, score)
    at_ten = history + history[-24:-14]
    spike = score_hour(at_ten, 4.0)
    assert spike is not None
    assert spike.anomalous
    assert spike.baseline == pytest.approx(1.0, rel=0.06)
    assert spike.ratio is not None
    assert spike.ratio > 3


def test_a_spike_is_seen_before_its_hour_closes() -> None:
    history = office_hours(7)
    at_ten = history + history[-24:-14]
    # A quarter of the way in, the hour has cost 3.5: already 3.5 normal hours.
    early = score_hour(at_ten, 3.5, fraction=0.25)
    assert early is not None
    assert early.anomalous
    # At the same point an ordinary quarter hour (0.25) is not an anomaly.
    calm = score_hour(at_ten, 0.25, fraction=0.25)
    assert calm is not None
    assert not calm.anomalous


def test_a_nightly_batch_hour_is_judged_against_its_own_past_nights() -> None:
    # Busy only at 01:00 (a nightly job): its usual 1.0 at 01:00 is no anomaly, though the
    # window's level is near zero; 4.0 at 01:00 is.
    history = [1.0 if h % 24 == 1 else 0.01 for h in range(7 * 24)]
    at_one = history + history[-24:-23]
    baseline, _spread = baseline_of(at_one, AnomalyRule())
    assert baseline == 1
    assert not score_hour(at_one, 1.05).anomalous  # type: ignore[union-attr]
    assert score_hour(at_one, 4.0).anomalous  # type: ignore[union-attr]
    # And at 03:00 (a quiet hour), a cost below the minimum excess raises nothing.
    at_three = history + history[-24:-21]
    assert not score_hour(at_three, 0.025).anomalous  # type: ignore[union-attr]


def test_small_absolute_changes_and_short_histories_are_not_alerts() -> None:
    tiny = [0.001] * 96
    assert score_hour(tiny, 0.01) is not None
    assert not score_hour(tiny, 0.01).anomalous  # type: ignore[union-attr]  # 10x, 0.009
    assert score_hour([1.0] * 10, 100.0) is None  # under a day of history
    # A new app: its empty hours before it existed are not history.
    born = [0.0] * 100 + [1.0] * 5
    assert active_history(born) == [1.0] * 5
    assert score_hour(born, 50.0) is None
    with pytest.raises(ValueError, match="fraction"):
        score_hour(office_hours(2), 1.0, fraction=0.0)


def test_incidents_merge_consecutive_hours() -> None:
    flags = [False, True, True, False, True, False, False, True]
    assert incidents(flags) == [Incident(1, 3), Incident(4, 5), Incident(7, 8)]
    assert incidents([]) == []


@given(
    st.lists(st.floats(min_value=0, max_value=1000), min_size=24, max_size=200),
    st.floats(min_value=0, max_value=1000),
)
def test_never_anomalous_at_or_below_the_baseline(history: list[float], value: float) -> None:
    score = score_hour(history, value)
    if score is None:
        return
    if value <= score.baseline:
        assert not score.anomalous
    assert score.spread >= 0


def test_a_smooth_series_is_prorated_and_a_lumpy_one_is_not() -> None:
    rule = AnomalyRule()
    # 200 calls an hour arrive evenly: a tenth of the way in, a normal hour has ~0.1 of its
    # cost in, so 0.6 (six hours' pace) is a spike already; 0.15 is ordinary.
    assert arrival_share(0.1, 200.0, rule) < 0.2
    history = office_hours(7)
    at_ten = history + history[-24:-14]
    fast = score_hour(at_ten, 0.6, fraction=0.1, events_per_hour=200.0)
    assert fast is not None
    assert fast.anomalous
    calm = score_hour(at_ten, 0.15, fraction=0.1, events_per_hour=200.0)
    assert calm is not None
    assert not calm.anomalous
    # One sample an hour delivers the whole hour at once: held to a whole hour from the start.
    assert arrival_share(0.02, 1.0, rule) == 1.0
    lump = score_hour(at_ten, 1.0, fraction=0.02, events_per_hour=1.0)
    assert lump is not None
    assert not lump.anomalous


def test_an_idle_series_is_judged_against_its_occasional_busy_hours() -> None:
    # A staging app called a few times a day: most hours cost nothing, so its median is 0,
    # but one more ordinary call is no anomaly; forty times one is.
    history = [0.03 if h % 7 == 0 else 0.0 for h in range(7 * 24)]
    assert not score_hour(history, 0.03).anomalous  # type: ignore[union-attr]
    assert score_hour(history, 1.2).anomalous  # type: ignore[union-attr]


def test_a_scope_names_only_its_anomalous_meters_and_one_run_alerts_once() -> None:
    steady = office_hours(8)[: 7 * 24 + 10]  # up to 10:00 of the eighth day
    tokens = [*steady, steady[-24] * 8, steady[-23] * 8]
    calls = [*steady, steady[-24], steady[-23]]
    series = {
        "tokens": Series(tokens, [50] * len(tokens)),
        "invocations": Series(calls, [50] * len(calls)),
    }
    verdict = score_scope(series, len(steady))
    assert [m.meter for m in verdict.meters] == ["tokens"]
    assert incident_start(series, len(steady) + 1) == len(steady)
    assert incident_start(series, len(steady)) == len(steady)


# --- the scan's faster arithmetic against the plain forms it replaced ---------------------------


def _plain_baseline(history: list[float], rule: AnomalyRule) -> tuple[float, float]:
    window = list(history[-rule.window_hours :])
    seasonal = window[-rule.season_hours :: -rule.season_hours]
    level = float(median(window))
    ordered = sorted(seasonal)
    top = min(len(ordered) - 1, int(rule.seasonal_quantile * len(ordered)))
    usual = ordered[top] if seasonal else level
    center = max(usual, level, 0.0)
    if level == 0:
        center = max(center, sorted(window)[int(len(window) * rule.idle_quantile)])
    sample = seasonal if len(seasonal) >= rule.min_seasons else window
    middle = float(median(sample))
    mad = float(median([abs(v - middle) for v in sample]))
    return center, max(1.4826 * mad, rule.relative_floor * center)


def _plain_noise(
    counts: list[int], events: float | None, baseline: float, rule: AnomalyRule
) -> float:
    active = [c for c in counts if c > 0]
    if not active or events is None or events <= 0:
        return 0.0
    steady = max(Counter(active).values()) >= rule.sampled_share * len(active)
    if steady and len(active) >= rule.sampled_share * len(counts):
        return 0.0
    return baseline * rule.event_cv / math.sqrt(events)


costs = st.lists(
    st.one_of(st.just(0.0), st.floats(min_value=0, max_value=50)), min_size=1, max_size=200
)


@given(costs)
def test_the_baseline_and_active_history_are_the_plain_medians(history: list[float]) -> None:
    rule = AnomalyRule()
    plain = history[next((i for i, v in enumerate(history) if v != 0), len(history)) :]
    assert active_history(history) == plain
    assert baseline_of(history, rule) == _plain_baseline(history, rule)


@given(
    st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=200),
    st.one_of(st.none(), st.floats(min_value=0, max_value=100)),
)
def test_counting_noise_is_the_plain_tally(counts: list[int], events: float | None) -> None:
    rule = AnomalyRule()
    assert counting_noise(counts, events, 2.0, rule) == _plain_noise(counts, events, 2.0, rule)


@given(
    st.lists(st.floats(min_value=-1, max_value=1), min_size=100, max_size=100),
    st.lists(st.floats(min_value=0, max_value=0.05), min_size=100, max_size=100),
    st.floats(min_value=1 / 60, max_value=1),
)
def test_meters_ruled_out_without_baselines_are_never_anomalous(
    signed: list[float], small: list[float], fraction: float
) -> None:
    rule = AnomalyRule()
    series = {
        "signed": Series(signed, [1] * len(signed)),
        "small": Series(small, [3] * len(small)),
    }
    non_negative = {m for m, one in series.items() if min(one.costs) >= 0}
    for hour in range(rule.min_history, 100):
        candidates = may_be_anomalous(series, hour, non_negative, rule)
        full = score_scope(series, hour, fraction=fraction, rule=rule)
        some = score_scope(candidates, hour, fraction=fraction, rule=rule)
        assert [m.meter for m in some.meters] == [m.meter for m in full.meters]
    assert may_be_anomalous(series, 99, set(), rule) == series  # any may be negative
    calm = {"small": Series([0.01] * 100, [1] * 100)}
    assert may_be_anomalous(calm, 99, {"small"}, rule) == {}
