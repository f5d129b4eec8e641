"""Chargeback files and the FOCUS 1.2 CSV, built from priced lines without a database."""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import replace
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from hypothesis import given, settings

from quartermaster.billing.calculator import PeriodInputs, PricingContext, price_inputs
from quartermaster.billing.exports import (
    CHARGEBACK_COLUMNS,
    chargeback_csv,
    chargeback_json,
    focus_csv,
)
from quartermaster.billing.focus import (
    COLUMNS,
    CUSTOM_COLUMNS,
    MANDATORY_COLUMNS,
    FocusContext,
    focus_rows,
    service_category,
)
from quartermaster.billing.lines import LineDraft, adjustment_lines, issued_by_key, total_of
from quartermaster.billing.models import (
    BillingDocument,
    BillingLine,
    DocumentStatus,
    DocumentType,
    RunKind,
)
from quartermaster.billing.service import line_values
from quartermaster.pricing.history import PriceBookHistory, PriceBookVersion
from quartermaster.pricing.lines import PlatformCostItem, UsageRow
from tests.billing.support import JANUARY, SMALL_COSTS, SMALL_PLATFORM, SMALL_TOTAL, book
from tests.billing.test_lines import platform_costs, usage_rows

# FOCUS 1.2: the columns a FOCUS dataset MUST contain (the Cost and Usage dataset's presence
# rules with keyword MUST and no applicability criteria), in the spec's names.
FOCUS_12_MANDATORY = {
    "BilledCost",
    "BillingAccountId",
    "BillingAccountName",
    "BillingCurrency",
    "BillingPeriodEnd",
    "BillingPeriodStart",
    "ChargeCategory",
    "ChargeClass",
    "ChargeDescription",
    "ChargePeriodEnd",
    "ChargePeriodStart",
    "ContractedCost",
    "EffectiveCost",
    "InvoiceIssuerName",
    "ListCost",
    "PricingQuantity",
    "PricingUnit",
    "ProviderName",
    "PublisherName",
    "ServiceCategory",
    "ServiceName",
}
CHARGE_CATEGORIES = {"Usage", "Purchase", "Tax", "Credit", "Adjustment"}
FOCUS_TIME = re.compile(r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}Z$")
AS_OF = datetime(2026, 2, 2, tzinfo=UTC)
CONTEXT = FocusContext(billing_account_name="Acme Corp", team_names={"web": "Web Team"})


def _document(doc_type: DocumentType = DocumentType.RUN, **extra: object) -> BillingDocument:
    return BillingDocument(
        id="d" * 32 if doc_type is DocumentType.RUN else "a" * 32,
        tenant_id="acme",
        doc_type=doc_type.value,
        doc_key="k",
        kind=RunKind.INVOICE.value,
        corrects_id=None if doc_type is DocumentType.RUN else "d" * 32,
        sequence=0,
        period_start=JANUARY.start,
        period_end=JANUARY.end,
        timezone="UTC",
        status=DocumentStatus.FINALIZED.value,
        as_of=AS_OF,
        price_book="internal",
        price_book_versions="1",
        currency="USD",
        total=Decimal(0),
        line_count=0,
        **extra,
    )


def _stored(document: BillingDocument, drafts: list[LineDraft]) -> list[BillingLine]:
    document.total = total_of(drafts)
    document.line_count = len(drafts)
    return [BillingLine(**values) for values in line_values(document, drafts)]


def _drafts(rows: list[UsageRow], costs: list[PlatformCostItem]) -> list[LineDraft]:
    history = PriceBookHistory([PriceBookVersion(book(), datetime(2025, 12, 1, tzinfo=UTC))])
    inputs = PeriodInputs(tuple(rows), tuple(costs), as_of=AS_OF)
    return list(price_inputs(PricingContext(history=history), JANUARY, inputs).lines)


def test_focus_columns_are_the_21_mandatory_ones_of_focus_1_2_then_ours() -> None:
    assert set(MANDATORY_COLUMNS) == FOCUS_12_MANDATORY
    assert len(MANDATORY_COLUMNS) == 21
    assert COLUMNS[:21] == MANDATORY_COLUMNS
    assert len(set(COLUMNS)) == len(COLUMNS)
    assert all(column.startswith("x_") for column in CUSTOM_COLUMNS)
    assert {"ResourceId", "Tags", "ConsumedQuantity", "ConsumedUnit", "ListUnitPrice"} <= set(
        COLUMNS
    )
    assert {"SubAccountId", "SubAccountName", "InvoiceId", "ChargeFrequency"} <= set(COLUMNS)


def test_focus_rows_of_the_small_platform() -> None:
    document = _document()
    lines = _stored(document, _drafts(SMALL_PLATFORM, SMALL_COSTS))
    rows = focus_rows([(document, lines)], CONTEXT)
    assert len(rows) == len(lines) - 1  # etl's discount is folded into its requests row
    assert sum(Decimal(row["BilledCost"]) for row in rows) == SMALL_TOTAL
    etl_requests = next(
        r for r in rows if r["ResourceId"] == "etl" and r["ServiceName"] == "requests"
    )
    assert etl_requests["ListCost"] == "2.000000"
    assert etl_requests["BilledCost"] == etl_requests["EffectiveCost"] == "1.800000"
    assert etl_requests["ContractedCost"] == "1.800000"
    assert "data-team 10%" in etl_requests["x_PricingRule"]
    web_cpu = next(
        r for r in rows if r["ResourceId"] == "web" and r["ServiceName"] == "cpu_seconds"
    )
    assert (web_cpu["ConsumedQuantity"], web_cpu["PricingQuantity"]) == ("5000", "5000")
    assert web_cpu["ServiceCategory"] == "Compute"
    assert web_cpu["SubAccountName"] == "Web Team"
    assert web_cpu["InvoiceId"] == document.id
    assert json.loads(web_cpu["Tags"]) == {
        "app": "web",
        "cost_center": "eng",
        "cost_type": "usage",
        "lifecycle": "persistent",
        "team": "web",
    }
    lb = next(
        r for r in rows if r["ServiceName"] == "Shared platform: lb" and r["ResourceId"] == "api"
    )
    assert (lb["ChargeCategory"], lb["ServiceCategory"], lb["ConsumedQuantity"]) == (
        "Usage",
        "Networking",
        "10000",
    )
    storage = next(r for r in rows if r["ServiceName"] == "storage_gb_days")
    assert (storage["ChargeFrequency"], storage["ServiceCategory"]) == ("Recurring", "Storage")
    for row in rows:
        assert row["ChargeCategory"] in CHARGE_CATEGORIES
        assert row["ChargeClass"] == ""
        for column in ("BillingPeriodStart", "BillingPeriodEnd", "ChargePeriodStart"):
            assert FOCUS_TIME.match(row[column]), row[column]
        assert row["BillingAccountName"] == "Acme Corp"
        assert row["ProviderName"] == row["PublisherName"] == row["InvoiceIssuerName"]


def test_a_reservation_credit_is_in_its_meters_service_category() -> None:
    """A credit on cpu_seconds lowers Compute; as Other it left Compute too high."""
    document_book = book(reservations=[{"name": "commit", "meter": "cpu_seconds", "credit": 1}])
    history = PriceBookHistory([PriceBookVersion(document_book, datetime(2025, 12, 1, tzinfo=UTC))])
    inputs = PeriodInputs(tuple(SMALL_PLATFORM), tuple(SMALL_COSTS), as_of=AS_OF)
    drafts = list(price_inputs(PricingContext(history=history), JANUARY, inputs).lines)
    document = _document()
    rows = focus_rows([(document, _stored(document, drafts))], CONTEXT)
    credit = next(r for r in rows if r["ServiceName"] == "Reserved capacity: cpu_seconds")
    assert (credit["ChargeCategory"], credit["ServiceCategory"]) == ("Credit", "Compute")


def test_list_unit_prices_are_written_as_prices() -> None:
    """A share without a basis (a floor) is one share at its amount: 0.25, as every other
    ListUnitPrice is written, not the amount's 0.250000."""
    drafts = _drafts(SMALL_PLATFORM, SMALL_COSTS)
    floor = next(d for d in drafts if d.item == "control_plane" and d.app == "etl")
    drafts = [
        replace(d, quantity=Decimal(0), amount=Decimal("0.250000")) if d is floor else d
        for d in drafts
    ]
    document = _document()
    rows = focus_rows([(document, _stored(document, drafts))], CONTEXT)
    share = next(
        r
        for r in rows
        if r["ServiceName"] == "Shared platform: control_plane" and r["ResourceId"] == "etl"
    )
    assert (share["ListUnitPrice"], share["PricingQuantity"], share["ListCost"]) == (
        "0.25",
        "1",
        "0.250000",
    )
    for row in rows:
        price = row["ListUnitPrice"]
        assert not ("." in price and price.endswith("0")), (row["ServiceName"], price)


def test_adjustment_rows_are_corrections() -> None:
    document = _document(DocumentType.ADJUSTMENT)
    run_lines = _drafts(SMALL_PLATFORM, SMALL_COSTS)
    issued = issued_by_key([[(line, "x") for line in run_lines]])
    late = UsageRow("eng", "web", "api", "requests", Decimal(100), at=JANUARY.start)
    corrections = adjustment_lines(
        _drafts([*SMALL_PLATFORM, late], SMALL_COSTS), issued, issued_as_of=AS_OF
    )
    lines = _stored(document, corrections)
    rows = focus_rows([(document, lines)], CONTEXT)
    assert rows
    assert {(r["ChargeCategory"], r["ChargeClass"]) for r in rows} == {("Adjustment", "Correction")}
    assert sum(Decimal(r["BilledCost"]) for r in rows) == document.total
    assert all(r["x_CorrectsDocumentId"] == "d" * 32 for r in rows)


@settings(max_examples=50, deadline=None)
@given(rows=usage_rows, costs=platform_costs)
def test_billed_cost_of_an_invoice_sums_to_its_total(
    rows: list[UsageRow], costs: list[PlatformCostItem]
) -> None:
    document = _document()
    lines = _stored(document, _drafts(rows, costs))
    focus = focus_rows([(document, lines)], CONTEXT)
    assert sum((Decimal(r["BilledCost"]) for r in focus), Decimal(0)) == document.total
    assert sum((Decimal(r["EffectiveCost"]) for r in focus), Decimal(0)) == document.total
    parsed = list(csv.DictReader(io.StringIO(focus_csv([(document, lines)], CONTEXT))))
    assert sum((Decimal(r["BilledCost"]) for r in parsed), Decimal(0)) == document.total


def test_chargeback_csv_and_json() -> None:
    document = _document()
    lines = _stored(document, _drafts(SMALL_PLATFORM, SMALL_COSTS))
    text = chargeback_csv([(document, lines)])
    rows = list(csv.DictReader(io.StringIO(text)))
    assert tuple(rows[0]) == CHARGEBACK_COLUMNS
    assert len(rows) == len(lines)
    assert sum(Decimal(row["amount"]) for row in rows) == SMALL_TOTAL
    assert {row["run_id"] for row in rows} == {document.id}
    assert rows[0]["period_start"] == "2026-01-01T00:00:00Z"
    discount = next(row for row in rows if row["cost_type"] == "discount")
    assert (discount["app_id"], discount["amount"]) == ("etl", "-0.200000")
    body = json.loads(chargeback_json([(document, lines)]))
    assert body["documents"][0]["total"] == "76.300000"
    assert all(isinstance(line["amount"], str) for line in body["lines"])
    assert body["lines"][0]["audit_key"] == lines[0].audit_key


def test_service_categories_of_common_items() -> None:
    assert service_category("cpu_seconds") == "Compute"
    assert service_category("tokens") == "AI and Machine Learning"
    assert service_category("network_bytes") == "Networking"
    assert service_category("cdn") == "Networking"
    assert service_category("storage_gb_days") == "Storage"
    assert service_category("control_plane") == "Management and Governance"
    assert service_category("something_else") == "Other"


def _focus_nullability_problems(row: dict[str, str]) -> list[str]:
    """FOCUS 1.2's nullability rules for the quantity and price columns, as one row breaks
    them (ConsumedQuantity, ConsumedUnit, PricingQuantity, PricingUnit, ListUnitPrice)."""
    problems: list[str] = []
    category, correction = row["ChargeCategory"], row["ChargeClass"] == "Correction"
    assert row["ChargeClass"] in ("", "Correction")
    if category != "Usage":
        problems += [c for c in ("ConsumedQuantity", "ConsumedUnit") if row[c]]
    elif not correction:
        problems += [c for c in ("ConsumedQuantity", "ConsumedUnit") if not row[c]]
    if category in ("Usage", "Purchase") and not correction:
        problems += [c for c in ("PricingQuantity", "PricingUnit", "ListUnitPrice") if not row[c]]
    if category == "Tax":
        problems += [c for c in ("PricingQuantity", "ListUnitPrice") if row[c]]
    if bool(row["PricingQuantity"]) != bool(row["PricingUnit"]):
        problems.append("PricingQuantity without PricingUnit")
    if row["ListUnitPrice"]:
        if Decimal(row["ListUnitPrice"]) < 0:
            problems.append("negative ListUnitPrice")
        if row["PricingQuantity"]:
            product = Decimal(row["ListUnitPrice"]) * Decimal(row["PricingQuantity"])
            if abs(product - Decimal(row["ListCost"])) > Decimal("1e-6"):
                problems.append(f"ListUnitPrice x PricingQuantity = {product} != ListCost")
    return problems


def test_every_focus_row_of_a_run_and_its_adjustment_meets_the_nullability_rules() -> None:
    reservation = {"name": "commit", "meter": "cpu_seconds", "credit": "2.00"}
    history = PriceBookHistory(
        [PriceBookVersion(book(reservations=[reservation]), datetime(2025, 12, 1, tzinfo=UTC))]
    )

    def priced(rows: list[UsageRow]) -> list[LineDraft]:
        inputs = PeriodInputs(tuple(rows), tuple(SMALL_COSTS), as_of=AS_OF)
        return list(price_inputs(PricingContext(history=history), JANUARY, inputs).lines)

    run_drafts = priced(SMALL_PLATFORM)
    run = _document()
    run_lines = _stored(run, run_drafts)
    late = [
        UsageRow("eng", "web", "api", "requests", Decimal(100), at=JANUARY.start),
        UsageRow("eng", "web", "api", "cpu_seconds", Decimal(900), at=JANUARY.start),
    ]
    issued = issued_by_key([[(line, "x") for line in run_drafts]])
    adjustment = _document(DocumentType.ADJUSTMENT)
    corrections = adjustment_lines(priced([*SMALL_PLATFORM, *late]), issued, issued_as_of=AS_OF)
    rows = focus_rows([(run, run_lines), (adjustment, _stored(adjustment, corrections))], CONTEXT)
    kinds = {(r["ChargeCategory"], r["x_CostType"], r["ChargeClass"]) for r in rows}
    assert {("Usage", "usage", ""), ("Usage", "platform", ""), ("Credit", "discount", "")} <= kinds
    assert ("Adjustment", "adjustment", "Correction") in kinds
    assert any("data-team" in r["x_PricingRule"] for r in rows)  # a folded discount
    assert {
        r: p for r, p in ((r["x_LineId"], _focus_nullability_problems(r)) for r in rows) if p
    } == {}
    lb = next(
        r for r in rows if r["ServiceName"] == "Shared platform: lb" and r["ResourceId"] == "web"
    )
    # 17.647059 of the 30.00 load balancer for 20,000 of the 34,000 requests
    assert (lb["ConsumedQuantity"], lb["PricingQuantity"]) == ("20000", "20000")
    assert Decimal(lb["ListUnitPrice"]) * 20000 == pytest.approx(Decimal("17.647059"))
    control_plane = next(r for r in rows if r["ServiceName"] == "Shared platform: control_plane")
    assert (control_plane["PricingQuantity"], control_plane["PricingUnit"]) == ("1", "Share")
    assert control_plane["ListUnitPrice"] == "3"


def test_corrections_name_the_service_as_the_rows_they_correct() -> None:
    run = _document()
    run_drafts = _drafts(SMALL_PLATFORM, SMALL_COSTS)
    late = UsageRow("eng", "web", "api", "requests", Decimal(100), at=JANUARY.start)
    corrections = adjustment_lines(
        _drafts([*SMALL_PLATFORM, late], SMALL_COSTS),
        issued_by_key([[(line, "x") for line in run_drafts]]),
        issued_as_of=AS_OF,
    )
    adjustment = _document(DocumentType.ADJUSTMENT)
    run_rows = focus_rows([(run, _stored(run, run_drafts))], CONTEXT)
    fixes = focus_rows([(adjustment, _stored(adjustment, corrections))], CONTEXT)
    # the late requests move the load balancer's split: every app's lb share is corrected
    lb_fixes = [r for r in fixes if "lb" in r["ChargeDescription"]]
    assert {r["ServiceName"] for r in lb_fixes} == {"Shared platform: lb"}
    assert len(lb_fixes) == 3
    run_names = {(r["ResourceId"], r["ServiceName"]) for r in run_rows}
    assert {(r["ResourceId"], r["ServiceName"]) for r in fixes} <= run_names
