"""A response cache in front of any Provider: identical requests within a TTL get the stored response.

Cached responses come back with ``cached=True`` and ``latency_s=0.0``; the runtime charges nothing for them.
Only successful responses are stored: a failure must be retried against the model, never replayed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

from engine.providers.base import (
    AssistantMessage,
    Message,
    ModelRequest,
    ModelResponse,
    Provider,
    ToolResultMessage,
)

_KEY_VERSION = "flightdeck-response-cache/1"  # bump when the canonical form changes, so old keys cannot collide


def _canonical_message(message: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": message.role, "content": message.content}
    if isinstance(message, AssistantMessage):
        out["tool_calls"] = [
            {"id": c.id, "name": c.name, "arguments": c.arguments, "raw_arguments": c.raw_arguments,
             "parse_error": c.parse_error}
            for c in message.tool_calls
        ]
    elif isinstance(message, ToolResultMessage):
        out.update(tool_call_id=message.tool_call_id, name=message.name, is_error=message.is_error)
    return out


def cache_key(request: ModelRequest) -> str:
    """sha256 over what determines the model's answer: model, messages, tools, max_output_tokens, temperature.

    ``agent``, ``run_seed`` and ``timeout_s`` are left out on purpose: two agents sending the same prompt to the same
    model may share an answer. Object keys are sorted, list order is kept (message and tool order matter to a model).
    """
    canonical = {
        "v": _KEY_VERSION,
        "model": request.model,
        "messages": [_canonical_message(m) for m in request.messages],
        "tools": [{"name": t.name, "description": t.description, "parameters": t.parameters} for t in request.tools],
        "max_output_tokens": request.max_output_tokens,
        "temperature": request.temperature,
    }
    # default=repr: a non-JSON value in tool arguments must still give a stable key, not crash the call.
    text = json.dumps(canonical, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=repr)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


class ResponseCache:
    """A TTL + LRU map from cache keys to responses. Not thread-safe; meant for one event loop."""

    def __init__(self, ttl_s: float, max_entries: int = 10_000,
                 clock: Callable[[], float] = time.monotonic) -> None:
        if ttl_s <= 0:
            raise ValueError("ttl_s must be positive")
        if max_entries < 1:
            raise ValueError("max_entries must be at least 1")
        self.ttl_s = ttl_s
        self.max_entries = max_entries
        self._clock = clock
        self._entries: OrderedDict[str, tuple[float, ModelResponse]] = OrderedDict()
        self.hits = 0
        self.misses = 0

    key_for = staticmethod(cache_key)

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: str) -> ModelResponse | None:
        """The stored response marked ``cached=True, latency_s=0.0``, or None (absent or expired)."""
        entry = self._entries.get(key)
        if entry is None:
            self.misses += 1
            return None
        stored_at, response = entry
        if self._clock() - stored_at >= self.ttl_s:
            del self._entries[key]
            self.misses += 1
            return None
        self._entries.move_to_end(key)
        self.hits += 1
        return dataclasses.replace(response, cached=True, latency_s=0.0)

    def put(self, key: str, response: ModelResponse) -> None:
        self._entries[key] = (self._clock(), response)
        self._entries.move_to_end(key)
        while len(self._entries) > self.max_entries:
            self._entries.popitem(last=False)

    def clear(self) -> None:
        self._entries.clear()


class CachingProvider:
    """Wraps a Provider with a ResponseCache. Concurrent identical misses all reach the inner provider (no
    request coalescing); the last to finish wins the slot, which is harmless since any of them is a valid answer."""

    def __init__(self, inner: Provider, cache: ResponseCache) -> None:
        self.inner = inner
        self.cache = cache
        self.name = inner.name

    async def complete(self, request: ModelRequest) -> ModelResponse:
        key = cache_key(request)
        hit = self.cache.get(key)
        if hit is not None:
            return hit
        response = await self.inner.complete(request)  # errors propagate and are never stored
        self.cache.put(key, response)
        return response

    async def aclose(self) -> None:
        await self.inner.aclose()
