"""`explain` of a line whose raw events were purged past retention says so (the top raw
events were dropped silently)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from quartermaster.billing.explain import purged_note
from quartermaster.domain.timeutil import Period, utc_now
from tests.billing.platform import JANUARY_MONTH, Platform

JAN = Period(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))


def test_a_line_of_a_purged_period_says_its_raw_events_were_purged(platform: Platform) -> None:
    run = platform.client.post(
        "/v1/billing/runs", json={"month": JANUARY_MONTH}, headers=platform.headers
    ).json()["run"]
    lines = platform.client.get(f"/v1/billing/runs/{run['id']}", headers=platform.headers)
    web_cpu = next(
        line
        for line in lines.json()["lines"]
        if (line["app"], line["item"]) == ("web", "cpu_seconds")
    )
    url = f"/v1/billing/lines/{web_cpu['id']}/explain"
    before = platform.client.get(url, headers=platform.headers).json()
    assert before["top_events"]
    assert not any("purged" in note for note in before["notes"])

    # raw rows are kept by when they became billable: these events, sent today
    boundary = utc_now() + timedelta(minutes=1)
    platform.runtime.usage_store.purge_raw(before=boundary)
    stamp = boundary.isoformat().replace("+00:00", "Z")
    after = platform.client.get(url, headers=platform.headers)
    assert after.status_code == 200, after.text
    explained = after.json()
    assert explained["top_events"] == []
    assert (
        "top raw events: none kept, the raw events that became billable before the "
        f"retention boundary {stamp} were purged (QM_RAW_RETENTION_DAYS)"
    ) in explained["notes"]


def test_the_note_of_a_period_purged_in_part_or_not_at_all() -> None:
    assert purged_note(None, JAN, kept=0) is None
    assert purged_note(JAN.start, JAN, kept=0) is None
    assert purged_note(JAN.start + timedelta(days=10), JAN, kept=3) == (
        "top raw events: only those kept, the raw events that became billable before the "
        "retention boundary 2026-01-11T00:00:00Z were purged (QM_RAW_RETENTION_DAYS)"
    )
