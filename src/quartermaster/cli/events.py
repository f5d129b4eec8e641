"""`qm events send|tail` and `qm reconciliation`: metering through the HTTP API."""

from __future__ import annotations

import random
import re
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import httpx
import orjson
import typer
from rich.markup import escape
from rich.padding import Padding
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from quartermaster.cli.client import (
    ApiKeyOption,
    UrlOption,
    api_client,
    check,
    counted,
    data_table,
    err,
    error_message,
    fail,
    grouped,
    hour_cell,
    hour_names,
    hour_text,
    moment_text,
    out,
)
from quartermaster.domain.events import BEYOND_A_DOUBLE
from quartermaster.domain.timeutil import parse_timestamp
from quartermaster.errors import invalid_utf8
from quartermaster.metering.signing import (
    KEY_ID_ATTRIBUTE,
    SIGNATURE_ATTRIBUTE,
    SIGNING_SECRET_BYTES,
    sign_event,
)
from quartermaster.metering.validation import MAX_NESTING, too_deep_field

BATCH_CONTENT_TYPE = "application/cloudevents-batch+json"
RETRY_STATUSES = frozenset({429, 500, 502, 503, 504})
MAX_BACKOFF_SECONDS = 30.0
# Batches `qm events send` keeps in flight: the server validates in one process and stores in
# another, and one request at a time left both waiting on the round trip (docs/events.md).
SEND_CONNECTIONS = 4

app = typer.Typer(help="Send events and watch the event log.", no_args_is_help=True)


class DeliveryError(RuntimeError):
    """A batch could not be delivered; the message says why. Batches after it in the file
    were not sent, except those already in flight beside it. `status`: the HTTP status the
    server refused the batch with (a wrong key, a wrong URL), None when it did not answer."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class SendInterrupted(KeyboardInterrupt):
    """Ctrl-C during a send, with the summary of what the server acknowledged before it: the
    batches answered until then, those in flight then included. A KeyboardInterrupt still, so
    a caller that only knows Ctrl-C ends as it did."""

    def __init__(self, summary: SendSummary) -> None:
        super().__init__()
        self.summary = summary


class _Abandoned(Exception):
    """Raised in a sending thread once the send is interrupted: its batch is not tried again
    (the wait before the next try ends at once) and is not counted."""


class Unsendable(ValueError):
    """An event the CLI refuses before sending (`sign_unsigned`), with the rejection's reason,
    field and message as the server words its own."""

    def __init__(self, reason: str, field_name: str | None, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.field_name = field_name
        self.message = message


class SendStopped(DeliveryError):
    """The send stopped at a batch that could not be delivered (the message says why), with
    the summary of what the server acknowledged before: the batches answered until then,
    those in flight beside it included."""

    def __init__(self, message: str, summary: SendSummary, *, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.summary = summary


@dataclass
class SendSummary:
    """What the server answered for the events sent (a whole file's, or part of a batch's)."""

    sent: int = 0
    # Of `sent`, the events over the server's request limit on their own, rejected whole
    # (payload_too_large): never stored, so not said to be sent.
    too_large: int = 0
    accepted: int = 0
    duplicates: int = 0
    # Of `duplicates`, those of batches sent again after an attempt that may have stored them
    # (its answer was lost): mostly stored by this send, not before it (docs/events.md).
    retried_duplicates: int = 0
    rejected: list[dict[str, Any]] = field(default_factory=list)  # each with its file "line"
    retries: int = 0

    def add(self, other: SendSummary) -> None:
        self.sent += other.sent
        self.too_large += other.too_large
        self.accepted += other.accepted
        self.duplicates += other.duplicates
        self.retried_duplicates += other.retried_duplicates
        self.rejected.extend(other.rejected)
        self.retries += other.retries


def _rejection(
    line: int,
    reason: str,
    message: str,
    event_id: str | None = None,
    field_name: str | None = None,
) -> dict[str, Any]:
    """A rejection the CLI makes itself, worded as the server's are."""
    return {"line": line, "id": event_id, "reason": reason, "field": field_name, "message": message}


def _event_id(event: object) -> str | None:
    raw_id = event.get("id") if isinstance(event, dict) else None
    return raw_id if isinstance(raw_id, str) else None


@dataclass
class FileBatch:
    """Up to one request's events of a JSON Lines file, with their line numbers; the lines
    among them that are not JSON, as rejections (never sent); and how many lines it spans."""

    events: list[tuple[int, object]] = field(default_factory=list)
    unreadable: list[dict[str, Any]] = field(default_factory=list)
    lines: int = 0


def read_batches(path: Path, size: int) -> Iterator[FileBatch]:
    """The file's events, `size` at a time, read as they are sent: a month of events is
    gigabytes as Python objects (1.6 KB an event, measured), so the file is never held
    whole. Blank lines are skipped; a line that is not JSON becomes a rejection worded as
    the server's are, and the lines beside it are still sent, as the server keeps the valid
    events of a batch."""
    batch = FileBatch()
    with path.open("rb") as fh:
        for number, line in enumerate(fh, start=1):
            batch.lines += 1
            if number == 1:
                # Editors on Windows save UTF-8 with a byte order mark; JSON forbids it, and
                # the file's first event was refused for an invisible character.
                line = line.removeprefix(UTF8_BOM)
            if not line.strip():
                continue
            try:
                batch.events.append((number, orjson.loads(line)))
            except orjson.JSONDecodeError as exc:
                # A number beyond a double is JSON, but no double holds it, so the event
                # cannot be sent as written: refused here as the server refuses it.
                reason = "invalid_data" if "infinity" in exc.msg else "invalid_json"
                batch.unreadable.append(_rejection(number, reason, _unreadable(exc, line)))
            if len(batch.events) == size:
                yield batch
                batch = FileBatch()
    if batch.lines:
        yield batch


UTF8_BOM = b"\xef\xbb\xbf"


def _unreadable(exc: orjson.JSONDecodeError, line: bytes) -> str:
    """Why a line is not sent. orjson says a line that is not UTF-8 has "surrogates" at
    column 1 wherever its bad bytes are: the first one is found, once orjson has failed."""
    if "infinity" in exc.msg:
        return f"the number at column {exc.colno} {BEYOND_A_DOUBLE}; not sent"
    bad = invalid_utf8(line) if "UTF-8" in exc.msg else None
    if bad is None:
        return f"not valid JSON: {exc.msg} (column {exc.colno}); not sent"
    return f"not valid UTF-8: byte 0x{line[bad]:02x} at byte {bad} of the line; not sent"


def count_lines(path: Path) -> int:
    """The progress bar's total, counted in blocks (about 2 s per gigabyte here): the
    newlines, plus a last line that does not end in one."""
    last = b""
    newlines = 0
    with path.open("rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            newlines += block.count(b"\n")
            last = block[-1:]
    return newlines + (last not in (b"", b"\n"))


def sign_unsigned(event: object, *, key_id: str, secret: bytes) -> object:
    """`event` signed with the key, unless it carries a signature already. An unsigned event
    that names another key in `qmkeyid` is refused (Unsendable): signing it with this key
    would replace the key its sender chose, and sent as it is the server refuses it anyway
    (missing_signature); one that names this key is signed."""
    if not isinstance(event, dict) or SIGNATURE_ATTRIBUTE in event:
        return event
    named = event.get(KEY_ID_ATTRIBUTE)
    if named is not None and named != key_id:
        raise Unsendable(
            "missing_signature",
            KEY_ID_ATTRIBUTE,
            f"qmkeyid: the event names the key {named!r} but carries no qmsignature; "
            f"--key-id {key_id!r} signs only events that name no key or that key: sign it "
            "with its own key, or remove its qmkeyid; not sent",
        )
    return sign_event(event, key_id=key_id, secret=secret)


def _too_deep(line: int, event: object) -> dict[str, Any]:
    """An event orjson cannot write (nested beyond its 254 levels, docs/events.md), as a
    rejection naming the attribute, or `data`'s field, that holds the deepest value, as the
    server names it."""
    field_name = too_deep_field(event) if isinstance(event, dict) else "event"
    reason = "invalid_data" if field_name.startswith("data") else "invalid_envelope"
    message = (
        f"{field_name}: arrays and objects are nested too deep to be sent (at most "
        f"{MAX_NESTING} levels in an event, the event itself the first); not sent"
    )
    return _rejection(line, reason, message, _event_id(event), field_name)


def backoff_seconds(attempt: int, retry_after: str | None = None) -> float:
    """Exponential with jitter (0.5 s, 1 s, 2 s ... capped), or the server's Retry-After."""
    if retry_after is not None and retry_after.isdigit():
        return min(float(retry_after), MAX_BACKOFF_SECONDS)
    base: float = min(MAX_BACKOFF_SECONDS, 0.5 * 2.0 ** (attempt - 1))
    return base * random.uniform(0.5, 1.0)


def post_batch(
    client: httpx.Client,
    body: bytes,
    *,
    max_attempts: int,
    sleep: Callable[[float], None] = time.sleep,
    on_retry: Callable[[str], None] = lambda _reason: None,
    on_unknown: Callable[[], None] = lambda: None,
) -> httpx.Response:
    """POST one batch, retrying connection errors, 5xx and 429. Safe to repeat: the server
    deduplicates on (source, id), so a batch stored before a lost response counts once; the
    retries after an attempt that may have stored it are told to `on_unknown`, as its events
    then come back as duplicates."""
    problem = ""
    for attempt in range(1, max_attempts + 1):
        retry_after = None
        stored_maybe = True
        try:
            response = client.post(
                "/v1/events", content=body, headers={"Content-Type": BATCH_CONTENT_TYPE}
            )
        except httpx.TransportError as exc:
            problem = f"{type(exc).__name__}: {exc}"
            # A connection never made sent nothing; one lost after the body went may have
            # been committed before its answer was.
            stored_maybe = not isinstance(exc, httpx.ConnectError | httpx.ConnectTimeout)
        else:
            if response.status_code not in RETRY_STATUSES:
                return response
            message = error_message(response).strip()
            problem = f"HTTP {response.status_code}" + (f": {message}" if message else "")
            retry_after = response.headers.get("Retry-After")
            # 429 and 503 (the server's rate limiter, a proxy with no server up) refuse
            # before anything is stored; a 500, 502 or 504 may come after the commit.
            stored_maybe = response.status_code not in (429, 503)
            if not stored_maybe and _too_long(retry_after):
                # A budget throttle lasts until its period ends: waiting out its Retry-After
                # here would spin for days; the events must be sent again later instead.
                raise DeliveryError(
                    f"{problem}; the server asks to retry in {int(retry_after or 0):,}s "
                    f"(Retry-After), longer than qm events send waits "
                    f"({MAX_BACKOFF_SECONDS:.0f}s): this batch was not counted, so send it "
                    "again later (events stored already count once)"
                )
        if attempt < max_attempts:
            on_retry(problem)
            if stored_maybe:
                on_unknown()
            sleep(backoff_seconds(attempt, retry_after))
    raise DeliveryError(f"gave up after {max_attempts} attempts; last error: {problem}")


def _too_long(retry_after: str | None) -> bool:
    """A Retry-After (seconds) longer than the longest wait between two tries."""
    return (
        retry_after is not None and retry_after.isdigit() and int(retry_after) > MAX_BACKOFF_SECONDS
    )


# How the server's 413 names its byte limit (metering/router.py); a test holds the two together.
_BODY_LIMIT = re.compile(r"the limit is ([\d,]+) bytes \(QM_MAX_BODY_BYTES\)")


def body_limit(message: str) -> int | None:
    """The server's QM_MAX_BODY_BYTES as its 413 says it, or None when it does not."""
    match = _BODY_LIMIT.search(message)
    return int(match.group(1).replace(",", "")) if match else None


# How the server's 413 names its limit of events per request (metering/body.py): `batch has
# 60 events; the limit is 50 per request (QM_MAX_BATCH_EVENTS): split the batch`.
_EVENT_LIMIT = re.compile(r"the limit is ([\d,]+) per request \(QM_MAX_BATCH_EVENTS\)")


def event_limit(message: str) -> int | None:
    """The server's QM_MAX_BATCH_EVENTS as its 413 says it, or None when it does not."""
    match = _EVENT_LIMIT.search(message)
    return int(match.group(1).replace(",", "")) if match else None


def _too_large(event: tuple[int, object], size: int, limit: int | None) -> dict[str, Any]:
    """One event over the server's request limit on its own, as a rejection of its line: the
    server's 413 says to split the batch, which cannot help a batch of one."""
    line, body = event
    event_id = _event_id(body)
    over = f"the server's limit of {limit:,} bytes" if limit is not None else "the server's limit"
    message = (
        f"the event alone is {size:,} bytes as sent, over {over} for a request "
        "(QM_MAX_BODY_BYTES): no batch can carry it; not stored"
    )
    return _rejection(line, "payload_too_large", message, event_id)


def send_batches(
    client: httpx.Client,
    batches: Iterable[FileBatch],
    *,
    max_attempts: int,
    connections: int = 1,
    prepare: Callable[[object], object] = lambda event: event,
    sleep: Callable[[float], None] | None = None,
    on_batch: Callable[[int], None] = lambda _lines: None,
    on_retry: Callable[[str], None] = lambda _problem: None,
) -> SendSummary:
    """POST the batches, up to `connections` at a time (each event through `prepare`, e.g.
    signing, which may refuse it with Unsendable), and add up the answers; rejections, the
    unreadable lines' included, come back in line order. At most twice `connections` batches
    are read ahead, so memory stays that of a few batches whatever the file's size. Each
    retry's problem goes to `on_retry` (from the sending threads). A batch that cannot be
    delivered ends the send with SendStopped, Ctrl-C with SendInterrupted: both hold the
    summary of the batches acknowledged until then. `sleep`: the wait between two tries of a
    batch (by default one that Ctrl-C ends at once)."""
    summary = SendSummary()
    retry_reasons: list[str] = []  # appended from the sending threads (atomic)
    # Set on Ctrl-C: the sending threads stop waiting to retry and start no other try. A
    # thread asleep in a backoff had kept the send alive until its last attempt (48 s).
    stopping = threading.Event()

    def pause(seconds: float) -> None:
        if sleep is None:
            stopping.wait(seconds)
        else:
            sleep(seconds)
        if stopping.is_set():
            raise _Abandoned

    def retrying(problem: str) -> None:
        retry_reasons.append(problem)
        on_retry(problem)

    # The server's byte limit and event limit, once a 413 has said them: a batch known to be
    # over either is split, and an event over the byte limit alone rejected, without sending
    # it (appended from the threads).
    limits: list[int] = []
    event_limits: list[int] = []

    def halves(events: list[tuple[int, object]]) -> SendSummary:
        # Over the server's byte limit (large events at the default batch size): each half
        # goes on its own, down to single events.
        half = len(events) // 2
        delivered = deliver(events[:half])
        delivered.add(deliver(events[half:]))
        return delivered

    def pieces(events: list[tuple[int, object]], most: int) -> SendSummary:
        # Over the server's event limit: requests of that many events, not halves, which
        # took five refused requests to get from 1,000 events down to a limit of 50.
        delivered = SendSummary()
        for start in range(0, len(events), most):
            delivered.add(deliver(events[start : start + most]))
        return delivered

    def deliver(events: list[tuple[int, object]]) -> SendSummary:
        if stopping.is_set():
            raise _Abandoned
        delivered = SendSummary()
        if not events:
            return delivered
        if event_limits and len(events) > max(1, event_limits[-1]):
            return pieces(events, max(1, event_limits[-1]))
        # Each event written on its own, the array around them by hand: an event nested 254
        # levels deep (which the server takes) is one level too deep for orjson inside a
        # list, and one orjson cannot write at all is refused alone, not the whole send.
        parts: list[bytes] = []
        sending: list[tuple[int, object]] = []
        for line, event in events:
            try:
                parts.append(orjson.dumps(prepare(event)))
            except Unsendable as exc:
                refusal = _rejection(
                    line, exc.reason, exc.message, _event_id(event), exc.field_name
                )
                delivered.rejected.append(refusal)
                continue
            except orjson.JSONEncodeError:
                delivered.rejected.append(_too_deep(line, event))
                continue
            sending.append((line, event))
        if not sending:
            return delivered
        body = b"[" + b",".join(parts) + b"]"
        del parts
        size = len(body)
        if limits and size > limits[-1]:
            del body
            if len(sending) > 1:
                delivered.add(halves(sending))
                return delivered
            delivered.sent = delivered.too_large = 1
            delivered.rejected.append(_too_large(sending[0], size, limits[-1]))
            return delivered
        unknown: list[bool] = []
        response = post_batch(
            client,
            body,
            max_attempts=max_attempts,
            sleep=pause,
            on_retry=retrying,
            on_unknown=lambda: unknown.append(True),
        )
        del body
        if response.status_code == 413:
            message = error_message(response)
            limit = body_limit(message)
            if limit is not None:
                limits.append(limit)
            most = event_limit(message)
            # The response holds its request, the whole body: kept while the halves are sent
            # it was one more copy per level (1.5 GB for a 100 MB event in a batch of 1,000).
            del response
            if most is not None and len(sending) > 1:
                event_limits.append(most)
                delivered.add(pieces(sending, max(1, most)))
                return delivered
            if len(sending) > 1:
                delivered.add(halves(sending))
                return delivered
            delivered.sent = delivered.too_large = 1
            delivered.rejected.append(_too_large(sending[0], size, limit))
            return delivered
        if response.status_code not in (200, 422) or "accepted" not in response.json():
            # Raised, not printed here: every batch in flight gets the same answer (a wrong
            # API key, say), and the send ends with it said once.
            raise DeliveryError(
                f"error {response.status_code}: {error_message(response)}",
                status=response.status_code,
            )
        report = response.json()
        delivered.sent += len(sending)
        delivered.accepted += report["accepted"]
        delivered.duplicates += report["duplicates"]
        if unknown:
            delivered.retried_duplicates += report["duplicates"]
        for rejection in report["rejected"]:
            delivered.rejected.append({**rejection, "line": sending[rejection["index"]][0]})
        return delivered

    def add(batch: FileBatch, delivered: SendSummary) -> None:
        summary.rejected.extend(batch.unreadable)
        summary.add(delivered)
        on_batch(batch.lines)

    def add_answered() -> None:
        # What the server acknowledged is said even so: the batches in flight beside the one
        # that failed (or at Ctrl-C) and answered count too. Without it a send that gave up
        # after minutes of retries ended with its error alone, and nothing said what had been
        # stored; at Ctrl-C the summary said 60,000 lines where the server had 64,000.
        while in_flight:
            batch, future = in_flight.popleft()
            if not future.cancelled() and future.exception() is None:
                add(batch, future.result())

    in_flight: deque[tuple[FileBatch, Future[SendSummary]]] = deque()
    stopped: DeliveryError | None = None
    interrupted = False
    pool = ThreadPoolExecutor(max_workers=connections, thread_name_prefix="qm-send")
    try:
        for batch in batches:
            in_flight.append((batch, pool.submit(deliver, batch.events)))
            if len(in_flight) >= 2 * connections:
                done, future = in_flight.popleft()
                add(done, future.result())
        while in_flight:
            done, future = in_flight.popleft()
            add(done, future.result())
    except DeliveryError as exc:
        # A batch that could not be delivered ends the send: the batches not yet started
        # are dropped, the ones being sent finish (sending the file again is safe).
        for _batch, future in in_flight:
            future.cancel()
        stopped = exc
    except KeyboardInterrupt:
        # Ctrl-C: the batches not started are dropped, those waiting to retry stop waiting,
        # and those whose request is out are awaited for their answer (stored, they count).
        stopping.set()
        for _batch, future in in_flight:
            future.cancel()
        interrupted = True
    except BaseException:
        # Anything else (an answer that is not JSON): raised as it is, and the sending threads
        # told to stop rather than left retrying behind it.
        stopping.set()
        pool.shutdown(wait=False, cancel_futures=True)
        raise
    try:
        if stopped is not None or interrupted:
            add_answered()
    except KeyboardInterrupt:
        # Ctrl-C again while a request in flight is awaited: the summary as it stands.
        stopping.set()
        interrupted = True
    finally:
        pool.shutdown(wait=not interrupted, cancel_futures=True)
    summary.retries = len(retry_reasons)
    summary.rejected.sort(key=lambda rejection: rejection["line"])
    if interrupted:
        raise SendInterrupted(summary)
    if stopped is not None:
        raise SendStopped(str(stopped), summary, status=stopped.status) from stopped
    return summary


def print_summary(summary: SendSummary, path: Path, *, ended: str | None = None) -> None:
    """The counts, then the rejections by reason. `ended`: how the send ended before the end
    of the file ("the send stopped", "the send was interrupted"), and the counts are of what
    the server acknowledged before."""
    events = counted(summary.sent - summary.too_large, "event")
    title = f"{escape(path.name)}: {events} " + (
        f"acknowledged before {ended}" if ended is not None else "sent"
    )
    if summary.too_large:
        # Listed with the rejections: the server's limit is per request, so no send stores them.
        title += f", {summary.too_large:,} too large to send"
    table = Table(title=title)
    for column in ("accepted", "duplicate", "rejected", "retries"):
        table.add_column(column, justify="right")
    table.add_row(
        f"{summary.accepted:,}",
        f"{summary.duplicates:,}",
        f"[red]{len(summary.rejected):,}[/]" if summary.rejected else "0",
        f"{summary.retries:,}",
    )
    out().print(table)
    if summary.retried_duplicates:
        # The server stored these on an attempt whose answer never came; the retry found them
        # there. Without this an interrupted send looked as if it had stored too few.
        out().print(
            f"duplicate {summary.duplicates:,} ({summary.retried_duplicates:,} of them in "
            "retried batches: stored by an attempt whose answer was lost); stored by this "
            f"send: up to {summary.accepted + summary.retried_duplicates:,} (accepted + those)"
        )
    if summary.rejected:
        print_rejections(summary.rejected)


# Of the rejections `qm events send` lists: the reasons, the messages of each reason, and
# the line numbers (as runs: 3-1000) of each.
SHOWN_REASONS = 20
SHOWN_MESSAGES = 3
SHOWN_LINE_RUNS = 5


@dataclass
class RejectionGroup:
    """The rejections of one reason and field: how many, their lines, and their distinct
    messages in the order first met, each with the line and event id it was first met on."""

    reason: str
    field_name: str | None
    lines: list[int] = field(default_factory=list)
    messages: dict[str, tuple[int, str | None]] = field(default_factory=dict)


def group_rejections(rejected: Iterable[dict[str, Any]]) -> list[RejectionGroup]:
    """The rejections by reason and field, the most frequent first (ties in line order)."""
    groups: dict[tuple[str, str | None], RejectionGroup] = {}
    for rejection in rejected:
        key = (str(rejection["reason"]), rejection.get("field"))
        group = groups.setdefault(key, RejectionGroup(*key))
        group.lines.append(rejection["line"])
        group.messages.setdefault(str(rejection["message"]), (rejection["line"], rejection["id"]))
    return sorted(groups.values(), key=lambda group: -len(group.lines))


def line_runs(lines: list[int], *, most: int = SHOWN_LINE_RUNS) -> str:
    """'3-7, 9, 12-1000' for sorted line numbers: the first `most` runs, then '…'."""
    runs: list[list[int]] = []
    for line in sorted(lines):
        if runs and line == runs[-1][1] + 1:
            runs[-1][1] = line
        else:
            runs.append([line, line])
    shown = [f"{a:,}" if a == b else f"{a:,}-{b:,}" for a, b in runs[:most]]
    return ", ".join(shown) + (", …" if len(runs) > most else "")


def print_rejections(rejected: list[dict[str, Any]]) -> None:
    """Each reason once, with its count and lines, and its messages (the first few distinct
    ones, each with the line and id it came from). Every rejection listed with its message
    made a throttled file's 1,000 rejections 20 copies of the same 11-line message."""
    groups = group_rejections(rejected)
    console = out()
    reasons = counted(len(groups), "reason")
    console.print(
        f"rejected {counted(len(rejected), 'event')} ({reasons}):", style="bold", markup=False
    )
    for group in groups[:SHOWN_REASONS]:
        on = f" on {group.field_name}" if group.field_name else ""
        lines = "line" if len(group.lines) == 1 else "lines"
        console.print(
            f"- {group.reason}{on}: {counted(len(group.lines), 'event')}, {lines} "
            f"{line_runs(group.lines)}",
            markup=False,
        )
        for message, (line, event_id) in list(group.messages.items())[:SHOWN_MESSAGES]:
            where = f"line {line:,}" + (f", id {event_id}" if event_id is not None else "")
            # Indented as a block, so a long message's folded lines stay under its reason.
            console.print(Padding(Text(f"{where}: {message}", style="dim"), (0, 0, 0, 4)))
        if len(group.messages) > SHOWN_MESSAGES:
            others = len(group.messages) - SHOWN_MESSAGES
            console.print(f"    and {counted(others, 'other message')}", markup=False, style="dim")
    if len(groups) > SHOWN_REASONS:
        rest = groups[SHOWN_REASONS:]
        events = sum(len(group.lines) for group in rest)
        console.print(
            f"and {counted(len(rest), 'other reason')} ({counted(events, 'event')})", markup=False
        )


@app.command("send")
def send(
    file: Annotated[
        Path,
        typer.Argument(
            exists=True, dir_okay=False, readable=True, help="JSON Lines: one CloudEvent per line."
        ),
    ],
    batch_size: Annotated[int, typer.Option(min=1, help="Events per request.")] = 1000,
    key_id: Annotated[
        str | None,
        typer.Option(
            envvar="QM_SIGNING_KEY_ID",
            help="Sign events that carry no qmsignature with this key.",
        ),
    ] = None,
    # From the environment too, like QM_API_KEY: a secret on the command line is in the shell's
    # history and in every process listing while the command runs.
    secret_hex: Annotated[
        str | None,
        typer.Option(
            envvar="QM_SIGNING_SECRET",
            help="The signing key's secret (hex), with --key-id; better from the environment.",
        ),
    ] = None,
    max_attempts: Annotated[int, typer.Option(min=1, help="Tries per batch.")] = 8,
    connections: Annotated[
        int, typer.Option(min=1, max=16, help="Batches in flight at once.")
    ] = SEND_CONNECTIONS,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Send events in batches (retrying safely); exit 1 if any event was rejected.

    A line that is not JSON is listed as rejected (invalid_json) and the others are sent.
    Rejections are listed by reason, each once with its count and lines. A 429 or 503 is
    retried after the server's Retry-After; one longer than 30 s (a budget throttle, until
    its period ends) stops the send at once with the server's message: the refused batch
    and those after it were not counted and must be sent again later. A send that stops
    prints the summary of what the server acknowledged before it, then exits 1; Ctrl-C
    stops it at once, retries included, with that summary too, and exits 130."""
    if (key_id is None) != (secret_hex is None):
        given = (
            "--key-id (QM_SIGNING_KEY_ID)"
            if secret_hex is None
            else "--secret-hex (QM_SIGNING_SECRET)"
        )
        raise typer.BadParameter(
            f"{given} is set without the other: --key-id (QM_SIGNING_KEY_ID) and --secret-hex "
            "(QM_SIGNING_SECRET) go together"
        )
    secret = _signing_secret(secret_hex) if secret_hex is not None else None

    def prepare(event: object) -> object:
        if key_id is None or secret is None:
            return event
        return sign_unsigned(event, key_id=key_id, secret=secret)

    progress = Progress(
        TextColumn("{task.fields[status]}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("lines"),
        TimeElapsedColumn(),
        console=out(),
    )
    retries = 0
    # `retrying` runs in the sending threads: the count taken and said under one lock, or two
    # threads said `retry 3` and none `retry 2`.
    retry_lock = threading.Lock()
    stopped: SendStopped | None = None
    interrupted = False
    with api_client(url=url, api_key=api_key) as client:
        # Retries are for a server that goes away mid-send; one that is not there at all is
        # said at once, not after the last batch's backoff (a minute). Before the bar starts:
        # a bar stopped by the error left a blank line on stdout above it.
        client.get("/healthz")
        with progress:
            task = progress.add_task("lines", total=count_lines(file), status="sending")

            def retrying(problem: str) -> None:
                # A server gone mid-send is retried for a minute or two per batch: said on the
                # bar (`retrying (3 so far: ConnectError)`), and where no bar is drawn (output to
                # a file or a pipe) a line per retry on stderr with the whole problem.
                nonlocal retries
                with retry_lock:
                    retries += 1
                    kind = problem.split(":", 1)[0]
                    progress.update(task, status=f"retrying ({retries:,} so far: {kind})")
                    if not progress.console.is_terminal:
                        err().print(f"retry {retries:,}: {problem}", markup=False)

            try:
                summary = send_batches(
                    client,
                    read_batches(file, batch_size),
                    max_attempts=max_attempts,
                    connections=connections,
                    prepare=prepare,
                    on_batch=lambda lines: progress.update(task, advance=lines, status="sending"),
                    on_retry=retrying,
                )
            except SendStopped as exc:
                stopped, summary = exc, exc.summary
                progress.update(task, status="stopped")
            except SendInterrupted as exc:
                interrupted, summary = True, exc.summary
                progress.update(task, status="interrupted")
    ended = "the send was interrupted" if interrupted else "the send stopped"
    if (stopped is not None or interrupted) and not (summary.sent or summary.rejected):
        # Nothing answered (a wrong API key, a throttle at the first batch): no table of zeros.
        out().print(f"no events were acknowledged before {ended}", markup=False)
    else:
        print_summary(summary, file, ended=ended if stopped is not None or interrupted else None)
    acknowledged = summary.accepted + summary.duplicates > 0
    done = int(progress.tasks[0].completed)
    lines = counted(int(progress.tasks[0].total or 0), "line")
    if interrupted:
        # As after a batch that could not be delivered: what was stored is said, with how to
        # finish, rather than a bare ^C and a bar that counted only the batches answered.
        out().print(
            f"interrupted after {done:,} of {lines} were acknowledged: send the file again to "
            "send the rest (what this send stored comes back as duplicate, counted once)",
            markup=False,
        )
        raise SystemExit(130)  # as a shell reports a command ended by Ctrl-C (128 + SIGINT)
    if stopped is not None:
        # Always after the summary of what was acknowledged, never instead of it.
        out().print(
            f"stopped after {done:,} of {lines} were acknowledged: "
            f"{_resend_advice(stopped.status, acknowledged=acknowledged)}",
            markup=False,
        )
        said = str(stopped)
        if stopped.status is not None:  # not `error: error 401: …`
            said = f"the server answered {said.removeprefix('error ')}"
        fail(said)
    if summary.rejected:
        raise typer.Exit(1)


def _resend_advice(status: int | None, *, acknowledged: bool) -> str:
    """When to send the file again: once the server answers, or, when it answered with a
    refusal (a wrong key), once what it named is fixed (a QM_URL ending in /v1 is refused
    before sending, `client.server_url`). Duplicates are promised only where something may
    have been stored: a batch whose answer was lost may have been (no answer, 5xx), a refused
    one was not (401, 403, 429), so there only the batches acknowledged before come back as
    duplicates. `acknowledged`: the server accepted or had some of the events. Pure."""
    before = " (the events acknowledged before come back as duplicates, counted once)"
    if status is None or status >= 500:
        return (
            "send the file again once the server answers (what this send stored comes back "
            "as duplicate, counted once)"
        )
    if status == 429:
        return "send the file again once the server answers" + (before if acknowledged else "")
    return f"the server refused it ({status}): fix what it names, then send the file again" + (
        before if acknowledged else ""
    )


def _signing_secret(secret_hex: str) -> bytes:
    """A signing key's secret as `qm app key create` shows it: 64 hex characters. A shorter
    one would sign every event, and every event would then be rejected (bad_signature)."""
    try:
        secret = bytes.fromhex(secret_hex)
    except ValueError:
        raise typer.BadParameter("--secret-hex (QM_SIGNING_SECRET) is not hexadecimal") from None
    if len(secret) != SIGNING_SECRET_BYTES:
        raise typer.BadParameter(
            f"--secret-hex (QM_SIGNING_SECRET) has {len(secret_hex)} hex characters; a signing "
            f"key's secret has {2 * SIGNING_SECRET_BYTES}, as shown when the key was created"
        )
    return secret


def format_event(item: dict[str, Any]) -> str:
    """One log entry as a line of console markup: the sender's text (ids, data) escaped, so an
    id such as `[/]` prints as written instead of failing the tail as a markup error, and the
    event's time in UTC as the tables write moments (it came with the sender's offset)."""
    event = item["event"]
    data = event.get("data", {})
    measures = " ".join(f"{k}={v}" for k, v in data.items() if k not in ("app_id",))
    late = " [yellow]late[/]" if item["late"] else ""
    return (
        f"[dim]{item['position']:>8}[/] {escape(_utc_text(event.get('time')))} "
        f"[cyan]{escape(str(event.get('type', '')))}[/] app={escape(item['app_id'] or '-')} "
        f"id={escape(str(event.get('id', '')))}{late} {escape(measures)}"
    )


def _utc_text(time_text: object) -> str:
    if not isinstance(time_text, str):
        return ""
    try:
        return moment_text(parse_timestamp(time_text))
    except ValueError:
        return time_text


def tail_events(
    client: httpx.Client,
    *,
    limit: int,
    follow: bool,
    interval: float,
    emit: Callable[[str], None],
    keep_going: Callable[[], bool] = lambda: True,
    sleep: Callable[[float], None] = time.sleep,
    warn: Callable[[str], None] | None = None,
) -> int | None:
    """Print the newest `limit` events, then (with `follow`) each new one as it arrives.
    Returns the last position seen.

    While following, a poll that fails (the server restarting: no connection, a 5xx or 429)
    is said once on `warn` (stderr by default) and polled again after the server's
    Retry-After or `interval`, from the same position, until it answers: a follow is left
    running, and ended on the first restart. The first page still fails at once: a server
    that is not there at all is said, not waited for."""
    say = warn or (lambda text: err().print(text, markup=False, highlight=False))
    page = check(client.get("/v1/events", params={"limit": limit}), console=err())
    for item in page["events"]:
        emit(format_event(item))
    # An empty log has no position yet: continue from its start (0). With None each poll
    # asked for the newest page, and of 2,500 events sent at once only the last 1,000 came.
    after: int = page["next_after"] if page["next_after"] is not None else 0
    pause = interval
    trouble: str | None = None  # the failure said last, not said again at every poll
    while follow and keep_going():
        if pause:
            sleep(pause)
        problem, retry_after, page = _poll(client, after)
        if problem is not None:
            if problem != trouble:
                say(f"{problem}; reconnecting… (Ctrl-C stops)")
                trouble = problem
            pause = interval
            if retry_after is not None and retry_after.isdigit():
                pause = min(float(retry_after), MAX_BACKOFF_SECONDS)
            continue
        if trouble is not None:
            say(f"reconnected; continuing after position {after:,}")
            trouble = None
        for item in page["events"]:
            emit(format_event(item))
        after = page["next_after"] if page["next_after"] is not None else after
        # A page with events may have more behind it (a page ends at 1,000 events or 4 MiB):
        # read on at once, and wait only once a page comes back empty.
        pause = 0.0 if page["events"] else interval
    return after


def _poll(client: httpx.Client, after: int) -> tuple[str | None, str | None, dict[str, Any]]:
    """One page of the log after `after`; or, when the server cannot answer now (no
    connection, a 5xx or 429), the problem and its Retry-After. Any other refusal (a wrong
    key) ends the tail, as it would not change by polling again."""
    try:
        response = client.get("/v1/events", params={"after": after, "limit": 1000})
    except httpx.TransportError as exc:
        return f"cannot reach the server at {client.base_url}: {exc}", None, {}
    if response.status_code in RETRY_STATUSES:
        message = error_message(response).strip()
        problem = f"error {response.status_code}" + (f": {message}" if message else "")
        return problem, response.headers.get("Retry-After"), {}
    page: dict[str, Any] = check(response, console=err())
    return None, None, page


@app.command("tail")
def tail(
    follow: Annotated[
        bool, typer.Option("--follow", "-f", help="Keep printing new events.")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, max=1000, help="How many recent events.")] = 20,
    interval: Annotated[float, typer.Option(min=0.1, help="Seconds between polls.")] = 1.0,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Show the newest events of your tenant's event log (Ctrl-C stops --follow).

    With --follow, a server that restarts is polled again until it answers (said once on
    stderr), and the events come from where the tail was."""
    console = out()
    with api_client(url=url, api_key=api_key) as client:
        try:
            tail_events(
                client,
                limit=limit,
                follow=follow,
                interval=interval,
                emit=lambda line: console.print(line, highlight=False, soft_wrap=True),
            )
        except KeyboardInterrupt:
            return


# The ingest identity a reconciliation row checks: received = accepted + duplicate + rejected.
INGEST_STAGES = ("received", "accepted", "duplicate", "rejected")


def _balanced(counts: dict[str, int]) -> bool:
    return counts.get("received", 0) == sum(counts.get(s, 0) for s in INGEST_STAGES[1:])


def unbalanced_hours(report: dict[str, Any]) -> list[str]:
    """The hours (as the API writes them) whose ingest stages do not add up."""
    return [h["hour"] for h in report["hours"] if not _balanced(h["stages"])]


def reconciliation_tables(report: dict[str, Any]) -> list[Table]:
    """Per hour, the ingest stages and whether they balance, with a total row; then the
    rejections by reason. The pipeline's stages of the same hours (attributed, rated) are
    `qm pipeline accounting`'s: with them the table needed 90 columns and cut its totals at
    an ellipsis (`1,970…`) on an 80-column terminal."""
    # The hour as the tables write moments, so that it pastes back as --start; "ok" (not
    # "balanced") keeps the table within 80 columns with a month's totals in the millions.
    hour_column = "hour (UTC)"
    table = data_table(
        [hour_column, *INGEST_STAGES, "ok"],
        title=f"reconciliation {hour_text(report['start'])} .. {hour_text(report['end'])} UTC",
        right=INGEST_STAGES,
        whole=[hour_column],
    )
    reasons: Counter[tuple[str, str]] = Counter()
    for hour in report["hours"]:
        counts = hour["stages"]
        balanced = _balanced(counts)
        table.add_row(
            hour_cell(hour["hour"]),
            *(grouped(counts.get(s, 0)) for s in INGEST_STAGES),
            Text("yes", style="green") if balanced else Text("NO", style="bold red"),
        )
        for stage, by_reason in hour["reasons"].items():
            for reason, n in by_reason.items():
                reasons[(stage, reason)] += n
    totals = report["totals"]
    table.add_row("total", *(grouped(totals.get(s, 0)) for s in INGEST_STAGES), "", style="bold")
    tables = [table]
    if reasons:
        by_reason = data_table(["stage", "reason", "events"], title="by reason", right=["events"])
        for (stage, reason), n in sorted(reasons.items()):
            by_reason.add_row(stage, reason, grouped(n))
        tables.append(by_reason)
    return tables


def reconciliation(
    start: Annotated[
        str | None, typer.Option(help="First hour, RFC 3339 (default: 24 h before --end).")
    ] = None,
    end: Annotated[
        str | None, typer.Option(help="End, exclusive, RFC 3339 (default: end of this hour).")
    ] = None,
    url: UrlOption = None,
    api_key: ApiKeyOption = None,
) -> None:
    """Per hour: events received, accepted, duplicate and rejected (by reason).

    Exits 1 when an hour does not balance (received != accepted + duplicate + rejected)."""
    params = {k: v for k, v in (("start", start), ("end", end)) if v is not None}
    with api_client(url=url, api_key=api_key) as client:
        report = check(client.get("/v1/reconciliation", params=params), console=err())
    if not report["hours"]:
        window = f"{hour_text(report['start'])} and {hour_text(report['end'])} UTC"
        out().print(f"no events received between {window}")
        return
    for table in reconciliation_tables(report):
        out().print(table)
    out().print(
        "what the pipeline has made of the accepted events (rated, unattributed, waiting):"
        " qm pipeline accounting",
        style="dim",
    )
    if unbalanced := unbalanced_hours(report):
        # A fault, never a transient state (the counters are written in the transaction that
        # stores the events): said on stderr with status 1, so a scheduled check can alert.
        err().print(
            f"[bold red]{len(unbalanced)} hour(s) do not balance[/] (received is not accepted"
            f" + duplicate + rejected): {hour_names(unbalanced)}"
        )
        raise typer.Exit(1)
