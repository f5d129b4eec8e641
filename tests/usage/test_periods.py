from __future__ import annotations

import itertools
from datetime import UTC, datetime, timedelta

from hypothesis import given
from hypothesis import strategies as st

from quartermaster.usage.periods import Grain, decompose, floor_to

moments = st.datetimes(
    min_value=datetime(2026, 1, 1), max_value=datetime(2026, 3, 1), timezones=st.just(UTC)
)


@given(moments, moments)
def test_segments_tile_the_period_exactly_with_aligned_rollups(a: datetime, b: datetime) -> None:
    start, end = min(a, b), max(a, b)
    segments = decompose(start, end)
    if start == end:
        assert segments == []
        return
    assert segments[0].start == start
    assert segments[-1].end == end
    for left, right in itertools.pairwise(segments):
        assert left.end == right.start
    for segment in segments:
        assert segment.start < segment.end
        if segment.grain is not Grain.RAW:
            assert floor_to(segment.start, segment.grain) == segment.start
            assert floor_to(segment.end, segment.grain) == segment.end
        else:
            assert segment.end - segment.start < timedelta(minutes=1)


def test_a_month_uses_days_and_the_edges_use_finer_rollups() -> None:
    start = datetime(2026, 1, 1, 5, 30, 15, tzinfo=UTC)
    end = datetime(2026, 2, 1, 0, 0, tzinfo=UTC)
    grains = [s.grain for s in decompose(start, end)]
    assert grains == [Grain.RAW, Grain.MINUTE, Grain.HOUR, Grain.DAY]
