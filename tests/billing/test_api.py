"""Billing over HTTP with usage fed through ingestion and the real pipeline: runs, roles,
finalization, adjustments for late usage and a back-dated price change, exports, explain,
and preview."""

from __future__ import annotations

import csv
import io
import json
from collections import defaultdict
from datetime import timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import select, update

from quartermaster.billing.explain import daily_from_raw, daily_from_rollups
from quartermaster.billing.focus import MANDATORY_COLUMNS
from quartermaster.billing.models import BillingDocument, BillingLine
from quartermaster.domain.timeutil import utc_now
from quartermaster.usage.meters import Aggregation
from tests.billing.platform import (
    JANUARY_MONTH,
    PIPELINE_TOTAL,
    Platform,
    event,
    jan,
)
from tests.billing.support import JANUARY

EXPECTED_LINES = {
    ("usage", "web", "cpu_seconds"): "8.000000",
    ("usage", "web", "requests"): "0.010000",
    ("usage", "api", "cpu_seconds"): "0.000000",
    ("usage", "api", "requests"): "0.005000",
    ("usage", "etl", "requests"): "0.002000",
    ("discount", "etl", "requests"): "-0.000200",
    ("subscription", "etl", "storage_gb_days"): "12.500000",
    ("platform", "web", "lb"): "17.647059",
    ("platform", "api", "lb"): "8.823529",
    ("platform", "etl", "lb"): "3.529412",
    ("platform", "web", "control_plane"): "3.000000",
    ("platform", "api", "control_plane"): "3.000000",
    ("platform", "etl", "control_plane"): "3.000000",
}


def _run(platform: Platform, **extra: Any) -> dict[str, Any]:
    response = platform.client.post(
        "/v1/billing/runs", json={"month": JANUARY_MONTH, **extra}, headers=platform.headers
    )
    assert response.status_code in (200, 201), response.text
    body: dict[str, Any] = response.json()
    return body


def _detail(platform: Platform, run_id: str, headers: dict[str, str] | None = None) -> Any:
    response = platform.client.get(
        f"/v1/billing/runs/{run_id}", headers=headers or platform.headers
    )
    assert response.status_code == 200, response.text
    return response.json()


def _export(platform: Platform, run_id: str, fmt: str, **params: Any) -> str:
    response = platform.client.get(
        f"/v1/billing/runs/{run_id}/export",
        params={"format": fmt, **params},
        headers=platform.headers,
    )
    assert response.status_code == 200, response.text
    return response.text


def test_a_month_billed_from_the_pipeline_matches_the_hand_computation(
    platform: Platform,
) -> None:
    created = _run(platform)
    assert created["outcome"] == "created"
    run = created["run"]
    assert run["status"] == "draft"
    assert run["period_start"] == "2026-01-01T00:00:00Z"
    assert run["period_end"] == "2026-02-01T00:00:00Z"
    assert Decimal(run["total"]) == PIPELINE_TOTAL
    detail = _detail(platform, run["id"])
    assert _detail(platform, run["id"][:12])["document"]["id"] == run["id"]  # a unique prefix
    got = {
        (line["cost_type"], line["app"], line["item"]): line["amount"] for line in detail["lines"]
    }
    assert got == EXPECTED_LINES
    assert sum(Decimal(line["amount"]) for line in detail["lines"]) == PIPELINE_TOTAL
    web_cpu = next(line for line in detail["lines"] if line["item"] == "cpu_seconds")
    assert web_cpu["unit"] == "cpu-s"
    assert web_cpu["audit_key"].startswith("20260101T0000Z-20260201T0000Z/")
    reproduced = platform.client.get(
        f"/v1/billing/runs/{run['id']}/reproduce", headers=platform.headers
    ).json()
    assert reproduced["identical"], reproduced["differences"]
    _check_roles(platform, run)
    _check_preview(platform)
    by_item = {(line["app"], line["item"]): line for line in detail["lines"]}
    _check_explain_by_prefix(  # changes a draft line's id: last
        platform, by_item["web", "cpu_seconds"], other=by_item["api", "cpu_seconds"]
    )


def _check_roles(platform: Platform, run: dict[str, Any]) -> None:
    """A team-member sees its own team's lines only; finance reads but never writes."""
    member = platform.key_for("team-member", team="data")
    finance = platform.key_for("finance")
    mine = _detail(platform, run["id"], headers=member)
    assert {line["team"] for line in mine["lines"]} == {"data"}
    assert mine["team"] == "data"
    assert mine["document"]["total"] is None
    # etl: requests 0.0018 + storage 12.50 + lb 3.529412 + control plane 3.00
    assert Decimal(mine["visible_total"]) == Decimal("19.031212")
    member_csv = platform.client.get(
        f"/v1/billing/runs/{run['id']}/export", params={"format": "csv"}, headers=member
    ).text
    assert {row["team_id"] for row in csv.DictReader(io.StringIO(member_csv))} == {"data"}
    member_json = platform.client.get(
        f"/v1/billing/runs/{run['id']}/export", params={"format": "json"}, headers=member
    ).json()
    # As the document's detail: the invoice total hidden, the team's sum as visible_total.
    summary = member_json["documents"][0]
    assert (summary["total"], summary["visible_total"], summary["team"]) == (
        None,
        "19.031212",
        "data",
    )
    for headers in (member, finance):
        refused = platform.client.post(f"/v1/billing/runs/{run['id']}/finalize", headers=headers)
        assert refused.status_code == 403
        refused = platform.client.post(
            "/v1/billing/runs", json={"month": JANUARY_MONTH}, headers=headers
        )
        assert refused.status_code == 403
    seen = _detail(platform, run["id"], headers=finance)
    assert Decimal(seen["document"]["total"]) == PIPELINE_TOTAL
    assert len(seen["lines"]) == len(EXPECTED_LINES)
    listed = platform.client.get("/v1/billing/runs", headers=finance).json()
    assert [d["id"] for d in listed] == [run["id"]]
    app_key = platform.key_for("app", app_id="web")
    assert platform.client.get("/v1/billing/runs", headers=app_key).status_code == 403


def test_finalized_run_late_usage_and_back_dated_price_change(platform: Platform) -> None:
    run = _run(platform)["run"]
    finalized = platform.client.post(
        f"/v1/billing/runs/{run['id']}/finalize", headers=platform.headers
    )
    assert finalized.status_code == 200, finalized.text
    assert finalized.json()["status"] == "finalized"
    assert finalized.json()["outcome"] == "finalized"
    assert (finalized.json()["events_waiting"], finalized.json()["waiting_until"]) == (0, None)
    twice = platform.client.post(f"/v1/billing/runs/{run['id']}/finalize", headers=platform.headers)
    assert twice.status_code == 200, twice.text
    assert twice.json()["outcome"] == "unchanged"  # final already: nothing was done
    assert twice.json()["finalized_at"] == finalized.json()["finalized_at"]
    again = _run(platform)
    assert again["outcome"] == "unchanged"
    assert again["run"]["id"] == run["id"]
    assert Decimal(again["run"]["total"]) == PIPELINE_TOTAL

    # Late usage for January, recorded after the run was issued.
    platform.send(
        [event("resource.usage", jan(31), {"resource_id": "api-pod-1", "cpu_seconds": 1500})]
    )
    adjusted = platform.client.post(
        "/v1/billing/adjustments", json={"run_id": run["id"]}, headers=platform.headers
    )
    assert adjusted.status_code == 201, adjusted.text
    first = adjusted.json()["adjustment"]
    document = first["document"]
    assert document["document_type"] == "adjustment"
    assert document["corrects_run_id"] == run["id"]
    assert (document["period_start"], document["period_end"]) == (
        run["period_start"],
        run["period_end"],
    )
    assert [
        (line["adjusted_cost_type"], line["app"], line["item"], line["amount"])
        for line in first["lines"]
    ] == [("usage", "api", "cpu_seconds", "2.000000")]
    nothing = platform.client.post(
        "/v1/billing/adjustments", json={"run_id": run["id"]}, headers=platform.headers
    )
    assert nothing.status_code == 200
    assert nothing.json()["adjustment"] is None

    # A price book version recorded now, effective back in January.
    prices = json.loads(json.dumps(_prices_with_requests_at("0.0006")))
    platform.upload_price_book(version=2, prices=prices)
    rerated = platform.client.post(
        "/v1/billing/adjustments", json={"run_id": run["id"]}, headers=platform.headers
    )
    assert rerated.status_code == 201, rerated.text
    second = rerated.json()["adjustment"]
    got = {
        (line["adjusted_cost_type"], line["app"], line["item"]): line["amount"]
        for line in second["lines"]
    }
    assert got == {
        ("usage", "web", "requests"): "0.002000",
        ("usage", "api", "requests"): "0.001000",
        ("usage", "etl", "requests"): "0.000400",
        ("discount", "etl", "requests"): "-0.000040",
    }
    assert second["document"]["price_book_versions"] == "2"
    run_after = _detail(platform, run["id"])
    assert Decimal(run_after["document"]["total"]) == PIPELINE_TOTAL
    assert [a["sequence"] for a in run_after["adjustments"]] == [1, 2]

    _check_exports(platform, run["id"], [document["id"], second["document"]["id"]])
    _check_explain(platform, run_after["lines"])


def _prices_with_requests_at(price: str) -> list[dict[str, Any]]:
    from tests.billing.support import PRICES

    return [
        {**rule, "unit_price": price} if rule["meter"] == "requests" else rule for rule in PRICES
    ]


def _check_exports(platform: Platform, run_id: str, adjustment_ids: list[str]) -> None:
    totals = {run_id: PIPELINE_TOTAL}
    for adjustment_id in adjustment_ids:
        totals[adjustment_id] = Decimal(_detail(platform, adjustment_id)["document"]["total"])

    chargeback = list(csv.DictReader(io.StringIO(_export(platform, run_id, "csv"))))
    assert {
        "cost_center",
        "team_id",
        "app_id",
        "cost_type",
        "usage",
        "unit_price",
        "amount",
        "allocation_method",
        "audit_key",
        "period_start",
        "period_end",
        "run_id",
    } <= set(chargeback[0])
    assert sum(Decimal(row["amount"]) for row in chargeback) == PIPELINE_TOTAL
    as_json = json.loads(_export(platform, run_id, "json", include_adjustments="true"))
    assert [d["id"] for d in as_json["documents"]] == [run_id, *adjustment_ids]
    assert {line["run_id"] for line in as_json["lines"]} == set(totals)

    focus_text = _export(platform, run_id, "focus", include_adjustments="true")
    rows = list(csv.DictReader(io.StringIO(focus_text)))
    header = next(csv.reader(io.StringIO(focus_text)))
    assert list(MANDATORY_COLUMNS) == header[: len(MANDATORY_COLUMNS)]
    assert len(MANDATORY_COLUMNS) == 21
    billed: dict[str, Decimal] = defaultdict(Decimal)
    for row in rows:
        billed[row["x_DocumentId"]] += Decimal(row["BilledCost"])
        for column in ("BillingAccountId", "ChargeCategory", "ServiceName", "BillingCurrency"):
            assert row[column], column
    assert dict(billed) == totals  # BilledCost per document sums to its total
    corrections = [row for row in rows if row["x_DocumentId"] in adjustment_ids]
    assert corrections
    assert all(
        (row["ChargeCategory"], row["ChargeClass"]) == ("Adjustment", "Correction")
        for row in corrections
    )
    usage_rows = [row for row in rows if row["x_DocumentId"] == run_id]
    etl_requests = next(
        row
        for row in usage_rows
        if row["ResourceId"] == "etl"
        and row["x_CostType"] == "usage"
        and "requests" in row["ServiceName"]
    )
    # The data-team discount is applied on its row (FOCUS discount handling).
    assert (etl_requests["ListCost"], etl_requests["BilledCost"]) == ("0.002000", "0.001800")
    assert etl_requests["SubAccountId"] == "data"
    assert json.loads(etl_requests["Tags"])["cost_center"] == "analytics"
    assert etl_requests["BillingPeriodStart"] == "2026-01-01T00:00:00Z"


def _check_explain(platform: Platform, lines: list[dict[str, Any]]) -> None:
    web_cpu = next(line for line in lines if (line["app"], line["item"]) == ("web", "cpu_seconds"))
    response = platform.client.get(
        f"/v1/billing/lines/{web_cpu['id']}/explain", headers=platform.headers
    )
    assert response.status_code == 200, response.text
    explained = response.json()
    assert Decimal(explained["daily_total"]) == Decimal(web_cpu["quantity"]) == 5000
    busy = [d for d in explained["daily"] if d["events"]]
    assert [(d["start"][:10], Decimal(d["value"])) for d in busy] == [
        ("2026-01-05", Decimal(3000)),
        ("2026-01-12", Decimal(2000)),
    ]
    assert [Decimal(e["quantity"]) for e in explained["top_events"]] == [3000, 2000]
    assert all(e["in_document"] for e in explained["top_events"])
    assert [(m["action"], m["replicas"]) for m in explained["markers"]] == [
        ("deploy", None),
        ("scale", 3),
    ]
    by_audit_key = platform.client.get(
        f"/v1/billing/lines/{web_cpu['audit_key']}/explain", headers=platform.headers
    )
    assert by_audit_key.json()["line"]["id"] == web_cpu["id"]
    lb = next(line for line in lines if (line["app"], line["item"]) == ("api", "lb"))
    shared = platform.client.get(
        f"/v1/billing/lines/{lb['id']}/explain", headers=platform.headers
    ).json()
    assert sum(Decimal(d["value"]) for d in shared["shared_costs"]) == Decimal("30")
    assert sum(Decimal(d["value"]) for d in shared["daily"]) == 10  # api's requests: the basis
    api_cpu = next(line for line in lines if (line["app"], line["item"]) == ("api", "cpu_seconds"))
    _check_day_series_agree(platform, api_cpu)
    missing = platform.client.get(
        "/v1/billing/lines/" + "0" * 32 + "/explain", headers=platform.headers
    )
    assert missing.status_code == 404


def _check_explain_by_prefix(
    platform: Platform, line: dict[str, Any], *, other: dict[str, Any]
) -> None:
    """`qm bill show` prints 12 characters of each line id; like git, a unique prefix of 8 or
    more names the line, within the caller's tenant and team. `other` is a draft's line (a
    finalized document's lines are immutable), given `line`'s first 10 characters."""
    for prefix in (line["id"][:12], line["id"][:8]):
        by_prefix = platform.client.get(
            f"/v1/billing/lines/{prefix}/explain", headers=platform.headers
        )
        assert by_prefix.status_code == 200, by_prefix.text
        assert by_prefix.json()["line"]["id"] == line["id"]
    too_short = platform.client.get(
        f"/v1/billing/lines/{line['id'][:7]}/explain", headers=platform.headers
    )
    assert too_short.status_code == 422  # says how long a prefix must be, not "not found"
    assert "too short: give 8 characters or more" in too_short.json()["error"]["message"]
    other_team = platform.key_for("team-member", team="data")
    hidden = platform.client.get(f"/v1/billing/lines/{line['id'][:12]}/explain", headers=other_team)
    assert hidden.status_code == 404
    # Two lines sharing a prefix: the prefix names neither, and the error says so.
    differs = "0" if line["id"][10] != "0" else "1"
    with platform.runtime.session_factory() as session:
        session.execute(
            update(BillingLine)
            .where(BillingLine.id == other["id"])
            .values(id=line["id"][:10] + differs + other["id"][11:])
        )
        session.commit()
    ambiguous = platform.client.get(
        f"/v1/billing/lines/{line['id'][:10]}/explain", headers=platform.headers
    )
    assert ambiguous.status_code == 422
    assert "ambiguous" in ambiguous.json()["error"]["message"]
    longer = platform.client.get(
        f"/v1/billing/lines/{line['id'][:12]}/explain", headers=platform.headers
    )
    assert longer.json()["line"]["id"] == line["id"]


def _check_preview(platform: Platform) -> None:
    now = utc_now()
    platform.send(
        [
            event(
                "request.trace",
                now - timedelta(minutes=5),
                {"app_id": "web", "request_id": f"p{n}"},
            )
            for n in range(6)
        ]
    )
    # Preview reads the store as it is: let the pipeline take the new events in first.
    from quartermaster.usage.pipeline import run_pipeline_until_drained

    run_pipeline_until_drained(platform.runtime)
    response = platform.client.get("/v1/billing/preview", headers=platform.headers)
    assert response.status_code == 200, response.text
    preview = response.json()
    assert Decimal(preview["month_to_date"]) == Decimal("0.003")  # 6 x 0.0005
    assert Decimal(preview["forecast"]) >= Decimal(preview["month_to_date"])
    assert preview["method"].startswith("run-rate")
    assert [(t["team"], Decimal(t["month_to_date"])) for t in preview["teams"]] == [
        ("web", Decimal("0.003"))
    ]
    assert [a["app"] for a in preview["apps"]] == ["web"]
    _check_preview_team_filter(platform)


def _check_preview_team_filter(platform: Platform) -> None:
    """?team= limits the preview to one team; a team-member naming another team (or none that
    exists) is refused rather than answered with its own team's preview."""

    def get(headers: dict[str, str], team: str) -> Any:
        return platform.client.get("/v1/billing/preview", params={"team": team}, headers=headers)

    finance = platform.key_for("finance")
    for headers in (platform.headers, finance):
        web = get(headers, "web").json()
        assert (web["team"], Decimal(web["month_to_date"])) == ("web", Decimal("0.003"))
        assert [t["team"] for t in web["teams"]] == ["web"]
        data = get(headers, "data").json()
        assert (data["team"], Decimal(data["month_to_date"]), data["apps"]) == ("data", 0, [])
    unknown = get(platform.headers, "nope")
    assert unknown.status_code == 422, unknown.text
    assert (unknown.json()["error"]["field"], unknown.json()["error"]["message"]) == (
        "team",
        "unknown team 'nope'",
    )
    member = platform.key_for("team-member", team="data")
    assert get(member, "data").json()["team"] == "data"
    for other in ("web", "nope"):
        refused = get(member, other)
        assert refused.status_code == 403, refused.text
        assert refused.json()["error"]["message"] == (
            f"a team-member previews only its own team's costs ('data'), not {other!r}"
        )


def _check_day_series_agree(platform: Platform, line: dict[str, Any]) -> None:
    """Explain's two sources of days (one app's raw rows; the tenant's day rollups) agree."""
    with platform.runtime.session_factory() as session:
        stored = session.get(BillingLine, line["id"])
        assert stored is not None
        store = platform.runtime.usage_store
        now = utc_now()
        from_raw = daily_from_raw(store, stored, JANUARY, now, Aggregation.SUM)
        assert from_raw is not None
        from_rollups = daily_from_rollups(store, stored, JANUARY, Aggregation.SUM)
    assert [(d.start, d.value, d.events) for d in from_raw[0]] == [
        (d.start, d.value, d.events) for d in from_rollups
    ]
    # As of now both include the late 1500 s the run did not have (it billed 500).
    assert sum(d.value for d in from_rollups) == 2000


def test_an_overlapping_run_is_a_409_naming_the_run_and_absurd_periods_a_422(
    platform: Platform,
) -> None:
    """`month` and then the same month at +01:00: both were created and both finalized."""
    run = _run(platform)["run"]
    for body in (
        {"period_start": "2026-01-01T00:00:00+01:00", "period_end": "2026-02-01T00:00:00+01:00"},
        {"period_start": "2025-12-15T00:00:00Z", "period_end": "2026-01-15T00:00:00Z"},
    ):
        refused = platform.client.post("/v1/billing/runs", json=body, headers=platform.headers)
        assert refused.status_code == 409, refused.text
        assert (
            f"overlaps invoice run {run['id']} (draft, from 2026-01-01 00:00 UTC until "
            "2026-02-01 00:00 UTC)"
        ) in refused.json()["error"]["message"]
    never = platform.client.post(
        "/v1/billing/runs",
        json={"period_start": "2026-02-01T00:00:00Z", "period_end": "9999-12-31T00:00:00Z"},
        headers=platform.headers,
    )
    assert never.status_code == 422, never.text
    assert (
        "the period ends 9999-12-31 00:00 UTC, after the month in progress ends"
        in (never.json()["error"]["message"])
    )
    with platform.runtime.session_factory() as session:
        assert session.scalars(select(BillingDocument.id)).all() == [run["id"]]


def test_finalize_says_how_many_events_of_the_period_still_wait(platform: Platform) -> None:
    """An event of an unknown resource waits in the reconciliation window: finalizing said
    nothing, and an adjustment was then certain."""
    platform.send(
        [event("resource.usage", jan(20), {"resource_id": "ghost-pod", "cpu_seconds": 70})]
    )
    run = _run(platform)["run"]
    finalized = platform.client.post(
        f"/v1/billing/runs/{run['id']}/finalize", headers=platform.headers
    )
    assert finalized.status_code == 200, finalized.text
    body = finalized.json()
    assert body["status"] == "finalized"
    assert body["events_waiting"] == 1
    assert body["waiting_until"] > utc_now().isoformat()[:19]


def _get(
    platform: Platform, path: str, headers: dict[str, str] | None = None, **params: Any
) -> Any:
    response = platform.client.get(path, params=params, headers=headers or platform.headers)
    assert response.status_code == 200, response.text
    return response.json()


def test_a_documents_lines_page_filter_and_sum_on_the_server(platform: Platform) -> None:
    """GET /v1/billing/runs/{id} answered all 40,788 lines of a 3,000-app month (26 MB) and
    `qm bill show` downloaded them to print 30: the lines page, the document comes without
    them, and the summary is summed by the server."""
    run = _run(platform)["run"]
    base = f"/v1/billing/runs/{run['id']}"
    everything = _detail(platform, run["id"])["lines"]
    # Without lines (the default still lists them all): their count and sum stay.
    bare = _get(platform, base, lines="false")
    assert bare["lines"] == []
    assert bare["visible_line_count"] == len(everything) == len(EXPECTED_LINES)
    assert Decimal(bare["visible_total"]) == PIPELINE_TOTAL
    # Pages of 5 in order, the last one with no next_after.
    paged: list[dict[str, Any]] = []
    params: dict[str, Any] = {"limit": 5}
    while True:
        page = _get(platform, f"{base}/lines", **params)
        paged.extend(page["lines"])
        assert len(page["lines"]) <= 5
        if page["next_after"] is None:
            break
        params["after"] = page["next_after"]
    assert [line["id"] for line in paged] == [line["id"] for line in everything]
    assert len(_get(platform, f"{base}/lines")["lines"]) == len(everything)  # default 100
    # Filters by owner.
    etl = _get(platform, f"{base}/lines", app="etl")["lines"]
    assert {line["app"] for line in etl} == {"etl"}
    assert len(etl) == sum(1 for key in EXPECTED_LINES if key[1] == "etl")
    assert {line["team"] for line in _get(platform, f"{base}/lines", team="data")["lines"]} == {
        "data"
    }
    analytics = _get(platform, f"{base}/lines", cost_center="analytics")["lines"]
    assert {line["cost_center"] for line in analytics} == {"analytics"}
    for bad, name in (
        # A slug the tenant lacks: a typo, not a team without costs.
        ({"team": "nobody"}, "team"),
        ({"cost_center": "nowhere"}, "cost_center"),
        ({"app": "nothing"}, "app"),
        ({"limit": 0}, "limit"),
        ({"after": -1}, "after"),
        ({"limit": 5001}, "limit"),
    ):
        refused = platform.client.get(f"{base}/lines", params=bad, headers=platform.headers)
        assert refused.status_code == 422
        assert name in refused.text
    # The summary, as the lines sum.
    summary = _get(platform, f"{base}/summary", top=2)
    assert Decimal(summary["visible_total"]) == PIPELINE_TOTAL
    assert summary["visible_line_count"] == len(everything)
    assert summary["apps"] == 3
    per_app: dict[str, Decimal] = defaultdict(Decimal)
    for line in everything:
        per_app[line["app"]] += Decimal(line["amount"])
    assert [(s["app"], Decimal(s["amount"])) for s in summary["top_apps"]] == sorted(
        per_app.items(), key=lambda kv: -kv[1]
    )[:2]
    assert sum(Decimal(s["amount"]) for s in summary["cost_centers"]) == PIPELINE_TOTAL
    assert {(s["cost_center"], s["team"]) for s in summary["teams"]} == {
        ("eng", "web"),
        ("analytics", "data"),
    }
    # A team-member: its own team's lines only, whatever it filters by; totals hidden.
    member = platform.key_for("team-member", team="data")
    mine = _get(platform, f"{base}/lines", headers=member)
    assert mine["team"] == "data"
    assert {line["team"] for line in mine["lines"]} == {"data"}
    assert _get(platform, f"{base}/lines", headers=member, team="web")["lines"] == []
    assert _get(platform, f"{base}/lines", headers=member, app="web")["lines"] == []
    theirs = _get(platform, f"{base}/summary", headers=member)
    assert theirs["document"]["total"] is None
    assert Decimal(theirs["visible_total"]) == Decimal("19.031212")
    assert theirs["visible_line_count"] == len(mine["lines"]) == 5
    assert {s["team"] for s in theirs["teams"]} == {"data"}
    assert {s["app"] for s in theirs["top_apps"]} == {"etl"}
    bare = _get(platform, base, headers=member, lines="false")
    assert (bare["visible_line_count"], bare["visible_total"]) == (5, "19.031212")
    assert bare["document"]["total"] is None


def test_a_filter_given_twice_is_refused_naming_it(platform: Platform) -> None:
    """`?team=web&team=data` answered the last team's lines only (FastAPI keeps one value of
    a single-valued parameter), as if the first team had none. Each filter takes one value
    (docs/billing.md): two are a 422 naming the parameter, on every billing route."""
    run = _run(platform)["run"]
    base = f"/v1/billing/runs/{run['id']}"
    cases: list[tuple[str, list[tuple[str, str]], str]] = [
        (f"{base}/lines", [("team", "web"), ("team", "data")], "team"),
        (f"{base}/lines", [("cost_center", "eng"), ("cost_center", "analytics")], "cost_center"),
        (f"{base}/lines", [("app", "etl"), ("limit", "5"), ("app", "web")], "app"),
        (f"{base}/lines", [("limit", "5"), ("limit", "5")], "limit"),
        (f"{base}/summary", [("top", "2"), ("top", "3")], "top"),
        ("/v1/billing/runs", [("status", "draft"), ("status", "finalized")], "status"),
        ("/v1/billing/preview", [("team", "web"), ("team", "data")], "team"),
    ]
    for path, params, name in cases:
        refused = platform.client.get(path, params=params, headers=platform.headers)
        assert refused.status_code == 422, (path, params, refused.text)
        error = refused.json()["error"]
        assert (error["code"], error["field"]) == ("invalid_input", name)
        assert error["message"].startswith(f"query parameter '{name}' is given 2 times"), error
    # one value each still filters; a request without a key is 401 before its parameters count
    assert {line["team"] for line in _get(platform, f"{base}/lines", team="web")["lines"]} == {
        "web"
    }
    anonymous = platform.client.get(f"{base}/lines", params=[("team", "a"), ("team", "b")])
    assert anonymous.status_code == 401


def test_reproduce_first_lets_this_servers_pipeline_catch_up(platform: Platform) -> None:
    """A second server, or this one after its usage store was rebuilt, reproduces a bill
    only once its store holds the whole log (as a run does): it answered 'not identical'."""
    from quartermaster.usage.pipeline import pipeline_worker

    run = _run(platform)["run"]
    pipeline_worker(platform.runtime).replay(None)  # the store drops its usage, to rebuild
    reproduced = platform.client.get(
        f"/v1/billing/runs/{run['id']}/reproduce", headers=platform.headers
    )
    assert reproduced.status_code == 200, reproduced.text
    assert reproduced.json()["identical"], reproduced.json()["differences"]


def test_an_empty_runs_total_is_written_as_every_total_is(platform: Platform) -> None:
    """A month nothing was sent for: its total reads 0.000000, in the answer and the JSON
    export, as a total of lines does (it read 0)."""
    run = platform.client.post(
        "/v1/billing/runs", json={"month": "2026-03"}, headers=platform.headers
    ).json()["run"]
    assert (run["line_count"], run["total"]) == (0, "0.000000")
    exported = platform.client.get(
        f"/v1/billing/runs/{run['id']}/export", params={"format": "json"}, headers=platform.headers
    )
    assert exported.status_code == 200, exported.text
    (summary,) = exported.json()["documents"]
    assert (summary["total"], summary["visible_total"]) == ("0.000000", "0.000000")
