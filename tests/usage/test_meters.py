from __future__ import annotations

from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest

from quartermaster.errors import InvalidInputError
from quartermaster.usage.meters import (
    DEFAULT_METERS,
    Aggregation,
    MeterDefinition,
    MeterSet,
    QuantityOutOfRangeError,
    measure,
    quantize_quantity,
    validate_meter,
    value_text,
)

T0 = datetime(2026, 3, 1, tzinfo=UTC)


def meter(**overrides: object) -> MeterDefinition:
    values: dict[str, object] = {
        "name": "tokens_sum",
        "event_type": "qm.invocation.usage",
        "value": "tokens",
        "aggregation": Aggregation.SUM,
        "unit": "token",
    }
    values.update(overrides)
    return MeterDefinition(**values)  # type: ignore[arg-type]


def test_every_default_meter_is_valid() -> None:
    names = [validate_meter(m).name for m in DEFAULT_METERS]
    assert names == [
        "invocations",
        "tokens",
        "compute_units",
        "duration_ms",
        "cpu_seconds",
        "memory_gb_hours",
        "network_bytes",
        "storage_gb_days",
        "requests",
        "bytes_out",
    ]


@pytest.mark.parametrize(
    ("overrides", "field", "fragment"),
    [
        ({"name": "Tokens!"}, "name", "meter name"),
        ({"value": "tokenz"}, "value", "has no field 'tokenz'"),
        ({"value": "app_id"}, "value", "needs a numeric field"),
        ({"aggregation": Aggregation.UNIQUE_COUNT, "value": "count"}, "value", "distinct"),
        ({"event_type": "qm.platform.cost", "value": "amount"}, "event_type", "platform costs"),
        ({"filter_field": "environment"}, "filter_value", "go together"),
        ({"filter_field": "nope", "filter_value": "x"}, "filter_field", "no field 'nope'"),
        ({"unit": " "}, "unit", "unit"),
    ],
)
def test_invalid_meters_are_refused_naming_the_field(
    overrides: dict[str, object], field: str, fragment: str
) -> None:
    with pytest.raises(InvalidInputError) as caught:
        validate_meter(meter(**overrides))
    assert caught.value.field == field
    assert fragment in caught.value.message


@pytest.mark.parametrize("event_type", ["my.custom", "qm.nosuch.type", "acme.gpu.sample"])
def test_event_types_ingestion_rejects_are_refused_naming_the_accepted_ones(
    event_type: str,
) -> None:
    # Ingestion rejects every event of a type outside DATA_MODELS (unknown_type), so such a
    # meter could never measure anything.
    with pytest.raises(InvalidInputError) as caught:
        validate_meter(meter(event_type=event_type, value="whatever"))
    assert caught.value.field == "event_type"
    assert f"{event_type!r} is not an event type ingestion accepts" in caught.value.message
    for accepted in ("qm.invocation.usage", "qm.resource.usage", "qm.request.trace"):
        assert accepted in caught.value.message
    assert "qm.platform.cost" not in caught.value.message


def test_a_value_that_is_no_field_of_the_event_type_is_refused_naming_the_fields() -> None:
    with pytest.raises(InvalidInputError) as caught:
        validate_meter(meter(event_type="qm.request.trace", value="whatever"))
    assert caught.value.field == "value"
    assert "qm.request.trace data has no field 'whatever'" in caught.value.message
    assert "bytes_out" in caught.value.message


def test_a_value_that_is_not_a_number_does_not_measure() -> None:
    m = meter(event_type="qm.invocation.usage", value="compute_units")
    assert measure(m, {"compute_units": "1.25"}) is not None
    assert measure(m, {"compute_units": "n/a"}) is None


def test_measure_each_aggregation() -> None:
    data = {"app_id": "bot", "tokens": 12, "actor_id": "ann", "environment": "prod"}
    assert measure(meter(), data).quantity == Decimal(12)  # type: ignore[union-attr]
    counted = measure(meter(aggregation=Aggregation.COUNT), data)
    assert counted is not None
    assert counted.quantity == 1
    unique = measure(meter(aggregation=Aggregation.UNIQUE_COUNT, value="actor_id"), data)
    assert unique is not None
    assert unique.distinct_value == "ann"
    assert unique.quantity == 1
    per_event = measure(meter(value="count", aggregation=Aggregation.COUNT), {"app_id": "x"})
    assert per_event is not None
    assert per_event.quantity == 1
    assert measure(meter(), {"app_id": "bot"}) is None  # field absent: no measurement


def test_filter_compares_the_values_text() -> None:
    staging = meter(filter_field="environment", filter_value="staging")
    assert measure(staging, {"tokens": 3, "environment": "staging"}) is not None
    assert measure(staging, {"tokens": 3, "environment": "prod"}) is None
    assert measure(staging, {"tokens": 3}) is None
    status = meter(
        event_type="qm.request.trace",
        value="count",
        aggregation=Aggregation.COUNT,
        filter_field="status",
        filter_value="500",
    )
    assert measure(status, {"status": 500}) is not None


def test_quantities_are_exact_and_kept_to_twelve_places() -> None:
    exact = measure(
        meter(event_type="qm.invocation.usage", value="compute_units"),
        {"compute_units": Decimal("0.1000000000005")},
    )
    assert exact is not None
    assert exact.quantity == Decimal("0.100000000000")
    assert value_text(Decimal("2.50")) == "2.50"
    assert value_text(Decimal("2.0")) == "2"
    assert value_text(True) == "true"


@pytest.mark.parametrize(
    ("value", "kept"),
    [
        # From 10^16 the default 28-digit context raised InvalidOperation, and the pipeline
        # stopped at the event for every tenant.
        ("100000000000000000", "100000000000000000.000000000000"),
        ("1e18", "1000000000000000000.000000000000"),
        ("999999999999999999.9999999999995", "1000000000000000000.000000000000"),
        ("123456789012345678.1234567890125", "123456789012345678.123456789012"),  # half even
        ("0.0000000000005", "0.000000000000"),
        ("0.0000000000015", "0.000000000002"),
        ("1e-30", "0.000000000000"),
    ],
)
def test_quantities_up_to_the_limit_keep_twelve_places_half_to_even(value: str, kept: str) -> None:
    assert format(quantize_quantity(Decimal(value)), "f") == kept


@pytest.mark.parametrize("raw", ["1000000000000000000.000000000001", "1e26", 1e20, 10**18 + 1])
def test_a_quantity_over_the_limit_raises_naming_the_field_and_the_limit(raw: object) -> None:
    m = meter(event_type="qm.invocation.usage", value="compute_units")
    with pytest.raises(QuantityOutOfRangeError) as raised:
        measure(m, {"compute_units": raw})
    assert str(raised.value).startswith("compute_units ")
    assert "outside 0 .. 1000000000000000000 (10^18)" in str(raised.value)
    tokens = meter()
    with pytest.raises(QuantityOutOfRangeError, match=r"^tokens "):
        measure(tokens, {"tokens": 2**64})
    assert measure(tokens, {"tokens": 10**18}) is not None


def test_meter_set_uses_defaults_until_the_tenants_first_meter() -> None:
    own = meter(name="tok", created_at=T0)
    meters = MeterSet([own])
    before = meters.for_event("qm.invocation.usage", T0 - timedelta(seconds=1))
    assert {m.name for m in before} == {"invocations", "tokens", "compute_units", "duration_ms"}
    assert [m.name for m in meters.for_event("qm.invocation.usage", T0)] == ["tok"]
    assert list(meters.for_event("qm.resource.usage", T0)) == []
    later = meter(name="later", created_at=T0 + timedelta(days=1))
    both = MeterSet([own, later])
    assert [m.name for m in both.for_event("qm.invocation.usage", T0 + timedelta(hours=1))] == [
        "tok"
    ]
    assert MeterSet([]).for_event("qm.request.trace", T0)[0].name == "requests"
