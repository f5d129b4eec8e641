"""What the demo's stages share: the options, the context they fill in, and the `qm serve`
subprocess they drive (started, restarted with other settings, stopped)."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any

import httpx
from rich.console import Console

from quartermaster.config import Settings
from quartermaster.domain.timeutil import utc_now
from quartermaster.sim.driver import SendSummary
from quartermaster.sim.factory import Credentials
from quartermaster.sim.generator import Expectation
from quartermaster.sim.model import Platform

DEFAULT_DATA_DIR = Path(".qm-demo")
SERVER_START_SECONDS = 60.0


class DemoFailure(RuntimeError):
    """A stage could not do its job, or a check failed; the message says which."""


@dataclass(frozen=True)
class DemoOptions:
    hours: int = 24
    apps: int = 300
    teams: int = 20
    seed: int = 7
    events_per_day: int | None = None
    start: datetime | None = None  # default: `hours` before the current hour
    data_dir: Path = DEFAULT_DATA_DIR
    database_url: str | None = None  # default: SQLite in the data dir
    keep: bool = False
    jsonl: Path | None = None
    connections: int = 4
    batch_size: int = 1000
    price_book: Path | None = None  # default: docs/examples/pricebook.yaml of the checkout


@dataclass
class DemoContext:
    options: DemoOptions
    console: Console
    started_at: datetime = field(default_factory=utc_now)
    settings: Settings | None = None
    admin_token: str | None = None
    server: subprocess.Popen[bytes] | None = None
    server_log: IO[bytes] | None = None
    server_env: dict[str, str] = field(default_factory=dict)  # settings on top of the defaults
    url: str | None = None
    platform: Platform | None = None
    credentials: Credentials | None = None
    summary: SendSummary | None = None
    expected: Expectation | None = None
    reconciliation: dict[str, Any] | None = None
    pipeline: dict[str, Any] | None = None  # GET /v1/pipeline/status once drained
    accounting: dict[str, Any] | None = None
    price_book: dict[str, Any] | None = None
    run: dict[str, Any] | None = None  # GET /v1/billing/runs/{id}: the document and its lines
    explanation: dict[str, Any] | None = None
    adjustment: dict[str, Any] | None = None  # the late usage stage's adjustment document
    alerts: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)  # stage title -> seconds
    cleanups: list[Callable[[], None]] = field(default_factory=list)

    def client(self, timeout: float = 300) -> httpx.Client:
        if self.url is None or self.admin_token is None:
            raise DemoFailure("the server is not running or the tenant does not exist")
        return httpx.Client(
            base_url=self.url,
            headers={"Authorization": f"Bearer {self.admin_token}"},
            timeout=timeout,
        )

    def need_platform(self) -> Platform:
        if self.platform is None:
            raise DemoFailure("no platform was built")
        return self.platform


def server_environment(settings: Settings, extra: dict[str, str]) -> dict[str, str]:
    return {
        **os.environ,
        "QM_DATA_DIR": str(settings.data_dir),
        "QM_DATABASE_URL": settings.resolved_database_url,
        **extra,
    }


def qm_command() -> list[str]:
    script = Path(sys.executable).with_name("qm")
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "from quartermaster.cli.main import main; main()"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no server log)"


def start_server(ctx: DemoContext) -> None:
    """`qm serve` as a subprocess on a free port, with `ctx.server_env` on top of the data
    dir's settings; waits until /healthz answers."""
    if ctx.settings is None:
        raise DemoFailure("the data dir is not initialized")
    port = _free_port()
    log_path = ctx.options.data_dir / "server.log"
    ctx.server_log = log_path.open("ab")
    command = [*qm_command(), "serve", "--host", "127.0.0.1", "--port", str(port)]
    env = server_environment(ctx.settings, ctx.server_env)
    if ctx.server is None:
        ctx.cleanups.append(lambda: stop_server(ctx))
    ctx.server = subprocess.Popen(command, env=env, stdout=ctx.server_log, stderr=subprocess.STDOUT)
    ctx.url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + SERVER_START_SECONDS
    while time.monotonic() < deadline:
        if ctx.server.poll() is not None:
            raise DemoFailure(f"qm serve exited with {ctx.server.returncode}:\n{tail(log_path)}")
        try:
            if httpx.get(f"{ctx.url}/healthz", timeout=2).status_code == 200:
                ctx.console.print(f"qm serve on {ctx.url} (pid {ctx.server.pid}, log {log_path})")
                return
        except httpx.TransportError:
            pass
        time.sleep(0.1)
    raise DemoFailure(f"qm serve did not answer within {SERVER_START_SECONDS:.0f}s")


def stop_server(ctx: DemoContext) -> None:
    server = ctx.server
    if server is not None and server.poll() is None:
        server.send_signal(signal.SIGTERM)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()
    if ctx.server_log is not None:
        ctx.server_log.close()
        ctx.server_log = None
