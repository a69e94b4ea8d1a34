"""OpenAI-compatible chat completions over httpx (OpenAI, vLLM, Ollama, llama.cpp, LiteLLM, ...).

Every problem with the remote side becomes a typed ProviderError; nothing else escapes ``complete``. The API key is
read from its environment variable on every call (so a rotated key takes effect without a restart) and is scrubbed
from every error message: servers are known to echo keys back in 401 bodies.

httpx and anyio are imported inside functions, not at module level: the hierarchy loader imports this module to
build providers, and ``import engine`` must stay fast for the CLI.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from engine.providers.base import (
    AssistantMessage,
    BadRequest,
    FinishReason,
    MalformedResponse,
    Message,
    ModelRequest,
    ModelResponse,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    SystemMessage,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
    estimate_tokens,
)
from engine.retry import parse_retry_after  # also imported from here by callers and tests

if TYPE_CHECKING:
    import httpx

    # The name `httpx` is a local variable in the request methods (the lazily imported module), which shadows this one.
    from httpx import Response as HttpxResponse

_Malformed = Callable[[str], MalformedResponse]

_EXCERPT_CHARS = 200
_FINISH_REASONS: dict[str, FinishReason] = {
    "stop": "stop",
    "tool_calls": "tool_calls",
    "length": "length",
    "content_filter": "content_filter",
    "function_call": "tool_calls",  # the pre-"tools" API's name for the same thing
}


# --------------------------------------------------------------------------------------------- request encoding


def encode_message(message: Message) -> dict[str, Any]:
    """One typed message in the wire format of /chat/completions."""
    if isinstance(message, (SystemMessage, UserMessage)):
        return {"role": message.role, "content": message.content}
    if isinstance(message, AssistantMessage):
        out: dict[str, Any] = {"role": "assistant", "content": message.content}
        if message.tool_calls:
            out["tool_calls"] = [_encode_tool_call(call) for call in message.tool_calls]
        elif message.content is None:
            out["content"] = ""  # some servers reject an assistant turn with neither content nor tool calls
        return out
    if isinstance(message, ToolResultMessage):
        return {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
    raise TypeError(f"not a message: {type(message).__name__}")


def _encode_tool_call(call: ToolCall) -> dict[str, Any]:
    # Echo the model's own text when it was valid; malformed text is replaced by the parsed (empty) object because
    # several servers re-parse history arguments and reject the whole request if one of them is not JSON.
    if call.raw_arguments is not None and call.parse_error is None:
        arguments = call.raw_arguments
    else:
        arguments = json.dumps(call.arguments, ensure_ascii=False)
    return {"id": call.id, "type": "function", "function": {"name": call.name, "arguments": arguments}}


def encode_request(request: ModelRequest) -> dict[str, Any]:
    """The JSON body for a ModelRequest. ``agent``, ``run_seed`` and ``timeout_s`` are ours, never sent."""
    body: dict[str, Any] = {
        "model": request.model,
        "messages": [encode_message(m) for m in request.messages],
    }
    if request.tools:
        body["tools"] = [
            {"type": "function",
             "function": {"name": t.name, "description": t.description, "parameters": t.parameters}}
            for t in request.tools
        ]
    if request.max_output_tokens is not None:
        body["max_tokens"] = request.max_output_tokens
    if request.temperature is not None:
        body["temperature"] = request.temperature
    return body


# -------------------------------------------------------------------------------------------- response decoding


def parse_tool_arguments(raw: Any) -> tuple[dict[str, Any], str | None, str | None]:
    """(arguments, raw_arguments, parse_error) for a tool call's ``arguments`` field.

    Never raises: a model that writes broken JSON is a normal event the runtime reports back to the model.
    """
    if isinstance(raw, dict):  # a few servers send the object itself instead of a JSON string
        return raw, json.dumps(raw, ensure_ascii=False), None
    if raw is None:
        return {}, None, None
    if not isinstance(raw, str):
        return {}, json.dumps(raw), f"arguments must be a JSON object encoded as a string, got {type(raw).__name__}"
    if not raw.strip():
        # Several local servers send "" for a call without arguments; that is a valid call, not a model error.
        return {}, raw, None
    try:
        parsed = json.loads(raw)
    except ValueError as exc:
        return {}, raw, f"arguments are not valid JSON: {exc}"
    if not isinstance(parsed, dict):
        return {}, raw, f"arguments must be a JSON object, got {_json_type(parsed)}"
    return parsed, raw, None


def _json_type(value: Any) -> str:
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return "null" if value is None else type(value).__name__


def decode_response(body: bytes, request: ModelRequest, latency_s: float, *, status: int = 200,
                    secret: str | None = None) -> ModelResponse:
    """A 2xx body as a ModelResponse, or MalformedResponse (with a short, key-free excerpt of the body)."""
    def malformed(reason: str) -> MalformedResponse:
        return MalformedResponse(f"{reason}: {_excerpt(body, secret)}", status=status)

    try:
        data = json.loads(body)
    except (ValueError, RecursionError):  # RecursionError: absurdly nested JSON
        raise malformed("response is not JSON") from None
    if not isinstance(data, dict):
        raise malformed("response is not a JSON object")
    # A gateway may bill a call whose answer is unusable and say so in `usage`: those tokens were spent, so every
    # MalformedResponse from here on carries them for the runtime to settle instead of dropping them.
    billed = reported_usage(data.get("usage"))

    def unusable(reason: str) -> MalformedResponse:
        error = malformed(reason)
        error.usage = billed
        return error

    if data.get("error") is not None:
        raise MalformedResponse(f"server returned an error with HTTP {status}: "
                                f"{_redact(_error_text(data) or '', secret)}", status=status, usage=billed)
    choices = data.get("choices")
    if not isinstance(choices, list) or not choices:
        raise unusable("response has no choices")
    choice = choices[0]
    if not isinstance(choice, dict) or not isinstance(choice.get("message"), dict):
        raise unusable("response choice has no message")
    message: dict[str, Any] = choice["message"]

    content = _decode_content(message.get("content"), unusable)
    tool_calls = _decode_tool_calls(message, unusable)

    reason = choice.get("finish_reason")
    finish = _FINISH_REASONS.get(reason, "stop") if isinstance(reason, str) else "stop"
    if tool_calls and finish == "stop":
        finish = "tool_calls"  # some servers say "stop" even when the turn ends in tool calls

    model = data.get("model")
    return ModelResponse(
        content=content,
        tool_calls=tool_calls,
        usage=_decode_usage(data.get("usage"), request, content, tool_calls),
        finish_reason=finish,
        model=model if isinstance(model, str) and model else request.model,
        latency_s=latency_s,
    )


def _decode_content(content: Any, malformed: _Malformed) -> str | None:
    if content is None or isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts: keep the text ones
        return "".join(p["text"] for p in content if isinstance(p, dict) and isinstance(p.get("text"), str))
    raise malformed("message content is neither text nor null")


def _decode_tool_calls(message: dict[str, Any], malformed: _Malformed) -> tuple[ToolCall, ...]:
    raw_calls = message.get("tool_calls")
    if raw_calls is None and isinstance(message.get("function_call"), dict):
        raw_calls = [{"id": "call_0", "function": message["function_call"]}]  # the pre-"tools" API
    if raw_calls is None:
        return ()
    if not isinstance(raw_calls, list):
        raise malformed("tool_calls is not a list")
    calls: list[ToolCall] = []
    for index, raw in enumerate(raw_calls):
        function = raw.get("function") if isinstance(raw, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(name, str) or not name:
            raise malformed(f"tool call {index} has no function name")
        call_id = raw.get("id")
        assert isinstance(function, dict)  # a name was found in it
        arguments, raw_arguments, error = parse_tool_arguments(function.get("arguments"))
        calls.append(ToolCall(
            # Some local servers omit ids; a positional id keeps the tool result linkable to its call.
            id=call_id if isinstance(call_id, str) and call_id else f"call_{index}",
            name=name, arguments=arguments, raw_arguments=raw_arguments, parse_error=error,
        ))
    return tuple(calls)


def _decode_usage(usage: Any, request: ModelRequest, content: str | None,
                  tool_calls: tuple[ToolCall, ...]) -> Usage:
    usage = usage if isinstance(usage, dict) else {}
    tokens_in = _count(usage.get("prompt_tokens"))
    tokens_out = _count(usage.get("completion_tokens"))
    estimated = tokens_in is None or tokens_out is None
    # Budgets must never see a free call: estimate whatever the server did not report.
    if tokens_in is None:
        tokens_in = estimate_tokens(json.dumps(encode_request(request), ensure_ascii=False, default=str))
    if tokens_out is None:
        tokens_out = estimate_tokens((content or "") + "".join(c.name + (c.raw_arguments or "") for c in tool_calls))
    return Usage(input_tokens=tokens_in, output_tokens=tokens_out, estimated=estimated)


def reported_usage(usage: Any) -> Usage | None:
    """What the server says a call cost, with nothing estimated; None when it reported no usable count."""
    if not isinstance(usage, dict):
        return None
    tokens_in = _count(usage.get("prompt_tokens"))
    tokens_out = _count(usage.get("completion_tokens"))
    if tokens_in is None and tokens_out is None:
        return None
    return Usage(input_tokens=tokens_in or 0, output_tokens=tokens_out or 0)


def _count(value: Any) -> int | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0 or not math.isfinite(value):
        return None
    return int(value)


# ------------------------------------------------------------------------------------------------------ errors


def error_for_status(status: int, body: bytes, retry_after: str | None, *,
                     secret: str | None = None) -> ProviderError:
    """The typed error for a non-2xx answer, carrying the server's own message (with the key scrubbed)."""
    detail = _server_message(body, secret)
    if status == 429:
        return RateLimited(f"rate limited (HTTP 429): {detail}", status=status,
                           retry_after=parse_retry_after(retry_after))
    if status == 408:  # the server gave up waiting for us: as retryable as our own timeout
        return ProviderTimeout(f"server timed out (HTTP 408): {detail}", status=status)
    if status >= 500:
        # 503 often carries Retry-After too; the retry policy may use it.
        return ProviderUnavailable(f"server error (HTTP {status}): {detail}", status=status,
                                   retry_after=parse_retry_after(retry_after))
    return BadRequest(f"request rejected (HTTP {status}): {detail}", status=status)


def _server_message(body: bytes, secret: str | None) -> str:
    try:
        data = json.loads(body)
    except (ValueError, RecursionError):
        data = None
    text = _error_text(data) if isinstance(data, dict) else None
    return _redact(text, secret)[:_EXCERPT_CHARS * 2] if text else _excerpt(body, secret)


def _error_text(data: dict[str, Any]) -> str | None:
    """The human message in the error shapes in the wild: OpenAI's, FastAPI's, and plain strings."""
    error = data.get("error")
    if isinstance(error, dict) and isinstance(error.get("message"), str):
        return error["message"]
    if isinstance(error, str):
        return error
    for key in ("message", "detail"):
        if isinstance(data.get(key), str):
            return data[key]
    return json.dumps(error) if error is not None else None


def _excerpt(body: bytes, secret: str | None) -> str:
    text = " ".join(body.decode("utf-8", errors="replace").split())
    if not text:
        return "(empty body)"
    text = _redact(text, secret)
    return repr(text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS] + "...")


def _redact(text: str, secret: str | None) -> str:
    return text.replace(secret, "[redacted]") if secret else text


# ---------------------------------------------------------------------------------------------------- provider


class OpenAIProvider:
    """A Provider for any OpenAI-compatible /chat/completions endpoint. Safe to call concurrently: all calls share
    one lazily created httpx.AsyncClient (one connection pool) until ``aclose``."""

    name = "openai"

    def __init__(self, *, base_url: str, api_key_env: str | None, default_timeout: float = 60.0,
                 connect_timeout: float = 5.0, max_connections: int = 100,
                 transport: httpx.AsyncBaseTransport | None = None) -> None:
        if default_timeout <= 0 or connect_timeout <= 0:
            raise ValueError("timeouts must be positive")
        if max_connections < 1:
            raise ValueError("max_connections must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.api_key_env = api_key_env
        self.default_timeout = default_timeout
        self.connect_timeout = connect_timeout
        self.max_connections = max_connections
        self._url = self.base_url + "/chat/completions"
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._closed = False

    async def __aenter__(self) -> OpenAIProvider:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    def _get_client(self) -> httpx.AsyncClient:
        # No await between the check and the assignment, so concurrent first calls cannot build two clients.
        if self._closed:
            raise RuntimeError("OpenAIProvider used after aclose()")
        if self._client is None:
            self._client = self._make_client()
        return self._client

    def _make_client(self) -> httpx.AsyncClient:
        from engine.http import httpx as _httpx_module
        httpx = _httpx_module()

        return httpx.AsyncClient(
            # The client only ever requests self._url and never follows redirects, so a plain-http base_url means
            # no TLS at all; skipping the CA bundle load there saves ~0.1 s per client. https keeps full checks.
            verify=not self.base_url.lower().startswith("http://"),
            timeout=httpx.Timeout(self.default_timeout, connect=self.connect_timeout),
            limits=httpx.Limits(max_connections=self.max_connections,
                                max_keepalive_connections=self.max_connections),
            transport=self._transport,
        )

    def _api_key(self) -> str | None:
        if self.api_key_env is None:
            return None
        key = os.environ.get(self.api_key_env)
        if not key:
            raise BadRequest(f"environment variable {self.api_key_env} (the API key for {self.base_url}) is not set")
        return key

    async def complete(self, request: ModelRequest) -> ModelResponse:
        import anyio

        from engine.http import httpx as _httpx_module
        httpx = _httpx_module()

        key = self._api_key()
        try:
            payload = json.dumps(encode_request(request), ensure_ascii=False).encode("utf-8")
        except (TypeError, ValueError) as exc:
            raise BadRequest(f"request cannot be encoded as JSON: {exc}") from None
        headers = {"Content-Type": "application/json", "Accept": "application/json"}
        if key:
            headers["Authorization"] = f"Bearer {key}"
        total = request.timeout_s if request.timeout_s is not None else self.default_timeout
        # httpx timeouts are per phase (a trickling server never trips the read timeout); fail_after bounds the
        # whole call so an agent's step deadline holds whatever the server does.
        timeout = httpx.Timeout(total, connect=min(self.connect_timeout, total))
        client = self._get_client()

        failure: ProviderError | None = None
        response: HttpxResponse | None = None
        started = time.perf_counter()
        try:
            with anyio.fail_after(total):
                response = await client.post(self._url, content=payload, headers=headers, timeout=timeout)
        except TimeoutError:
            failure = ProviderTimeout(f"no complete response from {self._url} within {total:g}s")
        except httpx.TimeoutException as exc:
            failure = ProviderTimeout(f"{type(exc).__name__} after {time.perf_counter() - started:.2f}s "
                                      f"(limit {total:g}s) calling {self._url}")
        except (httpx.UnsupportedProtocol, httpx.InvalidURL) as exc:
            failure = BadRequest(f"bad base_url {self.base_url!r}: {_redact(str(exc), key)}")
        except httpx.DecodingError as exc:
            failure = MalformedResponse(f"response body cannot be decoded: {_redact(str(exc), key)}")
        except httpx.HTTPError as exc:
            failure = ProviderUnavailable(f"cannot reach {self._url}: {type(exc).__name__}: "
                                          f"{_redact(str(exc), key) or 'connection failed'}")
        latency = time.perf_counter() - started
        # Raised here, outside the except blocks, so the httpx exception (whose .request holds the Authorization
        # header) is not kept as __context__ on the error that travels into traces and logs.
        if failure is not None:
            raise failure
        assert response is not None
        if not 200 <= response.status_code < 300:
            raise error_for_status(response.status_code, response.content, response.headers.get("Retry-After"),
                                   secret=key)
        return decode_response(response.content, request, latency, status=response.status_code, secret=key)

    async def aclose(self) -> None:
        self._closed = True
        client, self._client = self._client, None
        if client is not None:
            await client.aclose()


def build_openai_provider(base_url: str, api_key_env: str | None, timeout: float) -> OpenAIProvider:
    """The provider for a hierarchy's ``provider: openai`` model (ModelSpec.base_url / api_key_env / timeout)."""
    return OpenAIProvider(base_url=base_url, api_key_env=api_key_env, default_timeout=timeout)
