"""In-process "the log was appended" notifications for the embedded event log.

The pipeline used to find new events by polling (every 0.5 s), which was most of the
event-to-billable latency. Appends happen in a caller's transaction, and a consumer must only
be told once that transaction has committed (before, it would read nothing and go back to
sleep). So the appender marks its thread when it has inserted rows (`mark_appended`), and the
session's commit of that thread tells the subscribers; a rollback clears the mark. Only
appends of this process are seen: other processes' appends are still found by polling."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from sqlalchemy import event
from sqlalchemy.orm import Session, sessionmaker

logger = logging.getLogger("quartermaster.bus")


class AppendNotifier:
    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self._callbacks: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self._pending = threading.local()
        self._session_factory = session_factory
        self._installed = False

    def subscribe(self, callback: Callable[[], None]) -> Callable[[], None]:
        with self._lock:
            if not self._installed:
                self._install()
            self._callbacks.append(callback)

        def unsubscribe() -> None:
            with self._lock:
                if callback in self._callbacks:
                    self._callbacks.remove(callback)

        return unsubscribe

    def _install(self) -> None:
        """Listeners go in on the first subscription only: a process that never consumes the
        log (the CLI, most tests) pays nothing per commit."""
        event.listen(self._session_factory, "after_commit", self._after_commit)
        event.listen(self._session_factory, "after_rollback", self._after_rollback)
        self._installed = True

    def mark_appended(self) -> None:
        """Called by the appender, in the thread whose session's transaction holds the rows."""
        if self._installed:
            self._pending.appended = True

    def _after_commit(self, session: Session) -> None:
        if not getattr(self._pending, "appended", False):
            return
        self._pending.appended = False
        with self._lock:
            callbacks = list(self._callbacks)
        for callback in callbacks:
            try:
                callback()
            except Exception:  # a subscriber's failure must not fail the committed append
                logger.exception("event-log append subscriber failed")

    def _after_rollback(self, session: Session) -> None:
        self._pending.appended = False
