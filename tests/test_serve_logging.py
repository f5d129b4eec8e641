"""The log lines of `qm serve` and its validation workers (serve_logging.py); the server's
own stderr is checked end to end in tests/cli/test_main.py."""

from __future__ import annotations

import logging
import re
import subprocess
import sys

from quartermaster.serve_logging import UtcFormatter, server_log_config, worker_log_config

STAMP = r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ"


def test_a_line_has_its_utc_moment_level_and_source() -> None:
    record = logging.LogRecord(
        "quartermaster.background", logging.WARNING, "", 0, "x %s", ("y",), None
    )
    record.created = 1_796_300_000.25  # in UTC, whatever the machine's own zone
    line = UtcFormatter().format(record)
    assert line == "2026-12-03T12:13:20Z WARNING quartermaster.background: x y"


def test_a_worker_logs_like_the_server_at_the_servers_level() -> None:
    # In a process of its own, as a worker is: dictConfig closes every handler of the process
    # it runs in, pytest's own among them.
    script = (
        "import logging, logging.config\n"
        "from quartermaster.serve_logging import worker_log_config\n"
        "logging.config.dictConfig(worker_log_config('warning'))\n"
        "log = logging.getLogger('quartermaster.metering.offload')\n"
        "log.info('not shown')\n"
        'log.warning("a worker\'s warning")\n'
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "not shown" not in done.stderr
    assert re.fullmatch(
        rf"{STAMP} WARNING quartermaster\.metering\.offload: a worker's warning\n", done.stderr
    )


def test_the_server_adds_uvicorns_loggers_to_the_workers_configuration() -> None:
    quiet = server_log_config("info", access_log=False)
    assert (
        quiet["loggers"]["quartermaster"] == worker_log_config("info")["loggers"]["quartermaster"]
    )
    assert quiet["loggers"]["uvicorn.access"]["level"] == "WARNING"
    assert quiet["loggers"]["uvicorn.error"]["level"] == "WARNING"
    loud = server_log_config("debug", access_log=True)
    assert loud["loggers"]["uvicorn.access"]["level"] == "INFO"
    assert loud["loggers"]["uvicorn.error"]["level"] == "DEBUG"
    assert loud["loggers"]["quartermaster"]["level"] == "DEBUG"


def test_http_client_lines_with_full_urls_stay_out_of_the_servers_log() -> None:
    # A webhook's URL is a credential; httpx logs every request's URL at INFO.
    script = (
        "import logging, logging.config\n"
        "from quartermaster.serve_logging import server_log_config\n"
        "logging.config.dictConfig(server_log_config('debug', access_log=True))\n"
        # a root handler at debug, as an embedding program or a debugging operator adds
        "logging.basicConfig(level=logging.DEBUG)\n"
        "logging.getLogger('httpx').info('POST https://hooks.slack.com/services/T/B/SECRET')\n"
        "logging.getLogger('httpcore.connection').debug('connect https://x/?token=SECRET')\n"
        "logging.getLogger('httpx').warning('a client warning')\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=True
    )
    assert "SECRET" not in done.stderr
    assert "a client warning" in done.stderr
