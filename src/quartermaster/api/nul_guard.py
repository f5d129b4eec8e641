"""Refuses a request whose path or query holds a NUL character (U+0000).

PostgreSQL text cannot hold NUL, so an id or filter carrying one (`?subject=%00`) failed deep
in a query as a 500; SQLite took it. No name, id or filter of the API may contain it: the
request is answered 422 before any route runs, naming the parameter, on both databases.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Receive, Scope, Send

from quartermaster.api.errors import error_response

NUL = "\x00"


def nul_in_request(path: str, query_string: bytes) -> tuple[str, str | None] | None:
    """(message, field) for the first NUL in the path or a query parameter, else None."""
    if NUL in path:
        return "the request path contains a NUL character (U+0000)", None
    if b"%00" not in query_string.lower() and b"\x00" not in query_string:
        return None
    query = query_string.decode("latin-1")
    for name, value in parse_qsl(query, keep_blank_values=True, encoding="utf-8"):
        if NUL in name or NUL in value:
            shown = name.replace(NUL, "\\0")
            return f"query parameter {shown!r} contains a NUL character (U+0000)", shown
    return None


class RefuseNul:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            found = nul_in_request(scope["path"], scope.get("query_string", b""))
            if found is not None:
                message, field = found
                response = error_response(422, "invalid_input", message, field)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)
