"""Billing runs and adjustments on both control-plane backends, with usage and price books
held in memory (tests/billing/test_pipeline.py runs the same through the real pipeline)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from quartermaster.billing import adjustments, service
from quartermaster.billing.models import CostType, DocumentStatus, DocumentType, RunKind
from quartermaster.domain.timeutil import Period
from quartermaster.errors import ConflictError, PermissionDeniedError
from quartermaster.pricing.lines import PlatformCostItem, UsageRow
from quartermaster.runtime import Runtime
from quartermaster.tenancy.models import Role
from quartermaster.tenancy.service import AuthContext
from tests.billing.support import (
    FEBRUARY,
    JANUARY,
    SMALL_TOTAL,
    MemoryCalculator,
    admin,
    book,
    small_calculator,
    usage,
)
from tests.conftest import TenantHandle


def _run(runtime: Runtime, caller: AuthContext, calc: MemoryCalculator) -> service.RunOutcome:
    with runtime.session_factory() as session:
        return service.create_run(
            caller, period=JANUARY, kind=RunKind.INVOICE, calculator=calc, session=session
        )


def _lines(runtime: Runtime, caller: AuthContext, document_id: str) -> list[tuple[str, ...]]:
    with runtime.session_factory() as session:
        view = service.view_document(caller, document_id, session=session)
        return [
            (line.id, line.cost_type, line.app or "", line.item, str(line.amount), line.audit_key)
            for line in view.lines
        ]


def _finalize(runtime: Runtime, caller: AuthContext, document_id: str) -> None:
    with runtime.session_factory() as session:
        service.finalize_run(caller, document_id, session=session)


def _adjust(
    runtime: Runtime, caller: AuthContext, run_id: str, calc: MemoryCalculator
) -> str | None:
    with runtime.session_factory() as session:
        document = adjustments.create_adjustment(caller, run_id, calculator=calc, session=session)
        return None if document is None else document.id


def test_a_run_is_a_draft_with_the_hand_computed_total(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    caller = admin(tenant.tenant_id)
    outcome = _run(runtime, caller, small_calculator())
    document = outcome.document
    assert outcome.created
    assert not outcome.recomputed
    assert document.status == DocumentStatus.DRAFT.value
    assert (document.period_start, document.period_end) == (JANUARY.start, JANUARY.end)
    assert document.total == SMALL_TOTAL
    assert document.as_of == datetime(2026, 2, 10, tzinfo=UTC)
    assert document.price_book == "internal"
    assert document.price_book_versions == "1"
    lines = _lines(runtime, caller, document.id)
    assert len(lines) == document.line_count == 13
    assert sum(Decimal(line[4]) for line in lines) == document.total


def test_running_a_draft_again_recomputes_it(runtime: Runtime, tenant: TenantHandle) -> None:
    caller = admin(tenant.tenant_id)
    calc = small_calculator()
    first = _run(runtime, caller, calc).document
    calc.record([usage("eng", "web", "api", "requests", 2000)])
    calc.now = datetime(2026, 2, 11, tzinfo=UTC)
    again = _run(runtime, caller, calc)
    assert again.recomputed
    assert again.document.id == first.id
    assert again.document.total == SMALL_TOTAL + Decimal("1.00")
    assert again.document.as_of == datetime(2026, 2, 11, tzinfo=UTC)


def test_running_a_finalized_period_again_is_a_no_op(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    caller = admin(tenant.tenant_id)
    calc = small_calculator()
    document = _run(runtime, caller, calc).document
    _finalize(runtime, caller, document.id)
    before = _lines(runtime, caller, document.id)
    calc.record(
        [usage("eng", "web", "api", "requests", 2000)], at=datetime(2026, 2, 12, tzinfo=UTC)
    )
    calc.now = datetime(2026, 2, 13, tzinfo=UTC)
    again = _run(runtime, caller, calc)
    assert again.unchanged
    assert again.document.id == document.id
    assert again.document.total == SMALL_TOTAL
    assert _lines(runtime, caller, document.id) == before


@settings(
    max_examples=4, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    first=st.lists(st.integers(min_value=0, max_value=50_000), min_size=1, max_size=4),
    late=st.lists(st.integers(min_value=1, max_value=50_000), max_size=3),
)
def test_property_rerun_of_a_finalized_period_changes_nothing(
    runtime: Runtime,
    make_tenant: Callable[..., TenantHandle],
    first: list[int],
    late: list[int],
) -> None:
    caller = admin(make_tenant("prop").tenant_id)
    calc = small_calculator()
    calc.record([usage("eng", "web", "web", "requests", q) for q in first])
    document = _run(runtime, caller, calc).document
    _finalize(runtime, caller, document.id)
    before = _lines(runtime, caller, document.id)
    calc.record(
        [usage("eng", "web", "web", "requests", q) for q in late],
        at=datetime(2026, 2, 12, tzinfo=UTC),
    )
    calc.now = datetime(2026, 2, 13, tzinfo=UTC)
    for _ in range(2):
        again = _run(runtime, caller, calc)
        assert again.unchanged
        assert again.document.total == document.total
        assert _lines(runtime, caller, document.id) == before


def test_finalized_documents_are_immutable_in_the_database(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    caller = admin(tenant.tenant_id)
    document = _run(runtime, caller, small_calculator()).document
    _finalize(runtime, caller, document.id)
    statements = [
        ("UPDATE billing_lines SET amount = '0' WHERE document_id = :id", "line update"),
        ("DELETE FROM billing_lines WHERE document_id = :id", "line delete"),
        ("UPDATE billing_documents SET total = '0' WHERE id = :id", "document update"),
        ("DELETE FROM billing_documents WHERE id = :id", "document delete"),
    ]
    for statement, what in statements:
        with runtime.engine.begin() as connection, pytest.raises(DBAPIError) as caught:
            connection.execute(text(statement), {"id": document.id})
        assert "immutable" in str(caught.value), what
    with runtime.session_factory() as session, pytest.raises(ConflictError, match="immutable"):
        service.discard_draft(caller, document.id, session=session)
    assert sum(Decimal(line[4]) for line in _lines(runtime, caller, document.id)) == SMALL_TOTAL


def test_a_draft_can_be_discarded_and_unended_periods_cannot_be_finalized(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    caller = admin(tenant.tenant_id)
    document = _run(runtime, caller, small_calculator()).document
    with runtime.session_factory() as session:
        with pytest.raises(ConflictError, match="after it has ended"):
            service.finalize_run(
                caller, document.id, session=session, now=datetime(2026, 1, 31, tzinfo=UTC)
            )
        service.discard_draft(caller, document.id, session=session)
        assert service.list_documents(caller, session=session) == []


def test_only_admins_create_and_finalize(runtime: Runtime, tenant: TenantHandle) -> None:
    finance = AuthContext(tenant.tenant_id, "p-fin", "fin@test", Role.FINANCE, None, None)
    with runtime.session_factory() as session, pytest.raises(PermissionDeniedError):
        service.create_run(
            finance,
            period=JANUARY,
            kind=RunKind.INVOICE,
            calculator=small_calculator(),
            session=session,
        )


def test_a_past_bill_is_reproduced_exactly_as_issued(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    caller = admin(tenant.tenant_id)
    calc = small_calculator()
    document = _run(runtime, caller, calc).document
    _finalize(runtime, caller, document.id)
    # Later: late usage for January and a back-dated price book version.
    calc.record(
        [usage("eng", "web", "web", "cpu_seconds", 700)], at=datetime(2026, 2, 20, tzinfo=UTC)
    )
    calc.add_version(
        book(version=2, prices=[{"meter": "requests", "model": "per_unit", "unit_price": "1"}]),
        datetime(2026, 2, 21, tzinfo=UTC),
    )
    calc.now = datetime(2026, 3, 1, tzinfo=UTC)
    with runtime.session_factory() as session:
        reproduced = adjustments.reproduce_document(
            caller, document.id, calculator=calc, session=session
        )
    assert reproduced.identical, reproduced.differences


def test_late_events_after_finalization_produce_an_adjustment_document(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    caller = admin(tenant.tenant_id)
    calc = small_calculator()
    run = _run(runtime, caller, calc).document
    _finalize(runtime, caller, run.id)
    run_lines = {(line[2], line[1], line[3]): line for line in _lines(runtime, caller, run.id)}
    late_at = datetime(2026, 2, 15, tzinfo=UTC)
    calc.record([usage("eng", "web", "api", "cpu_seconds", 1500, day=31)], at=late_at)
    calc.now = datetime(2026, 2, 16, tzinfo=UTC)
    adjustment_id = _adjust(runtime, caller, run.id, calc)
    assert adjustment_id is not None
    with runtime.session_factory() as session:
        view = service.view_document(caller, adjustment_id, session=session)
        document = view.document
        assert document.doc_type == DocumentType.ADJUSTMENT.value
        assert document.status == DocumentStatus.FINALIZED.value
        assert document.corrects_id == run.id
        assert (document.period_start, document.period_end) == (JANUARY.start, JANUARY.end)
        assert document.note == (
            f"corrects invoice run {run.id} for the period from 2026-01-01 00:00 UTC until "
            "2026-02-01 00:00 UTC: 1 line (1 with late usage, 0 re-rated by price book changes)"
        )
        assert document.as_of == datetime(2026, 2, 16, tzinfo=UTC)
        (line,) = view.lines
        assert line.cost_type == CostType.ADJUSTMENT.value
        assert (line.adjusted_cost_type, line.app, line.item) == ("usage", "api", "cpu_seconds")
        assert (line.quantity, line.amount) == (Decimal(1500), Decimal("2.000000"))
        assert line.unit_price == Decimal("0.001333333333")  # the 1500 s, not the 2000
        assert line.previous_quantity == 500
        assert line.previous_amount == 0
        assert line.corrects_line_id == run_lines[("api", "usage", "cpu_seconds")][0]
        assert "recorded after 2026-02-10" in (line.reason or "")
        assert document.total == Decimal("2.000000")
        run_view = service.view_document(caller, run.id, session=session)
        assert [a.id for a in run_view.adjustments] == [adjustment_id]
        assert run_view.document.total == SMALL_TOTAL  # the run itself is untouched
    assert _adjust(runtime, caller, run.id, calc) is None  # nothing changed since


def test_an_adjustment_note_counts_the_shares_of_a_late_platform_cost(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    """A platform cost recorded after the run: its shares are new lines, neither late usage
    nor re-rated; the note said "3 lines (0 with late usage, 0 re-rated …)"."""
    caller = admin(tenant.tenant_id)
    calc = small_calculator()
    run = _run(runtime, caller, calc).document
    _finalize(runtime, caller, run.id)
    dns = PlatformCostItem("dns", Decimal("3.00"), "USD", at=JANUARY.start)
    calc.record(costs=[dns], at=datetime(2026, 2, 15, tzinfo=UTC))
    calc.now = datetime(2026, 2, 16, tzinfo=UTC)
    adjustment_id = _adjust(runtime, caller, run.id, calc)
    assert adjustment_id is not None
    with runtime.session_factory() as session:
        view = service.view_document(caller, adjustment_id, session=session)
    assert {(line.app, line.item, line.amount) for line in view.lines} == {
        (app, "dns", Decimal("1.000000")) for app in ("web", "api", "etl")
    }
    assert {line.reason for line in view.lines} == {"new line"}
    assert view.document.note == (
        f"corrects invoice run {run.id} for the period from 2026-01-01 00:00 UTC until "
        "2026-02-01 00:00 UTC: 3 lines (0 with late usage, 0 re-rated by price book changes, "
        "3 new shared-cost lines)"
    )


def test_a_back_dated_price_change_produces_adjustment_lines(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    caller = admin(tenant.tenant_id)
    calc = small_calculator()
    run = _run(runtime, caller, calc).document
    _finalize(runtime, caller, run.id)
    prices = [
        {**rule, "unit_price": "0.0006"} if rule["meter"] == "requests" else rule
        for rule in book().model_dump(mode="json", exclude_none=True)["prices"]
    ]
    calc.add_version(book(version=2, prices=prices), datetime(2026, 2, 20, tzinfo=UTC))
    calc.now = datetime(2026, 2, 21, tzinfo=UTC)
    adjustment_id = _adjust(runtime, caller, run.id, calc)
    assert adjustment_id is not None
    with runtime.session_factory() as session:
        view = service.view_document(caller, adjustment_id, session=session)
    got = {(line.adjusted_cost_type, line.app, line.item): line.amount for line in view.lines}
    # requests: web 20000, api 10000, etl 4000 (10% off) at +0.0001 each.
    assert got == {
        ("usage", "web", "requests"): Decimal("2.000000"),
        ("usage", "api", "requests"): Decimal("1.000000"),
        ("usage", "etl", "requests"): Decimal("0.400000"),
        ("discount", "etl", "requests"): Decimal("-0.040000"),
    }
    assert all("price book versions 1 → 2" in (line.reason or "") for line in view.lines)
    assert all(line.quantity == 0 for line in view.lines)
    assert all(line.unit_price is None for line in view.lines)  # 0 @ 0.0006 is not 2.00
    assert view.document.price_book_versions == "2"
    assert _adjust(runtime, caller, run.id, calc) is None


def test_a_later_adjustment_compares_with_the_lines_as_last_adjusted(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    caller = admin(tenant.tenant_id)
    calc = small_calculator()
    run = _run(runtime, caller, calc).document
    _finalize(runtime, caller, run.id)
    # Adjustment 1 settles a back-dated version 2 (requests at 0.0006): every line now
    # prices by version 2, though only the requests lines changed and were adjusted.
    prices = [
        {**rule, "unit_price": "0.0006"} if rule["meter"] == "requests" else rule
        for rule in book().model_dump(mode="json", exclude_none=True)["prices"]
    ]
    calc.add_version(book(version=2, prices=prices), datetime(2026, 2, 20, tzinfo=UTC))
    calc.now = datetime(2026, 2, 21, tzinfo=UTC)
    first = _adjust(runtime, caller, run.id, calc)
    assert first is not None
    with runtime.session_factory() as session:
        message = adjustments.nothing_changed_message(caller, run.id, session=session)
    assert message == f"nothing changed since adjustment 1 ({first}) was issued"
    # Adjustment 2: late usage only, no price book change since adjustment 1.
    late_at = datetime(2026, 2, 25, tzinfo=UTC)
    calc.record([usage("eng", "web", "api", "cpu_seconds", 1500, day=31)], at=late_at)
    calc.record([usage("eng", "web", "web", "requests", 1000, day=31)], at=late_at)
    calc.now = datetime(2026, 2, 26, tzinfo=UTC)
    second = _adjust(runtime, caller, run.id, calc)
    assert second is not None
    with runtime.session_factory() as session:
        view = service.view_document(caller, second, session=session)
    lines = {(line.adjusted_cost_type, line.app, line.item): line for line in view.lines}
    assert set(lines) == {
        ("usage", "api", "cpu_seconds"),
        ("usage", "web", "requests"),
        ("platform", "web", "lb"),
        ("platform", "api", "lb"),
        ("platform", "etl", "lb"),
    }
    assert not any("price book versions" in (line.reason or "") for line in view.lines)
    cpu = lines[("usage", "api", "cpu_seconds")]
    assert (cpu.quantity, cpu.amount, cpu.unit_price) == (
        Decimal(1500),
        Decimal("2.000000"),
        Decimal("0.001333333333"),
    )
    requests = lines[("usage", "web", "requests")]
    assert (requests.quantity, requests.unit_price) == (Decimal(1000), Decimal("0.0006"))
    assert (lines[("platform", "api", "lb")].reason or "").startswith("reallocated:")
    assert view.document.note == (
        f"corrects invoice run {run.id} for the period from 2026-01-01 00:00 UTC until "
        "2026-02-01 00:00 UTC: 5 lines (3 with late usage, 0 re-rated by price book changes, "
        "2 reallocated shared costs)"
    )


def test_adjusting_a_draft_or_an_adjustment_is_refused(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    caller = admin(tenant.tenant_id)
    calc = small_calculator()
    run = _run(runtime, caller, calc).document
    with pytest.raises(ConflictError, match="draft"):
        _adjust(runtime, caller, run.id, calc)
    _finalize(runtime, caller, run.id)
    calc.record(
        [UsageRow("eng", "web", "web", "requests", Decimal(10), at=JANUARY.start)],
        at=datetime(2026, 2, 12, tzinfo=UTC),
    )
    calc.now = datetime(2026, 2, 13, tzinfo=UTC)
    adjustment_id = _adjust(runtime, caller, run.id, calc)
    assert adjustment_id is not None
    with pytest.raises(ConflictError, match="adjustment document"):
        _adjust(runtime, caller, adjustment_id, calc)
    with runtime.session_factory() as session:
        reproduced = adjustments.reproduce_document(
            caller, adjustment_id, calculator=calc, session=session
        )
    assert reproduced.identical, reproduced.differences


def _create(
    runtime: Runtime,
    caller: AuthContext,
    period: Period,
    calc: MemoryCalculator,
    kind: RunKind = RunKind.INVOICE,
) -> service.RunOutcome:
    with runtime.session_factory() as session:
        return service.create_run(
            caller, period=period, kind=kind, calculator=calc, session=session
        )


def _utc(year: int, month: int, day: int, hour: int = 0) -> datetime:
    return datetime(year, month, day, hour, tzinfo=UTC)


def test_a_run_overlapping_another_run_of_its_kind_is_refused(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    """Overlapping runs were both created and both finalized: January's usage on two final
    invoices, and every adjustment billed twice."""
    caller = admin(tenant.tenant_id)
    calc = small_calculator()
    january = _run(runtime, caller, calc).document
    # The month in Paris (a time zone changed since), the middle of it, around it, inside it.
    overlapping = [
        Period(_utc(2025, 12, 31, 23), _utc(2026, 1, 31, 23)),
        Period(_utc(2026, 1, 15), _utc(2026, 2, 15)),
        Period(_utc(2025, 12, 15), _utc(2026, 2, 15)),
        Period(_utc(2026, 1, 10), _utc(2026, 1, 11)),
    ]
    for status in ("draft", "finalized"):
        for period in overlapping:
            with pytest.raises(ConflictError) as caught:
                _create(runtime, caller, period, calc)
            message = caught.value.message
            assert f"overlaps invoice run {january.id} ({status}, from 2026-01-01 00:00 UTC " in (
                message
            )
            assert "until 2026-02-01 00:00 UTC)" in message
            assert "billed twice" in message
        if status == "draft":
            assert f"qm bill discard {january.id}" in message
            # Running the same period again still recomputes the draft.
            assert _run(runtime, caller, calc).recomputed
            _finalize(runtime, caller, january.id)
        else:
            assert f"qm bill adjust {january.id}" in message
    # Adjacent periods share no moment; the other kind is a separate ledger.
    assert _create(runtime, caller, FEBRUARY, calc).created
    assert _create(runtime, caller, overlapping[1], calc, RunKind.CHARGEBACK).created
    with runtime.session_factory() as session:
        runs = service.list_documents(caller, kind=RunKind.INVOICE, session=session)
    assert sorted(r.period_start for r in runs) == [JANUARY.start, FEBRUARY.start]


def test_a_discarded_draft_no_longer_stands_in_the_way(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    caller = admin(tenant.tenant_id)
    calc = small_calculator()
    draft = _run(runtime, caller, calc).document
    shifted = Period(_utc(2025, 12, 31, 23), _utc(2026, 1, 31, 23))
    with pytest.raises(ConflictError, match=draft.id):
        _create(runtime, caller, shifted, calc)
    with runtime.session_factory() as session:
        service.discard_draft(caller, draft.id, session=session)
    assert _create(runtime, caller, shifted, calc).created


def test_an_overlapping_draft_of_before_the_check_cannot_be_finalized(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    """Overlapping drafts made before overlaps were refused: the second is not finalized."""
    caller = admin(tenant.tenant_id)
    calc = small_calculator()
    first = _run(runtime, caller, calc).document
    later_half = Period(_utc(2026, 1, 15), _utc(2026, 2, 15))
    second = _create(runtime, caller, later_half, calc, RunKind.CHARGEBACK).document
    with runtime.engine.begin() as connection:  # as the old code could store it
        connection.execute(
            text("UPDATE billing_documents SET kind = 'invoice' WHERE id = :id"),
            {"id": second.id},
        )
    _finalize(runtime, caller, first.id)
    with runtime.session_factory() as session, pytest.raises(ConflictError) as caught:
        service.finalize_run(caller, second.id, session=session)
    assert f"overlaps invoice run {first.id} (finalized" in caught.value.message
    assert f"discard this draft (qm bill discard {second.id})" in caught.value.message


class SlowCalculator(MemoryCalculator):
    """Computes slowly, so that two runs created at once are both computing together."""

    def inputs(self, *args: Any, **kwargs: Any) -> Any:
        time.sleep(0.5)
        return super().inputs(*args, **kwargs)


def test_two_overlapping_runs_created_at_once_do_not_both_succeed(
    runtime: Runtime, tenant: TenantHandle
) -> None:
    caller = admin(tenant.tenant_id)
    base = small_calculator()
    calc = SlowCalculator(versions=base.versions, usage=base.usage, costs=base.costs)
    periods = [JANUARY, Period(_utc(2026, 1, 15), _utc(2026, 2, 15))]
    barrier = threading.Barrier(len(periods))

    def create(period: Period) -> str:
        barrier.wait()
        try:
            return _create(runtime, caller, period, calc).document.id
        except ConflictError as refused:
            return refused.message

    with ThreadPoolExecutor(len(periods)) as pool:
        results = list(pool.map(create, periods))
    created = [r for r in results if "overlaps" not in r]
    assert len(created) == 1, results
    (refusal,) = [r for r in results if "overlaps" in r]
    assert f"overlaps invoice run {created[0]} (draft" in refusal
