"""OpenAPI descriptions of error responses, so each route documents the errors it can give."""

from __future__ import annotations

from typing import Any

from fastapi import Response

from quartermaster.api.errors import ErrorBody

MEANING = {
    400: "A body that is not valid JSON (`malformed_body`)",
    401: "Missing, unknown, expired or revoked API key",
    403: "The caller's role may not do this",
    404: "Not found in the caller's tenant",
    409: "Conflicts with existing state",
    413: "Request too large (`QM_MAX_BODY_BYTES`)",
    415: "A body in a format the route does not read",
    422: "Invalid input; `field` names what was wrong",
    429: "Rate limited",
    503: "A service the answer needs cannot be reached; retry later",
}

# The headers an error status always carries (api/errors.py sends them), as (name, OpenAPI
# header object): api/openapi.py adds them to every 401 and 429 the spec declares.
WWW_AUTHENTICATE: tuple[str, dict[str, Any]] = (
    "WWW-Authenticate",
    {"description": "`Bearer`: the scheme to authenticate with.", "schema": {"type": "string"}},
)
RETRY_AFTER: tuple[str, dict[str, Any]] = (
    "Retry-After",
    {"description": "Seconds to wait before trying again.", "schema": {"type": "integer"}},
)


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """401 and 403 are always possible on authenticated routes, so they are always listed."""
    wanted = sorted({401, 403, *statuses})
    return {status: {"model": ErrorBody, "description": MEANING[status]} for status in wanted}


def rate_limited(why: str) -> dict[int | str, dict[str, Any]]:
    """The 429 of a route a budget throttle, rate limit or quota can refuse (`why` says
    which), with its `Retry-After`."""
    name, header = RETRY_AFTER
    return {429: {"model": ErrorBody, "description": why, "headers": {name: header}}}


# A paged list's next-page cursor travels in this header, so its body stays the bare list.
NEXT_AFTER_HEADER = "X-Next-After"


def paged(what: str) -> dict[int | str, dict[str, Any]]:
    """The 200 answer of a list paged by `NEXT_AFTER_HEADER`: `what`, newest first."""
    return {
        200: {
            "description": f"A page of {what}, newest first.",
            "headers": {
                NEXT_AFTER_HEADER: {
                    "description": "Pass as `after` for the next page; absent on the last.",
                    "schema": {"type": "string"},
                }
            },
        }
    }


# A list's whole size, beside a page of it.
TOTAL_COUNT_HEADER = "X-Total-Count"


def set_next_after(response: Response, next_after: str | None) -> None:
    """The next page's cursor in its header (none on the last page)."""
    if next_after is not None:
        response.headers[NEXT_AFTER_HEADER] = next_after
