"""GET /v1/billing/costs: what any period cost, priced as a run of it would be, stored nowhere,
for admin, finance and a team-member's own team."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from quartermaster.billing.costs import by_owner
from quartermaster.billing.lines import LineDraft
from quartermaster.billing.models import CostType
from quartermaster.billing.sources import pipeline_catch_up
from quartermaster.domain.timeutil import utc_now
from tests.billing.platform import JANUARY_MONTH, PIPELINE_TOTAL, Platform, event, jan


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


def test_costs_say_what_they_leave_out_as_a_run_does(platform: Platform) -> None:
    platform.send(
        [
            # memory_gb_hours has no price rule; a EUR cost cannot be priced in a USD book.
            event("resource.usage", jan(9), {"resource_id": "etl-vol", "memory_gb_hours": 5}),
            event(
                "platform.cost",
                jan(2, 0),
                {"cost_type": "cdn", "amount": "4.00", "currency": "EUR"},
            ),
        ]
    )
    pipeline_catch_up(platform.runtime)()
    costs = _ok(platform, month=JANUARY_MONTH)
    run = platform.client.post(
        "/v1/billing/runs", json={"month": JANUARY_MONTH}, headers=platform.headers
    ).json()["run"]
    assert costs["note"] == run["note"]
    assert "usage with no price rule (billed at 0): memory_gb_hours" in costs["note"]
    assert "platform costs not in the price book's currency USD" in costs["note"]
    # A team's: its own unpriced usage, not the tenant's platform costs.
    member = platform.key_for("team-member", team="data")
    own = _ok(platform, member, month=JANUARY_MONTH)
    assert own["note"] == "usage with no price rule (billed at 0): memory_gb_hours"
    web = _ok(platform, month=JANUARY_MONTH, team="web")
    assert web["note"] is None


def test_a_preview_says_what_it_leaves_out_as_costs_do(platform: Platform) -> None:
    now = utc_now()
    platform.send(
        [
            event(
                "resource.usage",
                now - timedelta(minutes=5),
                {"resource_id": "etl-vol", "memory_gb_hours": 5},
            )
        ]
    )
    pipeline_catch_up(platform.runtime)()
    preview = platform.client.get("/v1/billing/preview", headers=platform.headers).json()
    assert preview["note"] == "usage with no price rule (billed at 0): memory_gb_hours"
    web = platform.client.get(
        "/v1/billing/preview", params={"team": "web"}, headers=platform.headers
    ).json()
    assert web["note"] is None


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


_owners = st.tuples(
    st.sampled_from(["default", "rnd"]),
    st.sampled_from([None, "web", "data"]),
    st.sampled_from([None, "shop", "etl"]),
)
_amounts = st.decimals(min_value=Decimal("-50"), max_value=Decimal("500"), places=6)


def _line(owner: tuple[str, str | None, str | None], amount: Decimal) -> LineDraft:
    cost_center, team, app = owner
    return LineDraft(
        cost_type=CostType.DISCOUNT if amount < 0 else CostType.USAGE,
        item="compute",
        cost_center=cost_center,
        team=team,
        app=app,
        lifecycle=None,
        meter=None,
        unit=None,
        quantity=Decimal(1),
        unit_price=None,
        amount=amount,
        pricing_rule="flat",
        allocation_method="direct",
        versions=(1,),
    )


@given(st.lists(st.tuples(_owners, _amounts), max_size=30))
def test_costs_by_owner_add_up_to_the_lines_and_come_largest_first(
    drafts: list[tuple[tuple[str, str | None, str | None], Decimal]],
) -> None:
    lines = [_line(owner, amount) for owner, amount in drafts]
    teams, apps = by_owner(lines)
    assert sum((row.amount for row in teams), Decimal(0)) == sum(
        (line.amount for line in lines), Decimal(0)
    )
    for row in teams:
        assert row.app is None
        mine = [
            line for line in lines if (line.cost_center, line.team) == (row.cost_center, row.team)
        ]
        assert row.amount == sum((line.amount for line in mine), Decimal(0))
        # A team's total is its apps' plus what was charged to the team as a whole.
        on_apps = [a.amount for a in apps if (a.cost_center, a.team) == (row.cost_center, row.team)]
        on_team = [line.amount for line in mine if line.app is None]
        assert row.amount == sum(on_apps, Decimal(0)) + sum(on_team, Decimal(0))
    assert {(a.cost_center, a.team, a.app) for a in apps} == {
        (line.cost_center, line.team, line.app) for line in lines if line.app is not None
    }
    for rows in (teams, apps):
        assert [row.amount for row in rows] == sorted((row.amount for row in rows), reverse=True)
