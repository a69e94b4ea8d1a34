"""The wire format of OpenAI-compatible /chat/completions: a ModelRequest as its JSON body, and a 2xx body as a
ModelResponse or a MalformedResponse (never anything else).
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from typing import Any

from engine.providers.base import (
    AssistantMessage,
    FinishReason,
    MalformedResponse,
    Message,
    ModelRequest,
    ModelResponse,
    SystemMessage,
    ToolCall,
    ToolResultMessage,
    Usage,
    UserMessage,
    estimate_tokens,
)
from engine.providers.openai_errors import error_text, excerpt, redact

_Malformed = Callable[[str], MalformedResponse]

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
        return MalformedResponse(f"{reason}: {excerpt(body, secret)}", status=status)

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
                                f"{redact(error_text(data) or '', secret)}", status=status, usage=billed)
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
