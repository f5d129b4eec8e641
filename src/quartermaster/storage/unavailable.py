"""Storage that cannot serve now, told to the caller as a 503 with Retry-After naming the cause.

A database (SQLite `database or disk is full`, PostgreSQL `53100 disk_full`) or a file
(ENOSPC, as DuckDB reports it) that cannot grow made ingestion answer a bare 500, so neither
the sender nor the operator knew why. Nothing of the request is stored when its transaction
fails, and a retry is deduplicated, so a sender may retry once space is freed.

The same holds for every route, and for a database that is locked (SQLite's busy timeout
passed while another process held the write lock) or cannot be reached (a connection lost or
refused): `unavailable_error` is the one mapping the API's error handlers use. Errors of the
request or of the code (a constraint, bad SQL, a missing table) are not among them: they stay
what they were (409, 500)."""

from __future__ import annotations

import errno
import logging
import re
import sqlite3
from typing import NamedTuple

from quartermaster.errors import ServiceUnavailableError

logger = logging.getLogger("quartermaster.metering")

RETRY_AFTER_SECONDS = 10.0
LOCKED_RETRY_AFTER_SECONDS = 5.0
_FULL_TEXTS = ("database or disk is full", "no space left on device", "disk quota exceeded")
_POSTGRES_DISK_FULL = "53100"


def exception_chain(exc: BaseException) -> list[BaseException]:
    """The exception, its causes and contexts, and the DB-API errors SQLAlchemy wraps."""
    seen: list[BaseException] = []
    todo: list[BaseException | None] = [exc]
    while todo:
        current = todo.pop()
        if current is None or any(current is s for s in seen) or len(seen) > 20:
            continue
        seen.append(current)
        orig = getattr(current, "orig", None)
        todo.extend(
            [current.__cause__, current.__context__]
            + ([orig] if isinstance(orig, BaseException) else [])
        )
    return seen


def disk_full_reason(exc: BaseException) -> str | None:
    """What is full, with the error that said so (the driver's own, not SQLAlchemy's
    wrapper), or None when `exc` is not a full disk."""
    for error in _drivers_first(exc):
        text = _first_line(error)
        module = type(error).__module__.split(".")[0].lstrip("_")
        full = (
            getattr(error, "sqlstate", None) == _POSTGRES_DISK_FULL
            or (isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT))
            or any(t in text.lower() for t in _FULL_TEXTS)
        )
        if not full:
            continue
        if module == "duckdb":
            where = "the usage store's disk (usage.duckdb in the data dir) is full"
        elif module in ("sqlite3", "psycopg", "psycopg2", "sqlalchemy"):
            where = "the database's disk is full"
        else:
            where = "a disk the server writes to is full"
        return f"{where} ({type(error).__name__}: {text})"
    return None


def raise_if_disk_full(exc: Exception) -> None:
    """Re-raise a full disk as a 503 naming it (with Retry-After); other errors are left to
    the caller to re-raise."""
    reason = disk_full_reason(exc)
    if reason is None:
        return
    logger.error("ingestion refused a request: %s", reason)
    raise ServiceUnavailableError(
        f"events not stored: {reason}. Nothing of this request was stored; send it again "
        "once the operator has freed space (events already stored count once)",
        retry_after_seconds=RETRY_AFTER_SECONDS,
    ) from exc


def _drivers_first(exc: BaseException) -> list[BaseException]:
    chain = exception_chain(exc)
    chain.sort(key=lambda e: type(e).__module__.startswith("sqlalchemy"))  # stable
    return chain


def _first_line(error: BaseException) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else ""


# SQLSTATEs of a PostgreSQL that cannot serve now: a connection exception (class 08), the
# server shutting down or starting (57P01 admin_shutdown, 57P02 crash_shutdown, 57P03
# cannot_connect_now), too many connections (53300). A query cancelled, a lock or
# serialization failure, a privilege or a missing table is an answer of the database: not these.
_PG_OUTAGE_STATES = ("08", "57P01", "57P02", "57P03", "53300")
# SQLite: the write lock not obtained within the busy timeout.
_SQLITE_LOCKED = "SQLITE_BUSY"
# SQLite: the database file cannot be opened or read (a data dir gone, an I/O error).
_SQLITE_UNREACHABLE = ("SQLITE_CANTOPEN", "SQLITE_IOERR")
# Where the server is (host, port, socket) stays out of the answer: the reason is enough.
_PG_WHERE = re.compile(
    r"connection to server (?:at \"[^\"]*\"(?: \([^)]*\))?, port \d+|on socket \"[^\"]*\") "
    r"failed: |- host: '[^']*', port: '[^']*'(?:, hostaddr: '[^']*')?: "
)


def _is_psycopg(error: BaseException) -> bool:
    return type(error).__module__.split(".")[0] in ("psycopg", "psycopg2")


def _pg_reason(error: BaseException) -> str:
    """The driver's own reason in one line: the server's primary message when it answered,
    else the client's (a failed connect's last line naming the cause), without the address."""
    diag = getattr(error, "diag", None)
    primary = getattr(diag, "message_primary", None) if diag is not None else None
    if primary:
        return str(primary)
    lines = [line.strip() for line in str(error).strip().splitlines() if line.strip()]
    if not lines:
        return ""
    # "Multiple connection attempts failed. All failures were:" is followed by one line each.
    line = lines[-1] if lines[0].endswith(":") and len(lines) > 1 else lines[0]
    return " ".join(_PG_WHERE.sub("", line).split())


def _pg_outage(error: BaseException) -> bool:
    state = getattr(error, "sqlstate", None) or getattr(error, "pgcode", None)
    if state is None:
        # No SQLSTATE: the client's own error (refused, timed out, closed), or a refused
        # connect (FATAL: database "x" is not currently accepting connections).
        return "OperationalError" in (cls.__name__ for cls in type(error).__mro__)
    return str(state).startswith(_PG_OUTAGE_STATES)


class Unavailable(NamedTuple):
    reason: str
    retry_after_seconds: float
    stored_nothing: bool  # True when the request certainly stored nothing


def database_unavailable_reason(exc: BaseException) -> Unavailable | None:
    """What keeps the database from serving now (locked, or not reachable), with the
    driver's one-line reason and the seconds to wait before a retry; None for any other
    error, a programming error among them (IntegrityError, ProgrammingError, bad SQL)."""
    invalidated = any(getattr(e, "connection_invalidated", False) for e in exception_chain(exc))
    unreachable = "the database cannot be reached"
    for error in _drivers_first(exc):
        name = type(error).__name__
        if isinstance(error, sqlite3.OperationalError):
            code = getattr(error, "sqlite_errorname", "") or ""
            text = _first_line(error)
            if code.startswith(_SQLITE_LOCKED) or text == "database is locked":
                # BEGIN IMMEDIATE waits for the lock: no statement of the request ran.
                return Unavailable(
                    "the database is locked by another process (SQLite busy timeout passed: "
                    f"{name}: {text})",
                    LOCKED_RETRY_AFTER_SECONDS,
                    True,
                )
            if code.startswith(_SQLITE_UNREACHABLE) or invalidated:
                return Unavailable(f"{unreachable} ({name}: {text})", RETRY_AFTER_SECONDS, False)
        elif _is_psycopg(error) and (invalidated or _pg_outage(error)):
            reason = f"{unreachable} ({name}: {_pg_reason(error)})"
            return Unavailable(reason, RETRY_AFTER_SECONDS, False)
        elif name == "TimeoutError" and type(error).__module__ == "sqlalchemy.exc":
            # The connection pool had no connection to give within its timeout: the request
            # had no connection, so it ran no statement.
            reason = f"the database has no free connection ({name}: {_first_line(error)})"
            return Unavailable(reason, RETRY_AFTER_SECONDS, True)
    if invalidated:  # another driver's lost connection, as SQLAlchemy tells it
        error = _drivers_first(exc)[0]
        reason = f"{unreachable} ({type(error).__name__}: {_first_line(error)})"
        return Unavailable(reason, RETRY_AFTER_SECONDS, False)
    return None


def unavailable_error(exc: BaseException) -> ServiceUnavailableError | None:
    """The 503 of any route whose storage cannot serve now (a full disk, a locked or
    unreachable database), naming the cause, with Retry-After; None for any other error.
    Logged once here: a handled 503 leaves no traceback in the server's log."""
    full = disk_full_reason(exc)
    if full is not None:
        logger.error("a request was refused: %s", full)
        return ServiceUnavailableError(
            f"{full}. Nothing of this request was stored; send it again once the operator "
            "has freed space",
            retry_after_seconds=RETRY_AFTER_SECONDS,
        )
    found = database_unavailable_reason(exc)
    if found is None:
        return None
    logger.error("a request was refused: %s", found.reason)
    if found.stored_nothing:
        advice = "Nothing of this request was stored; send it again shortly"
    else:
        # A connection lost during COMMIT leaves unknown whether the database committed.
        advice = "Send the request again once the database is back"
    return ServiceUnavailableError(
        f"{found.reason}. {advice}", retry_after_seconds=found.retry_after_seconds
    )
