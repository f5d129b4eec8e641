"""Misbehaving local webhook receivers, on real sockets: one that trickles its answer (the
headers, or a 200's body, a byte at a time, each byte well inside any per-read timeout) and
one that reads the request and never answers. Each records when requests arrived."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

TRICKLE_STATUS = b"HTTP/1.1 200 OK\r\n"
TRICKLE_HEADERS = b"Content-Type: text/plain\r\nContent-Length: 100\r\n\r\n"
PADDING_HEADER = b"X-Padding: y\r\n"


@dataclass
class SlowReceiver:
    url: str
    arrived: list[float] = field(default_factory=list)  # time.monotonic() of each request
    dropped: list[float] = field(default_factory=list)  # when the sender hung up on it
    lock: threading.Lock = field(default_factory=threading.Lock)
    stopping: threading.Event = field(default_factory=threading.Event)


def _read_request(conn: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            return data
        data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(body) < length:
        chunk = conn.recv(65536)
        if not chunk:
            break
        body += chunk
    return head


def _trickle(conn: socket.socket, data: bytes, every: float, stopping: threading.Event) -> None:
    for byte in data:
        if stopping.wait(every):
            return
        conn.sendall(bytes([byte]))  # OSError once the sender has hung up


def _hang(conn: socket.socket, stopping: threading.Event) -> None:
    """Answer nothing; return (OSError) once the sender hangs up."""
    conn.settimeout(0.05)
    while not stopping.is_set():
        try:
            if conn.recv(1) == b"":
                raise ConnectionResetError
        except TimeoutError:
            continue


@contextmanager
def slow_receiver(mode: str, *, every: float = 0.3) -> Iterator[SlowReceiver]:
    """`mode`: `trickle-body` (a 200 whose 100-byte body comes a byte every `every` s),
    `trickle-headers` (the status line and headers so) or `hang` (never answers)."""
    listener = socket.create_server(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    receiver = SlowReceiver(f"http://127.0.0.1:{port}/{mode}")

    def serve(conn: socket.socket) -> None:
        with conn:
            try:
                while not receiver.stopping.is_set():
                    if not _read_request(conn):
                        return
                    with receiver.lock:
                        receiver.arrived.append(time.monotonic())
                    if mode == "trickle-body":
                        conn.sendall(TRICKLE_STATUS + TRICKLE_HEADERS)
                        _trickle(conn, b"x" * 100, every, receiver.stopping)
                    elif mode == "trickle-headers":
                        head = TRICKLE_STATUS + PADDING_HEADER * 100 + TRICKLE_HEADERS
                        _trickle(conn, head, every, receiver.stopping)
                    else:
                        _hang(conn, receiver.stopping)
            except OSError:
                with receiver.lock:
                    receiver.dropped.append(time.monotonic())

    def accept() -> None:
        listener.settimeout(0.1)
        while not receiver.stopping.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=serve, args=(conn,), daemon=True).start()

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        receiver.stopping.set()
        thread.join(timeout=5)
        listener.close()
