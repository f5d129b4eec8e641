"""How `qm serve` logs: one `logging.config.dictConfig` handed to uvicorn, so that the
server's own loggers (`quartermaster.*`), uvicorn's errors and, when asked for, its access
lines all go to stderr as UTC-stamped lines. Without it the services' warnings reached
stderr through Python's last-resort handler: the message alone, with no time, no level and no
name of the part that wrote it."""

from __future__ import annotations

import logging
import time
from typing import Any

from uvicorn.logging import AccessFormatter

from quartermaster.config import LogLevel

_STAMP = "%Y-%m-%dT%H:%M:%SZ"
_STDERR = {"class": "logging.StreamHandler", "stream": "ext://sys.stderr"}


def _utc_stamp(record: logging.LogRecord) -> str:
    return time.strftime(_STAMP, time.gmtime(record.created))


class UtcFormatter(logging.Formatter):
    """`2026-12-03T13:40:02Z WARNING quartermaster.background: …`"""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc_stamp(record)


class UtcAccessFormatter(AccessFormatter):
    """`2026-12-03T13:40:02Z access 127.0.0.1:50312 "POST /v1/events HTTP/1.1" 200`"""

    def __init__(self) -> None:
        super().__init__(
            '%(asctime)s access %(client_addr)s "%(request_line)s" %(status_code)s',
            use_colors=False,
        )

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _utc_stamp(record)


def worker_log_config(level: LogLevel) -> dict[str, Any]:
    """The dictConfig of a validation worker process (metering/offload.py): the server's
    format for the `quartermaster` loggers, so that a worker's line reads like the server's."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"plain": {"()": UtcFormatter}},
        "handlers": {"stderr": {**_STDERR, "formatter": "plain"}},
        "loggers": {
            "quartermaster": {"handlers": ["stderr"], "level": level.upper(), "propagate": False}
        },
    }


def server_log_config(level: LogLevel, *, access_log: bool) -> dict[str, Any]:
    """The dictConfig for `uvicorn.run(log_config=…)`: the workers' configuration, plus
    uvicorn's own loggers. Its start-up lines stay at warning unless `level` is debug: `qm
    serve` prints where it listens itself."""
    config = worker_log_config(level)
    config["formatters"]["access"] = {"()": UtcAccessFormatter}
    config["handlers"]["access"] = {**_STDERR, "formatter": "access"}
    config["loggers"]["uvicorn.error"] = {
        "handlers": ["stderr"],
        "level": "DEBUG" if level == "debug" else "WARNING",
        "propagate": False,
    }
    config["loggers"]["uvicorn.access"] = {
        "handlers": ["access"],
        "level": "INFO" if access_log else "WARNING",
        "propagate": False,
    }
    # httpx logs each request's full URL at INFO (debug: more): a webhook's URL is a
    # credential (a Slack path, a ?token=), so its lines stay at warning whatever the level.
    for client_logger in ("httpx", "httpcore"):
        config["loggers"][client_logger] = {
            "handlers": ["stderr"],
            "level": "WARNING",
            "propagate": False,
        }
    return config
