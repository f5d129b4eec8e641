"""Billing periods: calendar months in the tenant's time zone, as half-open UTC periods. Pure."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from quartermaster.domain.timeutil import Period, ensure_utc, moment_text
from quartermaster.errors import InvalidInputError

MONTH_PATTERN = re.compile(r"^(\d{4})-(\d{2})$")
# No usage is recorded before the Unix epoch: a period starting earlier is a typo (0001-01-01).
EARLIEST_START = datetime(1970, 1, 1, tzinfo=UTC)


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
    refused: nothing can have been used in it yet; so is one that starts before 1970 or
    reaches into a month that has not started (`_bounded`)."""
    if month is not None:
        if start is not None or end is not None:
            raise InvalidInputError(
                "give either month or period_start/period_end, not both", field="month"
            )
        period = parse_month(month, zone)
        what = f"month {month.strip()}"
        local = (period.start.astimezone(zone), period.end.astimezone(zone))
        _bounded(*local, what, ("month", "month"), zone, now)
        return period
    if start is None and end is None:
        return previous_month(now, zone)
    if start is None or end is None:
        missing = "period_start" if start is None else "period_end"
        raise InvalidInputError(f"{missing} is required with the other bound", field=missing)
    for name, value in (("period_start", start), ("period_end", end)):
        if value.tzinfo is None:
            raise InvalidInputError(f"{name} must carry a UTC offset", field=name)
    if end <= start:
        raise InvalidInputError(
            f"period_end {moment_text(end)} is not after period_start {moment_text(start)}",
            field="period_end",
        )
    # Before converting to UTC: 0001-01-01T00:00+01:00 has no UTC datetime.
    _bounded(start, end, "the period", ("period_start", "period_end"), zone, now)
    return Period(ensure_utc(start), ensure_utc(end))


def _bounded(
    start: datetime,
    end: datetime,
    what: str,
    fields: tuple[str, str],
    zone: ZoneInfo,
    now: datetime,
) -> None:
    """Refuse a period (aware bounds) that has not started yet, that starts before 1970, or
    that reaches into a month that has not started yet: the month in progress is the latest
    a run can bill, and a run ending later could never be finalized (its draft would stand
    in the way of every run of the months it covers)."""
    if start > now:
        raise InvalidInputError(
            f"{what} has not started yet: it starts {moment_text(start.astimezone(zone))}; "
            "a run bills usage recorded so far (the preview shows this month's)",
            field=fields[0],
        )
    if start < EARLIEST_START:
        raise InvalidInputError(
            # isoformat: strftime writes year 1 as '1'.
            f"{what} starts {start.isoformat()}, before {moment_text(EARLIEST_START)}: "
            "no usage is recorded that early",
            field=fields[0],
        )
    current = month_containing(now, zone)
    if end > current.end:
        raise InvalidInputError(
            f"{what} ends {moment_text(end)}, after the month in progress ends "
            f"({moment_text(current.end.astimezone(zone))}): a run bills usage recorded so "
            "far, and a period can be finalized only once it has ended",
            field=fields[1],
        )
