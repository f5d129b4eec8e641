"""Cover a half-open period with the coarsest rollups that fit (pure).

Whole UTC days come from day rollups, whole hours at the edges from hour rollups, whole minutes
from minute rollups, and what is left of a minute at either end from raw rows."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from datetime import datetime, timedelta

from quartermaster.domain.timeutil import ensure_utc


class Grain(enum.StrEnum):
    DAY = "day"
    HOUR = "hour"
    MINUTE = "minute"
    RAW = "raw"


ROLLUP_GRAINS = (Grain.MINUTE, Grain.HOUR, Grain.DAY)
_STEP = {
    Grain.MINUTE: timedelta(minutes=1),
    Grain.HOUR: timedelta(hours=1),
    Grain.DAY: timedelta(days=1),
}


@dataclass(frozen=True, slots=True)
class Segment:
    grain: Grain
    start: datetime
    end: datetime


def floor_to(moment: datetime, grain: Grain) -> datetime:
    moment = ensure_utc(moment)
    if grain is Grain.MINUTE:
        return moment.replace(second=0, microsecond=0)
    if grain is Grain.HOUR:
        return moment.replace(minute=0, second=0, microsecond=0)
    if grain is Grain.DAY:
        return moment.replace(hour=0, minute=0, second=0, microsecond=0)
    return moment


def ceil_to(moment: datetime, grain: Grain) -> datetime:
    floored = floor_to(moment, grain)
    return floored if floored == ensure_utc(moment) else floored + _STEP[grain]


def decompose(start: datetime, end: datetime) -> list[Segment]:
    """Segments, in time order, that exactly tile [start, end)."""
    start, end = ensure_utc(start), ensure_utc(end)
    if end <= start:
        return []
    return _tile(start, end, (Grain.DAY, Grain.HOUR, Grain.MINUTE))


def _tile(start: datetime, end: datetime, grains: tuple[Grain, ...]) -> list[Segment]:
    if not grains:
        return [Segment(Grain.RAW, start, end)]
    grain, finer = grains[0], grains[1:]
    inner_start, inner_end = ceil_to(start, grain), floor_to(end, grain)
    if inner_start >= inner_end:
        return _tile(start, end, finer)
    segments: list[Segment] = []
    if start < inner_start:
        segments += _tile(start, inner_start, finer)
    segments.append(Segment(grain, inner_start, inner_end))
    if inner_end < end:
        segments += _tile(inner_end, end, finer)
    return segments
