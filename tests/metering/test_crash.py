"""Crash test: `qm serve` is killed with SIGKILL twice while a client streams signed batches
with retries; afterwards every acknowledged event is stored exactly once and the client's
accounting matches the event log (and the reconciliation counters)."""

from __future__ import annotations

import os
import random
import subprocess
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import orjson
import pytest
from sqlalchemy import func, select
from typer.testing import CliRunner

from quartermaster.bus.models import EventLogEntry
from quartermaster.cli.events import post_batch
from quartermaster.cli.main import app as qm_app
from quartermaster.config import Settings
from quartermaster.metering.models import ReconciliationCounter
from quartermaster.runtime import build_runtime
from quartermaster.tenancy.service import bootstrap_tenant
from tests.conftest import free_port
from tests.metering.conftest import create_app_with_key, usage_event

BATCHES = 24
EVENTS_PER_BATCH = 150
KILL_AFTER_ACKED = (5, 13)  # kill when the client has this many batches acknowledged
START_UP_SECONDS = 120


def qm_command() -> list[str]:
    script = Path(sys.executable).with_name("qm")
    return [str(script)] if script.exists() else [sys.executable, "-m", "quartermaster.cli.main"]


@dataclass
class ClientLedger:
    acknowledged: list[dict[str, int]] = field(default_factory=list)
    retries: int = 0
    error: BaseException | None = None


def start_server(env: dict[str, str], port: int) -> subprocess.Popen[bytes]:
    process = subprocess.Popen(
        [*qm_command(), "serve", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    # Start-up (imports, migrations check) passed 30 s on the 2-core machine under other load.
    deadline = time.monotonic() + START_UP_SECONDS
    while time.monotonic() < deadline:
        assert process.poll() is None, "qm serve exited during start-up"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=1).status_code == 200:
                return process
        except httpx.TransportError:
            time.sleep(0.05)
    process.kill()
    raise AssertionError(f"qm serve did not start within {START_UP_SECONDS} s")


def stream_batches(url: str, token: str, bodies: list[bytes], ledger: ClientLedger) -> None:
    def note_retry(_reason: str) -> None:
        ledger.retries += 1

    try:
        with httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {token}"}, timeout=10
        ) as client:
            for body in bodies:
                response = post_batch(
                    client,
                    body,
                    # ~2 minutes of retries: longer than a restart takes, even on a busy machine
                    max_attempts=480,
                    sleep=lambda _s: time.sleep(0.25),
                    on_retry=note_retry,
                )
                assert response.status_code == 200, response.text
                report = response.json()
                assert report["rejected"] == [], report["rejected"][:3]
                ledger.acknowledged.append(
                    {"accepted": report["accepted"], "duplicates": report["duplicates"]}
                )
    except BaseException as exc:  # surfaced by the test thread
        ledger.error = exc


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_acknowledged_events_survive_sigkill_exactly_once(
    fresh_db_url: str, tmp_path: Path
) -> None:
    data_dir = tmp_path / "qm"
    env = {
        **os.environ,
        "QM_DATA_DIR": str(data_dir),
        "QM_DATABASE_URL": fresh_db_url,
        "QM_PIPELINE_ENABLED": "false",
    }
    # `qm init` in-process (one interpreter start fewer); the tenant as `qm tenant create`
    # makes it. The server under test is the real `qm serve`, in its own process.
    initialized = CliRunner().invoke(qm_app, ["init"], env=env)
    assert initialized.exit_code == 0, initialized.output
    settings = Settings(data_dir=data_dir, database_url=fresh_db_url)  # type: ignore[call-arg]
    runtime = build_runtime(settings, migrate=False)
    try:
        with runtime.session_factory() as session:
            token = bootstrap_tenant("crashco", session=session).token
        bot = create_app_with_key(runtime, "crashco", "crash-bot", require_signatures=True)
        sent_ids: list[str] = []
        bodies = []
        for _ in range(BATCHES):
            batch = [
                bot.sign(usage_event(bot.app_id, event_id=uuid.uuid4().hex))
                for _ in range(EVENTS_PER_BATCH)
            ]
            sent_ids.extend(e["id"] for e in batch)
            bodies.append(orjson.dumps(batch))

        port = free_port()
        url = f"http://127.0.0.1:{port}"
        server = start_server(env, port)
        ledger = ClientLedger()
        client = threading.Thread(target=stream_batches, args=(url, token, bodies, ledger))
        client.start()
        kills = 0
        try:
            for threshold in KILL_AFTER_ACKED:
                while len(ledger.acknowledged) < threshold and client.is_alive():
                    time.sleep(0.005)
                time.sleep(random.uniform(0, 0.03))  # land somewhere inside a request
                server.kill()  # SIGKILL: no shutdown handlers, no flush
                server.wait()
                kills += 1
                server = start_server(env, port)
            client.join(timeout=300)
        finally:
            server.kill()
            server.wait()
        assert ledger.error is None, repr(ledger.error)
        assert not client.is_alive()
        assert kills == 2
        assert ledger.retries >= 2, "the kills did not interrupt the stream"
        assert len(ledger.acknowledged) == BATCHES

        with runtime.session_factory() as session:
            stored_ids = list(
                session.scalars(
                    select(EventLogEntry.event_id).where(EventLogEntry.tenant_id == "crashco")
                )
            )
            counted_accepted = session.scalar(
                select(func.sum(ReconciliationCounter.count)).where(
                    ReconciliationCounter.tenant_id == "crashco",
                    ReconciliationCounter.stage == "accepted",
                )
            )
        assert len(stored_ids) == len(set(stored_ids)), "an event was stored twice"
        assert set(stored_ids) == set(sent_ids), "an acknowledged event is missing"
        acknowledged = sum(a["accepted"] + a["duplicates"] for a in ledger.acknowledged)
        assert acknowledged == len(stored_ids) == BATCHES * EVENTS_PER_BATCH
        assert sum(a["accepted"] for a in ledger.acknowledged) <= len(stored_ids)
        assert counted_accepted == len(stored_ids)
    finally:
        runtime.close()
