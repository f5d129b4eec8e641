"""Billing periods: calendar months in the tenant's time zone, half-open, in UTC."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from quartermaster.billing.periods import (
    month_containing,
    parse_month,
    previous_month,
    resolve_period,
    tenant_zone,
)
from quartermaster.errors import InvalidInputError

BERLIN = tenant_zone("Europe/Berlin")
UTC_ZONE = tenant_zone(None)


def test_a_month_in_the_tenants_zone_is_a_utc_half_open_period() -> None:
    january = parse_month("2026-01", BERLIN)
    assert january.start == datetime(2025, 12, 31, 23, tzinfo=UTC)
    assert january.end == datetime(2026, 1, 31, 23, tzinfo=UTC)
    march = parse_month("2026-03", BERLIN)  # summer time starts on March 29th
    assert march.duration == timedelta(days=31) - timedelta(hours=1)
    december = parse_month("2026-12", UTC_ZONE)
    assert (december.start, december.end) == (
        datetime(2026, 12, 1, tzinfo=UTC),
        datetime(2027, 1, 1, tzinfo=UTC),
    )


def test_month_containing_and_previous_month_follow_local_time() -> None:
    # 23:30 UTC on January 31st is already February 1st in Berlin.
    moment = datetime(2026, 1, 31, 23, 30, tzinfo=UTC)
    assert month_containing(moment, BERLIN) == parse_month("2026-02", BERLIN)
    assert month_containing(moment, UTC_ZONE) == parse_month("2026-01", UTC_ZONE)
    assert previous_month(moment, BERLIN) == parse_month("2026-01", BERLIN)
    assert previous_month(datetime(2026, 1, 15, tzinfo=UTC), UTC_ZONE) == parse_month(
        "2025-12", UTC_ZONE
    )


def test_resolve_period_defaults_to_the_last_complete_month() -> None:
    now = datetime(2026, 3, 10, tzinfo=UTC)
    assert resolve_period(start=None, end=None, month=None, zone=UTC_ZONE, now=now) == (
        parse_month("2026-02", UTC_ZONE)
    )
    explicit = resolve_period(
        start=datetime(2026, 1, 1, tzinfo=UTC),
        end=datetime(2026, 1, 15, tzinfo=UTC),
        month=None,
        zone=UTC_ZONE,
        now=now,
    )
    assert explicit.duration == timedelta(days=14)


@pytest.mark.parametrize(
    ("kwargs", "field"),
    [
        ({"month": "2026-13"}, "month"),
        ({"month": "January"}, "month"),
        ({"month": "2026-01", "start": datetime(2026, 1, 1, tzinfo=UTC)}, "month"),
        ({"start": datetime(2026, 1, 1, tzinfo=UTC)}, "period_end"),
        ({"end": datetime(2026, 1, 1, tzinfo=UTC)}, "period_start"),
        (
            {"start": datetime(2026, 1, 2, tzinfo=UTC), "end": datetime(2026, 1, 1, tzinfo=UTC)},
            "period_end",
        ),
        ({"start": datetime(2026, 1, 1), "end": datetime(2026, 2, 1)}, "period_start"),
    ],
)
def test_bad_periods_are_refused_naming_the_field(kwargs: dict[str, object], field: str) -> None:
    arguments: dict[str, object] = {"start": None, "end": None, "month": None, **kwargs}
    with pytest.raises(InvalidInputError) as caught:
        resolve_period(zone=UTC_ZONE, now=datetime(2026, 3, 1, tzinfo=UTC), **arguments)  # type: ignore[arg-type]
    assert caught.value.field == field


def test_unknown_time_zone_is_refused() -> None:
    with pytest.raises(InvalidInputError, match="Mars/Olympus"):
        tenant_zone("Mars/Olympus")


def test_a_period_that_has_not_started_is_refused() -> None:
    """Nothing can have been used in it yet: a run of it was an empty draft. The month in
    progress is billed as a draft (finalized once it has ended)."""
    now = datetime(2026, 12, 3, 15, tzinfo=UTC)
    with pytest.raises(InvalidInputError) as caught:
        resolve_period(start=None, end=None, month="2027-03", zone=BERLIN, now=now)
    assert caught.value.field == "month"
    assert caught.value.message == (
        "month 2027-03 has not started yet: it starts 2027-03-01 00:00 +01:00; a run bills "
        "usage recorded so far (the preview shows this month's)"
    )
    with pytest.raises(InvalidInputError, match="2026-12-04 00:00 UTC") as caught:
        resolve_period(
            start=datetime(2026, 12, 4, tzinfo=UTC),
            end=datetime(2026, 12, 5, tzinfo=UTC),
            month=None,
            zone=UTC_ZONE,
            now=now,
        )
    assert caught.value.field == "period_start"
    december = resolve_period(start=None, end=None, month="2026-12", zone=UTC_ZONE, now=now)
    assert december == parse_month("2026-12", UTC_ZONE)


@pytest.mark.parametrize(("month", "zone"), [("9999-12", "UTC"), ("0000-06", "UTC")])
def test_a_month_outside_the_years_datetime_holds_is_refused(month: str, zone: str) -> None:
    """9999-12 ends in year 10000: it was a 500 (year 10000 is out of range)."""
    with pytest.raises(InvalidInputError, match="out of range") as caught:
        parse_month(month, tenant_zone(zone))
    assert caught.value.field == "month"


PLUS_ONE = timezone(timedelta(hours=1))


@pytest.mark.parametrize(
    ("start", "end", "field", "message"),
    [
        # Both were accepted: a run back to year 1, and a draft that could never be finalized.
        (
            datetime(1, 1, 1, tzinfo=UTC),
            datetime(2026, 12, 1, tzinfo=UTC),
            "period_start",
            "the period starts 0001-01-01T00:00:00+00:00, before 1970-01-01 00:00 UTC: no usage is "
            "recorded that early",
        ),
        (
            datetime(2026, 11, 1, tzinfo=UTC),
            datetime(9999, 12, 31, tzinfo=UTC),
            "period_end",
            "the period ends 9999-12-31 00:00 UTC, after the month in progress ends "
            "(2027-01-01 00:00 UTC): a run bills usage recorded so far, and a period can be "
            "finalized only once it has ended",
        ),
        # Year 1 in UTC+1 has no UTC datetime: a 500 (OverflowError) before.
        (
            datetime(1, 1, 1, tzinfo=PLUS_ONE),
            datetime(2026, 12, 1, tzinfo=PLUS_ONE),
            "period_start",
            "the period starts 0001-01-01T00:00:00+01:00, before 1970-01-01 00:00 UTC",
        ),
        (
            datetime(2026, 12, 1, tzinfo=UTC),
            datetime(2027, 1, 1, 0, 0, 1, tzinfo=UTC),
            "period_end",
            "the period ends 2027-01-01 00:00:01 UTC, after the month in progress ends",
        ),
    ],
)
def test_a_period_before_1970_or_past_the_month_in_progress_is_refused(
    start: datetime, end: datetime, field: str, message: str
) -> None:
    now = datetime(2026, 12, 3, 15, tzinfo=UTC)
    with pytest.raises(InvalidInputError) as caught:
        resolve_period(start=start, end=end, month=None, zone=UTC_ZONE, now=now)
    assert caught.value.field == field
    assert caught.value.message.startswith(message), caught.value.message
    with pytest.raises(InvalidInputError, match="before 1970-01-01") as month:
        resolve_period(start=None, end=None, month="1969-12", zone=UTC_ZONE, now=now)
    assert month.value.field == "month"
    # The month in progress, and a period ending with it, are still billed (as drafts).
    ending = resolve_period(
        start=datetime(2026, 11, 15, tzinfo=UTC),
        end=datetime(2027, 1, 1, tzinfo=UTC),
        month=None,
        zone=UTC_ZONE,
        now=now,
    )
    assert ending.end == datetime(2027, 1, 1, tzinfo=UTC)
    assert resolve_period(start=None, end=None, month="1970-01", zone=UTC_ZONE, now=now)
