"""The error model: every error body is {"error": {"code", "message", "field"}}."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

import duckdb
import orjson
import psycopg
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.exc import StatementError
from sqlalchemy.exc import TimeoutError as PoolTimeoutError
from starlette.exceptions import HTTPException as StarletteHTTPException

from quartermaster.errors import (
    AuthenticationError,
    ConflictError,
    InvalidInputError,
    MalformedBodyError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    QMError,
    RateLimitedError,
    ServiceUnavailableError,
    UnsupportedMediaTypeError,
    malformed_json,
)
from quartermaster.metering.validation import json_kind
from quartermaster.storage.unavailable import unavailable_error

STATUS_BY_ERROR: dict[type[QMError], int] = {
    MalformedBodyError: 400,
    InvalidInputError: 422,
    NotFoundError: 404,
    ConflictError: 409,
    AuthenticationError: 401,
    PermissionDeniedError: 403,
    PayloadTooLargeError: 413,
    UnsupportedMediaTypeError: 415,
    RateLimitedError: 429,
    ServiceUnavailableError: 503,
}


class ErrorDetail(BaseModel):
    code: str
    message: str
    field: str | None = None


class ErrorBody(BaseModel):
    error: ErrorDetail


def error_response(
    status: int,
    code: str,
    message: str,
    field: str | None = None,
    headers: Mapping[str, str] | None = None,
) -> JSONResponse:
    body = ErrorBody(error=ErrorDetail(code=code, message=message, field=field))
    return JSONResponse(body.model_dump(), status_code=status, headers=headers)


def status_for(exc: QMError) -> int:
    for cls in type(exc).__mro__:
        if cls in STATUS_BY_ERROR:
            return STATUS_BY_ERROR[cls]
    return 400


def _is_json(media_type: str) -> bool:
    return media_type == "application/json" or media_type.endswith("+json")


async def _body_error(request: Request, first: dict[str, Any]) -> QMError | None:
    """The request body as a whole was wrong (not one field of it): not JSON, not sent as
    JSON, missing, or not an object. None when the error is about a field."""
    loc = tuple(first.get("loc", ()))
    if first.get("type") == "json_invalid":
        body = await request.body()
        try:
            orjson.loads(body)
        except orjson.JSONDecodeError as exc:
            return malformed_json(exc, body)
        return MalformedBodyError("request body is not valid JSON")
    if loc != ("body",):
        return None
    body = await request.body()
    if not body.strip():
        return InvalidInputError(
            "request body is missing: send a JSON object (Content-Type: application/json)"
        )
    media_type = (request.headers.get("content-type") or "").split(";")[0].strip().lower()
    if not _is_json(media_type):
        # curl -d sends application/x-www-form-urlencoded unless told otherwise.
        return UnsupportedMediaTypeError(
            f"content type {media_type or '(none)'!r} is not accepted: send the body as "
            "application/json"
        )
    if first.get("type") in ("model_attributes_type", "missing"):  # missing: a JSON null
        kind = json_kind(orjson.loads(body))
        return InvalidInputError(f"request body must be a JSON object, got a JSON {kind}")
    return None


def _field_error(errors: Sequence[Any]) -> InvalidInputError:
    first = errors[0] if errors else {"loc": (), "msg": "invalid request"}
    loc = [str(part) for part in first.get("loc", ()) if part not in ("body", "query", "path")]
    field = ".".join(loc) or None
    message = f"{field}: {first.get('msg')}" if field else str(first.get("msg"))
    return InvalidInputError(message, field=field)


def _respond(exc: QMError) -> JSONResponse:
    headers = None
    if isinstance(exc, AuthenticationError):
        headers = {"WWW-Authenticate": "Bearer"}
    if isinstance(exc, RateLimitedError):
        headers = {"Retry-After": str(max(1, round(exc.retry_after_seconds)))}
    if isinstance(exc, ServiceUnavailableError) and exc.retry_after_seconds is not None:
        headers = {"Retry-After": str(max(1, round(exc.retry_after_seconds)))}
    return error_response(status_for(exc), exc.code, exc.message, exc.field, headers)


OUT_OF_CALENDAR = InvalidInputError(
    "a date or time in the request is outside the calendar once converted to UTC (years 1 to "
    "9999): give one within it"
)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(QMError)
    async def _qm_error(_request: Request, exc: QMError) -> JSONResponse:
        return _respond(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        errors = exc.errors()
        body_error = await _body_error(request, errors[0]) if errors else None
        return _respond(body_error or _field_error(errors))

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        if exc.status_code == 400 and isinstance(exc.__cause__, UnicodeDecodeError):
            # FastAPI answers a body that is not UTF-8 "There was an error parsing the body"
            # (its json.loads fails before any JSON error): said as POST /v1/events says it.
            body = await request.body()
            try:
                orjson.loads(body)
            except orjson.JSONDecodeError as decode_error:
                return _respond(malformed_json(decode_error, body))
        code = {404: "not_found", 405: "method_not_allowed"}.get(exc.status_code, "http_error")
        # A 405 carries Allow (RFC 9110 section 15.5.6): pass the exception's headers on.
        return error_response(exc.status_code, code, str(exc.detail), headers=exc.headers)

    @app.exception_handler(OverflowError)
    @app.exception_handler(StatementError)  # SQLAlchemy's DBAPIError and its subclasses too
    @app.exception_handler(PoolTimeoutError)
    @app.exception_handler(sqlite3.Error)
    @app.exception_handler(psycopg.Error)
    @app.exception_handler(duckdb.Error)
    @app.exception_handler(OSError)
    async def _storage_error(_request: Request, exc: Exception) -> JSONResponse:
        # A moment the request gave that falls outside the calendar once converted to UTC
        # (0001-01-01T00:00:00+01:00) fails where it is converted, often in the database
        # layer: the request's fault, said so, not a 500.
        cause = exc.orig if isinstance(exc, StatementError) else exc
        if isinstance(cause, OverflowError) and "date value out of range" in str(cause):
            return _respond(OUT_OF_CALENDAR)
        # Storage that cannot serve now (a full disk, a locked or unreachable database) is a
        # 503 naming it, on every route. Answered here, not by the 500 below: the server keeps
        # the connection open (the 500's exception reaches the server, which closes it).
        unavailable = unavailable_error(exc)
        if unavailable is not None:
            return _respond(unavailable)
        raise exc  # to the 500 below, which the server logs with its traceback

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        # Starlette re-raises after this answers, so the server still logs the traceback; the
        # exception's text may hold internals and stays out of the body. A storage failure
        # wrapped in another exception is still told as the 503 it is.
        unavailable = unavailable_error(exc)
        if unavailable is not None:
            return _respond(unavailable)
        return error_response(
            500, "internal_error", "internal server error: the server's log has the details"
        )
