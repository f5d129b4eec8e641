"""Shipping the audit log: JSONL and webhook sinks, cursors, and a stuck sink that must not
stall the operations being audited."""

from __future__ import annotations

import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any, ClassVar

import pytest

from quartermaster.audit.chain import ChainRecord, ChainVerifier
from quartermaster.audit.log import append_audit
from quartermaster.audit.shipping import (
    AuditShipper,
    JsonlFileSink,
    ship_once,
    sink_from_url,
)
from quartermaster.config import ConfigurationError
from quartermaster.runtime import Runtime


def _append(runtime: Runtime, tenant_id: str, count: int) -> None:
    for index in range(count):
        with runtime.session_factory() as session:
            append_audit(
                tenant_id,
                action="read",
                outcome="ok",
                actor="app:x",
                path=f"apps/x/k{index}",
                session=session,
            )
            session.commit()


def _shipped(path: Path, tenant_id: str) -> list[ChainRecord]:
    if not path.exists():
        return []
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return [ChainRecord.from_json(line) for line in lines if line["tenant_id"] == tenant_id]


def test_jsonl_sink_ships_each_record_once_and_the_copy_verifies(
    runtime: Runtime, tmp_path: Path
) -> None:
    tenant_id = f"ship-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "audit.jsonl"
    sink = sink_from_url(f"file://{out}")
    _append(runtime, tenant_id, 5)
    ship_once(runtime.session_factory, sink, batch=2)  # two per tenant per pass
    ship_once(runtime.session_factory, sink, batch=100)
    _append(runtime, tenant_id, 3)
    ship_once(runtime.session_factory, sink, batch=100)
    ship_once(runtime.session_factory, sink, batch=100)
    records = _shipped(out, tenant_id)
    assert [r.seq for r in records] == list(range(1, 9))
    verifier = ChainVerifier()
    for record in records:
        verifier.feed(record)
    assert verifier.finish().ok


def test_a_stuck_sink_does_not_stall_the_broker(runtime: Runtime, tmp_path: Path) -> None:
    release = threading.Event()
    entered = threading.Event()

    class StuckSink(JsonlFileSink):
        def write(self, records: list[dict[str, Any]]) -> None:
            entered.set()
            release.wait(timeout=60)
            super().write(records)

    tenant_id = f"stuck-{uuid.uuid4().hex[:8]}"
    out = tmp_path / "stuck.jsonl"
    _append(runtime, tenant_id, 1)
    shipper = AuditShipper(
        runtime.session_factory, StuckSink(out), interval_seconds=0.05, batch=500
    )
    shipper.start()
    try:
        assert entered.wait(timeout=10)
        started = time.monotonic()
        _append(runtime, tenant_id, 20)  # while the shipper hangs in the sink
        elapsed = time.monotonic() - started
        assert elapsed < 5, f"20 audited operations took {elapsed:.1f}s behind a stuck sink"
        assert _shipped(out, tenant_id) == []
        release.set()
        deadline = time.monotonic() + 20
        while len(_shipped(out, tenant_id)) < 21 and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        release.set()
        shipper.stop()
    assert [r.seq for r in _shipped(out, tenant_id)] == list(range(1, 22))


class _Receiver(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, Any]]] = []
    status: ClassVar[int] = 200

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        type(self).received.extend(json.loads(body)["records"])
        self.send_response(type(self).status)
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        return


def test_webhook_sink_posts_batches_and_retries_after_an_error(runtime: Runtime) -> None:
    tenant_id = f"hook-{uuid.uuid4().hex[:8]}"
    _Receiver.received = []
    _Receiver.status = 503
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Receiver)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        sink = sink_from_url(f"http://127.0.0.1:{server.server_port}/audit")
        _append(runtime, tenant_id, 3)
        with pytest.raises(RuntimeError, match="answered 503"):
            ship_once(runtime.session_factory, sink, batch=100)
        _Receiver.status = 200
        _Receiver.received = []
        while ship_once(runtime.session_factory, sink, batch=100):
            pass
    finally:
        server.shutdown()
        server.server_close()
    mine = [r["seq"] for r in _Receiver.received if r["tenant_id"] == tenant_id]
    assert mine == [1, 2, 3]


def test_unknown_sink_scheme_is_refused() -> None:
    with pytest.raises(ConfigurationError, match="file:///"):
        sink_from_url("ftp://example/audit")
