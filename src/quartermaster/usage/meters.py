"""Meters: which quantity to take from which events, and how to aggregate it (pure rules).

A meter names an event type, the value to take from the event's `data` (a field such as
`tokens`, or `count`: each event counts one), an aggregation, a unit and an optional equality
filter on a data field. A tenant without meters of its own is rated with `DEFAULT_METERS`.
A meter rates the events that became billable after it was created, so replaying the log
rates every event with the meters it was rated with the first time."""

from __future__ import annotations

import enum
import json
import re
import types
import typing
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_EVEN, Context, Decimal
from typing import Any

from quartermaster.domain.events import DATA_MODELS, MAX_QUANTITY, EventType
from quartermaster.domain.frozen import fast_constructor
from quartermaster.domain.money import to_decimal
from quartermaster.errors import InvalidInputError

COUNT_VALUE = "count"
QUANTITY_QUANTUM = Decimal("1e-12")  # the usage store keeps quantities as DECIMAL(38, 12)
_ONE = Decimal(1)
METER_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
FIELD_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
# Platform costs are shared amounts that billing allocates, not usage a meter counts.
UNMETERED_TYPES = frozenset({EventType.PLATFORM_COST.value})
# The event types a meter can read: those ingestion accepts, less the unmetered ones.
METERED_TYPES = frozenset(DATA_MODELS) - UNMETERED_TYPES


class Aggregation(enum.StrEnum):
    SUM = "sum"
    COUNT = "count"
    MAX = "max"
    UNIQUE_COUNT = "unique_count"
    LATEST = "latest"

    @property
    def summable(self) -> bool:
        """Whether totals of two periods add up to the total of both."""
        return self in (Aggregation.SUM, Aggregation.COUNT)


@dataclass(frozen=True, slots=True)
class MeterDefinition:
    name: str
    event_type: str
    value: str  # a field of the event's data, or "count"
    aggregation: Aggregation
    unit: str
    filter_field: str | None = None
    filter_value: str | None = None
    description: str = ""
    created_at: datetime | None = None  # None: a built-in default meter


@dataclass(frozen=True, slots=True)
class Measurement:
    """What one event contributes to one meter. `distinct_value` is set for unique counts."""

    meter: str
    quantity: Decimal
    distinct_value: str | None = None


def _default(
    name: str, event_type: EventType, value: str, agg: Aggregation, unit: str
) -> MeterDefinition:
    return MeterDefinition(
        name=name,
        event_type=event_type.value,
        value=value,
        aggregation=agg,
        unit=unit,
        description=f"{agg.value} of {value} over {event_type.value} events",
    )


DEFAULT_METERS: tuple[MeterDefinition, ...] = (
    _default("invocations", EventType.INVOCATION_USAGE, COUNT_VALUE, Aggregation.COUNT, "call"),
    _default("tokens", EventType.INVOCATION_USAGE, "tokens", Aggregation.SUM, "token"),
    _default("compute_units", EventType.INVOCATION_USAGE, "compute_units", Aggregation.SUM, "cu"),
    _default("duration_ms", EventType.INVOCATION_USAGE, "duration_ms", Aggregation.SUM, "ms"),
    _default("cpu_seconds", EventType.RESOURCE_USAGE, "cpu_seconds", Aggregation.SUM, "cpu-s"),
    _default(
        "memory_gb_hours", EventType.RESOURCE_USAGE, "memory_gb_hours", Aggregation.SUM, "GB-h"
    ),
    _default("network_bytes", EventType.RESOURCE_USAGE, "network_bytes", Aggregation.SUM, "B"),
    _default(
        "storage_gb_days", EventType.RESOURCE_USAGE, "storage_gb_days", Aggregation.SUM, "GB-day"
    ),
    _default("requests", EventType.REQUEST_TRACE, COUNT_VALUE, Aggregation.COUNT, "request"),
    _default("bytes_out", EventType.REQUEST_TRACE, "bytes_out", Aggregation.SUM, "B"),
)


# --- validation --------------------------------------------------------------------------------


def _annotation_types(annotation: Any) -> set[type]:
    origin = typing.get_origin(annotation)
    if origin is typing.Annotated:
        return _annotation_types(typing.get_args(annotation)[0])
    if origin in (typing.Union, types.UnionType):
        found: set[type] = set()
        for arg in typing.get_args(annotation):
            found |= _annotation_types(arg)
        return found
    return {annotation} if isinstance(annotation, type) else {object}


def _field_kinds(event_type: str) -> dict[str, str]:
    """Field name -> "number" or "other" of an event type ingestion accepts."""
    model = DATA_MODELS[event_type]
    kinds: dict[str, str] = {}
    for name, info in model.model_fields.items():
        found = _annotation_types(info.annotation) - {type(None)}
        numeric = bool(found) and all(t in (int, Decimal) for t in found)
        kinds[name] = "number" if numeric else "other"
    return kinds


def validate_meter(meter: MeterDefinition) -> MeterDefinition:
    """Refuse a meter that could never measure anything, naming the field that is wrong."""
    if not METER_NAME.match(meter.name):
        raise InvalidInputError(
            f"meter name {meter.name!r} must be 1-64 characters of a-z, 0-9 and '_', "
            "starting with a letter",
            field="name",
        )
    if meter.event_type in UNMETERED_TYPES:
        raise InvalidInputError(
            f"{meter.event_type} events are shared platform costs, allocated by billing; "
            "they cannot be metered",
            field="event_type",
        )
    if meter.event_type not in DATA_MODELS:
        # Ingestion rejects every event of any other type (unknown_type): such a meter could
        # never measure anything.
        accepted = ", ".join(sorted(METERED_TYPES))
        raise InvalidInputError(
            f"event_type {meter.event_type!r} is not an event type ingestion accepts; "
            f"meters can read {accepted}",
            field="event_type",
        )
    if not meter.unit.strip() or len(meter.unit) > 32:
        raise InvalidInputError("unit must be 1-32 characters", field="unit")
    kinds = _field_kinds(meter.event_type)
    if meter.value != COUNT_VALUE:
        _check_field(meter.value, kinds, event_type=meter.event_type, field="value")
    if meter.aggregation is Aggregation.UNIQUE_COUNT and meter.value == COUNT_VALUE:
        raise InvalidInputError(
            "a unique_count meter counts distinct values of a field: set value to a field name",
            field="value",
        )
    needs_number = meter.aggregation in (Aggregation.SUM, Aggregation.MAX, Aggregation.LATEST)
    numeric = meter.value == COUNT_VALUE or kinds[meter.value] == "number"
    if needs_number and not numeric:
        raise InvalidInputError(
            f"{meter.aggregation.value} needs a numeric field, and {meter.value!r} of "
            f"{meter.event_type} is not numeric",
            field="value",
        )
    if (meter.filter_field is None) != (meter.filter_value is None):
        raise InvalidInputError(
            "filter_field and filter_value go together: set both or neither",
            field="filter_value" if meter.filter_field is not None else "filter_field",
        )
    if meter.filter_field is not None:
        _check_field(meter.filter_field, kinds, event_type=meter.event_type, field="filter_field")
    return meter


def _check_field(name: str, kinds: dict[str, str], *, event_type: str, field: str) -> None:
    if not FIELD_NAME.match(name):
        raise InvalidInputError(f"{field} {name!r} is not a field name", field=field)
    if name not in kinds:
        known = ", ".join(sorted(kinds))
        raise InvalidInputError(
            f"{event_type} data has no field {name!r} (fields: {known})", field=field
        )


# --- measuring ---------------------------------------------------------------------------------


def value_text(value: Any) -> str:
    """The text a filter or a unique count compares: one spelling per value."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return value
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):  # a JSON number as orjson reads it: its shortest digits
        value = Decimal(repr(value))
    if isinstance(value, Decimal):
        normalized = value.normalize()
        return format(normalized, "f") if normalized == normalized.to_integral() else str(value)
    return json.dumps(value, sort_keys=True, default=str, separators=(",", ":"))


class QuantityOutOfRangeError(ValueError):
    """A quantity or amount the usage store cannot hold: above `MAX_QUANTITY`, or negative.
    Ingestion refuses such events since the limit exists; one logged before it is set aside
    by the pipeline (docs/usage.md), never rated."""


# Quantizing to 1e-12 needs the value's integer digits plus 12: the default context's 28
# digits raised InvalidOperation from 10^16 on. 40 digits cover every value up to the limit.
_QUANTIZE_CONTEXT = Context(prec=40, rounding=ROUND_HALF_EVEN)
_LIMIT_DIGITS = len(str(MAX_QUANTITY)) - 1  # every value under 10^18 has adjusted() < 18


def quantize_quantity(value: Decimal, *, field: str = "quantity") -> Decimal:
    """`value` to 12 decimal places (half to even), as the usage store keeps it. Raises
    `QuantityOutOfRangeError` for a value above `MAX_QUANTITY` or below zero."""
    # adjusted() is the exponent of the leading digit: a cheap first test, per measurement.
    if (value.adjusted() >= _LIMIT_DIGITS or value.is_signed()) and not (
        0 <= value <= MAX_QUANTITY
    ):
        raise QuantityOutOfRangeError(
            f"{field} {value} is outside 0 .. {MAX_QUANTITY} (10^18), the range a quantity "
            "may have (docs/events.md)"
        )
    return value.quantize(QUANTITY_QUANTUM, context=_QUANTIZE_CONTEXT)


# Enum member lookups are slow in a per-event loop; compare against these.
_new_measurement = fast_constructor(Measurement)  # per measurement: no frozen __init__
_UNIQUE_COUNT = Aggregation.UNIQUE_COUNT
_COUNT = Aggregation.COUNT


def measure(meter: MeterDefinition, data: Mapping[str, Any]) -> Measurement | None:
    """The meter's measurement of one event's data, or None when the meter does not apply
    (filter does not match, the field is absent, or carries a non-number). Raises
    `QuantityOutOfRangeError` for a number the usage store cannot hold."""
    if meter.filter_field is not None:
        candidate = data.get(meter.filter_field)
        if candidate is None or value_text(candidate) != meter.filter_value:
            return None
    if meter.value == COUNT_VALUE:
        return _new_measurement(meter.name, _ONE, None)
    raw = data.get(meter.value)
    if raw is None:
        return None
    aggregation = meter.aggregation
    if aggregation is _UNIQUE_COUNT:
        return _new_measurement(meter.name, _ONE, value_text(raw))
    if aggregation is _COUNT:
        return _new_measurement(meter.name, _ONE, None)
    if type(raw) is int:  # the common case (tokens, bytes): exact, nothing to round
        if not 0 <= raw <= MAX_QUANTITY:
            quantize_quantity(Decimal(raw), field=meter.value)  # raises, naming the field
        return _new_measurement(meter.name, Decimal(raw), None)
    try:
        quantity = to_decimal(raw, field=meter.value)
    except ValueError:
        return None
    return _new_measurement(meter.name, quantize_quantity(quantity, field=meter.value), None)


class MeterSet:
    """A tenant's meters indexed for rating: the meters in force at a moment, by event type.
    Before the tenant's first meter existed (or without any), the default meters apply."""

    def __init__(self, meters: Iterable[MeterDefinition]) -> None:
        own = sorted(
            (m for m in meters if m.created_at is not None),
            key=lambda m: m.created_at,  # type: ignore[arg-type,return-value]
        )
        self._own = own
        self._latest = own[-1].created_at if own else None
        self._all = _by_type(own) if own else _by_type(DEFAULT_METERS)
        self._defaults = _by_type(DEFAULT_METERS)

    def for_event(self, event_type: str, billable_at: datetime) -> Sequence[MeterDefinition]:
        if self._latest is None or billable_at >= self._latest:
            return self._all.get(event_type, ())
        in_force = [m for m in self._own if m.created_at <= billable_at]  # type: ignore[operator]
        if not in_force:
            return self._defaults.get(event_type, ())
        return [m for m in in_force if m.event_type == event_type]


def _by_type(meters: Iterable[MeterDefinition]) -> dict[str, tuple[MeterDefinition, ...]]:
    grouped: dict[str, list[MeterDefinition]] = {}
    for meter in meters:
        grouped.setdefault(meter.event_type, []).append(meter)
    return {key: tuple(value) for key, value in grouped.items()}
