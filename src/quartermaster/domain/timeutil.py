"""UTC, timezone-aware time; periods are half-open [start, end)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated

from pydantic import (
    AfterValidator,
    AwareDatetime,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import ErrorDetails, PydanticCustomError

from quartermaster.domain.events import Rfc3339
from quartermaster.errors import InvalidInputError

HOUR = timedelta(hours=1)


def utc_now() -> datetime:
    return datetime.now(UTC)


def ensure_utc(value: datetime) -> datetime:
    """Naive datetimes are UTC (the storage layer hands them back); aware ones are converted."""
    if value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value.astimezone(UTC)


def within_calendar(value: datetime) -> datetime:
    """`value` as given, when it has a UTC instant: `0001-01-01T00:00:00+01:00` has none, and
    failed where it was first converted (a 422 naming no field, or a 500)."""
    try:
        value.astimezone(UTC)
    except OverflowError:
        raise PydanticCustomError(
            "datetime_out_of_calendar",
            "{shown} is outside the calendar once converted to UTC (years 1 to 9999)",
            {"shown": value.isoformat()},
        ) from None
    return value


_RFC3339 = Rfc3339(space=True)
# pydantic's errors for a well-formed time that names no moment (a month of 13, February 30)
TIME_PARSING_ERRORS = frozenset({"datetime_parsing", "datetime_from_date_parsing"})
# pydantic's reason when the time parses up to a place it cannot go on from: a leap second
# (23:59:60), 24:00:00, an offset +2400 or +05:45:30. Saying what is expected helps more.
_UNHELPFUL_REASON = "unexpected extra characters at the end of the input"


def parsing_reason(error: ErrorDetails) -> str:
    """` (pydantic's reason)` for a time it could not parse, when the reason names the part
    that is wrong (`month value is outside expected range of 1-12`), else nothing: said after
    what a time must be, for a request's moment and an event's `time` alike."""
    reason = str((error.get("ctx") or {}).get("error", ""))
    return f" ({reason})" if reason and reason != _UNHELPFUL_REASON else ""


def rfc3339_moment(value: object, handler: ValidatorFunctionWrapHandler) -> object:
    """A moment a request gives, parsed: a datetime as it is (one a caller or loader already
    built), anything else text in RFC 3339's form (`Rfc3339(space=True)`: as an event's `time`
    takes it, or with a space for `T` as RFC 3339 allows). pydantic's own parsing also took
    Unix seconds (`1893456000`, as a number or a string), `+0100` and a time without seconds,
    none of which docs/api.md describes. A well-formed one that names no moment
    (`2026-02-30T00:00:00Z`, `T24:00:00Z`) is refused saying what is expected, with pydantic's
    reason when it names the part that is wrong."""
    if isinstance(value, datetime):
        return handler(value)
    text = _RFC3339.check(value)
    try:
        return handler(text)
    except ValidationError as exc:
        [error] = exc.errors(include_url=False)
        if error["type"] not in TIME_PARSING_ERRORS:
            raise
        raise PydanticCustomError(
            "rfc3339_value",
            "{shown} is not {expected}{why}",
            {"shown": repr(text), "expected": _RFC3339.expected, "why": parsing_reason(error)},
        ) from None


# A moment a request gives (a body field, a query parameter, a price book's date): RFC 3339
# with seconds and a UTC offset, `T` or a space between date and time (a fraction kept to
# microseconds, as an event's `time`), and one that has a UTC instant.
RequestMoment = Annotated[
    AwareDatetime, WrapValidator(rfc3339_moment), AfterValidator(within_calendar)
]


def floor_hour(value: datetime) -> datetime:
    return ensure_utc(value).replace(minute=0, second=0, microsecond=0)


def require_offset(value: datetime | None, name: str) -> datetime | None:
    """`value` as given, or a 422 naming `name` when it has no UTC offset (a query's moment
    must say which instant it is)."""
    if value is not None and value.tzinfo is None:
        raise InvalidInputError(
            f"{name} {value.isoformat()} needs a UTC offset, e.g. 2026-11-01T00:00:00Z",
            field=name,
        )
    return value


def whole_hours(
    start: datetime | None, end: datetime | None, *, now: datetime, default: timedelta
) -> tuple[datetime, datetime]:
    """The window of hourly counters a question covers: `start` rounded down and `end` up to
    whole hours (a counter is of a whole hour: a window inside one is that hour, not none of
    it), `end` by default the end of `now`'s hour and `start` `default` before `end`. A
    moment without a UTC offset, or one whose hour falls outside the calendar, is a 422
    naming it."""
    require_offset(start, "start")
    require_offset(end, "end")
    try:
        last = floor_hour(end) if end is not None else floor_hour(now)
        if end is None or last != ensure_utc(end):
            last += HOUR
    except OverflowError:
        raise InvalidInputError(f"end {end} is outside the calendar in UTC", field="end") from None
    try:
        first = floor_hour(start) if start is not None else last - default
    except OverflowError:
        what = f"start {start}" if start is not None else f"start (end minus {default})"
        raise InvalidInputError(f"{what} is outside the calendar in UTC", field="start") from None
    return first, last


def parse_timestamp(text: str) -> datetime:
    """RFC 3339 timestamp to an aware UTC datetime; raises ValueError naming the problem."""
    candidate = text.strip()
    if candidate.endswith(("Z", "z")):
        candidate = candidate[:-1] + "+00:00"
    parsed = datetime.fromisoformat(candidate)
    if parsed.tzinfo is None:
        raise ValueError(f"timestamp {text!r} has no UTC offset")
    return parsed.astimezone(UTC)


def duration_text(span: timedelta) -> str:
    """A span in whole seconds, exact so that two close spans stay apart (`301 s` against a
    limit of `300 s`), with hours or days beside a long one: `126,224,010 s (about 1,461
    days)` for a sender's clock years ahead, where `126224010s` was all it said."""
    seconds = int(abs(span.total_seconds()))
    for unit, size in (("days", 86_400), ("hours", 3_600)):
        if seconds >= 2 * size:
            return f"{seconds:,} s (about {round(seconds / size):,} {unit})"
    return f"{seconds:,} s"


def moment_text(moment: datetime) -> str:
    """A moment for a message a person reads (an alert, a webhook, a Slack post):
    `2026-12-01 00:00 UTC`, seconds only when there are some, and a zone's own offset kept
    (`2026-12-01 00:00 +01:00`: a budget month in Paris starts at its midnight, not at UTC's).
    `2026-12-01T00:00:00+00:00` was what they said."""
    text = moment.strftime("%Y-%m-%d %H:%M" + (":%S" if moment.second else ""))
    offset = moment.utcoffset()
    if offset is None:
        raise ValueError(f"moment {moment!r} has no UTC offset")
    if not offset:
        return f"{text} UTC"
    return f"{text} {moment.isoformat()[-6:]}"


@dataclass(frozen=True, slots=True)
class Period:
    """A half-open interval of time [start, end)."""

    start: datetime
    end: datetime

    def __post_init__(self) -> None:
        if self.start.tzinfo is None or self.end.tzinfo is None:
            raise ValueError("period bounds must be timezone-aware")
        if self.end <= self.start:
            raise ValueError(f"period end {self.end} is not after start {self.start}")

    def contains(self, moment: datetime) -> bool:
        return self.start <= moment < self.end

    @property
    def duration(self) -> timedelta:
        return self.end - self.start
