"""A full disk under ingestion: told to the sender as a 503 with Retry-After, naming the cause.

A database (SQLite `database or disk is full`, PostgreSQL `53100 disk_full`) or a file
(ENOSPC, as DuckDB reports it) that cannot grow made ingestion answer a bare 500, so neither
the sender nor the operator knew why. Nothing of the request is stored when its transaction
fails, and a retry is deduplicated, so a sender may retry once space is freed."""

from __future__ import annotations

import errno
import logging

from quartermaster.errors import ServiceUnavailableError

logger = logging.getLogger("quartermaster.metering")

RETRY_AFTER_SECONDS = 10.0
_FULL_TEXTS = ("database or disk is full", "no space left on device", "disk quota exceeded")
_POSTGRES_DISK_FULL = "53100"


def _chain(exc: BaseException) -> list[BaseException]:
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
    chain = _chain(exc)
    chain.sort(key=lambda e: type(e).__module__.startswith("sqlalchemy"))  # stable
    for error in chain:
        text = str(error).strip().splitlines()[0] if str(error).strip() else ""
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
