from __future__ import annotations

import logging
import threading
import time

import pytest

from quartermaster.background import BackgroundService, FailureLog
from quartermaster.errors import QMError


class _Counting(BackgroundService):
    name = "counting"

    def __init__(self, *, fail_first: int = 0, work_items: int = 0, **kwargs: object) -> None:
        super().__init__(interval_seconds=0.01, **kwargs)  # type: ignore[arg-type]
        self.calls = 0
        self.fail_first = fail_first
        self.work_items = work_items
        self.closed = False
        self.done = threading.Event()

    def run_once(self) -> bool:
        self.calls += 1
        if self.calls <= self.fail_first:
            raise RuntimeError(f"boom {self.calls}")
        if self.work_items > 0:
            self.work_items -= 1
            return True
        self.done.set()
        return False

    def close(self) -> None:
        self.closed = True


def _wait_for(predicate: object, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached")
        time.sleep(0.005)


def test_errors_are_logged_and_retried_without_stopping_the_loop(
    caplog: pytest.LogCaptureFixture,
) -> None:
    service = _Counting(fail_first=2)
    service.start()
    assert service.done.wait(5)
    service.stop()
    status = service.status()
    assert status.failures == 2
    assert status.consecutive_failures == 0
    assert status.last_error == "RuntimeError: boom 2"
    assert status.last_success_at is not None
    assert not status.running
    assert service.closed
    assert "failed (attempt 2)" in caplog.text


def test_runs_again_at_once_while_work_remains() -> None:
    service = _Counting(work_items=5)
    started = time.monotonic()
    while service.run_pass():
        pass
    assert service.calls == 6
    assert time.monotonic() - started < 1


def test_disabled_service_never_runs() -> None:
    service = _Counting(enabled=False)
    service.start()
    time.sleep(0.05)
    service.stop()
    assert service.calls == 0
    assert not service.status().running


def test_backoff_grows_with_consecutive_failures_and_is_capped() -> None:
    service = _Counting(fail_first=100)
    assert service._pause_seconds() == pytest.approx(0.01)
    service.run_pass()
    first = service._pause_seconds()
    service.run_pass()
    assert service._pause_seconds() > first
    for _ in range(30):
        service.run_pass()
    assert service._pause_seconds() == 60.0


def test_wake_skips_the_interval() -> None:
    service = _Counting()
    service.interval_seconds = 30
    service.start()
    _wait_for(lambda: service.calls >= 1)
    service.wake()
    _wait_for(lambda: service.calls >= 2, timeout=2)
    service.stop()


def test_a_failure_log_logs_each_reason_once_and_the_recovery(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failures: FailureLog[str] = FailureLog(
        logging.getLogger("tests.failure_log"),
        failing="item {} skipped",
        recovered="item {} is back",
    )
    with caplog.at_level(logging.WARNING, logger="tests.failure_log"):
        for _ in range(3):
            failures.failed("a", QMError("no price book"))
        boom = RuntimeError("boom")
        failures.failed("a", boom)
        failures.passed("a")
        failures.passed("a")  # nothing was failing any more: nothing to say
        failures.failed("b", QMError("gone"))
        failures.keep({"a"})
        failures.failed("b", QMError("gone"))  # forgotten, so logged again
    said = [(r.getMessage(), bool(r.exc_info) and r.exc_info[1] is boom) for r in caplog.records]
    assert said == [
        ("item a skipped: no price book (logged again when this changes)", False),
        ("item a skipped: RuntimeError: boom (logged again when this changes)", True),
        ("item a is back", False),
        ("item b skipped: gone (logged again when this changes)", False),
        ("item b skipped: gone (logged again when this changes)", False),
    ]
