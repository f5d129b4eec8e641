"""The demo's reconciliation counters as printed: a row per stage and rejection reason, a
column per hour of receipt and the total, every count whole on an 80-column terminal."""

from __future__ import annotations

import io
import re

from rich.console import Console

from quartermaster.sim.model import Platform
from quartermaster.sim.report import print_platform, print_reconciliation


def _hour(hour: str, accepted: int) -> dict[str, object]:
    return {
        "hour": f"2026-12-03T{hour}:00:00+00:00",
        "stages": {"received": accepted + 100, "accepted": accepted, "rejected": 100},
        "reasons": {"rejected": {"bad_signature": 60, "invalid_data": 40}},
    }


def test_counts_are_whole_per_hour_and_in_total() -> None:
    report = {
        "hours": [_hour("09", 1_200_000), _hour("10", 770_711)],
        "totals": {"received": 1_970_911, "accepted": 1_970_711, "rejected": 200},
    }
    buffer = io.StringIO()
    print_reconciliation(Console(file=buffer, width=80), report)
    printed = buffer.getvalue()
    assert "…" not in printed
    assert "12-03 09:00" in printed
    assert "12-03 10:00" in printed
    rows = {
        cells[1].strip(): [c.strip() for c in cells[2:-1]]
        for cells in (line.split("│") for line in printed.splitlines() if "│" in line)
    }
    assert rows["accepted"] == ["1,200,000", "770,711", "1,970,711"]
    assert rows["rejected: bad_signature"] == ["60", "60", "120"]
    assert rows["rejected: invalid_data"] == ["40", "40", "80"]


def test_the_platform_table_names_each_kind_of_app_once(small_platform: Platform) -> None:
    output = io.StringIO()
    print_platform(Console(file=output, width=200), small_platform)
    apps_row = next(line for line in output.getvalue().splitlines() if "│ apps" in line)
    assert re.search(r"\d+: \d+ persistent production; \d+ ", apps_row)
    assert "persistent, " not in apps_row
