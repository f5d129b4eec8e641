"""Domain errors. Each names what was wrong; the API maps them to status codes in one place."""

from __future__ import annotations


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


class UnsupportedMediaTypeError(QMError):
    """A body in a format the route does not read (HTTP 415)."""

    code = "unsupported_media_type"


class RateLimitedError(QMError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_seconds: float) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
