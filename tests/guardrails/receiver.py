"""A real local HTTP receiver for webhook tests: records every request (with when it came)
and answers 500 to the first `fail_first` of them (then 200)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Received:
    headers: dict[str, str]
    body: bytes
    path: str = ""
    at: float = field(default_factory=time.monotonic)  # when it arrived


@dataclass
class Receiver:
    url: str
    fail_first: int
    requests: list[Received] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, request: Received) -> int:
        with self.lock:
            self.requests.append(request)
            return 500 if len(self.requests) <= self.fail_first else 200


@contextmanager
def webhook_receiver(
    fail_first: int = 0, *, echo_path: bool = False, delay: float = 0.0
) -> Iterator[Receiver]:
    """`echo_path`: a failing answer quotes the request's path and query, as some do;
    `delay`: seconds to wait before answering."""
    receiver: Receiver | None = None

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            assert receiver is not None
            status = receiver.record(Received(dict(self.headers.items()), body, self.path))
            time.sleep(delay)
            payload = b"ok" if status == 200 else b"receiver failing on purpose"
            if status != 200 and echo_path:
                payload = f"no route for POST {self.path}".encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

        def log_message(self, format: str, *args: object) -> None:
            return

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver = Receiver(f"http://127.0.0.1:{server.server_address[1]}/hook", fail_first)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
