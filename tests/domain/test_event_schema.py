"""The event JSON Schema that /openapi.json shows for POST /v1/events
(tests/metering/test_api.py checks the route shows it)."""

from __future__ import annotations

import json

from quartermaster.domain.events import DATA_MODELS, LifecycleAction, event_json_schema


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
