"""A real OpenAI-compatible chat-completions server on 127.0.0.1, with scriptable faults, for tests.

It is a genuine HTTP/1.1 server (``http.server.ThreadingHTTPServer``, one thread per connection, keep-alive) on a
random free loopback port, running in background threads, so it works the same from sync tests and from anyio
tests. Only ``POST /v1/chat/completions`` is served; anything else gets a 404 (and is still recorded).

Quick start::

    from tests.fakes.openai_server import FakeOpenAIServer, text, tool_calls, call, rate_limited, slow

    with FakeOpenAIServer() as server:          # or the `openai_server` / `openai_server_factory` fixtures
        server.enqueue(rate_limited(retry_after=2), text("hello"))
        provider = OpenAIProvider(base_url=server.base_url, api_key_env=None)
        ...
        assert server.requests[1].json["model"] == "gpt-test"

Choosing the answer -- for every request, the first of:
  1. the next behaviour in the queue (``enqueue(*behaviours)``; FIFO, one per request, in arrival order);
  2. ``responder(request)`` if set and it returns a Behaviour (return None to fall through);
  3. ``default`` (``text("ok")`` unless given).
An exception inside a responder answers HTTP 500 and is re-raised by ``stop()``, so a broken test script fails
the test instead of looking like a provider outage.

Behaviours (all plain frozen ``Behaviour`` values, built by these functions):
  text(content, prompt_tokens=, completion_tokens=, finish_reason=, model=, usage=True)
  tool_calls(*calls, content=None, finish_reason="tool_calls", ...) with call(name, arguments, id=None);
      ``arguments`` may be a dict (sent as JSON) or a str sent verbatim -- use that for malformed JSON
  missing_usage(content)          a text reply without a ``usage`` object
  rate_limited(retry_after=)      429; retry_after as seconds (number or str) or a datetime (sent as an HTTP date)
  server_error(status=500)        5xx with an OpenAI-style error body
  http_error(status, message)     any status with an OpenAI-style error body (401, 400, ...)
  non_json(body=, status=200)     a body that is not JSON
  empty_choices(prompt_tokens=, completion_tokens=, usage=True)   200 with ``"choices": []`` (and a ``usage``)
  error_object(message)           200 carrying an ``error`` object
  json_reply(payload, status=200, headers=)   any JSON you like
  disconnect()                    close the connection without answering
  slow(behaviour, seconds=10.0)   wait until ``release()`` is called or ``seconds`` pass, then answer
Builders for bodies: ``completion(...)`` returns the JSON dict a ``text``/``tool_calls`` reply sends.

Slow answers all wait on one release event: ``release()`` lets every waiting and future slow answer through,
``hold()`` re-arms it. ``stop()`` releases them so shutdown is never stuck behind a held answer.

Recording: ``server.requests`` is a snapshot list of ``RecordedRequest`` (method, path, lower-cased ``headers``,
raw ``body``, parsed ``json`` or None, and helpers ``messages`` / ``has_tool_result`` / ``authorization``).
``wait_for_requests(n, timeout=5.0)`` blocks until n requests arrived (TimeoutError otherwise); from async code
use ``await server.wait_for_requests_async(n)`` so the event loop keeps running the calls being waited for.

Scripting a conversation with a responder::

    def script(req: RecordedRequest) -> Behaviour:
        if not req.has_tool_result:
            return tool_calls(call("lookup", {"id": 7}))
        return text("done")
    server.responder = script

Shutdown (``stop()``, ``__exit__``, fixture teardown) stops accepting, shuts down open keep-alive connections
and joins every handler thread, so no thread or socket outlives the test.
"""

from __future__ import annotations

import json
import socket
import socketserver
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime
from email.utils import format_datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import anyio
import pytest

CHAT_PATH = "/v1/chat/completions"
HOST = "127.0.0.1"


# ------------------------------------------------------------------------------------------------- behaviours


@dataclass(frozen=True, slots=True)
class Behaviour:
    """How to answer one request."""

    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"
    headers: tuple[tuple[str, str], ...] = ()
    hold_s: float = 0.0  # wait up to this long (or until release()) before answering
    disconnect: bool = False  # close the connection without answering


def json_reply(payload: Any, status: int = 200, headers: dict[str, str] | None = None) -> Behaviour:
    return Behaviour(status=status, body=json.dumps(payload).encode("utf-8"),
                     headers=tuple((headers or {}).items()))


def call(name: str, arguments: dict[str, Any] | str, id: str | None = None) -> dict[str, Any]:
    """One tool call for ``tool_calls``. A str ``arguments`` is sent verbatim (malformed JSON is allowed)."""
    raw = arguments if isinstance(arguments, str) else json.dumps(arguments)
    out: dict[str, Any] = {"type": "function", "function": {"name": name, "arguments": raw}}
    if id is not None:
        out["id"] = id
    return out


def completion(content: str | None = "ok", *, tool_call_list: list[dict[str, Any]] | None = None,
               finish_reason: str | None = "stop", model: str = "fake-model", prompt_tokens: int = 10,
               completion_tokens: int = 5, usage: bool = True) -> dict[str, Any]:
    """The JSON body of a chat completion, shaped like OpenAI's."""
    message: dict[str, Any] = {"role": "assistant", "content": content}
    if tool_call_list:
        message["tool_calls"] = [
            {"id": f"call_{i}", **c} if "id" not in c else c for i, c in enumerate(tool_call_list)
        ]
    body: dict[str, Any] = {
        "id": "chatcmpl-fake", "object": "chat.completion", "created": 1_800_000_000, "model": model,
        "choices": [{"index": 0, "message": message, "finish_reason": finish_reason}],
    }
    if usage:
        body["usage"] = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                         "total_tokens": prompt_tokens + completion_tokens}
    return body


def text(content: str = "ok", *, prompt_tokens: int = 10, completion_tokens: int = 5,
         finish_reason: str | None = "stop", model: str = "fake-model", usage: bool = True) -> Behaviour:
    return json_reply(completion(content, finish_reason=finish_reason, model=model, prompt_tokens=prompt_tokens,
                                 completion_tokens=completion_tokens, usage=usage))


def tool_calls(*calls: dict[str, Any], content: str | None = None, finish_reason: str | None = "tool_calls",
               model: str = "fake-model", prompt_tokens: int = 10, completion_tokens: int = 5,
               usage: bool = True) -> Behaviour:
    return json_reply(completion(content, tool_call_list=list(calls), finish_reason=finish_reason, model=model,
                                 prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, usage=usage))


def missing_usage(content: str = "ok") -> Behaviour:
    return text(content, usage=False)


def _error_body(message: str, error_type: str, code: str | None = None) -> dict[str, Any]:
    return {"error": {"message": message, "type": error_type, "param": None, "code": code}}


def http_error(status: int, message: str, *, error_type: str = "invalid_request_error",
               headers: dict[str, str] | None = None) -> Behaviour:
    return json_reply(_error_body(message, error_type), status=status, headers=headers)


def rate_limited(retry_after: float | str | datetime | None = None,
                 message: str = "Rate limit reached for requests") -> Behaviour:
    headers: dict[str, str] = {}
    if isinstance(retry_after, datetime):
        headers["Retry-After"] = format_datetime(retry_after, usegmt=True)
    elif retry_after is not None:
        headers["Retry-After"] = str(retry_after)
    return http_error(429, message, error_type="rate_limit_exceeded", headers=headers)


def server_error(status: int = 500, message: str = "The server had an error while processing your request.",
                 retry_after: float | None = None) -> Behaviour:
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return http_error(status, message, error_type="server_error", headers=headers)


def non_json(body: str = "<html><body>502 Bad Gateway</body></html>", status: int = 200) -> Behaviour:
    return Behaviour(status=status, body=body.encode("utf-8"), content_type="text/html")


def empty_choices(*, prompt_tokens: int = 10, completion_tokens: int = 5, usage: bool = True) -> Behaviour:
    """200 with ``"choices": []`` -- and, like gateways that bill such answers, a ``usage`` object unless told not."""
    body = completion(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens, usage=usage)
    body["choices"] = []
    return json_reply(body)


def error_object(message: str = "The model is overloaded", code: str | None = "overloaded") -> Behaviour:
    return json_reply(_error_body(message, "server_error", code))


def disconnect() -> Behaviour:
    return Behaviour(disconnect=True)


def slow(behaviour: Behaviour, seconds: float = 10.0) -> Behaviour:
    """``behaviour``, answered only after ``release()`` or ``seconds`` (the bound that keeps a test from hanging)."""
    return replace(behaviour, hold_s=seconds)


# -------------------------------------------------------------------------------------------------- recording


@dataclass(frozen=True, slots=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # names lower-cased
    body: bytes
    json: Any = field(default=None)
    received: float = field(default_factory=time.monotonic)  # when it arrived (time.monotonic), for pacing tests

    @property
    def messages(self) -> list[dict[str, Any]]:
        return list(self.json.get("messages", [])) if isinstance(self.json, dict) else []

    @property
    def has_tool_result(self) -> bool:
        return any(m.get("role") == "tool" for m in self.messages if isinstance(m, dict))

    @property
    def authorization(self) -> str | None:
        return self.headers.get("authorization")


Responder = Callable[[RecordedRequest], "Behaviour | None"]


# ------------------------------------------------------------------------------------------------------ server


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, like a real API server; every answer has a Content-Length
    timeout = 30  # an idle connection a client forgot never pins a thread for long
    server: _HTTPServer

    def do_POST(self) -> None:
        self._serve()

    def do_GET(self) -> None:
        self._serve()

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        request = RecordedRequest(method=self.command, path=self.path,
                                  headers={k.lower(): v for k, v in self.headers.items()}, body=body, json=parsed)
        behaviour = self.server.owner._choose(request)
        if behaviour.hold_s > 0:
            self.server.owner._released.wait(behaviour.hold_s)
        if behaviour.disconnect:
            self.close_connection = True  # socketserver closes the socket once we return
            return
        try:
            self.send_response(behaviour.status)
            self.send_header("Content-Type", behaviour.content_type)
            self.send_header("Content-Length", str(len(behaviour.body)))
            for name, value in behaviour.headers:
                self.send_header(name, value)
            self.end_headers()
            self.wfile.write(behaviour.body)
            self.wfile.flush()
        except OSError:
            # The client gave up (its timeout fired) before a held answer was released: expected, not an error.
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        pass  # recorded in server.requests instead of spamming test output


class _HTTPServer(ThreadingHTTPServer):
    daemon_threads = False  # joined by server_close(): no thread outlives stop()
    block_on_close = True
    request_queue_size = 128  # many concurrent connects in a test must not overflow the accept backlog

    def __init__(self, owner: FakeOpenAIServer) -> None:
        self.owner = owner
        self._open: set[socket.socket] = set()
        self._open_lock = threading.Lock()
        super().__init__((HOST, 0), _Handler)

    def server_bind(self) -> None:
        # HTTPServer.server_bind calls getfqdn(), a DNS lookup; loopback tests need none.
        socketserver.TCPServer.server_bind(self)
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
        """Wake handler threads blocked reading the next request on an idle keep-alive connection."""
        with self._open_lock:
            sockets = list(self._open)
        for sock in sockets:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], OSError):
            return  # a client that hung up; normal for timeout tests
        super().handle_error(request, client_address)


class FakeOpenAIServer:
    """See the module docstring."""

    def __init__(self, *, default: Behaviour | None = None, responder: Responder | None = None) -> None:
        self.default = default if default is not None else text("ok")
        self.responder = responder
        self._queue: deque[Behaviour] = deque()
        self._requests: list[RecordedRequest] = []
        self._responder_errors: list[BaseException] = []
        self._cond = threading.Condition()
        self._released = threading.Event()
        self._server: _HTTPServer | None = None
        self._thread: threading.Thread | None = None

    # lifecycle

    def start(self) -> FakeOpenAIServer:
        if self._server is not None:
            raise RuntimeError("server already started")
        self._server = _HTTPServer(self)
        # A short poll interval keeps stop() fast; serve_forever wakes on new connections regardless.
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.01},
                                        name=f"fake-openai-{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        server, thread = self._server, self._thread
        if server is None:
            return
        self._server = self._thread = None
        self._released.set()
        server.shutdown()
        server.close_open_connections()
        server.server_close()  # closes the listening socket and joins every handler thread
        if thread is not None:
            thread.join(timeout=5.0)
        if self._responder_errors:
            raise RuntimeError("the test's responder raised; see the cause") from self._responder_errors[0]

    def __enter__(self) -> FakeOpenAIServer:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    # addresses

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("server not started")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """What a provider's ``base_url`` should be: ``http://127.0.0.1:PORT/v1``."""
        return f"http://{HOST}:{self.port}/v1"

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}{CHAT_PATH}"

    # scripting

    def enqueue(self, *behaviours: Behaviour) -> None:
        with self._cond:
            self._queue.extend(behaviours)

    @property
    def pending(self) -> int:
        """Queued behaviours not yet used."""
        with self._cond:
            return len(self._queue)

    def release(self) -> None:
        self._released.set()

    def hold(self) -> None:
        self._released.clear()

    # recording

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._cond:
            return list(self._requests)

    @property
    def request_count(self) -> int:
        with self._cond:
            return len(self._requests)

    def wait_for_requests(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        with self._cond:
            if not self._cond.wait_for(lambda: len(self._requests) >= n, timeout=timeout):
                raise TimeoutError(f"expected {n} requests within {timeout}s, got {len(self._requests)}")
            return list(self._requests)

    async def wait_for_requests_async(self, n: int, timeout: float = 5.0) -> list[RecordedRequest]:
        return await anyio.to_thread.run_sync(self.wait_for_requests, n, timeout)

    # called from handler threads

    def _choose(self, request: RecordedRequest) -> Behaviour:
        with self._cond:
            self._requests.append(request)
            self._cond.notify_all()
            if request.path != CHAT_PATH or request.method != "POST":
                return http_error(404, f"no route for {request.method} {request.path}")
            if self._queue:
                return self._queue.popleft()
        if self.responder is not None:
            try:
                chosen = self.responder(request)
            except Exception as exc:  # surfaced by stop(); the client sees a 500 meanwhile
                with self._cond:
                    self._responder_errors.append(exc)
                return server_error(500, f"responder raised {type(exc).__name__}: {exc}")
            if chosen is not None:
                return chosen
        return self.default


# ----------------------------------------------------------------------------------------------------- fixtures


@pytest.fixture
def openai_server() -> Iterator[FakeOpenAIServer]:
    """A started FakeOpenAIServer, stopped after the test. Import it into a test module to use it."""
    with FakeOpenAIServer() as server:
        yield server


@pytest.fixture
def openai_server_factory() -> Iterator[Callable[..., FakeOpenAIServer]]:
    """``make(default=..., responder=...)`` -> a started server; all are stopped after the test (for fallbacks
    between two endpoints, for instance)."""
    servers: list[FakeOpenAIServer] = []

    def make(**kwargs: Any) -> FakeOpenAIServer:
        server = FakeOpenAIServer(**kwargs).start()
        servers.append(server)
        return server

    yield make
    errors: list[BaseException] = []
    for server in servers:  # stop every server even if one reports a responder error
        try:
            server.stop()
        except RuntimeError as exc:
            errors.append(exc)
    if errors:
        raise errors[0]
