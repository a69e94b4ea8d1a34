"""A real HTTP webhook receiver on 127.0.0.1 for notifier tests: Slack incoming webhooks, PagerDuty's Events API v2
and generic webhooks all POST JSON to it.

A genuine threaded HTTP/1.1 server on a random free loopback port (never any other address). Every request is
recorded (method, path, lower-cased headers, raw body, parsed JSON, arrival time on time.monotonic()). Answers are
scriptable: ``enqueue(reply(429, retry_after="0.2"), reply(500))`` answers the next requests in order, then the
``default`` (202 with a PagerDuty-like body).

    with Receiver() as receiver:
        receiver.enqueue(reply(429, retry_after=1))
        ... send pages to receiver.url("/pd") ...
        first, second = receiver.wait_for(2)
        assert second.json["event_action"] == "trigger"

``wait_for(n, timeout)`` blocks on a condition until n requests arrived (TimeoutError otherwise), so tests never
sleep to wait for a page. ``stop()`` shuts down open keep-alive connections and joins every handler thread.
"""

from __future__ import annotations

import json
import socket
import socketserver
import threading
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

HOST = "127.0.0.1"


@dataclass(frozen=True, slots=True)
class Reply:
    status: int = 202
    body: bytes = b'{"status":"success","message":"Event processed"}'
    headers: tuple[tuple[str, str], ...] = ()


def reply(status: int = 202, body: Any = None, *, retry_after: float | str | None = None,
          headers: dict[str, str] | None = None) -> Reply:
    extra = dict(headers or {})
    if retry_after is not None:
        extra["Retry-After"] = str(retry_after)
    if body is None:
        payload = b'{"status":"success","message":"Event processed"}' if status < 300 else \
            json.dumps({"status": "error", "message": f"status {status}"}).encode()
    elif isinstance(body, bytes):
        payload = body
    elif isinstance(body, str):
        payload = body.encode()
    else:
        payload = json.dumps(body).encode()
    return Reply(status, payload, tuple(extra.items()))


@dataclass(frozen=True, slots=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any = field(default=None)
    at: float = 0.0  # time.monotonic() on arrival


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    timeout = 30
    server: _Server

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        received = Received(self.command, self.path, {k.lower(): v for k, v in self.headers.items()}, body, parsed,
                            time.monotonic())
        answer = self.server.owner._record(received)
        try:
            self.send_response(answer.status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(answer.body)))
            for name, value in answer.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(answer.body)
            self.wfile.flush()
        except OSError:
            self.close_connection = True

    do_GET = do_POST

    def log_message(self, format: str, *args: Any) -> None:
        pass


class _Server(ThreadingHTTPServer):
    daemon_threads = False
    block_on_close = True

    def __init__(self, owner: Receiver) -> None:
        self.owner = owner
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__((HOST, 0), _Handler)

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # no getfqdn(): loopback needs no DNS
        self.server_name, self.server_port = HOST, self.server_address[1]

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._open_lock:
            self._open.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._open_lock:
            self._open.discard(request)
        super().shutdown_request(request)

    def close_open_connections(self) -> None:
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass  # a client hanging up mid-request is normal in retry tests


class Receiver:
    def __init__(self, default: Reply | None = None) -> None:
        self.default = default or reply(202)
        self._queue: deque[Reply] = deque()
        self._requests: list[Received] = []
        self._cond = threading.Condition()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> Receiver:
        self._server = _Server(self)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01},
                                        name="fake-receiver", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        server.shutdown()
        server.close_open_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._server is not None, "receiver not started"
        return int(self._server.server_address[1])

    def url(self, path: str = "/") -> str:
        return f"http://{HOST}:{self.port}{path}"

    def enqueue(self, *replies: Reply) -> None:
        with self._cond:
            self._queue.extend(replies)

    @property
    def requests(self) -> list[Received]:
        with self._cond:
            return list(self._requests)

    def on(self, path: str) -> list[Received]:
        return [r for r in self.requests if r.path == path]

    def wait_for(self, n: int, timeout: float = 10.0, path: str | None = None) -> list[Received]:
        """The first n requests (to `path`, if given) once they have arrived; TimeoutError after `timeout`."""
        def matching() -> list[Received]:
            return [r for r in self._requests if path is None or r.path == path]

        with self._cond:
            if not self._cond.wait_for(lambda: len(matching()) >= n, timeout=timeout):
                raise TimeoutError(f"expected {n} requests{f' to {path}' if path else ''} within {timeout}s, got "
                                   f"{len(matching())}: {[(r.path, r.json) for r in self._requests]}")
            return matching()[:n]

    def _record(self, received: Received) -> Reply:
        with self._cond:
            self._requests.append(received)
            self._cond.notify_all()
            return self._queue.popleft() if self._queue else self.default


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    with Receiver() as server:
        yield server
