"""The billing commands' own formatting (their runs over HTTP: tests/billing/test_cli.py)."""

from __future__ import annotations

import pytest

from quartermaster.cli import billing as billing_cli


@pytest.mark.parametrize(
    ("start", "end", "label"),
    [
        ("2026-11-01T00:00:00Z", "2026-12-01T00:00:00Z", "2026-11"),
        ("2026-12-01T00:00:00Z", "2027-01-01T00:00:00Z", "2026-12"),
        ("2026-11-01T00:00:00Z", "2026-11-16T00:00:00Z", "2026-11-01 .. 2026-11-16"),
        # A month in a tenant's own zone: its UTC bounds, as the API gives them.
        (
            "2026-10-31T23:00:00Z",
            "2026-11-30T23:00:00Z",
            "2026-10-31T23:00:00Z .. 2026-11-30T23:00:00Z",
        ),
    ],
)
def test_a_run_lists_its_period_as_a_month_where_it_is_one(
    start: str, end: str, label: str
) -> None:
    assert billing_cli._period_label(start, end) == label
