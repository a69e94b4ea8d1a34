"""The one provider interface and the typed messages that cross it.

Messages are slotted dataclasses with a literal ``role`` discriminator rather than pydantic models: they are built
on the engine's hot path (several per model call) and must cost next to nothing. Validation happens at the edges
(hierarchy files, tool arguments, provider responses), not on every message.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, Union


@dataclass(slots=True, frozen=True)
class ToolCall:
    """A call the model asked for. ``arguments`` is the parsed JSON object; ``raw_arguments`` the text as sent,
    kept so that malformed JSON can be reported back to the model verbatim."""

    id: str
    name: str
    arguments: dict[str, Any]
    raw_arguments: str | None = None
    parse_error: str | None = None  # set when the model sent arguments that are not a JSON object


@dataclass(slots=True, frozen=True)
class SystemMessage:
    content: str
    role: Literal["system"] = "system"


@dataclass(slots=True, frozen=True)
class UserMessage:
    content: str
    role: Literal["user"] = "user"


@dataclass(slots=True, frozen=True)
class AssistantMessage:
    content: str | None
    tool_calls: tuple[ToolCall, ...] = ()
    role: Literal["assistant"] = "assistant"


@dataclass(slots=True, frozen=True)
class ToolResultMessage:
    tool_call_id: str
    name: str
    content: str
    is_error: bool = False
    role: Literal["tool"] = "tool"


# typing.Union kept: a runtime alias that pydantic and isinstance-free dispatch read as before.
Message = Union[SystemMessage, UserMessage, AssistantMessage, ToolResultMessage]  # noqa: UP007


@dataclass(slots=True, frozen=True)
class ToolDefinition:
    """What the model is told about a callable: a tool or a delegation target."""

    name: str
    description: str
    parameters: dict[str, Any]  # JSON schema of the arguments object


@dataclass(slots=True, frozen=True)
class Usage:
    input_tokens: int = 0
    output_tokens: int = 0
    # True when the server reported no (or unusable) counts and some were estimated: the span says so, and the CLI
    # and console mark such figures with `~`, so nobody mistakes an estimate for a bill.
    estimated: bool = False

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


FinishReason = Literal["stop", "tool_calls", "length", "content_filter"]


@dataclass(slots=True)
class ModelRequest:
    """One chat-completion request. ``agent`` and ``run_seed`` let the scripted provider pick its script;
    real providers ignore them."""

    model: str
    messages: list[Message]
    tools: list[ToolDefinition] = field(default_factory=list)
    max_output_tokens: int | None = None
    temperature: float | None = None
    agent: str = ""
    run_seed: int = 0
    timeout_s: float | None = None


@dataclass(slots=True, frozen=True)
class ModelResponse:
    content: str | None
    tool_calls: tuple[ToolCall, ...]
    usage: Usage
    finish_reason: FinishReason
    model: str
    latency_s: float = 0.0
    cached: bool = False


class ProviderError(Exception):
    """A model call failed. ``retryable`` says whether the same request may succeed later (timeouts,
    connection errors, 429, 5xx); ``retry_after`` is the server's hint in seconds when it sent one. ``usage`` is
    what the server reported it charged for a failed call (a malformed 200 can still carry a ``usage`` object):
    the runtime bills it rather than dropping it."""

    retryable: bool = False
    kind: str = "provider_error"

    def __init__(self, message: str, *, status: int | None = None, retry_after: float | None = None,
                 usage: Usage | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.retry_after = retry_after
        self.usage = usage


class RateLimited(ProviderError):
    retryable = True
    kind = "rate_limited"


class ProviderTimeout(ProviderError):
    retryable = True
    kind = "timeout"


class ProviderUnavailable(ProviderError):
    """5xx or a connection that could not be made."""

    retryable = True
    kind = "unavailable"


class MalformedResponse(ProviderError):
    """The provider answered with something that is not a usable completion (non-JSON body, empty choices,
    missing fields, a 200 carrying an error object). Not retryable by default: the same request tends to
    produce the same garbage."""

    kind = "malformed_response"


class BadRequest(ProviderError):
    """4xx other than 429: our request is wrong (bad model id, auth, context too long)."""

    kind = "bad_request"


class Provider(Protocol):
    """Every model backend implements this. Implementations must be safe to call concurrently."""

    name: str

    async def complete(self, request: ModelRequest) -> ModelResponse:
        """Return the completion or raise a ProviderError subclass. Never raise anything else for a
        problem with the remote side."""
        ...

    async def aclose(self) -> None:
        """Release network resources (HTTP clients). Idempotent."""
        ...


def estimate_tokens(text: str) -> int:
    """Cheap token estimate (~4 characters a token) used for budgeting when no tokenizer is at hand."""
    return (len(text) + 3) // 4
