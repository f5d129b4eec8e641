"""Response models of the metering routes (they document the API; docs/events.md has more)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from quartermaster.api.errors import ErrorDetail


class RejectedEvent(BaseModel):
    index: int = Field(description="Position of the event in the request (0 for a single one).")
    id: str | None = Field(description="The event's `id`, when it could be read.")
    field: str | None = Field(description="The offending attribute, e.g. `data.tokens`.")
    reason: str = Field(description="A reason code; docs/events.md lists them all.")
    message: str


class IngestResponse(BaseModel):
    accepted: int = Field(description="Events stored by this request.")
    duplicates: int = Field(description="Events already stored with the same content.")
    rejected: list[RejectedEvent]
    error: ErrorDetail | None = Field(
        default=None, description="Set (with status 422) when no event was accepted."
    )


class HourCountsOut(BaseModel):
    hour: datetime = Field(description="Start of the hour of receipt (UTC).")
    stages: dict[str, int] = Field(description="Events per stage, e.g. received, accepted.")
    reasons: dict[str, dict[str, int]] = Field(
        description="Per stage, the counts by reason (e.g. rejected: {bad_signature: 2})."
    )


class ReconciliationResponse(BaseModel):
    start: datetime = Field(description="First hour of the window (UTC).")
    end: datetime = Field(description="End of the window, exclusive (UTC).")
    hours: list[HourCountsOut]
    totals: dict[str, int] = Field(description="Sum over the hours, per stage.")


class StoredEventOut(BaseModel):
    position: int = Field(description="Position in the event log (increasing).")
    recorded_at: datetime = Field(description="When ingestion stored it (UTC).")
    app_id: str | None
    resource_id: str | None
    late: bool
    event: dict[str, Any] = Field(description="The CloudEvent as stored (without signature).")


class EventsPage(BaseModel):
    events: list[StoredEventOut]
    next_after: int | None = Field(
        description="Pass as `after` to get the events that follow (null: none seen yet)."
    )
