"""Cost-anomaly scoring over hourly cost series (pure).

A series is the hourly cost of one (scope, meter): an app's tokens, a team's cpu_seconds.
Scoring per meter, not only per scope total, keeps a spike on a small meter from drowning in
a large steady one, and names the meter behind it.

Baseline: the larger of the median of the same hour of the day over the trailing days (the
series has strong diurnal seasonality: a nightly batch app is busy at 01:00 only) and the
median of the whole trailing window (so an office-hours app's quiet night is not a baseline
of ~0 that any event would exceed).
Spread: the median absolute deviation of those same-hour values (of the window while fewer
than `min_seasons` days exist), scaled by 1.4826 (so it estimates a standard deviation under
normal noise), floored at `relative_floor` of the baseline so a very steady series does not
alert on a few percent. Medians and MADs ignore the spikes they should catch, unlike means
and standard deviations.

An hour in progress is scored as it fills. How much of a normal hour's cost may already be in
after a `fraction` of it depends on how the cost arrives: a resource that reports one sample
per hour delivers all of it at once; an app with hundreds of invocations an hour delivers it
about evenly. With n events in a typical hour, the share of the hour's events in by `fraction`
is binomial, and its upper bound `fraction + arrival_z * sqrt(fraction * (1 - fraction) / n)`
(1 while n is below `min_events_to_prorate`) is the share of the baseline the hour is held to.
So a spike on a smooth series is seen minutes into its hour, and a lumpy series is never
judged against a fraction of an hour it delivers in one piece. A value is anomalous when all
three hold:
- it is `k` spreads above the (prorated) baseline — unusual for this series;
- it is at least `min_ratio` times the baseline — large relative to normal;
- it exceeds the baseline by at least `min_excess` currency units — worth anyone's time.

Statistics are floats: this is a score, not money (alerts quote the Decimal costs).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from itertools import dropwhile
from operator import not_
from statistics import median

MAD_TO_SIGMA = 1.4826


@dataclass(frozen=True, slots=True)
class AnomalyRule:
    """The detector's parameters. Defaults measured on the simulator's injected anomalies
    (bench/anomalies.py, docs/performance.md "Cost anomalies")."""

    window_hours: int = 168  # a week of history
    season_hours: int = 24
    # The same hour's baseline over the past days is their highest (1.0) rather than their
    # median (0.5): a resource added midweek makes its first nights "new" only once.
    seasonal_quantile: float = 1.0
    # Also judge against the median of the last hours (0: off). Measured: it hid spikes on
    # apps in a busy spell more than it saved false alarms.
    recent_hours: int = 0
    min_history: int = 72  # no verdict before three days of history
    min_seasons: int = 3
    k: float = 5.0
    min_ratio: float = 3.0
    min_excess: float = 0.02
    relative_floor: float = 0.25
    arrival_z: float = 1.0
    min_events_to_prorate: float = 20.0
    first_events: float = 3.0
    # Size variation of one event's cost: the simulator's calls are lognormal (sigma 0.7),
    # whose count-and-size noise over n calls is ~1.3 / sqrt(n) of the total; 1.5 leaves
    # room for the heavier tail of a handful of calls.
    event_cv: float = 1.5
    # A series whose hours nearly all have the same count of events is sampled, not counted.
    sampled_share: float = 0.8
    idle_quantile: float = 0.95
    max_incident_hours: int = 48  # a longer run is a new level, not one spike

    def __post_init__(self) -> None:
        if self.window_hours < self.min_history or self.min_history < 1:
            raise ValueError("window_hours must be at least min_history, which must be >= 1")
        if self.k <= 0 or self.min_ratio < 1 or self.min_excess < 0:
            raise ValueError("k must be positive, min_ratio >= 1 and min_excess >= 0")


@dataclass(frozen=True, slots=True)
class Score:
    value: float  # cost of the scored hour so far
    expected: float  # baseline held to the share of the hour that may be in
    baseline: float  # a whole hour's normal cost
    spread: float  # a whole hour's robust spread
    share: float  # share of a normal hour's cost that may be in by now
    z: float  # (value - expected) / prorated spread
    ratio: float | None  # value / expected (None when expected is zero)
    anomalous: bool

    @property
    def excess(self) -> float:
        return self.value - self.expected


def active_history(history: Sequence[float]) -> Sequence[float]:
    """The series from its first non-zero hour: a new app's first day is not judged against
    the empty hours before it existed."""
    # dropwhile with a C predicate: a long-idle series no longer walks its zeros in Python.
    rest = len(list(dropwhile(not_, history)))
    return history[len(history) - rest :]


def _quantile(values: Sequence[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def _median_of_sorted(ordered: Sequence[float]) -> float:
    """statistics.median of already sorted values (its own arithmetic, without its sort)."""
    n = len(ordered)
    if n == 0:
        raise ValueError("no median for empty data")
    if n % 2 == 1:
        return ordered[n // 2]
    i = n // 2
    return (ordered[i - 1] + ordered[i]) / 2


def baseline_of(history: Sequence[float], rule: AnomalyRule) -> tuple[float, float]:
    """(baseline, spread) of the hour right after `history` (oldest first, hourly)."""
    window = list(history[-rule.window_hours :])
    seasonal = window[-rule.season_hours :: -rule.season_hours]
    ordered = sorted(window)  # sorted once for the level, the idle quantile and the MAD
    level = float(_median_of_sorted(ordered))
    usual = _quantile(seasonal, rule.seasonal_quantile) if seasonal else level
    recent = float(median(window[-rule.recent_hours :])) if rule.recent_hours else 0.0
    # The larger of the three: a nightly batch hour is judged against its own past nights, a
    # quiet night of an office-hours app against the app's overall level (not ~0), and an
    # app in a busy spell against its last hours (days differ: yesterday's 16:00 was calm).
    center = max(usual, level, recent)
    if level == 0:
        # Mostly idle (a staging app called now and then): a normal busy hour is one of its
        # occasional ones, not zero, or every call would be an anomaly.
        center = max(center, ordered[int(len(window) * rule.idle_quantile)])
    sample = seasonal if len(seasonal) >= rule.min_seasons else window
    middle = level if sample is window else float(median(sample))
    mad = float(median([abs(v - middle) for v in sample]))
    spread = max(MAD_TO_SIGMA * mad, rule.relative_floor * center)
    return center, spread


def arrival_share(fraction: float, events_per_hour: float | None, rule: AnomalyRule) -> float:
    """The most of a normal hour's cost that may be in after `fraction` of the hour."""
    if fraction >= 1 or events_per_hour is None or events_per_hour < rule.min_events_to_prorate:
        return 1.0
    bound = fraction + rule.arrival_z * math.sqrt(fraction * (1 - fraction) / events_per_hour)
    # The first few events may be the hour's largest: they carry no verdict on their own.
    return min(1.0, bound + rule.first_events / events_per_hour)


def judge(
    value: float,
    baseline: float,
    spread: float,
    *,
    share: float = 1.0,
    noise: float = 0.0,
    rule: AnomalyRule | None = None,
) -> Score:
    """Score `value`, a cost so far, against a baseline held to `share` of a normal hour.
    `noise`: a whole hour's counting noise (its events arrive at random); it shrinks with the
    square root of the share, the level's spread in proportion to it."""
    rule = rule or AnomalyRule()
    if not 0 < share <= 1:
        raise ValueError(f"share {share} is not in (0, 1]")
    expected = baseline * share
    excess = value - expected
    floor = rule.min_excess / rule.k  # keeps z finite for an all-zero history
    z = excess / max(spread * share, noise * math.sqrt(share), floor)
    ratio = value / expected if expected > 0 else None
    anomalous = (
        z >= rule.k and excess >= rule.min_excess and (ratio is None or ratio >= rule.min_ratio)
    )
    return Score(value, expected, baseline, spread, share, z, ratio, anomalous)


def counting_noise(
    counts: Sequence[int], events_per_hour: float | None, baseline: float, rule: AnomalyRule
) -> float:
    """A whole hour's cost noise when its events arrive at random (calls, requests): with n
    events of varying size, about `event_cv / sqrt(n)` of the hour, however steady the
    trailing hours happened to be. Zero for samples at fixed times (a resource reporting
    every hour: the count of events never varies), whose noise the robust spread has."""
    if events_per_hour is None or events_per_hour <= 0:
        return 0.0
    # Only the most common count's frequency matters (ties give the same answer); counting
    # each distinct value with list.count was quadratic, a tenth of a scan's CPU. The hours
    # with events are counted from the tally rather than filtered out first.
    tally = [n for count, n in Counter(counts).items() if count > 0]
    if not tally:
        return 0.0
    active = sum(tally)
    steady = max(tally) >= rule.sampled_share * active
    # A slow stream of calls also has a steady count (mostly 1), but idle hours between.
    if steady and active >= rule.sampled_share * len(counts):
        return 0.0
    return baseline * rule.event_cv / math.sqrt(events_per_hour)


def typical_events(costs: Sequence[float], counts: Sequence[int], baseline: float) -> float | None:
    """Events in a normal hour at this time of day: the baseline over the mean cost of an
    event (a busy hour of an office-hours app has many more than the day's median hour)."""
    events = sum(counts)
    if events == 0 or baseline <= 0:
        return None
    per_event = sum(costs) / events
    return baseline / per_event if per_event > 0 else None


def score_hour(
    history: Sequence[float],
    value: float,
    *,
    fraction: float = 1.0,
    events_per_hour: float | None = None,
    rule: AnomalyRule | None = None,
) -> Score | None:
    """Score `value`, the cost of the hour after `history` so far (`fraction` of it elapsed;
    `events_per_hour` of a typical hour: unknown means the cost may all be in already).
    None while the history is shorter than `rule.min_history`."""
    rule = rule or AnomalyRule()
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction {fraction} is not in (0, 1]")
    history = active_history(history)
    if len(history) < rule.min_history:
        return None
    baseline, spread = baseline_of(history, rule)
    share = arrival_share(fraction, events_per_hour, rule)
    return judge(value, baseline, spread, share=share, rule=rule)


# --- a scope (an app or a team): its meters together ----------------------------------------


@dataclass(frozen=True, slots=True)
class Series:
    """One meter of a scope, hourly and oldest first: costs and event counts."""

    costs: Sequence[float]
    events: Sequence[int]


@dataclass(frozen=True, slots=True)
class MeterScore:
    meter: str
    score: Score


@dataclass(frozen=True, slots=True)
class ScopeVerdict:
    """A scope's hour: anomalous when any meter is; `meters` are the anomalous ones, largest
    excess first."""

    meters: tuple[MeterScore, ...]
    value: float  # the scope's cost of the hour so far, every meter
    expected: float  # the scope's prorated baseline, every scored meter

    @property
    def anomalous(self) -> bool:
        return bool(self.meters)

    @property
    def excess(self) -> float:
        return sum(m.score.excess for m in self.meters)


@dataclass(frozen=True, slots=True)
class Expectation:
    """A meter's normal hour, from the hours before the scored one."""

    meter: str
    baseline: float
    spread: float
    events_per_hour: float | None
    noise: float = 0.0  # a whole hour's counting noise (0: samples at fixed times)


def expectations(
    series: Mapping[str, Series], hour: int, *, rule: AnomalyRule | None = None
) -> list[Expectation]:
    """The normal hour of each meter with enough history before hour index `hour`."""
    rule = rule or AnomalyRule()
    start = max(0, hour - rule.window_hours)
    found: list[Expectation] = []
    for meter, one in series.items():
        history = active_history(one.costs[start:hour])
        if len(history) < rule.min_history:
            continue
        baseline, spread = baseline_of(history, rule)
        counts = one.events[start:hour][-len(history) :]
        events = typical_events(history, counts, baseline)
        noise = counting_noise(counts, events, baseline, rule)
        found.append(Expectation(meter, baseline, spread, events, noise))
    return found


def may_be_anomalous(
    series: Mapping[str, Series], hour: int, non_negative: Collection[str], rule: AnomalyRule
) -> dict[str, Series]:
    """The meters of a scope that may be anomalous at hour index `hour`, found without any
    baseline: an anomalous meter exceeds its expected cost by `min_excess`, and the baseline
    of a meter whose costs are never negative (`non_negative`: those meters) is not negative,
    so such a meter costing less than `min_excess` in the hour cannot be. A scope is
    anomalous only if one of these is (each meter is judged on its own); in the simulator's
    platform about half of the active scopes have none, and most meters of the rest are out."""
    found: dict[str, Series] = {}
    for meter, one in series.items():
        value = one.costs[hour] if hour < len(one.costs) else 0.0
        if value >= rule.min_excess or meter not in non_negative:
            found[meter] = one
    return found


def judge_scope(
    expected: Sequence[Expectation],
    values: Mapping[str, float],
    *,
    fraction: float = 1.0,
    rule: AnomalyRule | None = None,
) -> ScopeVerdict:
    """Judge a scope's hour so far (cost per meter) against its meters' normal hours."""
    rule = rule or AnomalyRule()
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction {fraction} is not in (0, 1]")
    anomalous: list[MeterScore] = []
    held = 0.0
    for normal in expected:
        share = arrival_share(fraction, normal.events_per_hour, rule)
        value = values.get(normal.meter, 0.0)
        score = judge(
            value, normal.baseline, normal.spread, share=share, noise=normal.noise, rule=rule
        )
        held += score.expected
        if score.anomalous:
            anomalous.append(MeterScore(normal.meter, score))
    anomalous.sort(key=lambda m: (-m.score.excess, m.meter))
    return ScopeVerdict(tuple(anomalous), sum(values.values()), held)


def score_scope(
    series: Mapping[str, Series],
    hour: int,
    *,
    fraction: float = 1.0,
    rule: AnomalyRule | None = None,
) -> ScopeVerdict:
    """Score hour index `hour` of every meter of a scope against the hours before it."""
    values = {m: s.costs[hour] if hour < len(s.costs) else 0.0 for m, s in series.items()}
    return judge_scope(expectations(series, hour, rule=rule), values, fraction=fraction, rule=rule)


def incident_start(
    series: Mapping[str, Series], hour: int, *, rule: AnomalyRule | None = None
) -> int:
    """The first hour of the run of anomalous whole hours that `hour` continues (`hour`
    itself when the hour before was normal): one alert per run, not per hour."""
    rule = rule or AnomalyRule()
    first = hour
    while (
        first > 0
        and hour - first < rule.max_incident_hours
        and score_scope(series, first - 1, rule=rule).anomalous
    ):
        first -= 1
    return first


@dataclass(frozen=True, slots=True)
class Incident:
    """Consecutive anomalous hours of one series: [start_hour, end_hour) by index."""

    start: int
    end: int


def incidents(flags: Sequence[bool]) -> list[Incident]:
    """Runs of True in hourly flags (one alert per run, not per hour)."""
    runs: list[Incident] = []
    begin: int | None = None
    for index, flag in enumerate(flags):
        if flag and begin is None:
            begin = index
        elif not flag and begin is not None:
            runs.append(Incident(begin, index))
            begin = None
    if begin is not None:
        runs.append(Incident(begin, len(flags)))
    return runs
