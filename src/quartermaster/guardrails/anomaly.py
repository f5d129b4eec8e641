"""Cost-anomaly scoring over an hourly cost series (pure).

Baseline: the larger of the median of the same hour of the day over the trailing days (the
series has strong diurnal seasonality: a nightly batch app is busy at 01:00 only) and the
median of the whole trailing window (so an office-hours app's quiet night is not a baseline
of ~0 that any event would exceed).
Spread: the median absolute deviation of those same-hour values (of the window while fewer
than `min_seasons` days exist), scaled by 1.4826 (so it
estimates a standard deviation under normal noise), floored at `relative_floor` of the
baseline so a very steady series does not alert on a few percent. Medians and MADs ignore
the spikes they should catch, unlike means and standard deviations.

An hour in progress is scored as it fills: at `fraction` of the hour its cost so far is
compared with the baseline times max(`fraction`, `min_fraction`), so a spike is seen as soon
as the hour's cost so far is out of line, not after the hour closes. A value is anomalous
when all three hold:
- it is `k` spreads above the (prorated) baseline — unusual for this series;
- it is at least `min_ratio` times the baseline — large relative to normal;
- it exceeds the baseline by at least `min_excess` currency units — worth anyone's time.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from statistics import median

MAD_TO_SIGMA = Decimal("1.4826")
ZERO = Decimal(0)


@dataclass(frozen=True, slots=True)
class AnomalyRule:
    window_hours: int = 168  # a week of history
    season_hours: int = 24
    min_history: int = 24  # no verdict before a day of history
    min_seasons: int = 3
    k: Decimal = Decimal(6)
    min_ratio: Decimal = Decimal(2)
    min_excess: Decimal = Decimal("0.02")
    relative_floor: Decimal = Decimal("0.25")
    # Costs arrive in lumps (a resource reports its usage a few times an hour), so a partial
    # hour is never held to less than this share of a normal hour. Measured on the simulator
    # (bench/anomalies.py): prorating (0.25, 0.5) finds spikes minutes earlier but raises
    # false alarms 10-30x; 1 judges the cost so far against a whole normal hour.
    min_fraction: Decimal = Decimal(1)


@dataclass(frozen=True, slots=True)
class Score:
    value: Decimal  # cost of the scored hour so far
    expected: Decimal  # baseline prorated to the elapsed fraction
    baseline: Decimal  # a whole hour's normal cost
    spread: Decimal  # a whole hour's robust spread
    z: Decimal  # (value - expected) / prorated spread
    ratio: Decimal | None  # value / expected (None when expected is zero)
    anomalous: bool


def active_history(history: Sequence[Decimal]) -> Sequence[Decimal]:
    """The series from its first non-zero hour: a new app's first day is not judged against
    the empty hours before it existed."""
    for index, value in enumerate(history):
        if value != 0:
            return history[index:]
    return history[len(history) :]


def baseline_of(history: Sequence[Decimal], rule: AnomalyRule) -> tuple[Decimal, Decimal]:
    """(baseline, spread) of the hour right after `history` (oldest first, hourly)."""
    window = list(history[-rule.window_hours :])
    seasonal = window[-rule.season_hours :: -rule.season_hours]
    level = Decimal(median(window))
    usual = Decimal(median(seasonal)) if seasonal else level
    # The larger of the two: a nightly batch hour is judged against its own past nights, and
    # a quiet night of an office-hours app against the app's overall level, not against ~0.
    center = max(usual, level)
    sample = seasonal if len(seasonal) >= rule.min_seasons else window
    mad = Decimal(median([abs(v - Decimal(median(sample))) for v in sample]))
    spread = max(MAD_TO_SIGMA * mad, rule.relative_floor * center)
    return center, spread


def judge(
    value: Decimal,
    baseline: Decimal,
    spread: Decimal,
    *,
    fraction: Decimal = Decimal(1),
    rule: AnomalyRule | None = None,
) -> Score:
    """Score `value`, a cost so far with `fraction` of the hour elapsed, against a baseline."""
    rule = rule or AnomalyRule()
    if not ZERO < fraction <= 1:
        raise ValueError(f"fraction {fraction} is not in (0, 1]")
    share = max(fraction, rule.min_fraction)
    expected = baseline * share
    excess = value - expected
    floor = rule.min_excess / rule.k  # keeps z finite for an all-zero history
    z = excess / max(spread * share, floor)
    ratio = value / expected if expected > 0 else None
    anomalous = (
        z >= rule.k and excess >= rule.min_excess and (ratio is None or ratio >= rule.min_ratio)
    )
    return Score(value, expected, baseline, spread, z, ratio, anomalous)


def score_hour(
    history: Sequence[Decimal],
    value: Decimal,
    *,
    fraction: Decimal = Decimal(1),
    rule: AnomalyRule | None = None,
) -> Score | None:
    """Score `value`, the cost of the hour after `history` so far (`fraction` of it elapsed).
    None while the history is shorter than `rule.min_history`."""
    rule = rule or AnomalyRule()
    history = active_history(history)
    if len(history) < rule.min_history:
        return None
    baseline, spread = baseline_of(history, rule)
    return judge(value, baseline, spread, fraction=fraction, rule=rule)


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
