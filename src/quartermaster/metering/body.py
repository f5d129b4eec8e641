"""The events of an ingest request body (pure): its JSON parsed and checked against the shape
its content type announces and the batch limit. Used by the route and by the validation
workers (metering/offload.py), which parse in their own process."""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from typing import Any

import orjson

from quartermaster.errors import MalformedBodyError, PayloadTooLargeError, malformed_json
from quartermaster.metering.validation import UnreadableEvent, json_kind

__all__ = ["BATCH", "JSON", "SINGLE", "MalformedBodyError", "parse_events"]

SINGLE = "application/cloudevents+json"
BATCH = "application/cloudevents-batch+json"
JSON = "application/json"


def parse_events(body: bytes, media_type: str, *, max_events: int) -> list[object]:
    """The events of a request body; raises naming what is wrong (position, shape, limit)."""
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        try:
            return [
                _readable(event) if type(event) is dict else event
                for event in _events(_with_overflowing_numbers(body, exc), media_type, max_events)
            ]
        except RecursionError:
            # Python's parser and the walks over its result recurse: a body nested this deep
            # is refused whole, as orjson refuses one nested beyond its limit.
            raise MalformedBodyError(
                "request body is not valid JSON: arrays and objects are nested too deep (a body"
                " holding a number beyond a double is read a second time, by a parser that"
                " takes fewer levels)"
            ) from None
    return _events(parsed, media_type, max_events)


def _events(parsed: object, media_type: str, max_events: int) -> list[object]:
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


def _with_overflowing_numbers(body: bytes, exc: orjson.JSONDecodeError) -> object:
    """A body orjson refused only for a number beyond a double (`1e400`), parsed again (the
    number infinite), for `parse_events` to replace each event holding one by an
    `UnreadableEvent`: the number is one event's problem, and the valid events beside it are
    kept. Any other error is the body's."""
    if "infinity" not in exc.msg:
        raise malformed_json(exc, body) from None
    try:
        parsed = json.loads(body, parse_int=_integer_as_orjson_reads, parse_constant=_refuse)
    except ValueError:
        raise malformed_json(exc, body) from None
    if not _storable_text(parsed):  # a lone surrogate (\ud800): orjson refuses the body
        raise MalformedBodyError(
            "request body is not valid JSON: a string holds a lone surrogate escape"
        )
    return parsed


def _integer_as_orjson_reads(text: str) -> int | float:
    """orjson reads an integer beyond 64 bits as a float (infinite when too long)."""
    if len(text) <= 21:
        value = int(text)
        if -(2**63) <= value < 2**64:
            return value
    return float(text)


def _refuse(name: str) -> object:
    raise ValueError(f"{name} is not JSON")


def _readable(event: dict[str, Any]) -> object:
    path = _overflowing_number(event)
    if path is None:
        return event
    return UnreadableEvent(event, ".".join(str(part) for part in path))


def _overflowing_number(value: object) -> list[str | int] | None:
    """The path to the first infinite float in a parsed value, or None. A walk with its own
    stack: the value may be nested as deep as the parser read it."""
    stack: list[tuple[list[str | int], object]] = [([], value)]
    while stack:
        path, item = stack.pop()
        if type(item) is float:
            if math.isinf(item):
                return path
            continue
        children: Iterable[tuple[str | int, object]]
        if type(item) is dict:
            children = item.items()
        elif type(item) is list:
            children = enumerate(item)
        else:
            continue
        # reversed, so that the first child is walked first (the first such number is named)
        stack.extend(([*path, key], child) for key, child in reversed(list(children)))
    return None


def _storable_text(value: object) -> bool:
    """Whether every string and key of a parsed value encodes as UTF-8 (no lone surrogate);
    a walk with its own stack, as `_overflowing_number`."""
    stack = [value]
    while stack:
        item = stack.pop()
        if type(item) is str:
            try:
                item.encode()
            except UnicodeEncodeError:
                return False
        elif type(item) is dict:
            stack.extend(item.keys())
            stack.extend(item.values())
        elif type(item) is list:
            stack.extend(item)
    return True
