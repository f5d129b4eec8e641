"""Export files of stored billing documents: chargeback CSV and JSON, FOCUS 1.2 CSV.

A run's export may include its adjustment documents (each keeps its own document id, and
its FOCUS rows are ChargeCategory "Adjustment", ChargeClass "Correction"). A team-member's
export holds its own team's lines only.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from quartermaster.billing.exports import DocumentLines, chargeback_csv, chargeback_json, focus_csv
from quartermaster.billing.focus import FocusContext
from quartermaster.billing.models import BillingDocument, DocumentType
from quartermaster.billing.service import (
    adjustments_of,
    caller_team_slug,
    document_lines,
    get_document,
    load_tenant,
    visible,
)
from quartermaster.catalog.models import App
from quartermaster.tenancy.models import Team
from quartermaster.tenancy.service import AuthContext


class ExportFormat(enum.StrEnum):
    CSV = "csv"
    JSON = "json"
    FOCUS = "focus"


@dataclass(frozen=True, slots=True)
class ExportFile:
    content: str
    media_type: str
    filename: str


def focus_context(tenant_id: str, *, session: Session) -> FocusContext:
    tenant = load_tenant(tenant_id, session=session)
    teams = session.execute(select(Team.slug, Team.name).where(Team.tenant_id == tenant_id))
    apps = session.execute(select(App.app_id, App.title).where(App.tenant_id == tenant_id))
    return FocusContext(
        billing_account_name=tenant.name,
        team_names=dict(teams.all()),
        app_names=dict(apps.all()),
    )


def export_document(
    caller: AuthContext,
    document_id: str,
    export_format: ExportFormat,
    *,
    include_adjustments: bool = False,
    session: Session,
) -> ExportFile:
    team = caller_team_slug(caller, session=session)
    document = get_document(caller, document_id, session=session)
    documents: list[BillingDocument] = [document]
    if include_adjustments and document.doc_type == DocumentType.RUN.value:
        documents += adjustments_of(document, session=session)
    parts: list[DocumentLines] = [
        (d, visible(document_lines(d, session=session), team)) for d in documents
    ]
    stem = f"{document.kind}-{document.period_start:%Y%m%d}-{document.id}"
    if export_format is ExportFormat.CSV:
        return ExportFile(chargeback_csv(parts), "text/csv; charset=utf-8", f"{stem}.csv")
    if export_format is ExportFormat.JSON:
        content = chargeback_json(parts, team=team)
        return ExportFile(content, "application/json", f"{stem}.json")
    context = focus_context(caller.tenant_id, session=session)
    return ExportFile(focus_csv(parts, context), "text/csv; charset=utf-8", f"{stem}-focus.csv")
