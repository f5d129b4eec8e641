from __future__ import annotations

from datetime import timedelta

import pytest

from quartermaster.domain.timeutil import duration_text


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
