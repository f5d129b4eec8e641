"""Rating: turn attributed events into usage rows, lifecycle markers and platform-cost rows.

Pure apart from collecting rows: given the same events, snapshots and meters it produces the
same rows, which is what makes a replay of the log reproduce the store."""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from quartermaster.bus.protocol import LoggedEvent, LogRecord
from quartermaster.domain.events import EventType
from quartermaster.domain.money import to_decimal
from quartermaster.domain.timeutil import parse_timestamp
from quartermaster.usage.attribution import (
    Attribution,
    AttributionInput,
    MetadataSnapshot,
    Method,
    Outcome,
    attribute,
)
from quartermaster.usage.meters import MeterSet, measure, quantize_quantity
from quartermaster.usage.store import (
    COST_SCHEMA,
    EVENT_SCHEMA,
    MARKER_SCHEMA,
    USAGE_SCHEMA,
    WAITING_SCHEMA,
    RatedBatch,
    TableBuilder,
    WaitingEvent,
)

logger = logging.getLogger("quartermaster.usage")
_DECODER = json.JSONDecoder(parse_float=Decimal)  # exact: JSON numbers never pass through float


@dataclass(frozen=True, slots=True)
class ParsedEvent:
    position: int
    record: LogRecord
    data: Mapping[str, Any]
    environment: str | None
    via_lease: bool


def parse_event(position: int, record: LogRecord) -> ParsedEvent:
    """Read an accepted event's data. Ingestion validated it against domain/events.py, so a
    payload that no longer parses is logged and rated as carrying no measurements."""
    try:
        envelope = _DECODER.decode(record.payload)
        data = envelope.get("data") if isinstance(envelope, dict) else None
    except ValueError:
        envelope, data = {}, None
    if not isinstance(data, dict):
        logger.warning("event at log position %d has no readable data object", position)
        data = {}
    environment = data.get("environment")
    via_lease = (
        isinstance(envelope, dict)
        and envelope.get("qmlease") is not None
        and record.app_id is not None
        and data.get("app_id") is None
    )
    return ParsedEvent(
        position=position,
        record=record,
        data=data,
        environment=environment if isinstance(environment, str) else None,
        via_lease=via_lease,
    )


def from_waiting(event: WaitingEvent) -> ParsedEvent:
    record = LogRecord(
        tenant_id=event.tenant_id,
        source=event.source,
        event_id=event.event_id,
        type=event.event_type,
        subject=event.subject,
        event_time=event.event_time,
        recorded_at=event.recorded_at,
        content_hash=event.content_hash,
        app_id=event.app_id,
        resource_id=event.resource_id,
        late=event.late,
        payload=event.payload,
    )
    return parse_event(event.position, record)


def parse_logged(event: LoggedEvent) -> ParsedEvent:
    return parse_event(event.position, event.record)


class BatchRater:
    """Rates the events of one pipeline step into a `RatedBatch`."""

    def __init__(
        self,
        *,
        snapshots: Mapping[str, MetadataSnapshot],
        meters: Mapping[str, MeterSet],
        now: datetime,
        window: timedelta,
    ) -> None:
        self._snapshots = snapshots
        self._meters = meters
        self._now = now
        self._window = window
        self._events = TableBuilder(EVENT_SCHEMA)
        self._usage = TableBuilder(USAGE_SCHEMA)
        self._markers = TableBuilder(MARKER_SCHEMA)
        self._costs = TableBuilder(COST_SCHEMA)
        self._waiting = TableBuilder(WAITING_SCHEMA)
        self._resolved: list[int] = []
        self.outcomes: dict[Outcome, int] = dict.fromkeys(Outcome, 0)

    def add(self, event: ParsedEvent, *, was_waiting: bool = False) -> Outcome:
        """Rate a new event (or re-try a waiting one). Returns its outcome."""
        record = event.record
        if record.type == EventType.PLATFORM_COST.value:
            outcome = self._add_platform_cost(event)
        else:
            attribution = attribute(
                AttributionInput(
                    event_time=record.event_time,
                    recorded_at=record.recorded_at,
                    app_id=record.app_id,
                    resource_id=record.resource_id or _text(event.data.get("resource_id")),
                    environment=event.environment,
                    via_lease=event.via_lease,
                ),
                self._snapshots[record.tenant_id],
                now=self._now,
                window=self._window,
            )
            outcome = attribution.outcome
            if outcome is Outcome.WAITING:
                if not was_waiting:
                    self._add_waiting(event, attribution.deadline)
                self.outcomes[outcome] += 1
                return outcome
            self._add_rated(event, attribution)
        if was_waiting:
            self._resolved.append(event.position)
        self.outcomes[outcome] += 1
        return outcome

    def batch(self, *, stream: str | None, position: int | None, finish: bool) -> RatedBatch:
        return RatedBatch(
            stream=stream,
            position=position,
            events=self._events.to_table(),
            usage=self._usage.to_table(),
            markers=self._markers.to_table(),
            costs=self._costs.to_table(),
            waiting_added=self._waiting.to_table(),
            waiting_resolved=tuple(self._resolved),
            finish_stream=finish,
        )

    @property
    def resolved(self) -> int:
        return len(self._resolved)

    def _add_rated(self, event: ParsedEvent, attribution: Attribution) -> None:
        record = event.record
        billable_at = attribution.billable_at or record.recorded_at
        # Waited: became billable later than it was recorded (metadata arrived, or deadline).
        waited = billable_at > record.recorded_at
        method = attribution.method.value if attribution.method else Method.DEFAULT.value
        unattributed = attribution.outcome is Outcome.UNATTRIBUTED
        self._events.append(
            event.position,
            record.tenant_id,
            record.type,
            record.recorded_at,
            billable_at,
            attribution.outcome.value,
            method,
            waited,
        )
        resource_id = record.resource_id or _text(event.data.get("resource_id"))
        if record.type == EventType.RESOURCE_LIFECYCLE.value and resource_id is not None:
            replicas = event.data.get("replicas")
            self._markers.append(
                event.position,
                record.tenant_id,
                record.event_id,
                record.event_time,
                billable_at,
                resource_id,
                _text(event.data.get("action")) or "",
                replicas if isinstance(replicas, int) and not isinstance(replicas, bool) else None,
                attribution.cost_center,
                attribution.team,
                attribution.app,
                attribution.environment,
                unattributed,
            )
        for meter in self._meters[record.tenant_id].for_event(record.type, billable_at):
            measurement = measure(meter, event.data)
            if measurement is None:
                continue
            self._usage.append(
                event.position,
                record.tenant_id,
                record.event_id,
                record.source,
                record.type,
                record.event_time,
                record.recorded_at,
                billable_at,
                attribution.cost_center,
                attribution.team,
                attribution.app,
                measurement.meter,
                measurement.quantity,
                measurement.distinct_value,
                method,
                unattributed,
                record.late,
                resource_id,
                attribution.environment,
                attribution.lifecycle,
            )

    def _add_platform_cost(self, event: ParsedEvent) -> Outcome:
        record, data = event.record, event.data
        self._events.append(
            event.position,
            record.tenant_id,
            record.type,
            record.recorded_at,
            record.recorded_at,
            Outcome.ATTRIBUTED.value,
            Method.SHARED.value,
            False,
        )
        try:
            amount = quantize_quantity(to_decimal(data.get("amount"), field="amount"))
        except ValueError:
            logger.warning("platform cost at log position %d has no amount", event.position)
            return Outcome.ATTRIBUTED
        self._costs.append(
            event.position,
            record.tenant_id,
            record.event_id,
            record.source,
            record.event_time,
            record.recorded_at,
            _text(data.get("cost_type")) or "unspecified",
            amount,
            _text(data.get("currency")) or "USD",
            _time(data.get("billing_period_start")),
            _time(data.get("billing_period_end")),
        )
        return Outcome.ATTRIBUTED

    def _add_waiting(self, event: ParsedEvent, deadline: datetime) -> None:
        record = event.record
        self._waiting.append(
            event.position,
            record.tenant_id,
            record.source,
            record.event_id,
            record.type,
            record.subject,
            record.event_time,
            record.recorded_at,
            deadline,
            record.content_hash,
            record.app_id,
            record.resource_id,
            record.late,
            record.payload,
        )


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _time(value: Any) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return parse_timestamp(value)
    except ValueError:
        return None
