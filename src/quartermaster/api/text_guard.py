"""Refuses a request whose path, query or JSON body holds text no database can store: a NUL
character (U+0000) or a lone surrogate (a `\\ud800` escape without its pair).

PostgreSQL text cannot hold NUL, so a name, id or filter carrying one (`?subject=%00`, a team
named "A\\u0000") failed deep in a query as a 500, while SQLite stored it. No name, id, filter
or field of the API may contain it: the request is answered 422 before any route runs, naming
the parameter or the body field, on both databases. Ingestion (`POST /v1/events`) refuses it
per event instead, so one such event does not cost its batch.

A lone surrogate is no character at all: the JSON parser let `"\\ud800"` through into a
Python string that could not be encoded as UTF-8 when stored, a 500 on every route that wrote
text (a secret's value, a cost center's name). It is refused as NUL is, naming the field.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from quartermaster.api.errors import error_response

NUL = "\x00"
# A JSON string can hold NUL only as the escape \u0000, preceded by an even number of
# backslashes (an odd number escapes the escape's own backslash). The regular expression runs
# only on a body that holds the escape at all: scanning every body with it cost ~25 µs per
# kilobyte, a bytes search costs next to nothing.
_JSON_NUL_ESCAPE = b"\\u0000"
_JSON_NUL = re.compile(rb"(?<!\\)(?:\\\\)*\\u0000")
# Any surrogate escape; whether it is paired is read from the parsed strings, where a pair is
# one character and a lone half stays a surrogate.
_JSON_SURROGATE = re.compile(rb"(?<!\\)(?:\\\\)*\\u[dD][89a-fA-F][0-9a-fA-F]{2}")


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


def unstorable_in_json(body: bytes) -> tuple[str, str | None] | None:
    """(message, field) for the first string of a JSON body holding NUL or a lone surrogate,
    else None (also for a body that is not JSON: the route says what is wrong with it)."""
    if _JSON_NUL_ESCAPE in body and _JSON_NUL.search(body):
        found = _find_in_json(body, _has_nul)
        if found is not None:
            return f"{_named(found)} a NUL character (U+0000)", found
    if b"\\u" in body and _JSON_SURROGATE.search(body):
        found = _find_in_json(body, _has_lone_surrogate)
        if found is not None:
            return (
                f"{_named(found)} a lone surrogate (\\ud800-\\udfff without its pair), "
                "which is no character: text must be valid Unicode"
            ), found
    return None


def _named(field: str | None) -> str:
    return f"{field} contains" if field else "the request body contains"


def _has_nul(text: str) -> bool:
    return NUL in text


def _has_lone_surrogate(text: str) -> bool:
    return any("\ud800" <= char <= "\udfff" for char in text)


def _find_in_json(body: bytes, bad: Callable[[str], bool]) -> str | None:
    """The dotted field of the first string (or key) of the body for which `bad` holds; None
    when there is none or the body is not JSON. The standard library's parser, as FastAPI's:
    orjson refuses a lone surrogate outright, so it would not say where."""
    try:
        document = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    where = _find(document, [], bad)
    if where is None:
        return None
    return ".".join(where) or None


def _find(value: object, path: list[str], bad: Callable[[str], bool]) -> list[str] | None:
    if isinstance(value, str):
        return path if bad(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if bad(key):
                return [*path, _shown_key(key)]
            found = _find(item, [*path, key], bad)
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _find(item, [*path, str(index)], bad)
            if found is not None:
                return found
    return None


def _shown_key(key: str) -> str:
    """A key as the error can carry it: NUL as `\\0`, a lone surrogate as its escape."""
    return key.replace(NUL, "\\0").encode("utf-8", "backslashreplace").decode("utf-8")


class RefuseUnstorableText:
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
            found = unstorable_in_json(body)
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
