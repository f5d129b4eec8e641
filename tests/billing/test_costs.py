"""GET /v1/billing/costs: what any period cost, priced as a run of it would be, stored nowhere,
for admin, finance and a team-member's own team."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from tests.billing.platform import JANUARY_MONTH, PIPELINE_TOTAL, Platform, jan


def _costs(platform: Platform, headers: dict[str, str] | None = None, **params: Any) -> Any:
    return platform.client.get(
        "/v1/billing/costs", params=params, headers=headers or platform.headers
    )


def _ok(platform: Platform, headers: dict[str, str] | None = None, **params: Any) -> Any:
    response = _costs(platform, headers, **params)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_months_costs_are_what_its_run_bills_and_nothing_is_stored(platform: Platform) -> None:
    costs = _ok(platform, month=JANUARY_MONTH)
    assert (costs["period_start"], costs["period_end"]) == (
        "2026-01-01T00:00:00Z",
        "2026-02-01T00:00:00Z",
    )
    assert Decimal(costs["total"]) == PIPELINE_TOTAL
    assert sum(Decimal(t["amount"]) for t in costs["teams"]) == PIPELINE_TOTAL
    assert costs["complete"] is True
    assert costs["events_waiting"] == 0
    amounts = [Decimal(t["amount"]) for t in costs["teams"]]
    assert amounts == sorted(amounts, reverse=True)  # largest first
    assert {a["app"] for a in costs["apps"]} == {"web", "api", "etl"}
    listed = platform.client.get("/v1/billing/runs", headers=platform.headers).json()
    assert listed == []  # a question, not a document
    run = platform.client.post(
        "/v1/billing/runs", json={"month": JANUARY_MONTH}, headers=platform.headers
    ).json()["run"]
    assert Decimal(run["total"]) == Decimal(costs["total"])


def test_any_period_is_priced_and_its_costs_are_the_events_in_it(platform: Platform) -> None:
    whole = _ok(platform, month=JANUARY_MONTH)
    start, end = jan(1, 0).isoformat(), jan(6, 0).isoformat()
    first_days = _ok(platform, period_start=start, period_end=end)
    assert first_days["period_start"] == "2026-01-01T00:00:00Z"
    assert first_days["period_end"] == "2026-01-06T00:00:00Z"
    # web's 3000 cpu-s of Jan 5 are in it, its 2000 of Jan 12 are not.
    web = {a["app"]: Decimal(a["amount"]) for a in first_days["apps"]}
    whole_web = {a["app"]: Decimal(a["amount"]) for a in whole["apps"]}
    assert 0 < web["web"] < whole_web["web"]
    assert Decimal(first_days["total"]) < Decimal(whole["total"])


def test_a_team_reads_its_own_costs_and_roles_are_kept(platform: Platform) -> None:
    finance = platform.key_for("finance")
    member = platform.key_for("team-member", team="data")
    for headers in (platform.headers, finance):
        data = _ok(platform, headers, month=JANUARY_MONTH, team="data")
        assert data["team"] == "data"
        # etl: requests 0.0018 + storage 12.50 + lb 3.529412 + control plane 3.00
        assert Decimal(data["total"]) == Decimal("19.031212")
        assert {t["team"] for t in data["teams"]} == {"data"}
    own = _ok(platform, member, month=JANUARY_MONTH)
    assert (own["team"], Decimal(own["total"])) == ("data", Decimal("19.031212"))
    refused = _costs(platform, member, month=JANUARY_MONTH, team="web")
    assert refused.status_code == 403, refused.text
    app_key = platform.key_for("app", app_id="web")
    assert _costs(platform, app_key, month=JANUARY_MONTH).status_code == 403


@pytest.mark.parametrize(
    ("params", "field", "words"),
    [
        ({"month": JANUARY_MONTH, "team": "nope"}, "team", "unknown team 'nope'"),
        (
            {"period_start": "2026-01-05T00:00:00Z", "period_end": "2026-01-02T00:00:00Z"},
            "period_end",
            "is not after period_start",
        ),
        ({"period_start": "2026-01-05T00:00:00Z"}, "period_end", "is required"),
        (
            {"month": JANUARY_MONTH, "period_start": "2026-01-05T00:00:00Z"},
            "month",
            "not both",
        ),
        ({"month": "2026-13"}, "month", "month 13 is not within 1-12"),
        ({"month": JANUARY_MONTH, "price_book": "nope"}, None, "nope"),
    ],
)
def test_a_bad_question_is_refused_naming_what(
    platform: Platform, params: dict[str, str], field: str | None, words: str
) -> None:
    refused = _costs(platform, **params)
    assert refused.status_code in (404, 422), refused.text
    error = refused.json()["error"]
    if field is not None:
        assert error["field"] == field
    assert words in error["message"]
