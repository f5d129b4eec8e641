"""`qm events send` at 80 columns: rejections said once per reason, and a send that stops
(a server gone mid-send) says what was acknowledged before it."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
from typer.testing import CliRunner

from quartermaster.cli import events as cli
from quartermaster.errors import PayloadTooLargeError
from quartermaster.metering.body import parse_events

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
    lost = (
        "send the file again once the server answers (what this send stored comes back as "
        "duplicate, counted once)"
    )
    for status in (None, 500, 503):
        # An answer lost may have been stored: duplicates are promised whatever was said.
        assert _resend_advice(status, acknowledged=False) == lost
    assert _resend_advice(429, acknowledged=False) == "send the file again once the server answers"
    # A refusal stores nothing: duplicates only of what was acknowledged before it.
    assert _resend_advice(401, acknowledged=False) == (
        "the server refused it (401): fix what it names, then send the file again"
    )
    assert _resend_advice(403, acknowledged=True) == (
        "the server refused it (403): fix what it names, then send the file again (the events "
        "acknowledged before come back as duplicates, counted once)"
    )
    assert _resend_advice(404, acknowledged=False).startswith("the server refused it (404)")


def test_a_wrong_api_key_is_not_said_to_have_stored_anything(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    unknown = {"error": {"code": "unauthorized", "message": "unknown API key"}}
    _serve(monkeypatch, lambda _request: httpx.Response(401, json=unknown))
    result = _send(_file(tmp_path, 5), "--batch-size", "1")
    assert result.exit_code == 1, result.output
    words = " ".join(result.output.split())
    assert "no events were acknowledged before the send stopped" in words
    assert "the server refused it (401): fix what it names, then send the file again" in words
    assert "duplicate" not in words


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


def _ok(sent: list[Any], rejected: list[dict[str, Any]] | None = None) -> httpx.Response:
    refused = rejected or []
    body = {"accepted": len(sent) - len(refused), "duplicates": 0, "rejected": refused}
    return httpx.Response(200, json=body)


def test_ctrl_c_stops_a_send_waiting_to_retry_and_says_what_was_acknowledged(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Ctrl-C while a batch waits to be retried: the wait ends at once (it had lasted until the
    last attempt), and the summary of the batches answered, their rejections included, is
    printed with the advice to send again, exit 130 as for any command ended by Ctrl-C."""
    refused_once = threading.Event()

    def events(request: httpx.Request) -> httpx.Response:
        sent = orjson.loads(request.content)
        if sent[0]["id"] == "e3":  # the server refuses it until Ctrl-C, asking for 20 s
            refused_once.set()
            return httpx.Response(503, headers={"Retry-After": "20"})
        if sent[0]["id"] == "e1":
            rejection = {"index": 0, "id": "e1", "field": "type", "reason": "invalid_envelope"}
            return _ok(sent, [{**rejection, "message": "type: unknown"}])
        return _ok(sent)

    _serve(monkeypatch, events)
    monkeypatch.setattr(cli, "backoff_seconds", lambda *_args: 20.0)
    read_batches = cli.read_batches

    def interrupted(path: Path, size: int) -> Any:
        # Ctrl-C comes in the main thread, here while it reads the file on.
        for number, batch in enumerate(read_batches(path, size)):
            if number == 4:
                assert refused_once.wait(10)
                raise KeyboardInterrupt
            yield batch

    monkeypatch.setattr(cli, "read_batches", interrupted)
    started = time.monotonic()
    result = _send(_file(tmp_path, 10), "--batch-size", "1", "--connections", "2")
    assert time.monotonic() - started < 10, result.output
    assert result.exit_code == 130, result.output
    words = " ".join(result.output.split())
    # e0, e1 and e2 answered (the one waiting to be retried, e3, is not counted).
    assert "events.jsonl: 3 events acknowledged before the send was interrupted" in words
    assert "│ 2 │ 0 │ 1 │" in words
    assert "- invalid_envelope on type: 1 event, line 2" in words
    assert (
        "interrupted after 3 of 10 lines were acknowledged: send the file again to send the "
        "rest (what this send stored comes back as duplicate, counted once)"
    ) in words


def test_an_interrupted_send_counts_the_batches_answered_in_flight(tmp_path: Path) -> None:
    """Ctrl-C in the main thread (here from the progress callback) while batches are in
    flight: those answered are counted, so the summary says what the server stored."""
    path = _file(tmp_path, 40)
    calls = [0]

    def on_batch(_lines: int) -> None:
        calls[0] += 1
        if calls[0] == 1:
            raise KeyboardInterrupt

    def handler(request: httpx.Request) -> httpx.Response:
        return _ok(orjson.loads(request.content))

    with (
        httpx.Client(transport=httpx.MockTransport(handler), base_url="http://qm") as client,
        pytest.raises(cli.SendInterrupted) as interrupted,
    ):
        cli.send_batches(
            client, cli.read_batches(path, 10), max_attempts=1, connections=2, on_batch=on_batch
        )
    summary = interrupted.value.summary
    # The first batch, and those in flight then (read ahead: up to three more).
    assert 20 <= summary.sent == summary.accepted <= 40
    assert isinstance(interrupted.value, KeyboardInterrupt)


def test_a_413_naming_the_event_limit_is_learnt(tmp_path: Path) -> None:
    """With QM_MAX_BATCH_EVENTS=50 and batches of 1,000, every batch was refused and halved
    again (155 refused requests for 5,000 events): the limit the first 413 names is kept."""
    path = _file(tmp_path, 5000)
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent = orjson.loads(request.content)
        sizes.append(len(sent))
        try:
            parse_events(request.content, "application/cloudevents-batch+json", max_events=50)
        except PayloadTooLargeError as exc:  # the server's own wording
            error = {"code": "payload_too_large", "message": exc.message}
            return httpx.Response(413, json={"error": error})
        return _ok(sent)

    with httpx.Client(transport=httpx.MockTransport(handler), base_url="http://qm") as client:
        summary = cli.send_batches(client, cli.read_batches(path, 1000), max_attempts=1)
    assert (summary.sent, summary.accepted, summary.rejected) == (5000, 5000, [])
    assert [size for size in sizes if size > 50] == [1000]  # one refused request
    assert len(sizes) == 1 + 100
    message = "batch has 60 events; the limit is 1,050 per request (QM_MAX_BATCH_EVENTS): split"
    assert cli.event_limit(message) == 1050
    assert cli.event_limit("the limit is 4,000 bytes (QM_MAX_BODY_BYTES)") is None


def test_a_byte_order_mark_before_the_first_line_is_not_part_of_it(tmp_path: Path) -> None:
    path = tmp_path / "bom.jsonl"
    path.write_bytes(b'\xef\xbb\xbf{"id": "e0"}\n{"id": "e1"}\n\xef\xbb\xbf{"id": "e2"}\n')
    [batch] = cli.read_batches(path, 10)
    assert batch.events == [(1, {"id": "e0"}), (2, {"id": "e1"})]
    # Only the file's first line: a mark inside the file is a line that is not JSON.
    assert [(r["line"], r["reason"]) for r in batch.unreadable] == [(3, "invalid_json")]


def _nested(levels: int) -> object:
    """A value of `levels` arrays inside each other."""
    value: object = 1
    for _ in range(levels):
        value = [value]
    return value


def _written(levels: int) -> bytes:
    return b"[" * levels + b"1" + b"]" * levels


def test_an_event_nested_deep_is_sent_and_one_too_deep_refused_alone(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An event of 254 levels (the server takes it) was one level too deep for orjson inside
    the batch's array: a traceback, nothing sent. One orjson cannot write is refused alone."""
    # Written by hand where orjson writes no such event, as a sender's file would hold it.
    lines = [
        orjson.dumps({"id": "e0"}),
        orjson.dumps({"id": "e1", "xdeep": _nested(253)}),  # 254 levels, the event the first
        b'{"id": "e2", "data": {"app_id": "bot", "tags": ' + _written(300) + b"}}",
        b'{"id": "e3", "xdeep": ' + _written(400) + b"}",
        orjson.dumps({"id": "e4"}),
    ]
    path = tmp_path / "deep.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    received: list[str] = []

    def accepting(request: httpx.Request) -> httpx.Response:
        sent = orjson.loads(request.content)
        received.extend(event["id"] for event in sent)
        return _ok(sent)

    _serve(monkeypatch, accepting)
    result = _send(path, "--connections", "1")
    assert result.exit_code == 1, result.output  # two events refused
    assert received == ["e0", "e1", "e4"]
    words = " ".join(result.output.split())
    assert "deep.jsonl: 3 events sent" in words
    assert "- invalid_data on data.tags: 1 event, line 3" in words
    assert "- invalid_envelope on xdeep: 1 event, line 4" in words
    assert "xdeep: arrays and objects are nested too deep to be sent (at most 254 levels" in words


def test_retries_are_numbered_once_each_with_several_connections(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    lock = threading.Lock()
    tried: set[str] = set()

    def events(request: httpx.Request) -> httpx.Response:
        sent = orjson.loads(request.content)
        with lock:
            first = sent[0]["id"] not in tried
            tried.add(sent[0]["id"])
        if first:
            return httpx.Response(503)
        return _ok(sent)

    _serve(monkeypatch, events)
    result = _send(_file(tmp_path, 40), "--batch-size", "1", "--connections", "4")
    assert result.exit_code == 0, result.output
    numbers = [int(n) for n in re.findall(r"^retry (\d+): HTTP 503", result.output, re.M)]
    assert sorted(numbers) == list(range(1, 41))


def test_an_event_naming_another_key_is_not_signed_with_this_one(tmp_path: Path) -> None:
    """--key-id signs the events that carry no signature: one that names another key in
    qmkeyid is refused, not re-signed with a key its sender did not choose."""
    events = [{"id": "e0"}, {"id": "e1", "qmkeyid": "sk_other"}, {"id": "e2", "qmkeyid": "sk_1"}]
    path = tmp_path / "keys.jsonl"
    path.write_bytes(b"\n".join(orjson.dumps(event) for event in events) + b"\n")
    received: list[dict[str, Any]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent = orjson.loads(request.content)
        received.extend(sent)
        return _ok(sent)

    secret = bytes(32)

    def sign(event: object) -> object:
        return cli.sign_unsigned(event, key_id="sk_1", secret=secret)

    with httpx.Client(transport=httpx.MockTransport(handler), base_url="http://qm") as client:
        summary = cli.send_batches(client, cli.read_batches(path, 10), max_attempts=1, prepare=sign)
    assert [(e["id"], e["qmkeyid"]) for e in received] == [("e0", "sk_1"), ("e2", "sk_1")]
    assert all("qmsignature" in event for event in received)
    [refused] = summary.rejected
    assert (refused["line"], refused["id"], refused["reason"], refused["field"]) == (
        2,
        "e1",
        "missing_signature",
        "qmkeyid",
    )
    assert refused["message"].startswith(
        "qmkeyid: the event names the key 'sk_other' but carries no qmsignature; "
        "--key-id 'sk_1' signs only events that name no key or that key"
    )


class _Log:
    """GET /v1/events as the server answers it (metering/router.py), over a list."""

    def __init__(self) -> None:
        self.events: list[dict[str, Any]] = []

    def add(self, count: int) -> None:
        start = len(self.events)
        for position in range(start + 1, start + count + 1):
            event = {"id": f"e{position}", "type": "qm.invocation.usage", "data": {}}
            item = {"position": position, "late": False, "app_id": "bot", "event": event}
            self.events.append(item)

    def page(self, request: httpx.Request) -> httpx.Response:
        limit = int(request.url.params["limit"])
        after = request.url.params.get("after")
        if after is None:
            events = self.events[-limit:]
        else:
            events = [e for e in self.events if e["position"] > int(after)][:limit]
        next_after = events[-1]["position"] if events else (int(after) if after else None)
        return httpx.Response(200, json={"events": events, "next_after": next_after})


def test_tail_follow_from_an_empty_log_prints_every_event(tmp_path: Path) -> None:
    """The first page of an empty log has no position: the polls asked for the newest page
    again, and of 2,500 events sent at once only the last 1,000 were printed."""
    log = _Log()
    lines: list[str] = []
    polls = iter([True] * 5 + [False])
    with httpx.Client(transport=httpx.MockTransport(log.page), base_url="http://qm") as client:
        cli.tail_events(
            client,
            limit=20,
            follow=True,
            interval=1.0,
            emit=lines.append,
            keep_going=lambda: next(polls),
            sleep=lambda _seconds: log.add(2500) if not log.events else None,
        )
    assert len(lines) == 2500
    assert "id=e1 " in lines[0]
    assert "id=e2500 " in lines[-1]


def test_tail_follow_keeps_polling_through_a_server_restart() -> None:
    log = _Log()
    log.add(2)
    outcomes: list[Any] = [
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.ConnectError("[Errno 111] Connection refused"),
        httpx.Response(503, headers={"Retry-After": "7"}, json={"error": {"message": "busy"}}),
    ]

    def handler(request: httpx.Request) -> httpx.Response:
        if "after" in request.url.params and outcomes:
            outcome = outcomes.pop(0)
            if isinstance(outcome, Exception):
                raise outcome
            return outcome  # type: ignore[no-any-return]
        return log.page(request)

    lines: list[str] = []
    said: list[str] = []
    slept: list[float] = []
    polls = iter([True] * 6 + [False])

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        if len(slept) == 3:
            log.add(3)  # sent while the server restarted

    with httpx.Client(transport=httpx.MockTransport(handler), base_url="http://qm") as client:
        last = cli.tail_events(
            client,
            limit=20,
            follow=True,
            interval=1.0,
            emit=lines.append,
            keep_going=lambda: next(polls),
            sleep=sleep,
            warn=said.append,
        )
    assert last == 5
    assert [line.split("id=")[1].split()[0] for line in lines] == [f"e{i}" for i in range(1, 6)]
    assert said == [
        "cannot reach the server at http://qm: [Errno 111] Connection refused; reconnecting… "
        "(Ctrl-C stops)",
        "error 503: busy; reconnecting… (Ctrl-C stops)",
        "reconnected; continuing after position 2",
    ]
    # The interval between polls, the server's Retry-After after its 503.
    assert slept[:4] == [1.0, 1.0, 1.0, 7.0]


def test_tail_without_follow_still_ends_at_a_failed_poll(monkeypatch: pytest.MonkeyPatch) -> None:
    def client(**_: Any) -> httpx.Client:
        transport = httpx.MockTransport(lambda _request: httpx.Response(503, text="down"))
        return httpx.Client(transport=transport, base_url="http://qm")

    monkeypatch.setattr(cli, "api_client", client)
    result = CliRunner().invoke(cli.app, ["tail"], env={"COLUMNS": "80"})
    assert result.exit_code == 1
    assert "error 503: down" in result.output
