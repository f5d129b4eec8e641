"""The event JSON Schema that /openapi.json shows for POST /v1/events
(tests/metering/test_api.py checks the route shows it)."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from quartermaster.bus.models import EventLogEntry
from quartermaster.catalog.models import Resource
from quartermaster.domain.events import (
    DATA_MODELS,
    MAX_QUANTITY,
    LifecycleAction,
    ResourceLifecycle,
    ResourceUsage,
    event_json_schema,
)


def test_one_self_contained_variant_per_event_type() -> None:
    schema = event_json_schema()
    variants = {v["properties"]["type"]["const"]: v for v in schema["oneOf"]}
    assert set(variants) == set(DATA_MODELS)
    assert "$ref" not in json.dumps(schema)  # inline in the operation: nothing to resolve
    assert "$defs" not in json.dumps(schema)
    for event_type, variant in variants.items():
        assert set(variant["required"]) == {"specversion", "id", "source", "type", "time", "data"}
        data = variant["properties"]["data"]
        assert set(data["required"]) == set(DATA_MODELS[event_type].model_json_schema()["required"])
    action = variants["qm.resource.lifecycle"]["properties"]["data"]["properties"]["action"]
    assert set(action["enum"]) == {a.value for a in LifecycleAction}


# Every number of event data the usage store keeps, and a valid rest of its data.
NUMBERS: list[tuple[str, str, dict[str, Any]]] = [
    ("qm.invocation.usage", "compute_units", {"app_id": "bot"}),
    ("qm.invocation.usage", "duration_ms", {"app_id": "bot"}),
    ("qm.invocation.usage", "tokens", {"app_id": "bot"}),
    ("qm.invocation.usage", "bytes", {"app_id": "bot"}),
    ("qm.resource.usage", "cpu_seconds", {"resource_id": "vm"}),
    ("qm.resource.usage", "memory_gb_hours", {"resource_id": "vm"}),
    ("qm.resource.usage", "network_bytes", {"resource_id": "vm"}),
    ("qm.resource.usage", "storage_gb_days", {"resource_id": "vm"}),
    ("qm.resource.lifecycle", "replicas", {"resource_id": "vm", "action": "scale"}),
    ("qm.request.trace", "duration_ms", {"app_id": "bot", "request_id": "r"}),
    ("qm.request.trace", "bytes_out", {"app_id": "bot", "request_id": "r"}),
    ("qm.platform.cost", "amount", {"cost_type": "lb"}),
]


INTEGERS = {"tokens", "bytes", "network_bytes", "replicas", "bytes_out"}


@pytest.mark.parametrize(("event_type", "field", "rest"), NUMBERS)
def test_every_number_is_at_most_ten_to_the_eighteenth(
    event_type: str, field: str, rest: dict[str, Any]
) -> None:
    model = DATA_MODELS[event_type]
    model.model_validate({**rest, field: MAX_QUANTITY})
    model.model_validate({**rest, field: float(MAX_QUANTITY)})
    if field not in INTEGERS:
        model.model_validate({**rest, field: str(MAX_QUANTITY)})
        model.model_validate({**rest, field: "1e18"})
    over: list[object] = [MAX_QUANTITY + 1]
    if field not in INTEGERS:
        over += [1e20, "1000000000000000000.000000000001", "1e26"]
    for value in over:
        with pytest.raises(ValidationError) as raised:
            model.model_validate({**rest, field: value})
        [error] = raised.value.errors()
        assert error["loc"] == (field,)
        assert "less than or equal to 1000000000000000000" in error["msg"]


def test_the_schema_shows_the_limit() -> None:
    variants = {v["properties"]["type"]["const"]: v for v in event_json_schema()["oneOf"]}
    data = variants["qm.invocation.usage"]["properties"]["data"]["properties"]
    assert data["duration_ms"]["anyOf"][0]["maximum"] == MAX_QUANTITY
    assert data["tokens"]["anyOf"][0]["maximum"] == MAX_QUANTITY


@pytest.mark.parametrize(("event_type", "field", "rest"), NUMBERS)
def test_a_number_is_not_a_boolean_nor_a_string_spelled_otherwise(
    event_type: str, field: str, rest: dict[str, Any]
) -> None:
    model = DATA_MODELS[event_type]
    refused: list[object] = [True, "1_000", " 1", "+1", "01", "\uff11", "1.", "NaN"]
    if field in INTEGERS:
        refused += ["1", "1.0"]
    for value in refused:
        with pytest.raises(ValidationError) as raised:
            model.model_validate({**rest, field: value})
        [error] = raised.value.errors()
        assert error["loc"] == (field,), value


def test_a_platform_cost_period_ends_after_it_starts() -> None:
    model = DATA_MODELS["qm.platform.cost"]
    start, end = "2026-11-01T00:00:00Z", "2026-12-01T00:00:00+01:00"
    model.model_validate({"cost_type": "lb", "amount": 1, "billing_period_start": start})
    model.model_validate(
        {"cost_type": "lb", "amount": 1, "billing_period_start": start, "billing_period_end": end}
    )
    for wrong in (
        {"billing_period_start": end, "billing_period_end": start},
        {"billing_period_start": start, "billing_period_end": start},
    ):
        with pytest.raises(ValidationError, match="is not after billing_period_start"):
            model.model_validate({"cost_type": "lb", "amount": 1, **wrong})
    for far in ("9999-12-31T23:59:59-01:00", "0001-01-01T00:00:00+01:00", "1969-12-31T23:59:59Z"):
        with pytest.raises(ValidationError, match="is not an instant from 1970-01-01"):
            model.model_validate({"cost_type": "lb", "amount": 1, "billing_period_end": far})
    for spelled in ("2026-11-01T00:00:00", "2026-11-01", "2026-11-01T00:00+01:00"):
        with pytest.raises(ValidationError, match="is not an RFC 3339 timestamp"):
            model.model_validate({"cost_type": "lb", "amount": 1, "billing_period_start": spelled})


@pytest.mark.parametrize("count", [1e19, 1e300, 18446744073709551616.0])
def test_a_whole_float_count_over_the_limit_names_the_limit(count: float) -> None:
    with pytest.raises(ValidationError) as raised:
        DATA_MODELS["qm.invocation.usage"].model_validate({"app_id": "bot", "tokens": count})
    [error] = raised.value.errors()
    assert "less than or equal to 1000000000000000000" in error["msg"]


def test_rule_messages_carry_no_value_error_prefix() -> None:
    with pytest.raises(ValidationError) as raised:
        DATA_MODELS["qm.invocation.usage"].model_validate({"app_id": "bot"})
    assert raised.value.errors()[0]["msg"] == (
        "needs at least one of tokens, compute_units, duration_ms, bytes"
    )


def test_the_schema_gives_resource_ids_the_length_the_columns_hold() -> None:
    # a client generated from /openapi.json must not send ids the log and catalog cannot store
    columns = {
        EventLogEntry.__table__.c.resource_id.type.length,
        Resource.__table__.c.resource_id.type.length,
    }
    for model in (ResourceUsage, ResourceLifecycle):
        schema = model.model_json_schema()["properties"]["resource_id"]
        assert {schema["maxLength"]} == columns == {200}
