"""Rating: turn attributed events into usage rows, lifecycle markers and platform-cost rows.

Pure apart from collecting rows: given the same events, snapshots and meters it produces the
same rows, which is what makes a replay of the log reproduce the store."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

import orjson
import pyarrow as pa

from quartermaster.bus.protocol import LoggedEvent, LogRecord
from quartermaster.domain.events import MAX_QUANTITY, EventType
from quartermaster.domain.frozen import fast_constructor
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
from quartermaster.usage.meters import (
    MeterSet,
    QuantityOutOfRangeError,
    measure,
    quantize_quantity,
)
from quartermaster.usage.store import (
    COST_SCHEMA,
    EVENT_SCHEMA,
    FAILED_SCHEMA,
    MARKER_SCHEMA,
    QUANTITY_TYPE,
    USAGE_SCHEMA,
    WAITING_SCHEMA,
    RatedBatch,
    TableBuilder,
    WaitingEvent,
)

logger = logging.getLogger("quartermaster.usage")
_MEASURED = ("meter", "quantity", "distinct_value")
# A rated event: the columns its usage rows share, and what the ledger needs.
BASE_SCHEMA = pa.schema(
    [f for f in USAGE_SCHEMA if f.name not in _MEASURED]
    + [pa.field("outcome", pa.string()), pa.field("waited", pa.bool_())]
)
# Enum `.value` is a descriptor call; per event it was a measurable share of rating's CPU.
_PLATFORM_COST = EventType.PLATFORM_COST.value
_LIFECYCLE = EventType.RESOURCE_LIFECYCLE.value
_METHOD_TEXT = {m: m.value for m in Method}
_OUTCOME_TEXT = {o: o.value for o in Outcome}
MAX_REASON = 500  # characters of a set-aside event's reason kept


@dataclass(frozen=True, slots=True)
class ParsedEvent:
    position: int
    record: LogRecord
    data: Mapping[str, Any]
    environment: str | None
    via_lease: bool


_new_parsed = fast_constructor(ParsedEvent)
_new_input = fast_constructor(AttributionInput)


def parse_event(position: int, record: LogRecord) -> ParsedEvent:
    """Read an accepted event's data. Ingestion validated it against domain/events.py, so a
    payload that no longer parses is logged and rated as carrying no measurements."""
    # orjson's floats are exact here: the payload is the canonical text that orjson wrote from
    # the float it parsed at ingestion (shortest round-trip digits), and `to_decimal` and
    # `value_text` read a float by those same digits (repr), so quantities are the decimals
    # the payload spells (tests/usage/test_rating.py checks this for any float).
    try:
        envelope = orjson.loads(record.payload)
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
    return _new_parsed(
        position, record, data, environment if isinstance(environment, str) else None, via_lease
    )


def from_waiting(event: WaitingEvent) -> ParsedEvent:
    return parse_event(event.position, waiting_record(event))


def waiting_record(event: WaitingEvent) -> LogRecord:
    """The log record a waiting event was stored from."""
    return LogRecord(
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
        self._events = TableBuilder(BASE_SCHEMA)  # one row per rated event
        self._measured: list[int] = []  # per measurement: its event's row in _events
        self._meter_names: list[str] = []
        self._quantities: list[Decimal] = []
        self._distinct: list[str | None] = []
        self._markers = TableBuilder(MARKER_SCHEMA)
        self._costs = TableBuilder(COST_SCHEMA)
        self._waiting = TableBuilder(WAITING_SCHEMA)
        self._resolved: list[int] = []
        self._failed = TableBuilder(FAILED_SCHEMA)
        self.outcomes: dict[Outcome, int] = dict.fromkeys(Outcome, 0)

    def fresh(self) -> BatchRater:
        """An empty rater with the same snapshots, meters and clock."""
        return BatchRater(
            snapshots=self._snapshots, meters=self._meters, now=self._now, window=self._window
        )

    def add(self, event: ParsedEvent, *, was_waiting: bool = False) -> Outcome:
        """Rate a new event (or re-try a waiting one). Returns its outcome. All or nothing:
        an event that raises (`QuantityOutOfRangeError`, or a fault) has added no row, so
        the caller can set it aside (`set_aside`) and go on with the next one."""
        record = event.record
        if record.type == _PLATFORM_COST:
            outcome = self._add_platform_cost(event)
        else:
            attribution = attribute(
                _new_input(
                    record.event_time,
                    record.recorded_at,
                    record.app_id,
                    record.resource_id,
                    event.environment,
                    event.via_lease,
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
        events = self._events.to_table()
        # Usage rows repeat their event's columns: gather them in Arrow, not per value.
        base = events.take(pa.array(self._measured, pa.int64()))
        measured = {
            "meter": pa.array(self._meter_names, pa.string()),
            "quantity": pa.array(self._quantities, QUANTITY_TYPE),
            "distinct_value": pa.array(self._distinct, pa.string()),
        }
        usage = pa.Table.from_arrays(
            [measured[n] if n in measured else base[n] for n in USAGE_SCHEMA.names],
            schema=USAGE_SCHEMA,
        )
        return RatedBatch(
            stream=stream,
            position=position,
            events=events.select(EVENT_SCHEMA.names).cast(EVENT_SCHEMA),
            usage=usage,
            markers=self._markers.to_table(),
            costs=self._costs.to_table(),
            waiting_added=self._waiting.to_table(),
            waiting_resolved=tuple(self._resolved),
            failed=self._failed.to_table(),
            finish_stream=finish,
        )

    def set_aside(
        self, record: LogRecord, position: int, reason: str, *, was_waiting: bool
    ) -> None:
        """Record an event whose rating failed as set aside (`failed`), instead of rating it;
        a waiting one leaves the waiting events."""
        self._failed.append(
            position,
            record.tenant_id,
            record.event_id,
            record.source,
            record.type,
            record.recorded_at,
            self._now,
            reason[:MAX_REASON],
        )
        if was_waiting:
            self._resolved.append(position)

    @property
    def resolved(self) -> int:
        return len(self._resolved)

    @property
    def failed(self) -> int:
        return len(self._failed)

    def _add_rated(self, event: ParsedEvent, attribution: Attribution) -> None:
        record = event.record
        billable_at = attribution.billable_at or record.recorded_at
        # Waited: became billable later than it was recorded (metadata arrived, or deadline).
        waited = billable_at > record.recorded_at
        method = _METHOD_TEXT[attribution.method or Method.DEFAULT]
        unattributed = attribution.outcome is Outcome.UNATTRIBUTED
        resource_id = record.resource_id or _text(event.data.get("resource_id"))
        # Measured before any row is added: a measurement that raises leaves no row behind.
        measurements = [
            m
            for meter in self._meters[record.tenant_id].for_event(record.type, billable_at)
            if (m := measure(meter, event.data)) is not None
        ]
        if record.type == _LIFECYCLE and resource_id is not None:
            replicas = event.data.get("replicas")
            if isinstance(replicas, bool) or not isinstance(replicas, int):
                replicas = None
            elif not 0 <= replicas <= MAX_QUANTITY:  # the store keeps a BIGINT
                raise QuantityOutOfRangeError(
                    f"replicas {replicas} is outside 0 .. {MAX_QUANTITY} (10^18)"
                )
            self._markers.append(
                event.position,
                record.tenant_id,
                record.event_id,
                record.event_time,
                billable_at,
                resource_id,
                _text(event.data.get("action")) or "",
                replicas,
                attribution.cost_center,
                attribution.team,
                attribution.app,
                attribution.environment,
                unattributed,
            )
        row = len(self._events)
        self._events.append(
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
            method,
            unattributed,
            record.late,
            resource_id,
            attribution.environment,
            attribution.lifecycle,
            _OUTCOME_TEXT[attribution.outcome],
            waited,
        )
        for measurement in measurements:
            self._measured.append(row)
            self._meter_names.append(measurement.meter)
            self._quantities.append(measurement.quantity)
            self._distinct.append(measurement.distinct_value)

    def _add_platform_cost(self, event: ParsedEvent) -> Outcome:
        record, data = event.record, event.data
        try:
            amount: Decimal | None = to_decimal(data.get("amount"), field="amount")
        except ValueError:
            logger.warning("platform cost at log position %d has no amount", event.position)
            amount = None
        if amount is not None:  # before any row: an amount out of range raises
            amount = quantize_quantity(amount, field="amount")
        # Also before any row: an event that raises after its event row was appended was
        # counted rated and set aside at once (accepted < rated + failed).
        period_start = _time(data.get("billing_period_start"))
        period_end = _time(data.get("billing_period_end"))
        self._events.append(
            event.position,
            record.tenant_id,
            record.event_id,
            record.source,
            record.type,
            record.event_time,
            record.recorded_at,
            record.recorded_at,
            "",
            "",
            "",
            Method.SHARED.value,
            False,
            record.late,
            None,
            "",
            "",
            Outcome.ATTRIBUTED.value,
            False,
        )
        if amount is None:
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
            period_start,
            period_end,
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
    except (ValueError, OverflowError):  # no UTC instant: stored before ingestion refused it
        return None
