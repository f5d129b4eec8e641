"""`qm serve`'s sockets: bound before anything starts, so that a port in use or a host that
does not resolve is one line (not the ready line followed by uvicorn's error once the
background services had started), port 0's real port is known for the ready line, and the
ready line is said only once the sockets accept connections."""

from __future__ import annotations

import contextlib
import errno
import os
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

from quartermaster.cli.client import fail

if TYPE_CHECKING:
    import uvicorn

# uvicorn's exit status for an application that did not start (uvicorn.run's).
STARTUP_FAILURE = 3


def run_server(
    config: uvicorn.Config,
    listeners: list[socket.socket],
    *,
    on_listening: Callable[[], None],
    where: str,
) -> None:
    """uvicorn.run on sockets bound already, calling `on_listening` once they accept
    connections: after the application's startup (the background services), so that the
    ready line is never followed by a refusal or a bind error."""
    import uvicorn

    class Server(uvicorn.Server):
        listen_error: OSError | None = None

        async def startup(self, sockets: list[socket.socket] | None = None) -> None:
            try:
                await super().startup(sockets=sockets)
                if not all(_listening(sock) for sock in sockets or ()):
                    # uvloop's server closes a socket that cannot listen without a word
                    # (asyncio's raises); listen() fails only for a port another listens on.
                    raise OSError(errno.EADDRINUSE, os.strerror(errno.EADDRINUSE))
            except OSError as exc:
                # Listening, not binding, failed: SO_REUSEADDR lets two servers starting at
                # once bind one port, and the first to listen has it.
                self.listen_error = exc
                self.should_exit = True
                if not self.started:  # else uvicorn's shutdown stops the application
                    await self.lifespan.shutdown()
                return
            on_listening()

    server = Server(config)
    with contextlib.suppress(KeyboardInterrupt):  # as uvicorn.run: Ctrl-C is how it stops
        server.run(sockets=listeners)
    if server.listen_error is not None:
        fail(f"cannot listen on {where}: {_reason(server.listen_error)}")
    if not server.started:  # as uvicorn.run: the application did not start
        raise SystemExit(STARTUP_FAILURE)


def _listening(sock: socket.socket) -> bool:
    if sock.fileno() == -1:
        return False
    accepting = getattr(socket, "SO_ACCEPTCONN", None)  # not on every platform
    return accepting is None or bool(sock.getsockopt(socket.SOL_SOCKET, accepting))


def listen(host: str, port: int) -> list[socket.socket]:
    """Sockets bound to every address of `host`, as uvicorn's own binding (asyncio's
    create_server) made them (IPv6 ones IPv6 only), all on one port: port 0's is the one the
    first was given. A host that does not resolve or an address that cannot be bound ends
    the command in one line naming the settings."""
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        fail(
            f"cannot listen on {bind_address(host, port)}: the host {host!r} does not resolve "
            f"({exc.strerror})"
        )
    listeners: list[socket.socket] = []
    try:
        for family, kind, proto, _, address in dict.fromkeys(infos):
            sock = socket.socket(family, kind, proto)
            listeners.append(sock)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            if len(listeners) > 1:  # port 0: the others on the first one's port
                address = (address[0], listeners[0].getsockname()[1], *address[2:])
            sock.bind(address)
    except OSError as exc:
        close_all(listeners)
        fail(f"cannot listen on {bind_address(host, port)}: {_reason(exc)}")
    return listeners


def bind_address(host: str, port: int) -> str:
    return f"{url_host(host)}:{port} (--host/--port, QM_HOST/QM_PORT)"


def _reason(exc: OSError) -> str:
    """`address already in use`, as an OSError says it without its number."""
    return (exc.strerror or str(exc)).lower()


def close_all(sockets: list[socket.socket]) -> None:
    for sock in sockets:
        sock.close()


def url_host(host: str) -> str:
    """`host` as a URL writes it: an IPv6 address in brackets."""
    return f"[{host}]" if ":" in host else host
