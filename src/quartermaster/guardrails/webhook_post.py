"""One webhook POST under a hard wall-clock deadline (`QM_WEBHOOK_TIMEOUT_SECONDS`).

An HTTP client's timeout limits each wait (connecting, each read, each write), not the
attempt: a receiver that answers its headers and then sends one byte every few seconds never
trips it and holds the sender as long as it likes. So an attempt runs in a thread of its own,
which its caller waits for until the deadline only. At the deadline the caller shuts the
attempt's connection down — the request asks for a connection of its own (`Connection:
close`), and the `trace` extension hands over its socket as soon as it is connected — which
ends whatever the attempt was waiting for (TLS handshake, headers, body), and records the
attempt as failed. The waits before there is a socket (a free connection, connecting) are
given only the time left (`DeadlineTimeouts`). A name lookup cannot be cut short: its thread
is left to end on its own, while the caller moves on at the deadline all the same.
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx

from quartermaster.guardrails.destinations import Destination, DestinationRefused

MAX_BODY_BYTES = 64 * 1024  # read at most this much of an answer; a 2xx needs no more
SNIPPET_CHARS = 200  # of a failed answer's body, in its error
SHORTEST_WAIT = 0.001  # a wait of 0 would make the socket non-blocking, not time out


class DeadlineTimeouts(dict[str, float | None]):
    """The `timeout` request extension whose every value is the time left until `deadline`
    (on `clock`, `time.monotonic`), read afresh each time httpcore asks for one."""

    def __init__(self, deadline: float, clock: Callable[[], float] = time.monotonic) -> None:
        super().__init__(connect=None, read=None, write=None, pool=None)
        self.deadline = deadline
        self.clock = clock

    def left(self) -> float:
        return max(self.deadline - self.clock(), SHORTEST_WAIT)

    def get(self, key: str, default: object = None) -> float | None:
        return self.left()

    def __getitem__(self, key: str) -> float | None:
        return self.left()


@dataclass(frozen=True, slots=True)
class PostOutcome:
    """What one attempt came to: the status code (None: no answer), the error text (None: a
    2xx read in full in time) and how long it took in milliseconds."""

    status_code: int | None
    error: str | None
    duration_ms: int
    connected: bool = True  # False: the connection itself was refused (nothing was sent)


class _OverDeadline(Exception):
    pass


def _read_body(response: httpx.Response, timeouts: DeadlineTimeouts) -> bytes:
    """The first `MAX_BODY_BYTES` of the body, or _OverDeadline when it is not in by then."""
    body = b""
    for chunk in response.iter_bytes():
        body += chunk
        if timeouts.clock() >= timeouts.deadline:
            raise _OverDeadline
        if len(body) >= MAX_BODY_BYTES:
            break
    if timeouts.clock() >= timeouts.deadline:
        raise _OverDeadline
    return body


JOIN_GRACE_SECONDS = 0.25  # past the deadline, for the attempt to wind up once cut


def _late(timeout_seconds: float, heard: list[int]) -> str:
    """Why an attempt failed at the deadline; `heard`: the status code, once it came."""
    came = f" (HTTP {heard[0]} came, its body did not)" if heard else ""
    return f"no complete answer within {timeout_seconds:g} s{came}"


def post_within(
    client: httpx.Client,
    url: str,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout_seconds: float,
    destination: Callable[[], Destination] | None = None,
) -> PostOutcome:
    """POST `body` to `url` and read the answer, all within `timeout_seconds` of wall-clock
    time: an answer not complete by then is a failure (`…Timeout: no complete answer within
    N s`). `destination` picks (and checks) the address to connect to first, within the same
    deadline (a resolver that hangs is cut off with the rest); refused, it is the attempt's
    error (`refused: …`). Never raises for the receiver's faults; the error names what went
    wrong without echoing the headers (the signature)."""
    started = time.monotonic()
    outcome: list[PostOutcome] = []
    heard: list[int] = []  # the status code, once the answer's headers are in
    sockets = _Sockets()

    def attempt() -> None:
        target = Destination(url)
        try:
            if destination is not None:
                target = destination()
            for address_url in (target.url, *target.fallbacks):
                done = _post(
                    client,
                    address_url,
                    target,
                    body=body,
                    headers=headers,
                    timeout=timeout_seconds,
                    deadline=started + timeout_seconds,
                    trace=sockets.trace,
                    heard=heard,
                )
                if done.connected:
                    break
        except DestinationRefused as exc:
            took = int((time.monotonic() - started) * 1000)
            done = PostOutcome(None, f"refused: {exc}", took)
        except Exception as exc:  # not the receiver's fault, but still this attempt's end
            took = int((time.monotonic() - started) * 1000)
            done = PostOutcome(None, f"{type(exc).__name__}: {exc}", took)
        outcome.append(done)

    worker = threading.Thread(target=attempt, name="qm-webhook-post", daemon=True)
    worker.start()
    try:
        worker.join(timeout_seconds)
        if outcome:
            return outcome[0]
        sockets.cut()  # ends any wait on the connection at once
        worker.join(JOIN_GRACE_SECONDS)
    finally:
        sockets.close()
    took = int((time.monotonic() - started) * 1000)
    return PostOutcome(None, f"Timeout: {_late(timeout_seconds, heard)}", took)


class _Sockets:
    """A duplicate of the socket of an attempt's connection, from the `trace` extension's
    `connect_tcp` event, to shut the connection down with from another thread. A duplicate
    shares the connection (shutting it down ends any wait on it, TLS handshake included)
    and stays valid when TLS detaches the original."""

    def __init__(self) -> None:
        self.found: list[socket.socket] = []
        self.lock = threading.Lock()
        self.cut_off = False

    def trace(self, event: str, info: dict[str, Any]) -> None:
        if not event.endswith("connect_tcp.complete"):
            return
        stream: Any = info.get("return_value")  # httpcore's NetworkStream
        sock = stream.get_extra_info("socket") if hasattr(stream, "get_extra_info") else None
        if not isinstance(sock, socket.socket):
            return
        with self.lock:
            if self.cut_off:  # connected only after the deadline
                _shut(sock)
            else:
                self.found.append(sock.dup())

    def cut(self) -> None:
        """Shut the connection down: its reads and writes end at once."""
        with self.lock:
            self.cut_off = True
            for sock in self.found:
                _shut(sock)

    def close(self) -> None:
        with self.lock:
            for sock in self.found:
                sock.close()
            self.found.clear()


def _shut(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):  # closed by now
        sock.shutdown(socket.SHUT_RDWR)


def _post(
    client: httpx.Client,
    url: str,
    target: Destination,
    *,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
    deadline: float,
    trace: Callable[[str, dict[str, Any]], None],
    heard: list[int],
) -> PostOutcome:
    """One address's try, until the attempt's `deadline` (of `timeout` seconds in all); its
    duration counts from the attempt's start, earlier addresses' tries included."""
    clock = time.monotonic
    started = deadline - timeout
    timeouts = DeadlineTimeouts(deadline, clock)

    def took() -> int:
        return int((clock() - started) * 1000)

    pinned_headers = {"Host": target.host_header} if target.host_header else {}
    extensions: dict[str, Any] = {"timeout": timeouts, "trace": trace}
    if target.sni_hostname is not None:
        extensions["sni_hostname"] = target.sni_hostname  # TLS verifies the name, not the IP
    request = client.build_request(
        "POST",
        url,
        content=body,
        headers={**headers, **pinned_headers, "Connection": "close"},
        extensions=extensions,
    )
    try:
        response = client.send(request, stream=True)
        heard.append(response.status_code)
        try:
            answer = _read_body(response, timeouts)
        finally:
            response.close()
    except _OverDeadline:
        return PostOutcome(None, f"Timeout: {_late(timeout, heard)}", took())
    except httpx.TimeoutException as exc:
        return PostOutcome(None, f"{type(exc).__name__}: {_late(timeout, heard)}", took())
    except httpx.ConnectError as exc:
        return PostOutcome(None, f"{type(exc).__name__}: {exc}", took(), connected=False)
    except httpx.HTTPError as exc:
        return PostOutcome(None, f"{type(exc).__name__}: {exc}", took())
    status = response.status_code
    if 200 <= status < 300:
        return PostOutcome(status, None, took())
    text = answer[: SNIPPET_CHARS * 4].decode(response.encoding or "utf-8", errors="replace")
    snippet = text[:SNIPPET_CHARS].replace("\n", " ")
    return PostOutcome(status, f"HTTP {status}: {snippet}", took())
