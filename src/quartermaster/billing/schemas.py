"""HTTP request and response bodies of the billing API. Money and quantities are exact
decimal strings; times are RFC 3339 UTC."""

from __future__ import annotations

import enum
from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from quartermaster.api.params import one_of
from quartermaster.billing.models import DocumentStatus, DocumentType, RunKind
from quartermaster.domain.money import FixedDecimal
from quartermaster.domain.timeutil import RequestMoment


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    model_config = ConfigDict(from_attributes=True)


class RunCreate(_In):
    """A period as [period_start, period_end), or a month (YYYY-MM, in the tenant's time
    zone); neither: the last complete calendar month in the tenant's time zone."""

    period_start: RequestMoment | None = None
    period_end: RequestMoment | None = None
    month: str | None = Field(default=None, description="YYYY-MM, e.g. 2026-01.")
    kind: RunKind = RunKind.INVOICE
    price_book: str | None = Field(
        default=None, description="Price book name; default: the tenant's default price book."
    )


class AdjustmentCreate(_In):
    run_id: str = Field(description="The finalized run to correct.")


class Outcome(enum.StrEnum):
    CREATED = "created"
    RECOMPUTED = "recomputed"
    UNCHANGED = "unchanged"  # the period's run is finalized: nothing was done


class DocumentOut(_Out):
    id: str
    document_type: Annotated[str, one_of(DocumentType)] = Field(validation_alias="doc_type")
    kind: Annotated[str, one_of(RunKind)]
    status: Annotated[str, one_of(DocumentStatus)]
    corrects_run_id: str | None = Field(validation_alias="corrects_id")
    sequence: int
    period_start: datetime
    period_end: datetime
    timezone: str
    as_of: datetime = Field(description="Usage and price books recorded before this are in it.")
    price_book: str
    price_book_versions: str
    currency: str
    total: FixedDecimal | None = Field(description="Sum of all lines (null for a team-member).")
    line_count: int
    note: str | None
    created_at: datetime
    created_by: str
    finalized_at: datetime | None
    finalized_by: str | None


class LineOut(_Out):
    id: str
    position: int
    cost_center: str
    team: str | None
    app: str | None
    lifecycle: str | None
    cost_type: str
    adjusted_cost_type: str | None
    item: str
    meter: str | None
    unit: str | None
    quantity: FixedDecimal
    unit_price: FixedDecimal | None
    amount: FixedDecimal
    currency: str
    pricing_rule: str
    allocation_method: str
    price_book_versions: str
    audit_key: str
    corrects_line_id: str | None
    previous_quantity: FixedDecimal | None
    previous_amount: FixedDecimal | None
    reason: str | None


class FinalizedOut(DocumentOut):
    outcome: Literal["finalized", "unchanged"] = Field(
        default="finalized",
        description="finalized: this request finalized the run; unchanged: it was final "
        "already and nothing was done.",
    )
    events_waiting: int = Field(
        default=0,
        description="Events of the period still waiting in the reconciliation window (their "
        "owner is not known yet), as the pipeline last saw them: not in this run; an "
        "adjustment bills them once they are attributed. Finalizing does not wait for them.",
    )
    waiting_until: datetime | None = Field(
        default=None,
        description="The latest reconciliation deadline of those events: by then each is "
        "attributed, or charged to the default cost center (null when none wait).",
    )


class RunOut(BaseModel):
    outcome: Outcome
    run: DocumentOut
    price_book_not_used: str | None = Field(
        default=None,
        description="Set when the request named a price book the run is not priced with: "
        "the period's run is finalized (outcome unchanged) and keeps its own book.",
    )


class DocumentDetailOut(BaseModel):
    document: DocumentOut
    lines: list[LineOut] = Field(
        description="Every line the caller may see, in order; empty with ?lines=false (page "
        "them with GET /v1/billing/runs/{run_id}/lines)."
    )
    visible_total: FixedDecimal = Field(
        description="Sum of the lines the caller may see (all, or its team's), listed or not."
    )
    visible_line_count: int = Field(
        default=0,
        description="How many lines the caller may see (all, or its team's), listed or not.",
    )
    team: str | None = Field(description="The team the lines are limited to (team-members).")
    adjustments: list[DocumentOut]


class LinePageOut(BaseModel):
    document_id: str
    team: str | None = Field(description="The team the lines are limited to (team-members).")
    lines: list[LineOut]
    next_after: int | None = Field(
        description="Pass as `after` for the next page; null on the last page."
    )


class ShareOut(BaseModel):
    cost_center: str
    team: str | None
    app: str | None
    amount: FixedDecimal
    lines: int = Field(description="How many lines add up to the amount.")


class SummaryOut(BaseModel):
    document: DocumentOut
    team: str | None = Field(description="The team the lines are limited to (team-members).")
    visible_total: FixedDecimal = Field(description="Sum of the lines summarized.")
    visible_line_count: int = Field(description="How many lines are summarized.")
    cost_centers: list[ShareOut] = Field(description="Per cost center, largest first.")
    teams: list[ShareOut] = Field(description="Per cost center and team, largest first.")
    top_apps: list[ShareOut] = Field(description="The `top` largest apps.")
    apps: int = Field(description="How many apps have lines.")


class AdjustmentOut(BaseModel):
    adjustment: DocumentDetailOut | None
    message: str


class LateUsageOut(BaseModel):
    run_id: str
    kind: Annotated[str, one_of(RunKind)]
    period_start: datetime
    period_end: datetime
    timezone: str
    billed_as_of: datetime = Field(
        description="The `as_of` of the run's latest document (the run or its latest "
        "adjustment): the late events became billable after it."
    )
    latest_document_id: str = Field(description="The run, or its latest adjustment.")
    late_events: int = Field(
        description="Events of the period no document of the run holds (0: the run is listed "
        "for its back-dated price changes alone)."
    )
    first_arrival: datetime | None = Field(
        description="When the first of them became billable; null without late events."
    )
    last_arrival: datetime | None = Field(
        description="When the last of them became billable; null without late events."
    )
    back_dated_versions: list[int] = Field(
        description="Versions of the run's price book recorded after its latest document "
        "that take effect before its period ends (back-dated price changes), oldest first."
    )
    adjustment_due: FixedDecimal | None = Field(
        description="What `POST /v1/billing/adjustments` would issue now (its total, late "
        "usage and back-dated price changes together); null: the late events change no line."
    )
    adjustment_lines: int = Field(description="The lines that adjustment would have.")
    currency: str


class ReproductionOut(BaseModel):
    document_id: str
    identical: bool
    differences: list[str]


class CostRowOut(BaseModel):
    cost_center: str
    team: str | None
    app: str | None
    month_to_date: FixedDecimal
    forecast: FixedDecimal


class PreviewOut(BaseModel):
    period_start: datetime
    period_end: datetime
    as_of: datetime = Field(
        description="What the figures are complete up to: every event recorded before it is "
        "in them (or waiting, events_waiting). The pipeline's progress minus the 5 s ingest "
        "settle, so earlier than now while the pipeline has events still to rate."
    )
    elapsed_days: FixedDecimal
    total_days: FixedDecimal
    currency: str
    price_book: str
    month_to_date: FixedDecimal
    forecast: FixedDecimal
    method: str
    team: str | None
    teams: list[CostRowOut]
    apps: list[CostRowOut]
    events_waiting: int = Field(
        default=0,
        description="Events of the month so far still waiting in the reconciliation window "
        "(their owner is not known yet), as the pipeline last saw them: not in these figures, "
        "as they are not in a run until attributed.",
    )
    waiting_until: datetime | None = Field(
        default=None,
        description="The latest reconciliation deadline of those events: by then each is "
        "attributed, or charged to the default cost center (null when none wait).",
    )
    note: str | None = Field(
        default=None,
        description="What the month so far leaves out, as a run's note says it: usage of "
        "meters with no price rule (at 0) and, tenant-wide, platform costs in another "
        "currency than the price book's (not priced); null: nothing.",
    )


class CostAmountOut(BaseModel):
    cost_center: str
    team: str | None = Field(description="Null for costs no team owns (unattributed).")
    app: str | None = Field(description="Null in `teams`.")
    amount: FixedDecimal


class PeriodCostsOut(BaseModel):
    period_start: datetime
    period_end: datetime
    as_of: datetime = Field(
        description="Usage recorded before it is in the figures (the pipeline caught up)."
    )
    complete: bool = Field(
        description="The period ended before `as_of` and none of its events waits for an "
        "owner: later usage can only come late (and be billed by an adjustment)."
    )
    currency: str
    price_book: str
    total: FixedDecimal = Field(description="The costs shown: a team's only, with `team`.")
    team: str | None
    teams: list[CostAmountOut] = Field(description="Per cost center and team, largest first.")
    apps: list[CostAmountOut] = Field(
        description="Per app, largest first; a team's total may exceed its apps' (costs "
        "charged to the team as a whole: reserved capacity, platform shares)."
    )
    events_waiting: int = Field(
        description="Events of the period still waiting in the reconciliation window: not in "
        "these figures."
    )
    waiting_until: datetime | None
    note: str | None = Field(
        default=None,
        description="What the figures leave out, as a run's note says it: usage of meters "
        "with no price rule (at 0) and, tenant-wide, platform costs in another currency than "
        "the price book's (not priced); null: nothing.",
    )


class DailyOut(BaseModel):
    start: datetime
    end: datetime
    value: FixedDecimal
    events: int


class RawEventOut(BaseModel):
    event_id: str
    source: str
    event_type: str
    event_time: datetime
    recorded_at: datetime
    billable_at: datetime
    resource_id: str | None
    quantity: FixedDecimal
    method: str
    late: bool
    in_document: bool = Field(description="Billable before the document's as_of.")


class MarkerOut(BaseModel):
    event_id: str
    event_time: datetime
    resource_id: str
    action: str
    replicas: int | None
    environment: str


class ExplanationOut(BaseModel):
    line: LineOut
    document: DocumentOut
    subject: str
    counted_as_of: datetime
    late_after: datetime | None
    daily: list[DailyOut]
    daily_total: FixedDecimal
    shared_costs: list[DailyOut]
    top_events: list[RawEventOut]
    markers: list[MarkerOut]
    notes: list[str]


class ExportDocumentOut(BaseModel):
    """A document's header in a JSON chargeback export (billing/exports.py)."""

    id: str
    document_type: Annotated[str, one_of(DocumentType)]
    kind: Annotated[str, one_of(RunKind)]
    corrects_run_id: str | None
    status: Annotated[str, one_of(DocumentStatus)]
    period_start: datetime
    period_end: datetime
    as_of: datetime
    price_book: str
    price_book_versions: str
    currency: str
    total: FixedDecimal | None = Field(
        description="Sum of all the document's lines (null in a team-member's export)."
    )
    visible_total: FixedDecimal = Field(description="Sum of this export's lines of it.")
    team: str | None = Field(description="The team whose lines these are, in its export.")
    line_count: int = Field(description="The document's lines, every team's.")


class ExportLineOut(BaseModel):
    """A line of a JSON chargeback export: the chargeback CSV's columns, by name."""

    period_start: datetime
    period_end: datetime
    run_id: str
    document_type: Annotated[str, one_of(DocumentType)]
    corrects_run_id: str | None
    line_id: str
    cost_center: str
    team_id: str | None
    app_id: str | None
    cost_type: str
    adjusted_cost_type: str | None
    item: str
    meter: str | None
    usage: FixedDecimal
    unit: str | None
    unit_price: FixedDecimal | None
    amount: FixedDecimal
    currency: str
    allocation_method: str
    pricing_rule: str
    reason: str | None
    audit_key: str


class ChargebackExportOut(BaseModel):
    """`GET /v1/billing/runs/{run_id}/export?format=json`: the documents (the run and, with
    `include_adjustments`, its adjustments) and their lines."""

    documents: list[ExportDocumentOut]
    lines: list[ExportLineOut]
