"""`qm events send` at 80 columns: rejections said once per reason, and a send that stops
(a server gone mid-send) says what was acknowledged before it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from quartermaster.cli import events as cli

QM = [sys.executable, "-c", "from quartermaster.cli.main import main; main()"]
THROTTLED = (
    "ingest: app 'bot' is throttled by a budget of team 'builders' until 2027-01-01 00:00 UTC "
    "(its amounts are shown to admin and finance keys): its events in this request are not "
    "counted; send them again after that"
)


def _file(tmp_path: Path, count: int) -> Path:
    path = tmp_path / "events.jsonl"
    lines = [orjson.dumps({"id": f"e{i}", "data": {"app_id": "bot"}}) for i in range(count)]
    path.write_bytes(b"\n".join(lines) + b"\n")
    return path


def _serve(monkeypatch: pytest.MonkeyPatch, events: Any) -> None:
    """`qm events send` against `events(request) -> Response` for POST /v1/events."""

    def handler(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/healthz":
            return httpx.Response(200, json={"status": "ok"})
        response: httpx.Response = events(request)
        return response

    def client(**_: Any) -> httpx.Client:
        return httpx.Client(transport=httpx.MockTransport(handler), base_url="http://qm")

    monkeypatch.setattr(cli, "api_client", client)
    monkeypatch.setattr(cli, "backoff_seconds", lambda *_args: 0.0)


def _send(path: Path, *args: str) -> Any:
    return CliRunner().invoke(cli.app, ["send", str(path), *args], env={"COLUMNS": "80"})


def _rejecting(message_of: Any) -> Any:
    def events(request: httpx.Request) -> httpx.Response:
        sent = orjson.loads(request.content)
        rejected = [
            {
                "index": i,
                "id": event["id"],
                "field": "data.app_id",
                "reason": "throttled",
                "message": message_of(event),
            }
            for i, event in enumerate(sent)
        ]
        return httpx.Response(200, json={"accepted": 0, "duplicates": 0, "rejected": rejected})

    return events


def test_a_throttled_file_lists_its_reason_once_with_a_count(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve(monkeypatch, _rejecting(lambda _event: THROTTLED))
    result = _send(_file(tmp_path, 1000), "--batch-size", "100")
    assert result.exit_code == 1, result.output
    output = result.output
    assert "rejected 1,000 events (1 reason):" in output
    assert "- throttled on data.app_id: 1,000 events, lines 1-1,000" in output
    words = " ".join(output.split())
    assert words.count("is throttled by a budget") == 1, output
    assert "line 1, id e0: ingest: app 'bot' is throttled" in words
    # The summary and one reason: a screen, not 20 copies of an 11-line message.
    assert len(output.splitlines()) < 20, output


def test_rejections_of_one_reason_show_a_few_distinct_messages(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Rate-limited messages differ in their wait: grouped by reason, a few messages shown.
    _serve(monkeypatch, _rejecting(lambda event: f"send again in {event['id']}s"))
    result = _send(_file(tmp_path, 50), "--batch-size", "10")
    assert result.exit_code == 1, result.output
    assert "- throttled on data.app_id: 50 events, lines 1-50" in result.output
    for shown in ("line 1, id e0: send again in e0s", "line 3, id e2: send again in e2s"):
        assert shown in result.output
    assert "e3s" not in result.output
    assert "and 47 other messages" in result.output


def test_line_runs_are_bounded() -> None:
    assert cli.line_runs([5, 1, 2, 3, 9]) == "1-3, 5, 9"
    assert cli.line_runs(list(range(1, 40, 2))) == "1, 3, 5, 7, 9, …"
    assert cli.line_runs([999, 1000, 1001]) == "999-1,001"


def test_a_server_gone_mid_send_is_retried_visibly_and_the_summary_is_printed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = threading.Lock()
    answered = [0]

    def events(request: httpx.Request) -> httpx.Response:
        with lock:
            answered[0] += 1
            if answered[0] > 3:  # the server dies after the third batch
                raise httpx.ConnectError("[Errno 111] Connection refused", request=request)
        count = len(orjson.loads(request.content))
        return httpx.Response(200, json={"accepted": count, "duplicates": 0, "rejected": []})

    _serve(monkeypatch, events)
    result = _send(
        _file(tmp_path, 1000), "--batch-size", "100", "--connections", "1", "--max-attempts", "3"
    )
    assert result.exit_code == 1, result.output
    words = " ".join(result.output.split())
    # Each retry is said (no bar is drawn off a terminal), then what was acknowledged.
    assert "retry 1: ConnectError: [Errno 111] Connection refused" in words
    assert "retry 2: ConnectError" in words
    assert "events.jsonl: 300 events acknowledged before the send stopped" in words
    # Two batches in flight (twice --connections are read ahead), each tried 3 times.
    assert "│ 300 │ 0 │ 0 │ 4 │" in words
    assert "stopped after 300 of 1,000 lines were acknowledged" in words
    assert "error: gave up after 3 attempts; last error: ConnectError" in words
    assert words.index("acknowledged before") < words.index("error: gave up")


def test_the_batches_answered_beside_the_one_that_failed_are_counted(tmp_path: Path) -> None:
    path = _file(tmp_path, 40)
    answered = threading.Event()

    def handler(request: httpx.Request) -> httpx.Response:
        sent = orjson.loads(request.content)
        if sent[0]["id"] == "e10":
            answered.wait(10)  # the batch after it is answered first
            return httpx.Response(500)
        if sent[0]["id"] == "e20":
            answered.set()
        return httpx.Response(200, json={"accepted": len(sent), "duplicates": 0, "rejected": []})

    with (
        httpx.Client(transport=httpx.MockTransport(handler), base_url="http://qm") as client,
        pytest.raises(cli.SendStopped, match="gave up after 1 attempts") as stopped,
    ):
        cli.send_batches(client, cli.read_batches(path, 10), max_attempts=1, connections=2)
    summary = stopped.value.summary
    # e0 and e20 were answered (e30 too, if it was started before the send stopped).
    assert summary.sent in (20, 30)
    assert summary.accepted == summary.sent


def test_the_advice_after_a_stopped_send_fits_why_it_stopped() -> None:
    _resend_advice = cli._resend_advice
    for status in (None, 500, 503, 429):
        assert _resend_advice(status) == "send the file again once the server answers"
    assert _resend_advice(401) == (
        "the server refused it (401): fix what it names, then send the file again"
    )
    assert _resend_advice(404).startswith("the server refused it (404)")


def _accepting(request: httpx.Request) -> httpx.Response:
    count = len(orjson.loads(request.content))
    return httpx.Response(200, json={"accepted": count, "duplicates": 0, "rejected": []})


def test_the_summary_counts_one_event_in_the_singular(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _serve(monkeypatch, _accepting)
    result = _send(_file(tmp_path, 1))
    assert result.exit_code == 0, result.output
    assert "events.jsonl: 1 event sent" in result.output


def test_an_event_too_large_for_any_request_is_not_counted_as_sent(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`half.jsonl: 8 events sent`, of which one was refused whole (payload_too_large)."""
    path = tmp_path / "half.jsonl"
    events = [{"id": f"e{i}", "pad": "x" * (5000 if i == 3 else 10)} for i in range(8)]
    path.write_bytes(b"\n".join(orjson.dumps(event) for event in events) + b"\n")

    def limited(request: httpx.Request) -> httpx.Response:
        if len(request.content) > 4000:
            error = {
                "code": "payload_too_large",
                "message": "the limit is 4,000 bytes (QM_MAX_BODY_BYTES): split the batch",
            }
            return httpx.Response(413, json={"error": error})
        return _accepting(request)

    _serve(monkeypatch, limited)
    result = _send(path, "--connections", "1")
    assert result.exit_code == 1, result.output  # the event too large is rejected
    words = " ".join(result.output.split())
    assert "half.jsonl: 7 events sent, 1 too large to send" in words
    assert "- payload_too_large: 1 event, line 4" in words


def test_a_signing_secret_without_its_key_id_names_its_variable(tmp_path: Path) -> None:
    result = CliRunner().invoke(
        cli.app,
        ["send", str(_file(tmp_path, 1))],
        env={"COLUMNS": "200", "QM_SIGNING_SECRET": "00" * 32, "QM_SIGNING_KEY_ID": None},
    )
    assert result.exit_code == 2
    assert "--secret-hex (QM_SIGNING_SECRET) is set without the other" in result.output


def test_a_server_that_cannot_be_reached_leaves_stdout_empty(tmp_path: Path) -> None:
    """A blank line (the progress bar's, stopped by the error) went to stdout first."""
    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        port = holder.getsockname()[1]  # bound, not listening: connections are refused
        env = {k: v for k, v in os.environ.items() if not k.startswith("QM_")}
        result = subprocess.run(
            [*QM, "events", "send", str(_file(tmp_path, 1))],
            env={**env, "QM_URL": f"http://127.0.0.1:{port}", "QM_API_KEY": "qm_x_y"},
            capture_output=True,
            text=True,
            timeout=120,
        )
    assert result.returncode == 1
    assert result.stdout == ""
    assert f"error: cannot reach the server at http://127.0.0.1:{port}" in result.stderr
