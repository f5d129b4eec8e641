"""Billing runs over the seams of the pricing engine found by the price-book walkthrough
(docs/pricing.md), on both control-plane backends: floors that are not covered, platform
costs in another currency than the price book's."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from quartermaster.billing import adjustments, service
from quartermaster.billing.models import RunKind
from quartermaster.billing.preview import preview
from quartermaster.guardrails.common import ScopeKind
from quartermaster.guardrails.spend import BillingSpend
from quartermaster.pricing.history import PriceBookVersion
from quartermaster.pricing.lines import PlatformCostItem, UsageRow
from quartermaster.runtime import Runtime
from tests.billing.support import (
    FEBRUARY,
    JANUARY,
    SMALL_COSTS,
    SMALL_PLATFORM,
    MemoryCalculator,
    admin,
    book,
    usage,
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


def test_a_platform_cost_in_another_currency_is_named_in_the_note_and_billing_carries_on(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    """One platform cost in EUR (or a code that is no currency) for a USD price book made
    every run, adjustment, preview and budget evaluation of its period fail with 422, which
    switched hard caps off for the month. It is not priced (no conversion), it is named."""
    caller = admin(tenant.tenant_id)
    calc = _calculator()
    calc.record(SMALL_PLATFORM, SMALL_COSTS)
    calc.record(
        costs=[
            PlatformCostItem("dns", Decimal("5"), "EUR", at=datetime(2026, 1, 6, tzinfo=UTC)),
            PlatformCostItem("lb", Decimal("2"), "XYZ", at=datetime(2026, 1, 7, tzinfo=UTC)),
        ]
    )
    document, lines = _run_lines(runtime, tenant, calc)
    assert document.total == Decimal("76.30")  # the USD bill, unchanged
    assert not [line for line in lines if line.item == "dns"]
    assert document.note == (
        "platform costs not in the price book's currency USD, not billed (no currency "
        "conversion; in no line): dns 5 EUR, lb 2 XYZ"
    )
    with runtime.session_factory() as session:
        service.finalize_run(caller, document.id, session=session)
    # a late one after finalizing: the adjustment does not fail, nothing billable changed
    calc.record(
        costs=[PlatformCostItem("dns", Decimal("1"), "EUR", at=datetime(2026, 1, 8, tzinfo=UTC))],
        at=datetime(2026, 2, 11, tzinfo=UTC),
    )
    calc.now = datetime(2026, 2, 12, tzinfo=UTC)
    with runtime.session_factory() as session:
        assert (
            adjustments.create_adjustment(caller, document.id, calculator=calc, session=session)
            is None
        )
    # this month's: the preview and the budgets' spend price the rest
    feb3 = datetime(2026, 2, 3, tzinfo=UTC)
    calc.record(
        [UsageRow("eng", "web", "web", "requests", Decimal(1000), at=feb3)],
        [PlatformCostItem("dns", Decimal("5"), "EUR", at=feb3)],
        at=datetime(2026, 2, 4, tzinfo=UTC),
    )
    with runtime.session_factory() as session:
        shown = preview(caller, calculator=calc, session=session)
        spend = BillingSpend(calc).spend(tenant.tenant_id, FEBRUARY, session=session)
    assert shown.month_to_date == Decimal("0.50")  # 1000 requests x 0.0005
    assert spend.of(ScopeKind.TENANT, "") == Decimal("0.50")
    assert spend.of(ScopeKind.APP, "web") == Decimal("0.50")


def test_a_reservation_credit_goes_only_to_what_a_team_paid_for_the_meter(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    """etl (team data, cost center analytics) used 1000 cpu-s free of charge (100% off); web
    paid 1.00 for 100. The credit of 15 was split by quantity: data got -0.909091 and
    analytics ended negative, paid for by the rest; now web gets its 1.00 back, 14 unused."""
    calc = _calculator(
        prices=[{"meter": "cpu_seconds", "model": "per_unit", "unit_price": "0.01"}],
        discounts=[{"name": "etl-eval", "percent": 100, "applies_to": {"app": "etl"}}],
        platform_costs=[],
        reservations=[{"name": "cpu-commit", "meter": "cpu_seconds", "credit": 15}],
    )
    calc.record(
        [
            usage("analytics", "data", "etl", "cpu_seconds", 1000),
            usage("eng", "web", "web", "cpu_seconds", 100),
        ]
    )
    document, lines = _run_lines(runtime, tenant, calc)
    credits = [line for line in lines if line.item == "reserved_capacity"]
    assert [(c.cost_center, c.team, c.amount) for c in credits] == [
        ("eng", "web", Decimal("-1.000000"))
    ]
    assert credits[0].allocation_method == (
        "proportional to the team's charges for cpu_seconds: 1 of 1"
    )
    per_center: dict[str, Decimal] = {}
    for line in lines:
        per_center[line.cost_center] = per_center.get(line.cost_center, Decimal(0)) + line.amount
    assert per_center == {"analytics": Decimal(0), "eng": Decimal(0)}
    assert document.total == 0


def test_a_late_event_under_an_apps_new_owner_does_not_move_the_other_apps_shares(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    """January is finalized with web, api and etl (control_plane 9.00 evenly: 3.00 each). A
    late event of api under its new owner (team data) made api a fourth "active app": the
    adjustment moved every even share (2.25 each, api twice). api is one app: its 3.00 is
    split between its owners by its usage charges (web: 5.00, data: 1000 requests x 0.0005
    less data's 10% = 0.45), and web's and etl's shares do not move."""
    caller = admin(tenant.tenant_id)
    calc = _calculator()
    calc.record(SMALL_PLATFORM, SMALL_COSTS)
    document, _ = _run_lines(runtime, tenant, calc)
    with runtime.session_factory() as session:
        service.finalize_run(caller, document.id, session=session)
    calc.record(
        [usage("analytics", "data", "api", "requests", 1000, day=20)],
        at=datetime(2026, 2, 11, tzinfo=UTC),
    )
    calc.now = datetime(2026, 2, 12, tzinfo=UTC)
    with runtime.session_factory() as session:
        adjustment = adjustments.create_adjustment(
            caller, document.id, calculator=calc, session=session
        )
        assert adjustment is not None
        lines = service.view_document(caller, adjustment.id, session=session).lines
    control_plane = {
        (line.team, line.app): line.amount for line in lines if line.item == "control_plane"
    }
    # 3 x 5/5.45 = 2.752293.. and 3 x 0.45/5.45 = 0.247706..; the leftover millionth to
    # the larger remainder
    assert control_plane == {
        ("web", "api"): Decimal("-0.247706"),
        ("data", "api"): Decimal("0.247706"),
    }
    new_line = next(line for line in lines if line.item == "control_plane" and line.team == "data")
    assert new_line.allocation_method == (
        "even per active app; app 'api' had 2 owners in the period, this one's part by its "
        "usage charges: 0.45 of 5.45"
    )
    assert "shared by 3 active apps" in new_line.pricing_rule


def test_identical_usage_is_billed_identically(runtime: Runtime, tenant: TenantHandle) -> None:
    """The walkthrough's September: web and api each 0.0000005 compute units at 1, etl
    0.0000025. Rounded together by largest remainder, web paid 0.000001 and api 0 for the
    same usage, and etl 0.000003. Each app is its own pool: each line rounds half to even."""
    calc = _calculator(
        prices=[{"meter": "compute_units", "model": "volume", "tiers": [{"unit_price": "1"}]}],
        discounts=[],
        platform_costs=[],
    )
    calc.record(
        [
            usage("eng", "web", "web", "compute_units", "0.0000005"),
            usage("eng", "web", "api", "compute_units", "0.0000005"),
            usage("analytics", "data", "etl", "compute_units", "0.0000025"),
        ]
    )
    document, lines = _run_lines(runtime, tenant, calc)
    assert {(line.app, line.amount) for line in lines} == {
        ("web", Decimal("0")),
        ("api", Decimal("0")),
        ("etl", Decimal("0.000002")),
    }
    assert document.total == Decimal("0.000002")
