"""Billing runs with the largest amounts the usage store can hand them, on both control-plane
backends: quantities just below 10^26 (DECIMAL(38, 12)) at prices up to 30 integer digits.
A line of 10^22 or more made the whole run fail with a bare decimal.InvalidOperation."""

from __future__ import annotations

from datetime import UTC, datetime
from decimal import Decimal
from fractions import Fraction

import pytest

from quartermaster.billing import adjustments, service
from quartermaster.billing.exports import chargeback_json
from quartermaster.billing.focus import FocusContext, focus_rows
from quartermaster.billing.models import BillingDocument, RunKind
from quartermaster.domain.money import money_sum
from quartermaster.pricing.history import PriceBookVersion
from quartermaster.pricing.lines import PricingError
from quartermaster.runtime import Runtime
from quartermaster.tenancy.service import AuthContext
from tests.billing.support import (
    JANUARY,
    MemoryCalculator,
    admin,
    book,
    small_calculator,
    usage,
)
from tests.conftest import TenantHandle

LARGEST_QUANTITY = "99999999999999999999999999.999999999999"  # the store's largest sum
ALMOST_LARGEST = "99999999999999999999999998.999999999999"
HUGE_PRICE = "999999999999999999999999999999.123456"  # the most a price book allows: 30 digits


def _run(runtime: Runtime, caller: AuthContext, calc: MemoryCalculator) -> BillingDocument:
    with runtime.session_factory() as session:
        return service.create_run(
            caller, period=JANUARY, kind=RunKind.INVOICE, calculator=calc, session=session
        ).document


def _stored(runtime: Runtime, caller: AuthContext, document_id: str) -> dict[str, Decimal]:
    with runtime.session_factory() as session:
        view = service.view_document(caller, document_id, session=session)
        assert view.visible_total == view.document.total
        assert view.document.total == sum(
            (Fraction(line.amount) for line in view.lines), Fraction(0)
        )
        return {f"{line.cost_type}/{line.app}/{line.item}": line.amount for line in view.lines}


def test_a_run_with_a_line_past_10_to_the_22_is_billed_exactly(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    caller = admin(tenant.tenant_id)
    calc = small_calculator()
    # 0.0005 a request: 3 x 10^25 requests cost 1.5 x 10^22, plus web's 10.00 of the small
    # platform; etl's requests carry data's 10% discount.
    calc.record([usage("eng", "web", "web", "requests", 3 * 10**25)])
    calc.record([usage("analytics", "data", "etl", "requests", LARGEST_QUANTITY)])
    document = _run(runtime, caller, calc)
    lines = _stored(runtime, caller, document.id)
    assert lines["usage/web/requests"] == Decimal("15000000000000000000010.000000")
    # (4000 + 99999999999999999999999999.999999999999) x 0.0005 = 50000000000000000000002
    # .0000000000000005, to 1e-6 half to even; the discount is 10% of it, rounded once.
    assert lines["usage/etl/requests"] == Decimal("50000000000000000000002.000000")
    assert lines["discount/etl/requests"] == Decimal("-5000000000000000000000.200000")
    with runtime.session_factory() as session:
        stored = session.get(BillingDocument, document.id)
        assert stored is not None
        stored_lines = service.document_lines(stored, session=session)
        text = chargeback_json([(stored, stored_lines)])
        focus = focus_rows([(stored, stored_lines)], FocusContext(billing_account_name="Acme"))
    assert f'"total": "{stored.total}"' in text
    assert "E+" not in text
    # FOCUS: the discount folds into its usage row; BilledCost still sums to the total.
    assert money_sum(Decimal(row["BilledCost"]) for row in focus) == stored.total
    etl = next(r for r in focus if r["ResourceId"] == "etl" and r["x_CostType"] == "usage")
    assert etl["ListCost"] == "50000000000000000000002.000000"
    assert etl["BilledCost"] == "45000000000000000000001.800000"


def test_the_largest_line_the_store_can_feed_is_stored_in_full(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    caller = admin(tenant.tenant_id)
    prices = [{"meter": "requests", "model": "per_unit", "unit_price": HUGE_PRICE}]
    calc = MemoryCalculator(
        versions=[PriceBookVersion(book(prices=prices), datetime(2025, 12, 1, tzinfo=UTC))]
    )
    calc.record([usage("eng", "web", "web", "requests", ALMOST_LARGEST)])
    document = _run(runtime, caller, calc)
    lines = _stored(runtime, caller, document.id)
    exact = Fraction(Decimal(ALMOST_LARGEST)) * Fraction(Decimal(HUGE_PRICE))
    amount = lines["usage/web/requests"]
    assert abs(Fraction(amount) - exact) <= Fraction(1, 2 * 10**6)
    assert len(format(amount, "f")) == 63  # 56 integer digits: the column holds 64
    # A late request brings the quantity to the store's largest: the adjustment is exactly
    # the difference.
    with runtime.session_factory() as session:
        service.finalize_run(caller, document.id, session=session)
    calc.record([usage("eng", "web", "web", "requests", 1)], at=datetime(2026, 2, 15, tzinfo=UTC))
    calc.now = datetime(2026, 2, 16, tzinfo=UTC)
    with runtime.session_factory() as session:
        adjustment = adjustments.create_adjustment(
            caller, document.id, calculator=calc, session=session
        )
        assert adjustment is not None
        assert adjustment.total == Decimal(HUGE_PRICE)


def test_a_total_the_ledger_cannot_hold_fails_the_run_naming_the_limit(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    caller = admin(tenant.tenant_id)
    prices = [{"meter": "requests", "model": "per_unit", "unit_price": "9" * 29}]
    calc = MemoryCalculator(
        versions=[PriceBookVersion(book(prices=prices), datetime(2025, 12, 1, tzinfo=UTC))]
    )
    # Each line (below 10^55) fits the ledger; the 20 of them sum to 2 x 10^56, which does not:
    # refused before anything is written.
    calc.record([usage("eng", "web", f"app{n}", "requests", LARGEST_QUANTITY) for n in range(20)])
    with pytest.raises(
        PricingError, match=r"document total: amount \d{57}\.\d{6} is not below 10\^56"
    ):
        _run(runtime, caller, calc)
    with runtime.session_factory() as session:
        assert service.list_documents(caller, session=session) == []


def test_a_line_the_ledger_cannot_hold_fails_the_run_naming_the_line(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    """Two parts of one app's usage (e.g. on either side of a price book change) sum past
    what one store quantity reaches: the line is refused, naming its owner and meter."""
    caller = admin(tenant.tenant_id)
    prices = [{"meter": "requests", "model": "per_unit", "unit_price": HUGE_PRICE}]
    calc = MemoryCalculator(
        versions=[PriceBookVersion(book(prices=prices), datetime(2025, 12, 1, tzinfo=UTC))]
    )
    calc.record([usage("eng", "web", "web", "requests", LARGEST_QUANTITY, day=d) for d in (3, 9)])
    with pytest.raises(PricingError) as caught:
        _run(runtime, caller, calc)
    message = str(caught.value)
    assert "usage line 'requests' of cost center 'eng', team 'web', app 'web'" in message
    assert "is not below 10^56" in message
    assert caught.value.field == "amount"
    with runtime.session_factory() as session:
        assert service.list_documents(caller, session=session) == []
