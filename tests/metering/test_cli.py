"""`qm events send|tail` and `qm reconciliation` against a live server, plus the retry logic."""

from __future__ import annotations

import re
import threading
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
import orjson
import pytest
import typer
from rich.console import Console
from typer.testing import CliRunner

from quartermaster.cli import events as cli
from tests.conftest import LiveServer, TenantHandle, free_port
from tests.metering.conftest import AppHandle, usage_event

runner = CliRunner()
# `qm reconciliation` is a command of `qm` itself: a one-command app runs it here.
reconciliation_app = typer.Typer()
reconciliation_app.command()(cli.reconciliation)


def env(live_server: LiveServer, tenant: TenantHandle) -> dict[str, str]:
    return {"QM_URL": live_server.url, "QM_API_KEY": tenant.admin_token, "COLUMNS": "200"}


def write_jsonl(path: Path, lines: list[Any]) -> Path:
    path.write_bytes(b"\n".join(orjson.dumps(x) if not isinstance(x, bytes) else x for x in lines))
    return path


# Rich reads "[beta]" as a style tag and fails on a closing tag that was never opened.
_ODD_ID = "evt-[beta]-x[/y]"


def test_send_signs_batches_and_summarizes(
    tmp_path: Path,
    live_server: LiveServer,
    tenant: TenantHandle,
    make_app: Callable[..., AppHandle],
) -> None:
    bot = make_app(require_signatures=True)
    good = [usage_event(bot.app_id) for _ in range(4)]
    unknown_type = {**usage_event(bot.app_id), "type": "qm.nope", "id": _ODD_ID}
    file = write_jsonl(
        tmp_path / "events.jsonl", [good[0], good[1], b"", unknown_type, good[2], good[3]]
    )
    args = ["send", str(file), "--batch-size", "2", "--key-id", bot.key_id]
    result = runner.invoke(
        cli.app, [*args, "--secret-hex", bot.secret.hex()], env=env(live_server, tenant)
    )
    assert result.exit_code == 1, result.output  # one event was rejected
    assert "5 events sent" in result.output
    summary_row = next(line for line in result.output.splitlines() if "│" in line)
    assert [cell.strip() for cell in summary_row.split("│")[1:5]] == ["4", "0", "1", "0"]
    assert "- unknown_type on type: 1 event, line 4" in result.output  # the file's line
    assert f"line 4, id {_ODD_ID}: " in result.output  # shown as sent, not read as markup

    # The key and its secret from the environment: the same batch again, all duplicates.
    signing = {"QM_SIGNING_KEY_ID": bot.key_id, "QM_SIGNING_SECRET": bot.secret.hex()}
    again = runner.invoke(
        cli.app, ["send", str(file), "--batch-size", "2"], env=env(live_server, tenant) | signing
    )
    row = next(line for line in again.output.splitlines() if "│" in line)
    assert [cell.strip() for cell in row.split("│")[1:4]] == ["0", "4", "1"]

    unsigned = runner.invoke(cli.app, ["send", str(file)], env=env(live_server, tenant))
    assert unsigned.exit_code == 1  # the app requires signatures, resent or not
    # Each reason once, with its count and lines (the unknown type on line 4 is unsigned too).
    assert unsigned.output.count("missing_signature") == 1
    assert "- missing_signature on qmsignature: 4 events, lines 1-2, 5-6" in unsigned.output


def test_send_keeps_the_valid_lines_beside_a_malformed_one(
    tmp_path: Path,
    live_server: LiveServer,
    tenant: TenantHandle,
    make_app: Callable[..., AppHandle],
) -> None:
    bot = make_app()
    good = [usage_event(bot.app_id) for _ in range(3)]
    not_utf8 = b'{"id": "\xff\xfe"}'
    huge = orjson.dumps(usage_event(bot.app_id)).replace(b'"tokens":10', b'"tokens":1e400')
    lines = [good[0], b'{"id": ', good[1], b"not json", not_utf8, good[2], huge]
    file = write_jsonl(tmp_path / "bad.jsonl", lines)
    result = runner.invoke(
        cli.app, ["send", str(file)], env=env(live_server, tenant) | {"COLUMNS": "300"}
    )
    assert result.exit_code == 1, result.output  # three lines were rejected
    assert "3 events sent" in result.output
    summary_row = next(line for line in result.output.splitlines() if "│" in line)
    assert [cell.strip() for cell in summary_row.split("│")[1:4]] == ["3", "0", "4"]
    assert "- invalid_json: 3 events, lines 2, 4-5" in result.output  # the file's lines
    assert "- invalid_data: 1 event, line 7" in result.output
    assert "line 7: the number at column" in result.output
    assert re.search(r"^ +line 2: not valid JSON", result.output, re.MULTILINE)
    assert re.search(r"^ +line 4: not valid JSON", result.output, re.MULTILINE)
    # orjson said "surrogates not allowed (column 1)" of a line whose bad byte is its 9th
    assert "line 5: not valid UTF-8: byte 0xff at byte 8 of the line" in result.output
    with httpx.Client(base_url=live_server.url, headers=tenant.headers, timeout=60) as client:
        stored = client.get("/v1/events", params={"limit": 10}).json()["events"]
    assert {e["event"]["id"] for e in stored} >= {event["id"] for event in good}


def test_send_names_a_file_that_does_not_exist(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere.jsonl"
    result = runner.invoke(cli.app, ["send", str(missing)], env={"QM_API_KEY": "qm_x_y"})
    assert result.exit_code == 2
    assert "does not exist" in result.output


def test_send_of_a_file_with_no_json_line_sends_nothing(
    tmp_path: Path, live_server: LiveServer, tenant: TenantHandle
) -> None:
    file = write_jsonl(tmp_path / "bad.jsonl", [b'{"id": '])
    result = runner.invoke(
        cli.app, ["send", str(file)], env=env(live_server, tenant) | {"COLUMNS": "300"}
    )
    assert result.exit_code == 1
    assert "0 events sent" in result.output
    assert "invalid_json" in result.output


def test_send_to_no_server_stops_at_once_instead_of_retrying(tmp_path: Path) -> None:
    """Retries are for a server that goes away mid-send; `qm` then names the URL (main)."""
    file = write_jsonl(tmp_path / "events.jsonl", [usage_event("bot")])
    unreachable = {"QM_URL": f"http://127.0.0.1:{free_port()}", "QM_API_KEY": "qm_x_y"}
    started = time.monotonic()
    result = runner.invoke(cli.app, ["send", str(file)], env=unreachable)
    assert isinstance(result.exception, httpx.ConnectError)
    assert time.monotonic() - started < 10  # the backoff of 8 attempts is about a minute


def test_send_with_a_wrong_api_key_says_so_once(
    tmp_path: Path, live_server: LiveServer, tenant: TenantHandle
) -> None:
    file = write_jsonl(tmp_path / "events.jsonl", [usage_event("bot") for _ in range(8)])
    wrong = {"QM_URL": live_server.url, "QM_API_KEY": "qm_nope_nope", "COLUMNS": "200"}
    result = runner.invoke(cli.app, ["send", str(file), "--batch-size", "1"], env=wrong)
    assert result.exit_code == 1
    said = " ".join(result.output.split())
    assert said.count("the server answered 401") == 1, result.output
    assert "error: error" not in said
    assert "the server refused it (401): fix what it names, then send the file again" in said
    assert "once the server answers" not in said


@pytest.mark.parametrize(
    ("signing", "expected"),
    [
        (
            {"QM_SIGNING_KEY_ID": "sk_1"},
            "--key-id (QM_SIGNING_KEY_ID) is set without the other: --key-id "
            "(QM_SIGNING_KEY_ID) and --secret-hex (QM_SIGNING_SECRET) go together",
        ),
        (
            {"QM_SIGNING_KEY_ID": "sk_1", "QM_SIGNING_SECRET": "abcd"},
            "--secret-hex (QM_SIGNING_SECRET) has 4 hex characters; a signing key's secret has 64",
        ),
        (
            {"QM_SIGNING_KEY_ID": "sk_1", "QM_SIGNING_SECRET": "xyz"},
            "--secret-hex (QM_SIGNING_SECRET) is not hexadecimal",
        ),
    ],
)
def test_send_refuses_half_a_signing_key_or_a_secret_of_the_wrong_size(
    tmp_path: Path, signing: dict[str, str], expected: str
) -> None:
    file = write_jsonl(tmp_path / "events.jsonl", [usage_event("bot")])
    environment = {"QM_API_KEY": "qm_x_y", "COLUMNS": "300", **signing}
    result = runner.invoke(cli.app, ["send", str(file)], env=environment)
    assert result.exit_code == 2
    assert expected in " ".join(result.output.replace("│", " ").split()), result.output


def _transport(outcomes: list[Any]) -> httpx.MockTransport:
    def handler(request: httpx.Request) -> httpx.Response:
        outcome = outcomes.pop(0)
        if isinstance(outcome, Exception):
            raise outcome
        return outcome  # type: ignore[no-any-return]

    return httpx.MockTransport(handler)


def test_post_batch_retries_connection_errors_5xx_and_429() -> None:
    ok = httpx.Response(200, json={"accepted": 1, "duplicates": 0, "rejected": []})
    outcomes: list[Any] = [
        httpx.ConnectError("refused"),
        httpx.Response(503),
        httpx.Response(429, headers={"Retry-After": "7"}),
        ok,
    ]
    slept: list[float] = []
    reasons: list[str] = []
    with httpx.Client(transport=_transport(outcomes), base_url="http://qm") as client:
        response = cli.post_batch(
            client, b"[]", max_attempts=5, sleep=slept.append, on_retry=reasons.append
        )
    assert response.status_code == 200
    assert reasons == ["ConnectError: refused", "HTTP 503", "HTTP 429"]
    assert 0.25 <= slept[0] <= 0.5
    assert 0.5 <= slept[1] <= 1.0
    assert slept[2] == 7.0  # the server's Retry-After


def test_post_batch_does_not_retry_client_errors_and_gives_up_eventually() -> None:
    with httpx.Client(
        transport=_transport([httpx.Response(413, json={"error": {"message": "too big"}})]),
        base_url="http://qm",
    ) as client:
        assert (
            cli.post_batch(client, b"[]", max_attempts=3, sleep=lambda _s: None).status_code == 413
        )
    with (
        httpx.Client(
            transport=_transport([httpx.Response(500)] * 3), base_url="http://qm"
        ) as client,
        pytest.raises(cli.DeliveryError, match="gave up after 3 attempts; last error: HTTP 500"),
    ):
        cli.post_batch(client, b"[]", max_attempts=3, sleep=lambda _s: None)


def test_post_batch_stops_at_a_throttle_longer_than_it_waits_and_says_why() -> None:
    """A budget throttle's 429 says until when (Retry-After: the period's end): the send stops
    at once with the server's message rather than retrying for minutes saying "HTTP 429"."""
    message = "ingest for app 'sb' is throttled by a budget: ... until 2027-01-01 00:00 UTC"
    throttled = httpx.Response(
        429, headers={"Retry-After": "2419200"}, json={"error": {"message": message}}
    )
    slept: list[float] = []
    with (
        httpx.Client(transport=_transport([throttled]), base_url="http://qm") as client,
        pytest.raises(cli.DeliveryError) as raised,
    ):
        cli.post_batch(client, b"[]", max_attempts=8, sleep=slept.append)
    assert slept == []
    text = str(raised.value)
    assert text.startswith(f"HTTP 429: {message}; the server asks to retry in 2,419,200s")
    assert "send it again later" in text
    # A short Retry-After (a rate limit) is waited out, and the message kept for the reason.
    limited = httpx.Response(
        429, headers={"Retry-After": "2"}, json={"error": {"message": "rate limit"}}
    )
    ok = httpx.Response(200, json={"accepted": 1, "duplicates": 0, "rejected": []})
    reasons: list[str] = []
    with httpx.Client(transport=_transport([limited, ok]), base_url="http://qm") as client:
        response = cli.post_batch(
            client, b"[]", max_attempts=3, sleep=slept.append, on_retry=reasons.append
        )
    assert response.status_code == 200
    assert (slept, reasons) == ([2.0], ["HTTP 429: rate limit"])


def test_backoff_grows_exponentially_and_is_capped() -> None:
    assert [cli.backoff_seconds(n) <= 0.5 * 2 ** (n - 1) for n in (1, 2, 3)] == [True] * 3
    assert cli.backoff_seconds(20) <= cli.MAX_BACKOFF_SECONDS
    assert cli.backoff_seconds(1, "120") == cli.MAX_BACKOFF_SECONDS


def test_tail_prints_recent_events_then_follows(
    live_server: LiveServer, tenant: TenantHandle, make_app: Callable[..., AppHandle]
) -> None:
    bot = make_app()
    first = [usage_event(bot.app_id) for _ in range(3)]
    with httpx.Client(base_url=live_server.url, headers=tenant.headers, timeout=60) as client:
        client.post("/v1/events", json=first)
        lines: list[str] = []
        polls = iter([True, True, False])
        later = usage_event(bot.app_id)

        def sleep(_seconds: float) -> None:  # new events arrive while the tail waits
            client.post("/v1/events", json=[later])

        cli.tail_events(
            client,
            limit=2,
            follow=True,
            interval=0.01,
            emit=lines.append,
            keep_going=lambda: next(polls),
            sleep=sleep,
        )
    ids = [event["id"] for event in [*first[1:], later]]
    assert len(lines) == 3
    for line, event_id in zip(lines, ids, strict=True):
        assert event_id in line
        assert f"app={bot.app_id}" in line


def test_a_tail_line_shows_the_time_in_utc_and_the_senders_text_as_written() -> None:
    item = {
        "position": 7,
        "late": False,
        "app_id": "bot",
        "event": {
            "id": "[/]odd[red]",
            "type": "qm.invocation.usage",
            "time": "2026-11-11T10:00:00.123456+05:00",
            "data": {"app_id": "bot", "tokens": 5, "environment": "[bold]x"},
        },
    }
    console = Console(width=200, record=True)
    console.print(cli.format_event(item), highlight=False, soft_wrap=True)
    printed = console.export_text()
    assert "2026-11-11 05:00:00.123456Z qm.invocation.usage app=bot id=[/]odd[red]" in printed
    assert "environment=[bold]x" in printed


def test_tail_command(live_server: LiveServer, tenant: TenantHandle) -> None:
    with httpx.Client(base_url=live_server.url, headers=tenant.headers, timeout=60) as client:
        client.post("/v1/events", json=[usage_event("tail-app", tokens=77)])
    result = runner.invoke(cli.app, ["tail", "--limit", "5"], env=env(live_server, tenant))
    assert result.exit_code == 0, result.output
    assert "qm.invocation.usage" in result.output
    assert "tokens=77" in result.output


def test_reconciliation_command_shows_balanced_hours(
    live_server: LiveServer, tenant: TenantHandle
) -> None:
    with httpx.Client(base_url=live_server.url, headers=tenant.headers, timeout=60) as client:
        client.post("/v1/events", json=[usage_event("r-app"), {"specversion": "1.0"}])
    result = runner.invoke(reconciliation_app, [], env=env(live_server, tenant))
    assert result.exit_code == 0, result.output
    assert "yes" in result.output
    assert "invalid_envelope" in result.output
    # The hour whole, as "2026-10-11 10:00", not cut at an ellipsis.
    assert re.search(r"^│ \d{4}-\d\d-\d\d \d\d:00:00Z ", result.output, re.MULTILINE)
    # The window in the same form.
    assert re.search(
        r"reconciliation \d{4}-\d\d-\d\d \d\d:00 \.\. \d{4}-\d\d-\d\d \d\d:00 UTC", result.output
    )
    total = next(line for line in result.output.splitlines() if "total" in line)
    assert [c.strip() for c in total.split("│")[2:6]] == ["2", "1", "0", "1"]
    empty = runner.invoke(
        reconciliation_app,
        ["--start", "2020-01-01T00:00:00Z", "--end", "2020-01-02T00:00:00Z"],
        env=env(live_server, tenant),
    )
    assert "no events received" in empty.output


def test_read_batches_streams_the_file_a_batch_at_a_time(tmp_path: Path) -> None:
    lines = [usage_event("bot") for _ in range(5)]
    file = write_jsonl(tmp_path / "e.jsonl", [lines[0], b"", lines[1], b"{nope", *lines[2:]])
    batches = cli.read_batches(file, 2)
    first = next(batches)  # a generator: the rest of the file is read as it is sent
    assert [n for n, _ in first.events] == [1, 3]
    assert (first.unreadable, first.lines) == ([], 3)
    rest = list(batches)
    assert [[n for n, _ in b.events] for b in rest] == [[5, 6], [7]]
    assert [r["line"] for r in rest[0].unreadable] == [4]
    assert rest[0].unreadable[0]["reason"] == "invalid_json"
    assert [b.events[0][1] for b in rest] == [lines[2], lines[4]]
    assert first.lines + sum(b.lines for b in rest) == cli.count_lines(file) == 7


def test_count_lines_counts_a_last_line_without_a_newline(tmp_path: Path) -> None:
    for content, expected in ((b"", 0), (b"a", 1), (b"a\n", 1), (b"a\nb", 2), (b"\n\n", 2)):
        file = tmp_path / "f.jsonl"
        file.write_bytes(content)
        assert cli.count_lines(file) == expected, content


def test_send_batches_keeps_several_in_flight_and_reports_in_line_order(tmp_path: Path) -> None:
    lines = [{"id": f"e{i}"} for i in range(10)]
    file = write_jsonl(tmp_path / "e.jsonl", [*lines[:5], b"{bad", *lines[5:]])
    lock = threading.Lock()
    in_flight = [0, 0]  # now, most at once

    def handler(request: httpx.Request) -> httpx.Response:
        with lock:
            in_flight[0] += 1
            in_flight[1] = max(in_flight)
        time.sleep(0.05)
        with lock:
            in_flight[0] -= 1
        events = orjson.loads(request.content)
        rejected = [
            {"index": i, "id": e["id"], "field": None, "reason": "nope", "message": "odd"}
            for i, e in enumerate(events)
            if int(e["id"][1:]) % 2
        ]
        accepted = len(events) - len(rejected)
        return httpx.Response(
            200, json={"accepted": accepted, "duplicates": 0, "rejected": rejected}
        )

    progressed: list[int] = []
    with httpx.Client(transport=httpx.MockTransport(handler), base_url="http://qm") as client:
        summary = cli.send_batches(
            client,
            cli.read_batches(file, 2),
            max_attempts=1,
            connections=3,
            on_batch=progressed.append,
        )
    assert 1 < in_flight[1] <= 3
    assert (summary.sent, summary.accepted, summary.duplicates) == (10, 5, 0)
    assert [r["line"] for r in summary.rejected] == [2, 4, 6, 7, 9, 11]  # line 6 is not JSON
    assert [r["reason"] for r in summary.rejected][2] == "invalid_json"
    assert sum(progressed) == 11


def test_send_batches_stops_at_a_batch_that_cannot_be_delivered(tmp_path: Path) -> None:
    file = write_jsonl(tmp_path / "e.jsonl", [{"id": f"e{i}"} for i in range(100)])
    requests: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        requests.append(1)
        time.sleep(0.01)
        return httpx.Response(500)

    transport = httpx.MockTransport(handler)
    with (
        httpx.Client(transport=transport, base_url="http://qm") as client,
        pytest.raises(cli.DeliveryError, match="gave up after 1 attempts"),
    ):
        cli.send_batches(client, cli.read_batches(file, 1), max_attempts=1, connections=2)
    assert 1 <= len(requests) <= 4  # the rest of the file was never sent


def test_a_batch_over_the_byte_limit_is_split_down_to_the_event_too_large(
    tmp_path: Path,
) -> None:
    events = [{"id": f"e{i}", "pad": "x" * (5000 if i == 2 else 10)} for i in range(4)]
    file = write_jsonl(tmp_path / "e.jsonl", events)
    sizes: list[int] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sizes.append(len(orjson.loads(request.content)))
        if len(request.content) > 4000:
            error = {"code": "payload_too_large", "message": "body over 4,000 bytes"}
            return httpx.Response(413, json={"error": error})
        count = len(orjson.loads(request.content))
        return httpx.Response(200, json={"accepted": count, "duplicates": 0, "rejected": []})

    with httpx.Client(transport=httpx.MockTransport(handler), base_url="http://qm") as client:
        summary = cli.send_batches(client, cli.read_batches(file, 4), max_attempts=1)
    assert sizes == [4, 2, 2, 1, 1]  # the batch, its halves, the half holding e2 in two
    assert (summary.sent, summary.accepted) == (4, 3)
    [too_large] = summary.rejected
    assert (too_large["line"], too_large["id"], too_large["reason"]) == (
        3,
        "e2",
        "payload_too_large",
    )
    # The server's "split the batch" cannot help a batch of one: the event itself is said.
    assert too_large["message"].startswith("the event alone is 5,")
    assert "over the server's limit for a request (QM_MAX_BODY_BYTES)" in too_large["message"]


def test_the_limit_a_413_names_is_kept_and_events_over_it_are_not_sent(tmp_path: Path) -> None:
    """Once the server has said its byte limit, a batch over it is split and an event over
    it alone is rejected without a round trip (a 100 MB event had been sent ten times)."""
    events = [{"id": f"e{i}", "pad": "x" * (5000 if i in (2, 4) else 10)} for i in range(6)]
    file = write_jsonl(tmp_path / "e.jsonl", events)
    sent: list[list[str]] = []

    def handler(request: httpx.Request) -> httpx.Response:
        sent.append([event["id"] for event in orjson.loads(request.content)])
        if len(request.content) > 4000:
            message = (
                f"request body is {len(request.content):,} bytes; the limit is 4,000 bytes "
                "(QM_MAX_BODY_BYTES): split the batch"
            )
            return httpx.Response(
                413, json={"error": {"code": "payload_too_large", "message": message}}
            )
        count = len(sent[-1])
        return httpx.Response(200, json={"accepted": count, "duplicates": 0, "rejected": []})

    with httpx.Client(transport=httpx.MockTransport(handler), base_url="http://qm") as client:
        summary = cli.send_batches(client, cli.read_batches(file, 6), max_attempts=1)
    assert sent == [[f"e{i}" for i in range(6)], ["e0"], ["e1"], ["e3"], ["e5"]]
    assert (summary.sent, summary.accepted) == (6, 4)
    assert [(r["id"], r["reason"]) for r in summary.rejected] == [
        ("e2", "payload_too_large"),
        ("e4", "payload_too_large"),
    ]
    assert all(
        "over the server's limit of 4,000 bytes for a request (QM_MAX_BODY_BYTES): no batch "
        "can carry it" in r["message"]
        for r in summary.rejected
    )


def test_duplicates_of_a_retried_batch_are_told_apart_from_those_stored_before(
    tmp_path: Path,
) -> None:
    """The server commits a batch and its answer is lost: the retry finds the events stored
    and says duplicate. Those are counted apart from the duplicates of a first attempt (events
    stored before this send) and from a batch retried after a 429 or 503 (nothing stored)."""
    file = write_jsonl(tmp_path / "e.jsonl", [{"id": f"e{i}"} for i in range(8)])
    stored = {"e0"}  # sent by an earlier run: a true duplicate
    posts: Counter[str] = Counter()

    def handler(request: httpx.Request) -> httpx.Response:
        ids = [event["id"] for event in orjson.loads(request.content)]
        posts[ids[0]] += 1
        if ids[0] == "e4" and posts["e4"] == 1:
            return httpx.Response(429, headers={"Retry-After": "0"})
        if ids[0] == "e4" and posts["e4"] == 2:
            return httpx.Response(503)  # the rate limiter's store away: refused, not stored
        if ids[0] == "e4" and posts["e4"] == 3:
            stored.add("e5")  # stored by another client meanwhile: not this send's
        new = [i for i in ids if i not in stored]
        stored.update(new)
        if ids[0] == "e2" and posts["e2"] == 1:
            raise httpx.ReadError("connection reset")  # committed, the answer lost
        duplicates = len(ids) - len(new)
        return httpx.Response(
            200, json={"accepted": len(new), "duplicates": duplicates, "rejected": []}
        )

    with httpx.Client(transport=httpx.MockTransport(handler), base_url="http://qm") as client:
        summary = cli.send_batches(
            client, cli.read_batches(file, 2), max_attempts=3, sleep=lambda _s: None
        )
    assert stored == {f"e{i}" for i in range(8)}
    assert (summary.accepted, summary.duplicates, summary.retried_duplicates) == (4, 4, 2)
    assert summary.retries == 3
    console = Console(width=80, record=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "out", lambda: console)
        cli.print_summary(summary, file)
    text = " ".join(console.export_text().split())
    assert (
        "duplicate 4 (2 of them in retried batches: stored by an attempt whose answer was "
        "lost); stored by this send: up to 6 (accepted + those)"
    ) in text


def test_a_send_without_lost_answers_says_nothing_of_retried_batches(tmp_path: Path) -> None:
    console = Console(width=80, record=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(cli, "out", lambda: console)
        cli.print_summary(cli.SendSummary(sent=3, accepted=1, duplicates=2), tmp_path / "e")
    assert "retried batches" not in console.export_text()


def test_reconciliation_table_keeps_a_month_of_totals_whole_at_80_columns() -> None:
    def hour(h: int, received: int) -> dict[str, Any]:
        stages = {"received": received, "accepted": 3000, "duplicate": 10, "rejected": 2}
        stages |= {"attributed": 2990, "rated": 3000}  # the pipeline's: not this table's
        return {
            "hour": f"2026-11-01T{h:02d}:00:00+00:00",
            "stages": stages,
            "reasons": {"rejected": {"invalid_data": 2}},
        }

    report = {
        "start": "2026-11-01T00:00:00+00:00",
        "end": "2026-12-01T00:00:00+00:00",
        "hours": [hour(0, 3012), hour(1, 3013)],
        "totals": {"received": 1_970_987, "accepted": 1_960_000, "duplicate": 10_000},
    }
    console = Console(width=80, record=True)
    for table in cli.reconciliation_tables(report):
        console.print(table)
    text = console.export_text()
    assert "reconciliation 2026-11-01 00:00 .. 2026-12-01 00:00 UTC" in text
    rows = [
        [cell.strip() for cell in line.strip("│┃").split("│" if "│" in line else "┃")]
        for line in text.splitlines()
        if line.startswith(("│", "┃"))
    ]
    assert rows == [
        ["hour (UTC)", "received", "accepted", "duplicate", "rejected", "ok"],
        ["2026-11-01 00:00:00Z", "3,012", "3,000", "10", "2", "yes"],
        # 3,013 received against 3,012 accounted for: said, not hidden.
        ["2026-11-01 01:00:00Z", "3,013", "3,000", "10", "2", "NO"],
        ["total", "1,970,987", "1,960,000", "10,000", "0", ""],
        ["stage", "reason", "events"],
        ["rejected", "invalid_data", "4"],
    ]
    assert max(len(line) for line in text.splitlines()) <= 80


def _serving(report: dict[str, Any]) -> Callable[..., httpx.Client]:
    def api_client(**_: Any) -> httpx.Client:
        return httpx.Client(
            transport=httpx.MockTransport(lambda _request: httpx.Response(200, json=report)),
            base_url="http://qm",
        )

    return api_client


def test_reconciliation_exits_1_naming_an_hour_that_does_not_balance(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The counters are written with the events they count, so an unbalanced hour is a
    fault: a scheduled `qm reconciliation` must be able to alert on it."""

    def hour(h: int, received: int) -> dict[str, Any]:
        stages = {"received": received, "accepted": 8, "duplicate": 1, "rejected": 1}
        return {"hour": f"2026-11-01T{h:02d}:00:00+00:00", "stages": stages, "reasons": {}}

    report = {
        "start": "2026-11-01T00:00:00+00:00",
        "end": "2026-11-01T03:00:00+00:00",
        "hours": [hour(0, 10), hour(1, 11), hour(2, 10)],
        "totals": {"received": 31, "accepted": 24, "duplicate": 3, "rejected": 3},
    }
    monkeypatch.setattr(cli, "api_client", _serving(report))
    result = runner.invoke(reconciliation_app, [], env={"COLUMNS": "100"})
    assert result.exit_code == 1
    assert "1 hour(s) do not balance" in result.output
    assert "2026-11-01 01:00" in result.output.split("do not balance")[1]

    report["hours"] = [hour(0, 10)]
    monkeypatch.setattr(cli, "api_client", _serving(report))
    assert runner.invoke(reconciliation_app, [], env={"COLUMNS": "100"}).exit_code == 0
