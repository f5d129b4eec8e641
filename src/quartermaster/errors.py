"""Domain errors. Each names what was wrong; the API maps them to status codes in one place."""

from __future__ import annotations

import json


class QMError(Exception):
    code = "error"

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


class InvalidInputError(QMError):
    code = "invalid_input"


class NotFoundError(QMError):
    code = "not_found"


class ConflictError(QMError):
    code = "conflict"


class AuthenticationError(QMError):
    code = "unauthenticated"


class PermissionDeniedError(QMError):
    code = "permission_denied"


class PayloadTooLargeError(QMError):
    code = "payload_too_large"


class MalformedBodyError(QMError):
    """The body is not JSON, or not the shape its content type announces (HTTP 400)."""

    code = "malformed_body"


def malformed_json(exc: json.JSONDecodeError) -> MalformedBodyError:
    """Where a body stops being JSON, in the words every route uses (orjson's error is one)."""
    return MalformedBodyError(
        f"request body is not valid JSON: {exc.msg} at line {exc.lineno}, "
        f"column {exc.colno} (byte {exc.pos})"
    )


class UnsupportedMediaTypeError(QMError):
    """A body in a format the route does not read (HTTP 415)."""

    code = "unsupported_media_type"


class RateLimitedError(QMError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_seconds: float) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
