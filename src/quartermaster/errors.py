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


def malformed_json(exc: json.JSONDecodeError, body: bytes) -> MalformedBodyError:
    """Where a body stops being JSON, in the words every route uses (orjson's error is one).

    orjson checks the whole body is UTF-8 before it parses, and for bytes that are not it
    says "str is not valid UTF-8: surrogates not allowed" at byte 0 wherever they are; the
    first invalid byte is found here, only once orjson has failed, so a good body pays
    nothing for it."""
    bad = invalid_utf8(body) if "UTF-8" in exc.msg else None
    if bad is None:
        return MalformedBodyError(
            f"request body is not valid JSON: {exc.msg} at line {exc.lineno}, "
            f"column {exc.colno} (byte {exc.pos})"
        )
    line = body.count(b"\n", 0, bad) + 1
    line_start = body.rfind(b"\n", 0, bad) + 1
    # Columns count characters, as a JSON error's do; everything before `bad` decodes.
    column = len(body[line_start:bad].decode()) + 1
    return MalformedBodyError(
        f"request body is not valid UTF-8: byte 0x{body[bad]:02x} at line {line}, "
        f"column {column} (byte {bad})"
    )


def utf8_problem(data: bytes) -> str | None:
    """`not UTF-8 text (byte 0xff at offset 0)` for data that is not UTF-8, else None: how
    every file or value refused for it is described."""
    bad = invalid_utf8(data)
    if bad is None:
        return None
    return f"not UTF-8 text (byte 0x{data[bad]:02x} at offset {bad})"


def invalid_utf8(data: bytes) -> int | None:
    """The offset of the first byte of `data` that is not UTF-8, or None when all of it is."""
    try:
        data.decode()
    except UnicodeDecodeError as exc:
        return exc.start
    return None


class UnsupportedMediaTypeError(QMError):
    """A body in a format the route does not read (HTTP 415)."""

    code = "unsupported_media_type"


def body_too_large(size: int | None, limit: int) -> str:
    """The 413 of a request body over QM_MAX_BODY_BYTES (`size` None: a chunked body, counted
    until it passed the limit)."""
    given = f"{size:,} bytes" if size is not None else f"more than {limit:,} bytes"
    return f"request body is {given}; the limit is {limit:,} bytes (QM_MAX_BODY_BYTES)"


class ServiceUnavailableError(QMError):
    """A service the answer needs cannot be reached (HTTP 503); retrying later may work
    (`retry_after_seconds`, when known, is sent as Retry-After)."""

    code = "service_unavailable"

    def __init__(
        self,
        message: str,
        *,
        field: str | None = None,
        retry_after_seconds: float | None = None,
    ) -> None:
        super().__init__(message, field=field)
        self.retry_after_seconds = retry_after_seconds


class RateLimitedError(QMError):
    code = "rate_limited"

    def __init__(self, message: str, *, retry_after_seconds: float) -> None:
        super().__init__(message)
        self.retry_after_seconds = retry_after_seconds
