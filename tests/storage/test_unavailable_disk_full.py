"""Which errors are a full disk, and what the 503 says of each (storage/unavailable.py)."""

from __future__ import annotations

import errno
import sqlite3

import duckdb
import pytest
from psycopg import errors
from sqlalchemy.exc import OperationalError

from quartermaster.errors import ServiceUnavailableError
from quartermaster.storage.unavailable import disk_full_reason, raise_if_disk_full


def test_each_store_and_the_os_are_named() -> None:
    sqlite_full = OperationalError(
        "INSERT", {}, sqlite3.OperationalError("database or disk is full")
    )
    assert disk_full_reason(sqlite_full) == (
        "the database's disk is full (OperationalError: database or disk is full)"
    )
    pg_full = OperationalError("INSERT", {}, errors.DiskFull("could not extend file"))
    assert disk_full_reason(pg_full) == (
        "the database's disk is full (DiskFull: could not extend file)"
    )
    duck = duckdb.IOException('Could not write file "usage.duckdb.wal": No space left on device')
    reason = disk_full_reason(duck)
    assert reason is not None
    assert reason.startswith("the usage store's disk (usage.duckdb in the data dir) is full")
    inner = OSError(errno.ENOSPC, "No space left on device")
    outer = RuntimeError("writing failed")
    outer.__cause__ = inner
    assert disk_full_reason(outer) == (
        "a disk the server writes to is full (OSError: [Errno 28] No space left on device)"
    )
    assert disk_full_reason(RuntimeError("boom")) is None
    locked = OperationalError("INSERT", {}, sqlite3.OperationalError("database is locked"))
    assert disk_full_reason(locked) is None


def test_raise_if_disk_full_raises_a_503_and_leaves_the_rest() -> None:
    with pytest.raises(ServiceUnavailableError) as refused:
        raise_if_disk_full(OSError(errno.ENOSPC, "No space left on device"))
    assert refused.value.retry_after_seconds == 10
    raise_if_disk_full(ValueError("not a disk"))  # returns: the caller re-raises it
