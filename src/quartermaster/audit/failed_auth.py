"""Bounding what refused credentials can write: failed authentications are recorded in a tenant's
audit chain at most `per_window` times per tenant per window (a minute) by each server process;
the rest go to the server log, and the first record of the next window says how many were left
out. Claims nobody could verify are shown only in a bounded, escaped form (`untrusted_text`).
"""

from __future__ import annotations

import threading
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass

FAILED_AUTH_RECORDS_PER_MINUTE = 10
UNTRUSTED_TEXT_LIMIT = 64


def untrusted_text(value: str, *, limit: int = UNTRUSTED_TEXT_LIMIT) -> str:
    """`value` (from a credential nobody verified) safe to show on one line: control and other
    invisible characters escaped (a newline reads `\\n`), then cut to `limit` characters with
    `…` marking the cut."""
    escaped = "".join(
        ch if not unicodedata.category(ch).startswith("C") else ch.encode("unicode_escape").decode()
        for ch in value
    )
    return escaped if len(escaped) <= limit else escaped[: limit - 1] + "…"


@dataclass(frozen=True, slots=True)
class Admission:
    """Whether to record this failure in the tenant's chain, and how many failures of the
    tenant's previous window were left out of it (to be recorded first, as one summary)."""

    record: bool
    left_out_before: int


@dataclass(slots=True)
class _Window:
    started: float
    recorded: int = 0
    left_out: int = 0


class FailedAuthLimiter:
    """Per tenant, at most `per_window` recorded failures per `window_seconds` (per process)."""

    def __init__(
        self,
        per_window: int = FAILED_AUTH_RECORDS_PER_MINUTE,
        *,
        window_seconds: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.per_window = per_window
        self.window_seconds = window_seconds
        self._clock = clock
        self._windows: dict[str, _Window] = {}
        self._lock = threading.Lock()

    def admit(self, tenant_id: str) -> Admission:
        now = self._clock()
        with self._lock:
            window = self._windows.get(tenant_id)
            carried = 0
            if window is None or now - window.started >= self.window_seconds:
                carried = 0 if window is None else window.left_out
                window = self._windows[tenant_id] = _Window(started=now)
            if window.recorded < self.per_window:
                window.recorded += 1
                return Admission(record=True, left_out_before=carried)
            window.left_out += 1
            return Admission(record=False, left_out_before=carried)
