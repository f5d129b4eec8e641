"""The demo's reconciliation identity as printed: every count whole on an 80-column terminal,
and whether the identity holds."""

from __future__ import annotations

import io

from rich.console import Console

from quartermaster.sim.showback import print_explanation, print_pipeline

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


def test_events_set_aside_count_in_the_identity() -> None:
    printed = _printed(accepted=100, attributed=100, rated=98, failed=2)
    assert "rated + waiting + in pipeline + failed" in printed
    assert "holds" in printed
    assert "does not hold" not in printed
    assert "failed" not in _printed(accepted=100, attributed=100, rated=100)


def test_the_explained_line_s_audit_key_stays_whole_at_80_columns() -> None:
    """The demo names a key to paste back into `qm explain`; it was folded mid-word."""
    key = (
        "20261201T1700Z-20261203T1700Z/usage/cc-4100-platform/platform-eng/"
        "changelog-router/tokens/6be9d868b5d60817"
    )
    line = {
        "cost_center": "cc-4100-platform",
        "team": "platform-eng",
        "app": "changelog-router",
        "item": "tokens",
        "quantity": "26727416",
        "unit": "token",
        "unit_price": "0.000001049225",
        "pricing_rule": "graduated",
        "amount": "28.04",
        "currency": "USD",
        "audit_key": key,
    }
    output = io.StringIO()
    explanation = {"line": line, "daily": [], "top_events": [], "markers": [], "notes": []}
    print_explanation(Console(file=output, width=80), explanation)
    assert f"audit key {key}\n" in output.getvalue()


def test_the_explained_line_says_how_it_was_allocated() -> None:
    """A team pool's tiers are over the pool's quantity: without the allocation, the demo's
    line read as tiers that do not add up to its quantity."""
    line = {
        "cost_center": "cc",
        "team": "t",
        "app": "a",
        "item": "tokens",
        "quantity": "380195391",
        "unit": "token",
        "unit_price": "0.0000010036",
        "pricing_rule": "graduated: 1000000 @ 0.0000015 + 1508992612 @ 0.000001",
        "amount": "381.57",
        "currency": "USD",
        "audit_key": "k",
        "allocation_method": "pooled by team 't': 380195391 of 1518992612 units",
    }
    output = io.StringIO()
    explanation = {"line": line, "daily": [], "top_events": [], "markers": [], "notes": []}
    print_explanation(Console(file=output, width=200), explanation)
    assert "allocation: pooled by team 't': 380195391 of 1518992612 units" in output.getvalue()
