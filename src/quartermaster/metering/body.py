"""The events of an ingest request body (pure): its JSON parsed and checked against the shape
its content type announces and the batch limit. Used by the route and by the validation
workers (metering/offload.py), which parse in their own process."""

from __future__ import annotations

import orjson

from quartermaster.errors import MalformedBodyError, PayloadTooLargeError, malformed_json
from quartermaster.metering.validation import json_kind

__all__ = ["BATCH", "JSON", "SINGLE", "MalformedBodyError", "parse_events"]

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
JSON = "application/json"


def parse_events(body: bytes, media_type: str, *, max_events: int) -> list[object]:
    """The events of a request body; raises naming what is wrong (position, shape, limit)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise malformed_json(exc, body) from None
    if type(parsed) is dict and media_type != BATCH:
        return [parsed]
    if type(parsed) is list and media_type != SINGLE:
        if len(parsed) > max_events:
            raise PayloadTooLargeError(
                f"batch has {len(parsed):,} events; the limit is {max_events:,} per request "
                "(QM_MAX_BATCH_EVENTS): split the batch"
            )
        return parsed
    expected = {
        SINGLE: "one JSON object (send arrays as application/cloudevents-batch+json)",
        BATCH: "a JSON array of events (send one event as application/cloudevents+json)",
        JSON: "a JSON object (one event) or an array of events",
    }[media_type]
    raise MalformedBodyError(
        f"{media_type} body must be {expected}, got a JSON {json_kind(parsed)}"
    )
