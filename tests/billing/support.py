"""Helpers for the billing tests: a small platform with a hand-priced price book, and an
in-memory calculator that answers "as recorded before T" like the usage store does."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy.orm import Session

from quartermaster.billing.calculator import PeriodInputs, PricingContext
from quartermaster.domain.timeutil import Period, ensure_utc
from quartermaster.pricing.document import PriceBookDocument
from quartermaster.pricing.history import PriceBookHistory, PriceBookVersion
from quartermaster.pricing.lines import OwnerDirectory, PlatformCostItem, UsageRow
from quartermaster.pricing.loader import validate_document
from quartermaster.tenancy.models import Role
from quartermaster.tenancy.service import AuthContext

JANUARY = Period(datetime(2026, 1, 1, tzinfo=UTC), datetime(2026, 2, 1, tzinfo=UTC))
FEBRUARY = Period(datetime(2026, 2, 1, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC))
# Usage of January as the platform recorded it during January.
RECORDED = datetime(2026, 1, 20, tzinfo=UTC)

PRICES: list[dict[str, Any]] = [
    # cpu: first 1,000 s per app free, then 0.002 per second.
    {
        "meter": "cpu_seconds",
        "model": "graduated",
        "tiers": [{"up_to": 1000, "unit_price": "0"}, {"unit_price": "0.002"}],
    },
    {"meter": "requests", "model": "per_unit", "unit_price": "0.0005"},
    # storage: 10.00 a month including 100 GB-days, then 0.05 per GB-day.
    {
        "meter": "storage_gb_days",
        "model": "subscription",
        "fee": "10",
        "included": 100,
        "overage": {"model": "per_unit", "unit_price": "0.05"},
    },
]
DISCOUNTS = [
    {"name": "data-team", "percent": 10, "applies_to": {"team": "data"}, "meters": ["requests"]}
]
PLATFORM = [
    {"cost_type": "lb", "method": "proportional", "meter": "requests"},
    {"cost_type": "control_plane", "method": "even"},
]


def book(
    version: int = 1, effective_from: str = "2026-01-01T00:00:00Z", **changes: Any
) -> PriceBookDocument:
    data: dict[str, Any] = {
        "name": "internal",
        "currency": "USD",
        "version": version,
        "effective_from": effective_from,
        "prices": PRICES,
        "discounts": DISCOUNTS,
        "platform_costs": PLATFORM,
        **changes,
    }
    return validate_document(data)


def usage(cc: str, team: str, app: str, meter: str, quantity: int | str, day: int = 5) -> UsageRow:
    return UsageRow(cc, team, app, meter, Decimal(quantity), at=datetime(2026, 1, day, tzinfo=UTC))


# The small platform of the hand-computed invoice (docs/billing.md walks through it):
#   web  cpu 5000 -> 1000 free + 4000 x 0.002 = 8.00    requests 20000 x 0.0005 = 10.00
#   api  cpu  500 -> free = 0.00                        requests 10000 x 0.0005 =  5.00
#   etl  requests 4000 x 0.0005 = 2.00, 10% team discount -0.20
#        storage 150 GB-days: fee 10.00 + 50 x 0.05 = 12.50 (subscription)
#   lb 30.00 by requests (20000:10000:4000) -> 17.647059 / 8.823529 / 3.529412
#   control_plane 9.00 even over the 3 active apps -> 3.00 each
# Total 76.30.
SMALL_PLATFORM: list[UsageRow] = [
    usage("eng", "web", "web", "cpu_seconds", 5000),
    usage("eng", "web", "web", "requests", 20000),
    usage("eng", "web", "api", "cpu_seconds", 500),
    usage("eng", "web", "api", "requests", 10000),
    usage("analytics", "data", "etl", "requests", 4000),
    usage("analytics", "data", "etl", "storage_gb_days", 150),
]
SMALL_COSTS: list[PlatformCostItem] = [
    PlatformCostItem("lb", Decimal("30.00"), "USD", at=datetime(2026, 1, 1, tzinfo=UTC)),
    PlatformCostItem("control_plane", Decimal("9.00"), "USD", at=datetime(2026, 1, 1, tzinfo=UTC)),
]
SMALL_TOTAL = Decimal("76.30")


@dataclass
class MemoryCalculator:
    """Usage and costs with the time each was recorded, and price book versions with theirs;
    `inputs(as_of=T)` sees only what was recorded before T, like the usage store."""

    versions: list[PriceBookVersion]
    now: datetime = field(default_factory=lambda: datetime(2026, 2, 10, tzinfo=UTC))
    usage: list[tuple[UsageRow, datetime]] = field(default_factory=list)
    costs: list[tuple[PlatformCostItem, datetime]] = field(default_factory=list)
    units: dict[str, str] = field(
        default_factory=lambda: {"cpu_seconds": "cpu-s", "requests": "request"}
    )

    def record(
        self,
        rows: Sequence[UsageRow] = (),
        costs: Sequence[PlatformCostItem] = (),
        *,
        at: datetime = RECORDED,
    ) -> None:
        self.usage.extend((row, at) for row in rows)
        self.costs.extend((cost, at) for cost in costs)

    def add_version(self, document: PriceBookDocument, recorded_at: datetime) -> None:
        self.versions.append(PriceBookVersion(document, recorded_at))

    def context(
        self, tenant_id: str, *, price_book: str | None, session: Session
    ) -> PricingContext:
        return PricingContext(
            history=PriceBookHistory(self.versions),
            directory=OwnerDirectory(),
            units=self.units,
        )

    def cutoff(self) -> datetime:
        return self.now

    def inputs(
        self,
        tenant_id: str,
        period: Period,
        *,
        as_of: datetime,
        cuts: Sequence[datetime] = (),
        session: Session,
    ) -> PeriodInputs:
        cutoff = ensure_utc(as_of)
        rows = tuple(
            row
            for row, recorded in self.usage
            if recorded < cutoff and row.at is not None and period.contains(row.at)
        )
        costs = tuple(
            cost
            for cost, recorded in self.costs
            if recorded < cutoff and cost.at is not None and period.contains(cost.at)
        )
        return PeriodInputs(usage=rows, platform_costs=costs, as_of=cutoff)


def small_calculator() -> MemoryCalculator:
    calculator = MemoryCalculator(
        versions=[PriceBookVersion(book(), datetime(2025, 12, 1, tzinfo=UTC))]
    )
    calculator.record(SMALL_PLATFORM, SMALL_COSTS)
    return calculator


def admin(tenant_id: str) -> AuthContext:
    return AuthContext(tenant_id, "p-admin", "admin@test", Role.ADMIN, None, None)


def later(days: int) -> datetime:
    return datetime(2026, 2, 1, tzinfo=UTC) + timedelta(days=days)
