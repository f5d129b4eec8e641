"""The versions of one price book over time. Pure.

At a moment t the version in force is the highest version whose effective_from <= t: a new
version supersedes every earlier one from its effective_from on. A version recorded after
its effective_from is a back-dated change; passing `as_of` (e.g. the time a bill was
finalized) ignores versions recorded later, which reproduces what was in force as known then.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from quartermaster.domain.timeutil import Period, ensure_utc
from quartermaster.errors import NotFoundError
from quartermaster.pricing.document import PriceBookDocument


class NoVersionInForceError(NotFoundError):
    """No version of the price book was in force at the moment asked about."""


@dataclass(frozen=True, slots=True)
class PriceBookVersion:
    document: PriceBookDocument
    recorded_at: datetime

    @property
    def version(self) -> int:
        return self.document.version

    @property
    def effective_from(self) -> datetime:
        return self.document.effective_from

    @property
    def back_dated(self) -> bool:
        return self.document.effective_from < self.recorded_at


class PriceBookHistory:
    def __init__(self, versions: Iterable[PriceBookVersion]) -> None:
        ordered = sorted(versions, key=lambda v: v.version)
        if not ordered:
            raise ValueError("a price book history needs at least one version")
        names = {v.document.name for v in ordered}
        if len(names) != 1:
            raise ValueError(f"versions of several price books given: {sorted(names)}")
        numbers = [v.version for v in ordered]
        if len(set(numbers)) != len(numbers):
            raise ValueError(f"duplicate version numbers: {numbers}")
        self.name = ordered[0].document.name
        self.versions: tuple[PriceBookVersion, ...] = tuple(ordered)

    @classmethod
    def single(cls, document: PriceBookDocument) -> PriceBookHistory:
        """A history of one version, recorded when it took effect (for pricing one book)."""
        return cls([PriceBookVersion(document, document.effective_from)])

    def known(self, as_of: datetime | None) -> list[PriceBookVersion]:
        if as_of is None:
            return list(self.versions)
        cutoff = ensure_utc(as_of)
        return [v for v in self.versions if v.recorded_at <= cutoff]

    def version_at(self, moment: datetime, *, as_of: datetime | None = None) -> PriceBookVersion:
        when = ensure_utc(moment)
        candidates = [v for v in self.known(as_of) if v.effective_from <= when]
        if not candidates:
            known = self.known(as_of)
            first = (
                f"its first version takes effect {min(v.effective_from for v in known).isoformat()}"
                if known
                else "no version was recorded by then"
            )
            raise NoVersionInForceError(
                f"price book {self.name!r} has no version in force at {when.isoformat()} ({first})"
            )
        return max(candidates, key=lambda v: v.version)

    def effective_at(self, moment: datetime, *, as_of: datetime | None = None) -> PriceBookDocument:
        """The document in force at `moment` (as known at `as_of`, default: everything)."""
        return self.version_at(moment, as_of=as_of).document

    def segments(
        self, period: Period, *, as_of: datetime | None = None
    ) -> list[tuple[Period, PriceBookVersion]]:
        """The parts of `period` and the version in force over each, in time order.

        Parts of the period before any version took effect are left out; adjacent parts
        priced by the same version are merged."""
        known = self.known(as_of)
        cuts = sorted(
            {period.start}
            | {v.effective_from for v in known if period.start < v.effective_from < period.end}
        )
        bounds = [*cuts, period.end]
        parts: list[tuple[Period, PriceBookVersion]] = []
        for start, end in itertools.pairwise(bounds):
            candidates = [v for v in known if v.effective_from <= start]
            if not candidates:
                continue
            version = max(candidates, key=lambda v: v.version)
            if parts and parts[-1][1].version == version.version and parts[-1][0].end == start:
                parts[-1] = (Period(parts[-1][0].start, end), version)
            else:
                parts.append((Period(start, end), version))
        return parts

    def in_force_interval(
        self, version: int, *, as_of: datetime | None = None
    ) -> tuple[datetime, datetime | None] | None:
        """[from, until) over which `version` is in force (until None: still in force);
        None when a later version took effect at or before it and it never applied."""
        known = self.known(as_of)
        own = next((v for v in known if v.version == version), None)
        if own is None:
            return None
        later = [v.effective_from for v in known if v.version > version]
        if any(moment <= own.effective_from for moment in later):
            return None
        return own.effective_from, min(later, default=None)

    def taken_out_of_force_by(self, version: int) -> list[PriceBookVersion]:
        """The versions that were in force for some time without `version` and are never in
        force with it: a back-dated upload (or one at the same instant) supersedes them
        entirely."""
        others = [v for v in self.versions if v.version != version]
        if not others or len(others) == len(self.versions):
            return []
        without = PriceBookHistory(others)
        return [
            v
            for v in others
            if without.in_force_interval(v.version) is not None
            and self.in_force_interval(v.version) is None
        ]

    def changed_after(self, period: Period, recorded_after: datetime) -> list[PriceBookVersion]:
        """Versions recorded after `recorded_after` that change what was in force during
        `period`: a period billed at `recorded_after` needs re-rating when this is not empty."""
        before = self.segments(period, as_of=recorded_after)
        after = self.segments(period)
        if [(p, v.version) for p, v in before] == [(p, v.version) for p, v in after]:
            return []
        cutoff = ensure_utc(recorded_after)
        used = {v.version for _, v in after}
        return [v for v in self.versions if v.recorded_at > cutoff and v.version in used]
