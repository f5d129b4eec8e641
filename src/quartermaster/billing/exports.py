"""Chargeback files (CSV and JSON) and the FOCUS CSV of billing documents. Pure.

Decimals are written exactly (plain notation, never floats) and times as RFC 3339 UTC.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterable, Sequence
from datetime import datetime
from decimal import Decimal
from typing import Any

from quartermaster.billing.focus import COLUMNS as FOCUS_COLUMNS
from quartermaster.billing.focus import FocusContext, focus_rows
from quartermaster.billing.lines import ZERO_LINE
from quartermaster.billing.models import BillingDocument, BillingLine
from quartermaster.domain.money import fixed_point, money_sum
from quartermaster.domain.timeutil import ensure_utc

CHARGEBACK_COLUMNS: tuple[str, ...] = (
    "period_start",
    "period_end",
    "run_id",
    "document_type",
    "corrects_run_id",
    "line_id",
    "cost_center",
    "team_id",
    "app_id",
    "cost_type",
    "adjusted_cost_type",
    "item",
    "meter",
    "usage",
    "unit",
    "unit_price",
    "amount",
    "currency",
    "allocation_method",
    "pricing_rule",
    "reason",
    "audit_key",
)

DocumentLines = tuple[BillingDocument, Sequence[BillingLine]]


def _time(value: datetime) -> str:
    return ensure_utc(value).isoformat().replace("+00:00", "Z")


def _number(value: Decimal | None) -> str | None:
    return None if value is None else fixed_point(value)


def chargeback_records(documents: Iterable[DocumentLines]) -> list[dict[str, str | None]]:
    records: list[dict[str, str | None]] = []
    for document, lines in documents:
        for line in lines:
            records.append(
                {
                    "period_start": _time(document.period_start),
                    "period_end": _time(document.period_end),
                    "run_id": document.id,
                    "document_type": document.doc_type,
                    "corrects_run_id": document.corrects_id,
                    "line_id": line.id,
                    "cost_center": line.cost_center,
                    "team_id": line.team,
                    "app_id": line.app,
                    "cost_type": line.cost_type,
                    "adjusted_cost_type": line.adjusted_cost_type,
                    "item": line.item,
                    "meter": line.meter,
                    "usage": _number(line.quantity),
                    "unit": line.unit,
                    "unit_price": _number(line.unit_price),
                    "amount": _number(line.amount),
                    "currency": line.currency,
                    "allocation_method": line.allocation_method,
                    "pricing_rule": line.pricing_rule,
                    "reason": line.reason,
                    "audit_key": line.audit_key,
                }
            )
    return records


def _csv(columns: Sequence[str], rows: Iterable[dict[str, Any]]) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(columns), lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: "" if v is None else v for k, v in row.items()})
    return buffer.getvalue()


def chargeback_csv(documents: Iterable[DocumentLines]) -> str:
    return _csv(CHARGEBACK_COLUMNS, chargeback_records(documents))


def document_summary(
    document: BillingDocument, lines: Sequence[BillingLine], *, team: str | None = None
) -> dict[str, str | int | None]:
    """The document's header as the API gives it to the caller: a team-member's (`team`,
    whose lines `lines` are) has `total` null, since the document's total is every team's,
    and `visible_total` the sum of its team's lines; `line_count` is the document's."""
    visible_total = money_sum([ZERO_LINE, *(line.amount for line in lines)])
    return {
        "id": document.id,
        "document_type": document.doc_type,
        "kind": document.kind,
        "corrects_run_id": document.corrects_id,
        "status": document.status,
        "period_start": _time(document.period_start),
        "period_end": _time(document.period_end),
        "as_of": _time(document.as_of),
        "price_book": document.price_book,
        "price_book_versions": document.price_book_versions,
        "currency": document.currency,
        "total": None if team is not None else format(document.total, "f"),
        "visible_total": format(visible_total, "f"),
        "team": team,
        "line_count": document.line_count,
    }


def chargeback_json(documents: Sequence[DocumentLines], *, team: str | None = None) -> str:
    """`team`: the lines are that team's only (a team-member's export)."""
    body = {
        "documents": [
            document_summary(document, lines, team=team) for document, lines in documents
        ],
        "lines": chargeback_records(documents),
    }
    return json.dumps(body, indent=2, ensure_ascii=False) + "\n"


def focus_csv(documents: Sequence[DocumentLines], context: FocusContext) -> str:
    return _csv(FOCUS_COLUMNS, focus_rows(documents, context))
