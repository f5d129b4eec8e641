"""The demo's reconciliation identity as printed: every count whole on an 80-column terminal,
and whether the identity holds."""

from __future__ import annotations

import io

from rich.console import Console

from quartermaster.sim.showback import print_pipeline

STATUS = {"latency": {"events": 10, "p50_ms": 30, "p99_ms": 70, "max_ms": 90, "waited": 0}}


def _printed(**counts: int) -> str:
    hour = {"attributed": 0, "unattributed": 0, "waiting": 0, "in_pipeline": 0, **counts}
    accounting = {"hours": [hour, hour], "balanced": True}
    buffer = io.StringIO()
    print_pipeline(Console(file=buffer, width=80), STATUS, accounting, None)
    return buffer.getvalue()


def test_the_identity_shows_every_count_whole_and_holds() -> None:
    printed = _printed(accepted=985_356, attributed=983_934, unattributed=1_422, rated=985_356)
    assert "…" not in printed
    for count in ("1,970,712", "1,967,868", "2,844"):
        assert count in printed
    assert "holds" in printed
    assert "does not hold" not in printed


def test_a_missing_event_breaks_the_identity() -> None:
    printed = _printed(accepted=985_356, attributed=985_355, rated=985_355)
    assert "does not hold" in printed
