"""The one base class for background services that `qm serve` runs beside the API.

A service has a `name`, an `enabled` flag and an `interval_seconds`, and implements
`run_once()`. `start()` runs it in a daemon thread: `run_once()` again at once while it reports
more work, otherwise after the interval. An exception is logged and retried with a growing
pause (capped), so a failing service never takes the server down, and its state is visible in
`status()`. Wire a service into `qm serve` with `service_starter(...)` in cli/main.py's
`_background_services()`.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Container, Hashable
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Generic, TypeVar

from quartermaster.domain.timeutil import utc_now
from quartermaster.errors import QMError

if TYPE_CHECKING:
    from quartermaster.runtime import Runtime

logger = logging.getLogger("quartermaster.background")

MAX_ERROR_BACKOFF_SECONDS = 60.0


@dataclass(frozen=True, slots=True)
class ServiceStatus:
    name: str
    enabled: bool
    running: bool
    runs: int
    failures: int
    consecutive_failures: int
    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None
    # The first success after the latest error (None while failing, or if it never failed).
    recovered_at: datetime | None = None


K = TypeVar("K", bound=Hashable)


@dataclass
class FailureLog(Generic[K]):
    """What a service skips because it fails (a tenant's budgets, a run's late usage), each
    logged once and again only when the reason changes, then once when it passes again: a
    service passes every few seconds or minutes, and logging each pass's failure (with a
    traceback) buried the log. `failing` and `recovered` name the item (`{}`: `name(key)`);
    a failure the service names (QMError) is one line, any other carries its traceback."""

    logger: logging.Logger
    failing: str  # e.g. "budgets of tenant {} not evaluated"
    recovered: str  # e.g. "budgets of tenant {} are evaluated again"
    name: Callable[[K], str] = str
    reasons: dict[K, str] = field(default_factory=dict)  # key -> why, as last logged

    def failed(self, key: K, exc: Exception) -> None:
        why = exc.message if isinstance(exc, QMError) else f"{type(exc).__name__}: {exc}"
        if self.reasons.get(key) == why:
            return
        self.reasons[key] = why
        what = self.failing.format(self.name(key))
        if isinstance(exc, QMError):
            self.logger.warning("%s: %s (logged again when this changes)", what, why)
        else:
            self.logger.error("%s: %s (logged again when this changes)", what, why, exc_info=exc)

    def passed(self, key: K) -> None:
        if self.reasons.pop(key, None) is not None:
            self.logger.warning(self.recovered.format(self.name(key)))

    def keep(self, keys: Container[K]) -> None:
        """Forget the items no longer looked at."""
        self.reasons = {key: why for key, why in self.reasons.items() if key in keys}


class BackgroundService(ABC):
    """Subclasses set `name` and implement `run_once()`; nothing starts until `start()`."""

    name: str = "service"

    def __init__(self, *, interval_seconds: float, enabled: bool = True) -> None:
        if interval_seconds <= 0:
            raise ValueError(f"{self.name}: interval_seconds must be positive")
        self.interval_seconds = interval_seconds
        self.enabled = enabled
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()
        self._runs = 0
        self._failures = 0
        self._consecutive_failures = 0
        self._last_success_at: datetime | None = None
        self._last_error: str | None = None
        self._last_error_at: datetime | None = None
        self._recovered_at: datetime | None = None

    @abstractmethod
    def run_once(self) -> bool:
        """Do one unit of work. Return True when more work is waiting (run again at once),
        False to sleep for the interval. Exceptions are logged and retried."""

    def close(self) -> None:  # noqa: B027 - optional hook, most services hold nothing
        """Release what the service holds; called once after its thread has stopped."""

    def start(self) -> None:
        """Start the service thread (no-op when disabled or already running)."""
        if not self.enabled:
            logger.info("background service %s is disabled", self.name)
            return
        with self._lock:
            if self._thread is not None and self._thread.is_alive():
                return
            self._stop.clear()
            self._thread = threading.Thread(target=self._loop, name=f"qm-{self.name}", daemon=True)
            self._thread.start()

    def stop(self, *, timeout: float = 30.0) -> None:
        """Ask the loop to finish its current unit of work, wait for it, then `close()`."""
        self._stop.set()
        self._wake.set()
        thread = self._thread
        if thread is not None:
            thread.join(timeout=timeout)
            if thread.is_alive():
                logger.warning("background service %s did not stop within %ss", self.name, timeout)
                return
        self.close()

    def wake(self) -> None:
        """Run the next pass now instead of after the interval (e.g. new work arrived)."""
        self._wake.set()

    def run_pass(self) -> bool:
        """One guarded `run_once()`: the loop's step, also handy for tests and CLI drains."""
        try:
            more = self.run_once()
        except Exception as exc:
            self._failures += 1
            self._consecutive_failures += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            self._last_error_at = utc_now()
            self._recovered_at = None
            logger.exception(
                "background service %s failed (attempt %d); retrying",
                self.name,
                self._consecutive_failures,
            )
            return False
        self._runs += 1
        self._last_success_at = utc_now()
        if self._consecutive_failures:
            self._recovered_at = self._last_success_at
            logger.info(
                "background service %s recovered after %d failed attempt(s)",
                self.name,
                self._consecutive_failures,
            )
        self._consecutive_failures = 0
        return bool(more)

    def status(self) -> ServiceStatus:
        thread = self._thread
        return ServiceStatus(
            name=self.name,
            enabled=self.enabled,
            running=thread is not None and thread.is_alive(),
            runs=self._runs,
            failures=self._failures,
            consecutive_failures=self._consecutive_failures,
            last_success_at=self._last_success_at,
            last_error=self._last_error,
            last_error_at=self._last_error_at,
            recovered_at=self._recovered_at,
        )

    def _pause_seconds(self) -> float:
        if self._consecutive_failures == 0:
            return self.interval_seconds
        backoff = self.interval_seconds * float(2 ** min(self._consecutive_failures, 16))
        return min(max(backoff, self.interval_seconds), MAX_ERROR_BACKOFF_SECONDS)

    def _loop(self) -> None:
        logger.info("background service %s started", self.name)
        while not self._stop.is_set():
            more = self.run_pass()
            if more and not self._stop.is_set():
                continue
            self._wake.wait(self._pause_seconds())
            self._wake.clear()
        logger.info("background service %s stopped", self.name)


def service_starter(
    factory: Callable[[Runtime], BackgroundService],
) -> Callable[[Runtime], Callable[[], None]]:
    """Adapt a service factory to `create_app(background=...)`: build the service from the
    runtime on startup, start it, and hand back its stop function for shutdown."""

    def start(runtime: Runtime) -> Callable[[], None]:
        service = factory(runtime)
        service.start()

        def stop() -> None:
            service.stop()

        return stop

    return start
