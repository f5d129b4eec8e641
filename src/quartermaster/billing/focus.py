"""FinOps FOCUS 1.2 cost-and-usage rows from billing documents. Pure.

Column names and their requirement levels are FOCUS 1.2's (docs/focus.md lists every
column with our mapping). All 21 mandatory columns come first, then the conditional and
recommended columns we can fill, then our own columns with the `x_` prefix the spec
requires for custom columns.

Percentage discounts are applied on the row they discount (FOCUS "discount handling"):
a run's discount line is folded into its usage row, whose ListCost is the undiscounted
charge and whose BilledCost is the charge after the discount. Every other line is one row,
so the BilledCost of a document's rows sums exactly to the document's total.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from fractions import Fraction

from quartermaster.billing.lines import RESERVED_CAPACITY_ITEM
from quartermaster.billing.models import (
    BillingDocument,
    BillingLine,
    CostType,
    DocumentType,
    RunKind,
)
from quartermaster.domain.money import fixed_point, money_sum, plain_text
from quartermaster.domain.timeutil import ensure_utc
from quartermaster.pricing.rating import unit_price

FOCUS_VERSION = "1.2"

MANDATORY_COLUMNS: tuple[str, ...] = (
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
)
CONDITIONAL_COLUMNS: tuple[str, ...] = (
    "ChargeFrequency",
    "ConsumedQuantity",
    "ConsumedUnit",
    "InvoiceId",
    "ListUnitPrice",
    "ResourceId",
    "ResourceName",
    "ResourceType",
    "SubAccountId",
    "SubAccountName",
    "SubAccountType",
    "Tags",
)
CUSTOM_COLUMNS: tuple[str, ...] = (
    "x_CostCenter",
    "x_CostType",
    "x_AllocationMethod",
    "x_PricingRule",
    "x_AuditKey",
    "x_LineId",
    "x_DocumentId",
    "x_CorrectsDocumentId",
)
COLUMNS: tuple[str, ...] = MANDATORY_COLUMNS + CONDITIONAL_COLUMNS + CUSTOM_COLUMNS

# Our items (meters and platform cost types) to FOCUS 1.2 ServiceCategory values, by the
# first keyword found in the item's name; anything else is "Other".
SERVICE_CATEGORY_KEYWORDS: tuple[tuple[tuple[str, ...], str], ...] = (
    (("token", "inference", "model", "llm", "embedding", "gpu"), "AI and Machine Learning"),
    (("db", "database", "sql", "query"), "Databases"),
    (("storage", "disk", "volume", "bucket", "blob", "backup"), "Storage"),
    (("egress", "ingress", "network", "bandwidth", "lb", "cdn", "dns", "transfer"), "Networking"),
    (
        ("control_plane", "observability", "logging", "monitoring", "audit"),
        "Management and Governance",
    ),
    (("ci", "build", "pipeline", "runner"), "Developer Tools"),
    (("secret", "identity", "kms", "credential"), "Security"),
    (
        (
            "cpu",
            "memory",
            "compute",
            "runtime",
            "invocation",
            "request",
            "container",
            "job",
            "duration",
        ),
        "Compute",
    ),
)
UNKNOWN_UNIT = "Units"
SHARE_UNIT = "Share"


@dataclass(frozen=True, slots=True)
class FocusContext:
    """Who the rows are from and for: the billing account is the tenant, the provider,
    publisher and invoice issuer the platform team running Quartermaster."""

    billing_account_name: str
    provider_name: str = "Quartermaster"
    team_names: Mapping[str, str] = field(default_factory=dict)
    app_names: Mapping[str, str] = field(default_factory=dict)


def service_category(item: str) -> str:
    words = set(item.lower().replace("-", "_").split("_")) | {item.lower()}
    words |= {word[:-1] for word in words if word.endswith("s")}  # tokens -> token
    for keywords, category in SERVICE_CATEGORY_KEYWORDS:
        if any(keyword in words for keyword in keywords):
            return category
    return "Other"


def focus_datetime(value: datetime) -> str:
    """FOCUS date/time format: extended ISO 8601 in UTC, 'YYYY-MM-DDTHH:mm:ssZ'."""
    return ensure_utc(value).strftime("%Y-%m-%dT%H:%M:%SZ")


def _number(value: Decimal | None) -> str:
    return "" if value is None else fixed_point(value)


def _charge_category(document: BillingDocument, line: BillingLine) -> tuple[str, str, str]:
    """(ChargeCategory, ChargeClass, ChargeFrequency)."""
    if document.doc_type == DocumentType.ADJUSTMENT.value:
        return "Adjustment", "Correction", "One-Time"
    if line.cost_type == CostType.DISCOUNT.value:
        return "Credit", "", "Recurring"
    if line.cost_type == CostType.SUBSCRIPTION.value:
        return "Usage", "", "Recurring"
    return "Usage", "", "Usage-Based"


def _service_name(line: BillingLine) -> str:
    # A correction names the service the way the rows it corrects do, so the two group
    # together in a FOCUS tool.
    if (line.adjusted_cost_type or line.cost_type) == CostType.PLATFORM.value:
        return f"Shared platform: {line.item}"
    if line.item == RESERVED_CAPACITY_ITEM:
        return f"Reserved capacity: {line.meter or line.item}"
    return line.item


def _category_item(line: BillingLine) -> str:
    """What a row's ServiceCategory is read from: a reserved-capacity credit is on its meter
    (a credit on cpu_seconds is Compute: counted as Other, Compute read too high)."""
    if line.item == RESERVED_CAPACITY_ITEM and line.meter:
        return line.meter
    return line.item


def _description(line: BillingLine, category: str) -> str:
    owner = line.app or line.team or line.cost_center
    if category == "Adjustment":
        return f"Correction of {line.adjusted_cost_type} {line.item} for {owner}: {line.reason}"
    return f"{line.cost_type} {line.item} for {owner}: {line.pricing_rule}"


def _tags(line: BillingLine) -> str:
    tags = {
        "cost_center": line.cost_center,
        "team": line.team,
        "app": line.app,
        "lifecycle": line.lifecycle,
        "cost_type": line.adjusted_cost_type or line.cost_type,
    }
    return json.dumps({k: v for k, v in tags.items() if v is not None}, sort_keys=True)


def _usage_pricing(line: BillingLine, unit: str) -> tuple[Decimal, Decimal, str]:
    """(PricingQuantity, ListUnitPrice, unit) of a Usage row. FOCUS requires both on every
    Usage row that is not a correction, with ListUnitPrice x PricingQuantity = ListCost. A
    shared-cost share is priced per unit of its allocation basis (amount / basis); a charge
    without a basis (a floor charged to an app that used nothing) is one share at its
    amount."""
    if line.quantity != 0:
        if line.unit_price is not None:
            return line.quantity, line.unit_price, unit
        return line.quantity, unit_price(Fraction(line.amount), line.quantity), unit
    if line.amount == 0:
        return line.quantity, Decimal(0), unit
    return Decimal(1), line.amount, SHARE_UNIT


def _row(
    document: BillingDocument,
    line: BillingLine,
    context: FocusContext,
    discounts: Sequence[BillingLine],
) -> dict[str, str]:
    category, charge_class, frequency = _charge_category(document, line)
    billed = money_sum([line.amount, *(d.amount for d in discounts)])
    is_usage = category == "Usage"
    unit = line.unit or UNKNOWN_UNIT
    if (line.adjusted_cost_type or line.cost_type) == CostType.PLATFORM.value or (
        line.item == RESERVED_CAPACITY_ITEM
    ):
        unit = line.unit or SHARE_UNIT
    quantity: Decimal | None = line.quantity if line.quantity != 0 else None
    list_price = line.unit_price if line.unit_price is not None and line.unit_price >= 0 else None
    if is_usage:
        quantity, list_price, unit = _usage_pricing(line, unit)
    invoice_id = document.id if document.kind == RunKind.INVOICE.value else ""
    rule = line.pricing_rule + "".join(f"; {d.pricing_rule}" for d in discounts)
    return {
        "BilledCost": _number(billed),
        "BillingAccountId": document.tenant_id,
        "BillingAccountName": context.billing_account_name,
        "BillingCurrency": line.currency,
        "BillingPeriodEnd": focus_datetime(document.period_end),
        "BillingPeriodStart": focus_datetime(document.period_start),
        "ChargeCategory": category,
        "ChargeClass": charge_class,
        "ChargeDescription": _description(line, category),
        "ChargePeriodEnd": focus_datetime(document.period_end),
        "ChargePeriodStart": focus_datetime(document.period_start),
        "ContractedCost": _number(billed),
        "EffectiveCost": _number(billed),
        "InvoiceIssuerName": context.provider_name,
        "ListCost": _number(line.amount),
        "PricingQuantity": _number(quantity),
        "PricingUnit": unit if quantity is not None else "",
        "ProviderName": context.provider_name,
        "PublisherName": context.provider_name,
        "ServiceCategory": service_category(_category_item(line)),
        "ServiceName": _service_name(line),
        "ChargeFrequency": frequency,
        "ConsumedQuantity": _number(quantity) if is_usage else "",
        "ConsumedUnit": unit if is_usage else "",
        "InvoiceId": invoice_id,
        # A price, written as prices are (0.25, not the amount's 0.250000).
        "ListUnitPrice": "" if list_price is None else plain_text(list_price),
        "ResourceId": line.app or "",
        "ResourceName": context.app_names.get(line.app, line.app) if line.app else "",
        "ResourceType": "Micro-app" if line.app else "",
        "SubAccountId": line.team or "",
        "SubAccountName": context.team_names.get(line.team, line.team) if line.team else "",
        "SubAccountType": "Team" if line.team else "",
        "Tags": _tags(line),
        "x_CostCenter": line.cost_center,
        "x_CostType": line.cost_type,
        "x_AllocationMethod": line.allocation_method,
        "x_PricingRule": rule,
        "x_AuditKey": line.audit_key,
        "x_LineId": line.id,
        "x_DocumentId": document.id,
        "x_CorrectsDocumentId": document.corrects_id or "",
    }


def focus_rows(
    documents: Sequence[tuple[BillingDocument, Sequence[BillingLine]]], context: FocusContext
) -> list[dict[str, str]]:
    """FOCUS rows of each document's lines, in line order."""
    rows: list[dict[str, str]] = []
    for document, lines in documents:
        folded: dict[str, list[BillingLine]] = {}
        keys = {line.line_key for line in lines}
        if document.doc_type == DocumentType.RUN.value:
            for line in lines:
                if line.parent_key is not None and line.parent_key in keys:
                    folded.setdefault(line.parent_key, []).append(line)
        folded_ids = {line.id for group in folded.values() for line in group}
        for line in lines:
            if line.id in folded_ids:
                continue
            rows.append(_row(document, line, context, folded.get(line.line_key, [])))
    return rows
