"""Billing runs over the seams of the pricing engine found by the price-book walkthrough
(/docs/pricing.md): floors that are not covered, on both control-plane backends."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from quartermaster.billing import service
from quartermaster.billing.models import RunKind
from quartermaster.pricing.history import PriceBookVersion
from quartermaster.runtime import Runtime
from tests.billing.support import (
    JANUARY,
    SMALL_COSTS,
    SMALL_PLATFORM,
    MemoryCalculator,
    admin,
    book,
)
from tests.conftest import TenantHandle


def _calculator(**changes: Any) -> MemoryCalculator:
    return MemoryCalculator(
        versions=[PriceBookVersion(book(**changes), datetime(2025, 12, 1, tzinfo=UTC))]
    )


def _run_lines(
    runtime: Runtime, tenant: TenantHandle, calc: MemoryCalculator
) -> tuple[Any, list[Any]]:
    caller = admin(tenant.tenant_id)
    with runtime.session_factory() as session:
        document = service.create_run(
            caller, period=JANUARY, kind=RunKind.INVOICE, calculator=calc, session=session
        ).document
        view = service.view_document(caller, document.id, session=session)
        return view.document, list(view.lines)


def test_floors_not_covered_are_billed_evenly_and_the_lines_say_so(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    # control_plane 9.00 among web, api, etl with a floor of 5: 3 x 5 = 15 > 9, so each
    # pays 3.00, and the stored line must not claim a floor and a share by usage
    calc = _calculator(
        platform_costs=[
            {"cost_type": "lb", "method": "proportional", "meter": "requests"},
            {
                "cost_type": "control_plane",
                "method": "floor_plus_share",
                "floor": 5,
                "meter": "requests",
            },
        ]
    )
    calc.record(SMALL_PLATFORM, SMALL_COSTS)
    document, lines = _run_lines(runtime, tenant, calc)
    shares = [line for line in lines if line.item == "control_plane"]
    assert {(line.app, line.amount) for line in shares} == {
        ("web", Decimal("3.000000")),
        ("api", Decimal("3.000000")),
        ("etl", Decimal("3.000000")),
    }
    assert {line.allocation_method for line in shares} == {
        "even per active app: 9 is not more than the floors (3 active apps x floor 5)"
    }
    assert document.total == Decimal("76.30")
