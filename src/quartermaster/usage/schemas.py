"""API models of the usage routes (meters, environment overrides, usage, pipeline)."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal

from pydantic import BaseModel, ConfigDict, Field

from quartermaster.usage.meters import COUNT_VALUE, Aggregation, MeterDefinition


class _In(BaseModel):
    model_config = ConfigDict(extra="forbid")


class MeterCreate(_In):
    name: str = Field(description="Slug of the meter, e.g. `gpu_seconds`.", max_length=64)
    event_type: str = Field(description="Event type it reads, e.g. `qm.invocation.usage`.")
    value: str = Field(
        description=f"Field of the event's data to take, or `{COUNT_VALUE}` (each event is 1).",
        max_length=64,
    )
    aggregation: Aggregation
    unit: str = Field(max_length=32)
    filter_field: str | None = Field(
        default=None, description="Only events whose data field equals `filter_value`."
    )
    filter_value: str | None = Field(default=None, max_length=200)
    description: str = Field(default="", max_length=500)

    def definition(self) -> MeterDefinition:
        return MeterDefinition(
            name=self.name,
            event_type=self.event_type,
            value=self.value,
            aggregation=self.aggregation,
            unit=self.unit,
            filter_field=self.filter_field,
            filter_value=self.filter_value,
            description=self.description,
        )


class MeterOut(BaseModel):
    name: str
    event_type: str
    value: str
    aggregation: Aggregation
    unit: str
    filter_field: str | None
    filter_value: str | None
    description: str
    created_at: datetime | None
    built_in: bool = Field(description="A default meter, in force while the tenant has none.")

    @classmethod
    def of(cls, definition: MeterDefinition, *, built_in: bool = False) -> MeterOut:
        return cls(
            name=definition.name,
            event_type=definition.event_type,
            value=definition.value,
            aggregation=definition.aggregation,
            unit=definition.unit,
            filter_field=definition.filter_field,
            filter_value=definition.filter_value,
            description=definition.description,
            created_at=definition.created_at,
            built_in=built_in,
        )


class OverrideSet(_In):
    cost_center: str = Field(description="Slug of the cost center that pays for the environment.")


class OverrideOut(BaseModel):
    environment: str
    cost_center: str
    created_at: datetime


class UsageRowOut(BaseModel):
    cost_center: str
    team: str = Field(description="Empty when the usage has no team (override, unattributed).")
    app: str = Field(description="Empty when the usage has no app (override, unattributed).")
    meter: str
    unit: str
    aggregation: Aggregation
    quantity: Decimal
    event_count: int
    unattributed: bool


class UsageGroupOut(BaseModel):
    cost_center: str | None = Field(description="Set when grouped by cost center.")
    team: str | None = Field(
        description="Set when grouped by team; empty for usage without a team."
    )
    app: str | None = Field(description="Set when grouped by app; empty for usage without an app.")
    meter: str
    unit: str
    aggregation: Aggregation
    quantity: Decimal = Field(
        description="The sum of the group's per-app quantities (each its meter's aggregation "
        "over the period, as billed)."
    )
    event_count: int
    rows: int = Field(description="(cost center, team, app) rows summed into the group.")
    unattributed: bool
    share: Decimal = Field(description="Fraction of the meter's quantity in the view, 0..1.")


class UsageMeterOut(BaseModel):
    meter: str
    unit: str
    aggregation: Aggregation
    quantity: Decimal = Field(description="The meter's quantity over every group, shown or not.")
    groups: int = Field(description="Groups (or rows) of this meter, shown or not.")
    shown: int
    omitted: int = Field(description="Groups left out by `top`.")
    omitted_quantity: Decimal
    omitted_share: Decimal = Field(description="Fraction of the meter's quantity left out.")


class UsageOut(BaseModel):
    start: datetime
    end: datetime
    as_of: datetime | None
    rows: list[UsageRowOut] = Field(
        description="Without `by`: quantities per cost center, team, app and meter, in that "
        "order. Empty with `by` (see `groups`)."
    )
    by: str | None = Field(default=None, description="The grouping level asked for.")
    groups: list[UsageGroupOut] = Field(
        default_factory=list,
        description="With `by`: the summed groups, per meter, largest quantity first.",
    )
    meters: list[UsageMeterOut] = Field(
        default_factory=list,
        description="Per meter in the view: its total, and what `top` left out.",
    )


class StreamOut(BaseModel):
    name: str
    position: int
    tenant_id: str | None
    upto: int | None = Field(description="Set on replay streams: the position they rebuild to.")
    lag: int


class LatencyOut(BaseModel):
    since: datetime
    events: int
    p50_ms: float | None
    p99_ms: float | None
    max_ms: float | None
    waited: int = Field(description="Events rated after waiting for metadata (not in the figures).")


class WorkerOut(BaseModel):
    enabled: bool
    running: bool
    runs: int
    failures: int
    last_success_at: datetime | None
    last_error: str | None = Field(
        description="The error of the failing passes; null once a pass has succeeded since "
        "(then `recovered_at` and `last_error_at` say when)."
    )
    last_error_at: datetime | None = Field(
        default=None, description="When the latest failed pass failed."
    )
    recovered_at: datetime | None = Field(
        default=None, description="The first successful pass after the latest failed one."
    )


class FailedEventOut(BaseModel):
    position: int = Field(description="The event's position in the event log.")
    event_id: str
    source: str
    event_type: str
    recorded_at: datetime = Field(description="When ingestion accepted it.")
    failed_at: datetime = Field(description="When the pipeline set it aside.")
    reason: str = Field(description="Why rating it failed.")


class PipelineStatusOut(BaseModel):
    log_head: int
    streams: list[StreamOut]
    lag: int = Field(description="Events in the log the main stream has not read yet.")
    waiting: int = Field(description="The caller's events waiting for metadata.")
    earliest_deadline: datetime | None
    failed: int = Field(
        description="The caller's events the pipeline set aside because rating them failed "
        "(not rated; see docs/usage.md)."
    )
    failed_latest: list[FailedEventOut] = Field(
        description="The latest set-aside events (up to 10), newest first, with the reason."
    )
    worker: WorkerOut
    latency: LatencyOut


class ReplayOut(BaseModel):
    stream: str
    tenant_id: str | None
    upto: int
    drained: bool = Field(description="True when `wait` was set and the rebuild has finished.")


class AccountingHourOut(BaseModel):
    hour: datetime
    accepted: int
    attributed: int
    unattributed: int
    rated: int
    waiting: int
    failed: int = Field(description="Set aside: rating them failed (see `failed` of the status).")
    in_pipeline: int
    balanced: bool


class AccountingOut(BaseModel):
    start: datetime
    end: datetime
    hours: list[AccountingHourOut]
    balanced: bool = Field(description="accepted = rated + waiting + failed in every hour.")
