"""Refuses a request whose path, query or JSON body holds a NUL character (U+0000).

PostgreSQL text cannot hold NUL, so a name, id or filter carrying one (`?subject=%00`, a team
named "A\\u0000") failed deep in a query as a 500, while SQLite stored it. No name, id, filter
or field of the API may contain it: the request is answered 422 before any route runs, naming
the parameter or the body field, on both databases. Ingestion (`POST /v1/events`) refuses it
per event instead, so one such event does not cost its batch.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qsl

import orjson
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quartermaster.api.errors import error_response

NUL = "\x00"
# A JSON string can hold NUL only as the escape \u0000, preceded by an even number of
# backslashes (an odd number escapes the escape's own backslash). The regular expression runs
# only on a body that holds the escape at all: scanning every body with it cost ~25 µs per
# kilobyte, a bytes search costs next to nothing.
_JSON_NUL_ESCAPE = b"\\u0000"
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")


def nul_in_request(path: str, query_string: bytes) -> tuple[str, str | None] | None:
    """(message, field) for the first NUL in the path or a query parameter, else None."""
    if NUL in path:
        return "the request path contains a NUL character (U+0000)", None
    if b"%00" not in query_string and b"\x00" not in query_string:
        return None
    query = query_string.decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True, encoding="utf-8"):
        if NUL in name or NUL in value:
            shown = name.replace(NUL, "\\0")
            return f"query parameter {shown!r} contains a NUL character (U+0000)", shown
    return None


def nul_in_json(body: bytes) -> tuple[str, str | None] | None:
    """(message, field) for the first string of a JSON body holding NUL, else None (also for
    a body that is not JSON: the route says what is wrong with it)."""
    if _JSON_NUL_ESCAPE not in body or not _JSON_NUL.search(body):
        return None
    try:
        document = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    where = _find_nul(document, [])
    if where is None:
        return None
    field = ".".join(where) or None
    named = f"{field} contains" if field else "the request body contains"
    return f"{named} a NUL character (U+0000)", field


def _find_nul(value: object, path: list[str]) -> list[str] | None:
    if isinstance(value, str):
        return path if NUL in value else None
    if isinstance(value, dict):
        for key, item in value.items():
            if NUL in key:
                return [*path, key.replace(NUL, "\\0")]
            found = _find_nul(item, [*path, key])
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_nul(item, [*path, str(index)])
            if found is not None:
                return found
    return None


class RefuseNul:
    def __init__(self, app: ASGIApp, *, own_checks: frozenset[str]) -> None:
        self.app = app
        self.own_checks = own_checks  # paths whose route refuses NUL in its body itself

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        found = nul_in_request(scope["path"], scope.get("query_string", b""))
        if found is None and _has_json_body(scope) and scope["path"] not in self.own_checks:
            body, receive = await _read_body(receive)
            found = nul_in_json(body)
        if found is not None:
            message, field = found
            await error_response(422, "invalid_input", message, field)(scope, receive, send)
            return
        await self.app(scope, receive, send)


def _has_json_body(scope: Scope) -> bool:
    if scope["method"] in ("GET", "HEAD", "DELETE", "OPTIONS"):
        return False
    content_type = dict(scope["headers"]).get(b"content-type", b"").lower()
    return b"json" in content_type


async def _read_body(receive: Receive) -> tuple[bytes, Receive]:
    """The whole body (already bounded by BodyLimit, outside this), and a receive that hands
    it on to the route as one message."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            break
    body = b"".join(chunks)
    replayed = False

    async def replay() -> Message:
        nonlocal replayed
        if replayed:
            return await receive()
        replayed = True
        return {"type": "http.request", "body": body, "more_body": False}

    return body, replay
