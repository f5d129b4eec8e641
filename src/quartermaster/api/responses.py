"""OpenAPI descriptions of error responses, so each route documents the errors it can give."""

from __future__ import annotations

from typing import Any

from quartermaster.api.errors import ErrorBody

MEANING = {
    400: "A body that is not valid JSON (`malformed_body`)",
    401: "Missing, unknown, expired or revoked API key",
    403: "The caller's role may not do this",
    404: "Not found in the caller's tenant",
    409: "Conflicts with existing state",
    413: "Request too large",
    415: "A body in a format the route does not read",
    422: "Invalid input; `field` names what was wrong",
    429: "Rate limited",
}


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """401 and 403 are always possible on authenticated routes, so they are always listed."""
    wanted = sorted({401, 403, *statuses})
    return {status: {"model": ErrorBody, "description": MEANING[status]} for status in wanted}
