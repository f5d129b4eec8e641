"""How `qm usage show` lays out the API's usage rows."""

from __future__ import annotations

from typing import Any

from rich.console import Console

from quartermaster.cli.usage import usage_table


def _row(cost_center: str, team: str | None, app: str | None, meter: str, **kw: Any) -> Any:
    return {
        "cost_center": cost_center,
        "team": team,
        "app": app,
        "meter": meter,
        "quantity": kw.get("quantity", "1"),
        "unit": kw.get("unit", "cpu-s"),
        "event_count": kw.get("events", 1),
        "unattributed": app is None,
    }


def _cells(usage: dict[str, Any], width: int = 120) -> list[list[str]]:
    console = Console(width=width, record=True)
    console.print(usage_table(usage))
    return [
        [cell.strip() for cell in line.strip("│").split("│")]
        for line in console.export_text().splitlines()
        if line.startswith("│")
    ]


def test_rows_are_grouped_by_owner_and_app_with_quantities_in_their_units() -> None:
    usage = {
        "start": "2026-11-01T00:00:00Z",
        "end": "2026-12-01T00:00:00Z",
        "rows": [
            _row("cc-1", "web", "shop", "requests", quantity="1234567", unit="request"),
            _row("cc-1", "web", "api", "cpu_seconds", quantity="458145.261", events=1440),
            _row("cc-1", "web", "shop", "cpu_seconds", quantity="-2.5"),
            _row("default", None, None, "cpu_seconds", quantity="12", events=2843),
        ],
    }
    assert _cells(usage) == [
        ["cc-1", "api", "cpu_seconds", "458,145.261 cpu-s", "1,440"],
        ["web", "", "", "", ""],
        # The same owner again: named on its first row only; the same app likewise.
        ["", "shop", "cpu_seconds", "-2.5 cpu-s", "1"],
        ["", "", "requests", "1,234,567 request", "1"],
        ["default", "unattributed", "cpu_seconds", "12 cpu-s", "2,843"],
        ["-", "", "", "", ""],
    ]
