"""Billing periods: calendar months in the tenant's time zone, as half-open UTC periods. Pure."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from quartermaster.domain.timeutil import Period, ensure_utc, moment_text
from quartermaster.errors import InvalidInputError

MONTH_PATTERN = re.compile(r"^(\d{4})-(\d{2})$")


def tenant_zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        raise InvalidInputError(
            f"tenant time zone {name!r} is not a known IANA zone", field="timezone"
        ) from None


def _month_start(year: int, month: int, zone: ZoneInfo) -> datetime:
    return datetime(year, month, 1, tzinfo=zone).astimezone(UTC)


def _next(year: int, month: int) -> tuple[int, int]:
    return (year + 1, 1) if month == 12 else (year, month + 1)


def month_period(year: int, month: int, zone: ZoneInfo) -> Period:
    """[first day 00:00, first day of the next month 00:00) local time, in UTC."""
    if not 1 <= month <= 12:
        raise InvalidInputError(f"month {month} is not within 1-12", field="month")
    try:
        return Period(_month_start(year, month, zone), _month_start(*_next(year, month), zone))
    except (ValueError, OverflowError):
        # The month or its end is outside the years datetime holds (0001-9999).
        raise InvalidInputError(
            f"month {year:04d}-{month:02d} is out of range: a month must start and end "
            "within the years 0001-9999",
            field="month",
        ) from None


def parse_month(text: str, zone: ZoneInfo) -> Period:
    match = MONTH_PATTERN.match(text.strip())
    if match is None:
        raise InvalidInputError(f"month {text!r} is not YYYY-MM", field="month")
    return month_period(int(match.group(1)), int(match.group(2)), zone)


def month_containing(moment: datetime, zone: ZoneInfo) -> Period:
    local = ensure_utc(moment).astimezone(zone)
    return month_period(local.year, local.month, zone)


def previous_month(moment: datetime, zone: ZoneInfo) -> Period:
    """The last calendar month that has fully ended at `moment`."""
    current = month_containing(moment, zone)
    local = current.start.astimezone(zone)
    year, month = (local.year - 1, 12) if local.month == 1 else (local.year, local.month - 1)
    return month_period(year, month, zone)


def resolve_period(
    *,
    start: datetime | None,
    end: datetime | None,
    month: str | None,
    zone: ZoneInfo,
    now: datetime,
) -> Period:
    """An explicit [start, end), or a month (YYYY-MM), or by default the last complete
    calendar month in the tenant's time zone. A period that has not started at `now` is
    refused: nothing can have been used in it yet."""
    if month is not None:
        if start is not None or end is not None:
            raise InvalidInputError(
                "give either month or period_start/period_end, not both", field="month"
            )
        return _started(parse_month(month, zone), f"month {month.strip()}", "month", zone, now)
    if start is None and end is None:
        return previous_month(now, zone)
    if start is None or end is None:
        missing = "period_start" if start is None else "period_end"
        raise InvalidInputError(f"{missing} is required with the other bound", field=missing)
    for name, value in (("period_start", start), ("period_end", end)):
        if value.tzinfo is None:
            raise InvalidInputError(f"{name} must carry a UTC offset", field=name)
    if ensure_utc(end) <= ensure_utc(start):
        raise InvalidInputError(
            f"period_end {end.isoformat()} is not after period_start {start.isoformat()}",
            field="period_end",
        )
    period = Period(ensure_utc(start), ensure_utc(end))
    return _started(period, "the period", "period_start", zone, now)


def _started(period: Period, what: str, field: str, zone: ZoneInfo, now: datetime) -> Period:
    if period.start <= now:
        return period
    raise InvalidInputError(
        f"{what} has not started yet: it starts {moment_text(period.start.astimezone(zone))}; "
        "a run bills usage recorded so far (the preview shows this month's)",
        field=field,
    )
