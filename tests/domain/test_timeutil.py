from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest

from quartermaster.domain.timeutil import duration_text, moment_text


@pytest.mark.parametrize(
    ("span", "shown"),
    [
        (timedelta(seconds=0), "0 s"),
        (timedelta(seconds=301), "301 s"),
        (timedelta(seconds=-301), "301 s"),
        (timedelta(seconds=301.9), "301 s"),
        (timedelta(hours=2) - timedelta(seconds=1), "7,199 s"),
        (timedelta(hours=2), "7,200 s (about 2 hours)"),
        (timedelta(days=2), "172,800 s (about 2 days)"),
        (timedelta(seconds=126_224_010), "126,224,010 s (about 1,461 days)"),
    ],
)
def test_duration_text(span: timedelta, shown: str) -> None:
    assert duration_text(span) == shown


@pytest.mark.parametrize(
    ("moment", "shown"),
    [
        (datetime(2026, 12, 1, tzinfo=UTC), "2026-12-01 00:00 UTC"),
        (datetime(2026, 12, 1, 13, 5, 9, 250_000, tzinfo=UTC), "2026-12-01 13:05:09 UTC"),
        # A tenant's own zone keeps its offset: its month starts at its midnight.
        (datetime(2026, 12, 1, tzinfo=ZoneInfo("Europe/Paris")), "2026-12-01 00:00 +01:00"),
        (datetime(2026, 7, 1, tzinfo=ZoneInfo("America/New_York")), "2026-07-01 00:00 -04:00"),
    ],
)
def test_moment_text(moment: datetime, shown: str) -> None:
    assert moment_text(moment) == shown


def test_moment_text_refuses_a_naive_moment() -> None:
    with pytest.raises(ValueError, match="has no UTC offset"):
        moment_text(datetime(2026, 12, 1))
