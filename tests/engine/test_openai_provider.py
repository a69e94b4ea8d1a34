"""OpenAIProvider against a real HTTP server on 127.0.0.1 (tests/fakes/openai_server.py)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest

from engine.providers.base import (
    AssistantMessage,
    BadRequest,
    MalformedResponse,
    ModelRequest,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    SystemMessage,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    UserMessage,
    estimate_tokens,
)
from engine.providers.openai import OpenAIProvider, build_openai_provider, parse_retry_after
from tests.fakes.openai_server import (
    FakeOpenAIServer,
    RecordedRequest,
    call,
    completion,
    disconnect,
    empty_choices,
    error_object,
    http_error,
    json_reply,
    missing_usage,
    non_json,
    openai_server,  # noqa: F401  (fixture)
    rate_limited,
    server_error,
    slow,
    text,
    tool_calls,
)

pytestmark = pytest.mark.anyio

KEY_ENV = "FLIGHTDECK_TEST_OPENAI_KEY"
SECRET = "sk-test-0123456789abcdefSECRET"


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture
async def provider(openai_server: FakeOpenAIServer) -> AsyncIterator[OpenAIProvider]:
    p = OpenAIProvider(base_url=openai_server.base_url, api_key_env=None, default_timeout=5.0)
    yield p
    await p.aclose()


def request(content: str = "hi", **kwargs: Any) -> ModelRequest:
    return ModelRequest(model="gpt-test", messages=[UserMessage(content)], **kwargs)


def error_chain_text(err: BaseException) -> str:
    """Everything an error drags along into logs and traces: its message, args, and chained exceptions."""
    parts: list[str] = []
    seen: BaseException | None = err
    while seen is not None:
        parts += [str(seen), repr(seen.args), repr(vars(seen))]
        seen = seen.__cause__ or seen.__context__
    return "\n".join(parts)


# ---------------------------------------------------------------------------------------------- happy paths


async def test_text_reply_and_request_shape(openai_server: FakeOpenAIServer,
                                            provider: OpenAIProvider) -> None:
    openai_server.enqueue(text("hello there", prompt_tokens=12, completion_tokens=3, model="gpt-test-0613"))
    response = await provider.complete(ModelRequest(
        model="gpt-test", messages=[SystemMessage("be brief"), UserMessage("hi")], max_output_tokens=50,
        temperature=0.2, agent="triage", run_seed=7, timeout_s=4.0))

    assert response.content == "hello there"
    assert response.tool_calls == ()
    assert (response.usage.input_tokens, response.usage.output_tokens) == (12, 3)
    assert response.finish_reason == "stop"
    assert response.model == "gpt-test-0613"
    assert 0 < response.latency_s < 5
    assert response.cached is False

    [sent] = openai_server.requests
    assert (sent.method, sent.path) == ("POST", "/v1/chat/completions")
    assert sent.headers["content-type"] == "application/json"
    assert sent.json == {
        "model": "gpt-test",
        "messages": [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hi"}],
        "max_tokens": 50,
        "temperature": 0.2,
    }


async def test_optional_fields_are_omitted(openai_server: FakeOpenAIServer,
                                           provider: OpenAIProvider) -> None:
    await provider.complete(request())
    assert openai_server.requests[0].json == {"model": "gpt-test", "messages": [{"role": "user", "content": "hi"}]}


async def test_conversation_with_tools_is_encoded(openai_server: FakeOpenAIServer,
                                                  provider: OpenAIProvider) -> None:
    schema = {"type": "object", "properties": {"id": {"type": "integer"}}, "required": ["id"]}
    await provider.complete(ModelRequest(
        model="gpt-test",
        messages=[
            UserMessage("find order 7"),
            AssistantMessage(None, (ToolCall("call_a", "lookup", {"id": 7}, raw_arguments='{"id": 7}'),
                                    ToolCall("call_b", "lookup", {}, raw_arguments="{oops",
                                             parse_error="not JSON"))),
            ToolResultMessage("call_a", "lookup", '{"status": "shipped"}'),
            ToolResultMessage("call_b", "lookup", "arguments were not JSON", is_error=True),
            AssistantMessage("It shipped."),
        ],
        tools=[ToolDefinition("lookup", "Find an order", schema)],
    ))
    body = openai_server.requests[0].json
    assert body["tools"] == [{"type": "function",
                              "function": {"name": "lookup", "description": "Find an order", "parameters": schema}}]
    assert body["messages"] == [
        {"role": "user", "content": "find order 7"},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_a", "type": "function", "function": {"name": "lookup", "arguments": '{"id": 7}'}},
            # malformed text is not echoed back: servers that re-parse history would reject the request
            {"id": "call_b", "type": "function", "function": {"name": "lookup", "arguments": "{}"}},
        ]},
        {"role": "tool", "tool_call_id": "call_a", "content": '{"status": "shipped"}'},
        {"role": "tool", "tool_call_id": "call_b", "content": "arguments were not JSON"},
        {"role": "assistant", "content": "It shipped."},
    ]


async def test_tool_calls_are_parsed(openai_server: FakeOpenAIServer,
                                     provider: OpenAIProvider) -> None:
    openai_server.enqueue(tool_calls(call("lookup", {"id": 7}, id="call_x"), call("notify", {"to": ["a", "b"]}),
                                     content="checking"))
    response = await provider.complete(request())
    assert response.finish_reason == "tool_calls"
    assert response.content == "checking"
    assert [(c.id, c.name, c.arguments, c.parse_error) for c in response.tool_calls] == [
        ("call_x", "lookup", {"id": 7}, None),
        ("call_1", "notify", {"to": ["a", "b"]}, None),
    ]
    assert response.tool_calls[0].raw_arguments == '{"id": 7}'


@pytest.mark.parametrize(("raw", "reason"), [
    ('{"id": 7', "not valid JSON"),
    ("[1, 2]", "JSON object, got an array"),
    ('"just text"', "JSON object, got a string"),
])
async def test_malformed_tool_arguments_become_parse_errors(openai_server: FakeOpenAIServer,
                                                            provider: OpenAIProvider, raw: str, reason: str) -> None:
    openai_server.enqueue(tool_calls(call("lookup", raw)))
    response = await provider.complete(request())
    [tc] = response.tool_calls
    assert tc.name == "lookup"
    assert tc.arguments == {}
    assert tc.raw_arguments == raw
    assert tc.parse_error is not None and reason in tc.parse_error


async def test_empty_arguments_are_an_argumentless_call(openai_server: FakeOpenAIServer,
                                                        provider: OpenAIProvider) -> None:
    openai_server.enqueue(tool_calls(call("ping", "")))
    [tc] = (await provider.complete(request())).tool_calls
    assert (tc.arguments, tc.parse_error) == ({}, None)


async def test_tool_call_without_id_or_name(openai_server: FakeOpenAIServer,
                                            provider: OpenAIProvider) -> None:
    body = completion(None, finish_reason="tool_calls")
    body["choices"][0]["message"]["tool_calls"] = [{"type": "function", "function": {"name": "a", "arguments": "{}"}},
                                                   {"type": "function", "function": {"name": "b", "arguments": "{}"}}]
    openai_server.enqueue(json_reply(body))
    assert [c.id for c in (await provider.complete(request())).tool_calls] == ["call_0", "call_1"]

    body["choices"][0]["message"]["tool_calls"] = [{"id": "x", "function": {"arguments": "{}"}}]
    openai_server.enqueue(json_reply(body))
    with pytest.raises(MalformedResponse, match="no function name"):
        await provider.complete(request())


@pytest.mark.parametrize(("sent", "expected"), [
    ("stop", "stop"), ("length", "length"), ("content_filter", "content_filter"), ("tool_calls", "tool_calls"),
    ("function_call", "tool_calls"), ("eos_token", "stop"), (None, "stop"),
])
async def test_finish_reasons(openai_server: FakeOpenAIServer, provider: OpenAIProvider,
                              sent: str | None, expected: str) -> None:
    openai_server.enqueue(text("x", finish_reason=sent))
    assert (await provider.complete(request())).finish_reason == expected


async def test_tool_calls_with_stop_finish_reason_end_in_tool_calls(openai_server: FakeOpenAIServer,
                                                                    provider: OpenAIProvider) -> None:
    openai_server.enqueue(tool_calls(call("lookup", {}), finish_reason="stop"))
    assert (await provider.complete(request())).finish_reason == "tool_calls"


async def test_legacy_function_call(openai_server: FakeOpenAIServer,
                                    provider: OpenAIProvider) -> None:
    body = completion(None, finish_reason="function_call")
    body["choices"][0]["message"]["function_call"] = {"name": "lookup", "arguments": '{"id": 1}'}
    openai_server.enqueue(json_reply(body))
    response = await provider.complete(request())
    assert response.finish_reason == "tool_calls"
    assert [(c.name, c.arguments) for c in response.tool_calls] == [("lookup", {"id": 1})]


async def test_missing_usage_is_estimated(openai_server: FakeOpenAIServer,
                                         provider: OpenAIProvider) -> None:
    user_text = "please summarise the incident " * 20
    openai_server.enqueue(missing_usage("a reply of some length"))
    usage = (await provider.complete(request(user_text))).usage
    assert usage.output_tokens == estimate_tokens("a reply of some length")
    assert usage.input_tokens >= estimate_tokens(user_text)


# ------------------------------------------------------------------------------------------------ HTTP errors


async def test_429_with_retry_after_seconds(openai_server: FakeOpenAIServer,
                                            provider: OpenAIProvider) -> None:
    openai_server.enqueue(rate_limited(retry_after=7))
    with pytest.raises(RateLimited) as info:
        await provider.complete(request())
    assert (info.value.status, info.value.retry_after, info.value.retryable) == (429, 7.0, True)
    assert "Rate limit reached" in str(info.value)


async def test_429_with_retry_after_http_date(openai_server: FakeOpenAIServer,
                                              provider: OpenAIProvider) -> None:
    openai_server.enqueue(rate_limited(retry_after=datetime.now(UTC) + timedelta(seconds=120)))
    with pytest.raises(RateLimited) as info:
        await provider.complete(request())
    assert info.value.retry_after is not None and 115 <= info.value.retry_after <= 121


async def test_429_without_retry_after(openai_server: FakeOpenAIServer,
                                       provider: OpenAIProvider) -> None:
    openai_server.enqueue(rate_limited())
    with pytest.raises(RateLimited) as info:
        await provider.complete(request())
    assert info.value.retry_after is None


def test_parse_retry_after() -> None:
    now = 1_800_000_000.0
    assert parse_retry_after("30", now) == 30.0
    assert parse_retry_after(" 1.5 ", now) == 1.5
    assert parse_retry_after("Fri, 15 Jan 2027 08:00:10 GMT", 1_800_000_000.0) == pytest.approx(
        datetime(2027, 1, 15, 8, 0, 10, tzinfo=UTC).timestamp() - now)
    assert parse_retry_after("Thu, 01 Jan 1970 00:00:00 GMT", now) == 0.0  # in the past: retry now
    for bad in (None, "", "-3", "nan", "soon"):
        assert parse_retry_after(bad, now) is None


@pytest.mark.parametrize("status", [500, 502, 503])
async def test_5xx_is_unavailable(openai_server: FakeOpenAIServer, provider: OpenAIProvider,
                                  status: int) -> None:
    openai_server.enqueue(server_error(status, "upstream exploded", retry_after=3))
    with pytest.raises(ProviderUnavailable) as info:
        await provider.complete(request())
    assert (info.value.status, info.value.retryable, info.value.retry_after) == (status, True, 3.0)
    assert "upstream exploded" in str(info.value)


async def test_connection_refused_is_unavailable() -> None:
    with socket.socket() as sock:  # a loopback port that was free a moment ago and is now closed
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with OpenAIProvider(base_url=f"http://127.0.0.1:{port}/v1", api_key_env=None) as provider:
        with pytest.raises(ProviderUnavailable) as info:
            await provider.complete(request())
    assert info.value.status is None and info.value.retryable
    assert info.value.__context__ is None and info.value.__cause__ is None


async def test_server_hanging_up_is_unavailable(openai_server: FakeOpenAIServer,
                                                provider: OpenAIProvider) -> None:
    openai_server.enqueue(disconnect())
    with pytest.raises(ProviderUnavailable):
        await provider.complete(request())


async def test_bad_base_url_is_bad_request() -> None:
    async with OpenAIProvider(base_url="ftp://127.0.0.1:1/v1", api_key_env=None) as provider:
        with pytest.raises(BadRequest, match="bad base_url"):
            await provider.complete(request())


async def test_400_is_bad_request_with_server_message(openai_server: FakeOpenAIServer,
                                                      provider: OpenAIProvider) -> None:
    openai_server.enqueue(http_error(400, "This model's maximum context length is 8192 tokens"))
    with pytest.raises(BadRequest) as info:
        await provider.complete(request())
    assert info.value.status == 400 and not info.value.retryable
    assert "maximum context length is 8192" in str(info.value)


async def test_408_is_a_timeout(openai_server: FakeOpenAIServer, provider: OpenAIProvider) -> None:
    openai_server.enqueue(http_error(408, "request timed out"))
    with pytest.raises(ProviderTimeout) as info:
        await provider.complete(request())
    assert info.value.status == 408


async def test_401_never_leaks_the_key(openai_server: FakeOpenAIServer,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, SECRET)

    def echo_key(req: RecordedRequest) -> Any:  # real servers do this: "Incorrect API key provided: sk-..."
        return http_error(401, f"Incorrect API key provided: {req.authorization}", error_type="invalid_api_key")

    openai_server.responder = echo_key
    async with OpenAIProvider(base_url=openai_server.base_url, api_key_env=KEY_ENV) as provider:
        with pytest.raises(BadRequest) as info:
            await provider.complete(request())
    assert info.value.status == 401
    assert "Incorrect API key provided" in str(info.value)
    assert SECRET not in error_chain_text(info.value)
    assert SECRET in (openai_server.requests[0].authorization or "")  # it really was echoed and scrubbed


async def test_transport_errors_do_not_carry_the_request(openai_server: FakeOpenAIServer,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    # httpx exceptions hold the request, Authorization header included; ours must not chain to them.
    monkeypatch.setenv(KEY_ENV, SECRET)
    openai_server.enqueue(slow(text("late"), seconds=5))
    async with OpenAIProvider(base_url=openai_server.base_url, api_key_env=KEY_ENV) as provider:
        with pytest.raises(ProviderTimeout) as info:
            await provider.complete(request(timeout_s=0.2))
    openai_server.release()
    assert info.value.__context__ is None and info.value.__cause__ is None
    assert SECRET not in error_chain_text(info.value)


# ----------------------------------------------------------------------------------------- malformed answers


async def test_non_json_body_is_malformed(openai_server: FakeOpenAIServer,
                                          provider: OpenAIProvider) -> None:
    openai_server.enqueue(non_json("<html><body>502 Bad Gateway</body></html>" + "x" * 5000))
    with pytest.raises(MalformedResponse) as info:
        await provider.complete(request())
    assert info.value.status == 200 and not info.value.retryable
    assert "502 Bad Gateway" in str(info.value)
    assert len(str(info.value)) < 400  # an excerpt, not the whole body


@pytest.mark.parametrize(("behaviour", "needle"), [
    (empty_choices(), "no choices"),
    (json_reply({"id": "x", "choices": [{"index": 0, "finish_reason": "stop"}]}), "no message"),
    (json_reply(["not", "an", "object"]), "not a JSON object"),
    (error_object("The model is overloaded"), "The model is overloaded"),
    (json_reply(completion(None) | {"choices": [{"message": {"content": 42}}]}), "neither text nor null"),
])
async def test_unusable_completions_are_malformed(openai_server: FakeOpenAIServer,
                                                  provider: OpenAIProvider, behaviour: Any, needle: str) -> None:
    openai_server.enqueue(behaviour)
    with pytest.raises(MalformedResponse, match=needle) as info:
        await provider.complete(request())
    assert info.value.status == 200


# ------------------------------------------------------------------------------------------------- timeouts


async def test_slow_server_times_out_then_provider_recovers(openai_server: FakeOpenAIServer,
                                                            provider: OpenAIProvider) -> None:
    openai_server.enqueue(slow(text("too late"), seconds=10))
    started = time.monotonic()
    with pytest.raises(ProviderTimeout) as info:
        await provider.complete(request(timeout_s=0.3))  # overrides the provider's 5 s default
    assert time.monotonic() - started < 3
    assert info.value.retryable
    openai_server.release()
    assert (await provider.complete(request())).content == "ok"


async def test_default_timeout_applies_without_a_request_timeout(openai_server: FakeOpenAIServer) -> None:
    openai_server.enqueue(slow(text("too late"), seconds=10))
    async with OpenAIProvider(base_url=openai_server.base_url, api_key_env=None, default_timeout=0.3) as provider:
        started = time.monotonic()
        with pytest.raises(ProviderTimeout):
            await provider.complete(request())
        assert time.monotonic() - started < 3
    openai_server.release()


async def test_slow_answer_within_the_timeout_succeeds(openai_server: FakeOpenAIServer,
                                                       provider: OpenAIProvider) -> None:
    openai_server.enqueue(slow(text("worth the wait"), seconds=0.2))
    response = await provider.complete(request(timeout_s=3.0))
    assert response.content == "worth the wait"
    assert response.latency_s >= 0.2


async def test_trickling_server_hits_the_total_deadline(provider: OpenAIProvider) -> None:
    # Each byte arrives well inside the read timeout, but the whole answer would take seconds: the request
    # deadline is a total, not per phase.
    release = anyio.Event()

    async def trickle(client: anyio.abc.SocketStream) -> None:
        async with client:
            try:
                await client.receive()
                await client.send(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
                                  b"Content-Length: 1000\r\n\r\n")
                with anyio.move_on_after(10):  # bound, in case the provider never gives up
                    while not release.is_set():
                        await client.send(b" ")
                        with anyio.move_on_after(0.05):  # the trickle's pace
                            await release.wait()
            except (anyio.BrokenResourceError, anyio.ClosedResourceError, ConnectionError):
                pass  # the provider hung up, as it should

    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)
    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, trickle)
        async with OpenAIProvider(base_url=f"http://127.0.0.1:{port}/v1", api_key_env=None) as p:
            started = time.monotonic()
            with pytest.raises(ProviderTimeout):
                await p.complete(request(timeout_s=0.4))
            assert time.monotonic() - started < 3
        release.set()
        tg.cancel_scope.cancel()


# ---------------------------------------------------------------------------------------- key and lifecycle


async def test_api_key_is_read_from_env_at_call_time(openai_server: FakeOpenAIServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-first")
    async with OpenAIProvider(base_url=openai_server.base_url, api_key_env=KEY_ENV) as provider:
        await provider.complete(request())
        monkeypatch.setenv(KEY_ENV, "sk-rotated")
        await provider.complete(request())
    assert [r.authorization for r in openai_server.requests] == ["Bearer sk-first", "Bearer sk-rotated"]


async def test_no_key_env_sends_no_authorization(openai_server: FakeOpenAIServer,
                                                 provider: OpenAIProvider) -> None:
    await provider.complete(request())
    assert openai_server.requests[0].authorization is None


async def test_unset_key_env_is_bad_request_without_a_call(openai_server: FakeOpenAIServer,
                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(KEY_ENV, raising=False)
    async with OpenAIProvider(base_url=openai_server.base_url, api_key_env=KEY_ENV) as provider:
        with pytest.raises(BadRequest, match=KEY_ENV):
            await provider.complete(request())
    assert openai_server.request_count == 0


async def test_trailing_slash_in_base_url(openai_server: FakeOpenAIServer) -> None:
    async with build_openai_provider(openai_server.base_url + "/", None, 5.0) as provider:
        assert (await provider.complete(request())).content == "ok"
        assert provider.default_timeout == 5.0
    assert openai_server.requests[0].path == "/v1/chat/completions"


async def test_aclose_is_idempotent(openai_server: FakeOpenAIServer) -> None:
    never_used = OpenAIProvider(base_url=openai_server.base_url, api_key_env=None)
    await never_used.aclose()
    await never_used.aclose()

    provider = OpenAIProvider(base_url=openai_server.base_url, api_key_env=None)
    await provider.complete(request())
    client = provider._client
    assert client is not None and not client.is_closed
    await provider.aclose()
    await provider.aclose()
    assert client.is_closed
    with pytest.raises(RuntimeError, match="after aclose"):
        await provider.complete(request())


async def test_concurrent_calls_share_one_client(openai_server: FakeOpenAIServer,
                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    created: list[httpx.AsyncClient] = []

    class CountingClient(httpx.AsyncClient):
        def __init__(self, **kwargs: Any) -> None:
            super().__init__(**kwargs)
            created.append(self)

    monkeypatch.setattr(httpx, "AsyncClient", CountingClient)
    calls = 20
    openai_server.default = slow(text("together"), seconds=10)  # every call waits until all have arrived
    results: list[str | None] = []

    async def one() -> None:
        results.append((await provider.complete(request(timeout_s=8))).content)

    async with OpenAIProvider(base_url=openai_server.base_url, api_key_env=None) as provider:
        async with anyio.create_task_group() as tg:
            for _ in range(calls):
                tg.start_soon(one)
            await openai_server.wait_for_requests_async(calls)  # all in flight at once
            openai_server.release()
    assert results == ["together"] * calls
    assert len(created) == 1


def test_importing_the_module_does_not_import_httpx() -> None:
    code = "import sys, engine.providers.openai; print(json.dumps(['httpx' in sys.modules, 'anyio' in sys.modules]))"
    out = subprocess.run([sys.executable, "-c", "import json; " + code], capture_output=True, text=True,
                         check=True, timeout=30)
    assert json.loads(out.stdout) == [False, False]



# ------------------------------------------------------------------------------------ the fake server itself


def test_fake_server_shuts_down_cleanly() -> None:
    before = {t.ident for t in threading.enumerate()}
    server = FakeOpenAIServer().start()
    port = server.port
    outcome: list[object] = []

    def held_call() -> None:
        with httpx.Client(timeout=30) as c:
            try:
                outcome.append(c.post(server.url, json={}).status_code)
            except httpx.HTTPError as exc:  # stop() may cut the connection before the released answer is sent
                outcome.append(exc)

    # An idle keep-alive connection and an answer held for 30 s must neither keep a thread alive nor delay stop().
    with httpx.Client() as idle:
        assert idle.post(server.url, json={}).status_code == 200
        server.enqueue(slow(text("held"), seconds=30))
        caller = threading.Thread(target=held_call)
        caller.start()
        server.wait_for_requests(2)
        started = time.monotonic()
        server.stop()
        assert time.monotonic() - started < 5
        caller.join(timeout=5)
    assert not caller.is_alive() and len(outcome) == 1
    assert {t.ident for t in threading.enumerate()} <= before
    with socket.socket() as sock, pytest.raises(ConnectionRefusedError):
        sock.connect(("127.0.0.1", port))
    server.stop()  # idempotent


def test_fake_server_scripts_a_conversation_and_records_requests() -> None:
    def script(req: RecordedRequest) -> Any:
        return text("done") if req.has_tool_result else tool_calls(call("lookup", {"id": 1}))

    with FakeOpenAIServer(responder=script) as server, httpx.Client(base_url=server.base_url) as client:
        server.enqueue(rate_limited(retry_after=1))  # the queue comes before the responder
        first = client.post("/chat/completions", json={"messages": [{"role": "user", "content": "go"}]})
        second = client.post("/chat/completions", json={"messages": [{"role": "user", "content": "go"}]})
        third = client.post("/chat/completions", json={"messages": [{"role": "tool", "content": "{}"}]},
                            headers={"Authorization": "Bearer k"})
        missing = client.get("/models")
        assert (first.status_code, first.headers["retry-after"]) == (429, "1")
        assert second.json()["choices"][0]["message"]["tool_calls"][0]["function"]["name"] == "lookup"
        assert third.json()["choices"][0]["message"]["content"] == "done"
        assert missing.status_code == 404
        recorded = server.wait_for_requests(4, timeout=1)
    assert [r.path for r in recorded] == ["/v1/chat/completions"] * 3 + ["/v1/models"]
    assert recorded[2].authorization == "Bearer k" and recorded[2].has_tool_result
    assert recorded[0].messages == [{"role": "user", "content": "go"}]


def test_fake_server_surfaces_responder_errors() -> None:
    def broken(req: RecordedRequest) -> Any:
        raise KeyError("typo in the test script")

    server = FakeOpenAIServer(responder=broken).start()
    with httpx.Client() as client:
        assert client.post(server.url, json={}).status_code == 500
    with pytest.raises(RuntimeError, match="responder raised") as info:
        server.stop()
    assert isinstance(info.value.__cause__, KeyError)


def test_wait_for_requests_is_bounded() -> None:
    with FakeOpenAIServer() as server, pytest.raises(TimeoutError, match="expected 1 requests"):
        server.wait_for_requests(1, timeout=0.05)
