"""Where a serve listens: `--listen HOST:PORT` parsed, the socket bound by us (so port 0 works and the real port is
known before uvicorn starts), and a uvicorn Server that leaves signals to the caller: `flightdeck serve` turns
SIGTERM into a drain while the API keeps answering, which uvicorn's own handler (stop serving at once) would not."""

from __future__ import annotations

import contextlib
import socket
from collections.abc import Iterator
from typing import Any

import uvicorn

from engine.errors import InputError

DEFAULT_LISTEN = "127.0.0.1:8470"


def parse_listen(text: str) -> tuple[str, int]:
    """"127.0.0.1:8470", "[::1]:0", "0.0.0.0:80" -> (host, port). InputError naming --listen otherwise."""
    host, sep, port_text = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port_text.isdigit() or int(port_text) > 65535:
        raise InputError(f"expected HOST:PORT (like 127.0.0.1:8470, or port 0 for any free port), got {text!r}",
                         field="--listen")
    return host, int(port_text)


def bind(host: str, port: int) -> socket.socket:
    """A listening TCP socket on (host, port); InputError naming --listen when the address cannot be bound."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY on the connections it accepts only when the listening socket
    # says TCP. Without it each response (headers, then body: two writes) waited for the client's delayed ACK,
    # ~40 ms per request on a kept-alive connection (docs/benchmarks.md "A queue's fleet-wide max_depth").
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(2048)
    except OSError as exc:
        sock.close()
        raise InputError(f"cannot listen on {host}:{port}: {exc.strerror or exc}", field="--listen") from None
    return sock


def url_of(sock: socket.socket) -> str:
    host, port = sock.getsockname()[:2]
    return f"http://[{host}]:{port}" if ":" in host else f"http://{host}:{port}"


class ApiServer(uvicorn.Server):
    """uvicorn's Server without its signal handlers: the caller decides what a signal means and sets
    `should_exit` when the API is to stop."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


def api_server(app: Any, *, log_level: str = "warning") -> ApiServer:
    # No access log (a line per request at thousands per second), uvicorn's logging left unconfigured (its
    # warnings and errors reach stderr through Python's last-resort handler), no lifespan: the engine is opened
    # and closed by the caller, around the server.
    config = uvicorn.Config(app, lifespan="off", access_log=False, log_config=None, log_level=log_level,
                            timeout_graceful_shutdown=5, server_header=False)
    return ApiServer(config)
