"""ResponseCache (keys, TTL, LRU) and CachingProvider in front of a real OpenAIProvider on loopback."""

from __future__ import annotations

import dataclasses
from collections.abc import AsyncIterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from engine.clock import FakeClock
from engine.providers.base import (
    AssistantMessage,
    ModelRequest,
    ModelResponse,
    ProviderUnavailable,
    ToolCall,
    ToolDefinition,
    ToolResultMessage,
    Usage,
    UserMessage,
)
from engine.providers.cache import CachingProvider, ResponseCache, cache_key
from engine.providers.openai import OpenAIProvider
from tests.fakes.openai_server import FakeOpenAIServer, openai_server, server_error, text  # noqa: F401

LOOKUP = ToolDefinition("lookup", "Find an order", {"type": "object", "properties": {"id": {"type": "integer"}}})


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"


def request(**changes: Any) -> ModelRequest:
    base = ModelRequest(
        model="gpt-test",
        messages=[UserMessage("where is order 7?"),
                  AssistantMessage(None, (ToolCall("c1", "lookup", {"id": 7}),)),
                  ToolResultMessage("c1", "lookup", "shipped")],
        tools=[LOOKUP], max_output_tokens=100, temperature=0.0)
    return dataclasses.replace(base, **changes)


def response(content: str = "answer") -> ModelResponse:
    return ModelResponse(content=content, tool_calls=(), usage=Usage(10, 5), finish_reason="stop", model="gpt-test",
                         latency_s=1.25)


# ------------------------------------------------------------------------------------------------------- keys


def test_equal_requests_share_a_key() -> None:
    assert cache_key(request()) == cache_key(request())
    assert len(cache_key(request())) == 64  # sha256 hex


@pytest.mark.parametrize("changes", [
    {"model": "gpt-other"},
    {"messages": [UserMessage("where is order 8?")]},
    {"messages": [*request().messages, ToolResultMessage("c1", "lookup", "shipped", is_error=True)]},
    {"tools": []},
    {"tools": [ToolDefinition("lookup", "Find an order by id", LOOKUP.parameters)]},
    {"tools": [ToolDefinition("lookup", LOOKUP.description, {"type": "object"})]},
    {"tools": [LOOKUP, ToolDefinition("cancel", "Cancel", {})]},
    {"max_output_tokens": 101},
    {"max_output_tokens": None},
    {"temperature": 0.7},
    {"temperature": None},
])
def test_what_the_model_sees_changes_the_key(changes: dict[str, Any]) -> None:
    assert cache_key(request(**changes)) != cache_key(request())


def test_tool_order_matters() -> None:
    other = ToolDefinition("cancel", "Cancel", {})
    assert cache_key(request(tools=[LOOKUP, other])) != cache_key(request(tools=[other, LOOKUP]))


def test_bookkeeping_fields_do_not_change_the_key() -> None:
    assert cache_key(request(agent="billing", run_seed=99, timeout_s=3.0)) == cache_key(request())


@given(st.dictionaries(st.text(max_size=5), st.integers() | st.text(max_size=5), max_size=6))
def test_key_ignores_json_object_key_order(arguments: dict[str, Any]) -> None:
    reordered = dict(reversed(list(arguments.items())))
    make = lambda args: request(messages=[AssistantMessage(None, (ToolCall("c", "t", args),))])
    assert cache_key(make(arguments)) == cache_key(make(reordered))


# ------------------------------------------------------------------------------------------ hit, miss, expiry


def test_hit_miss_and_expiry_with_a_fake_clock() -> None:
    clock = FakeClock()
    cache = ResponseCache(ttl_s=60, clock=clock.monotonic)
    key = cache_key(request())
    assert cache.get(key) is None

    cache.put(key, response())
    clock.advance(59.9)
    hit = cache.get(key)
    assert hit == dataclasses.replace(response(), cached=True, latency_s=0.0)

    clock.advance(0.1)  # exactly ttl_s old: expired
    assert cache.get(key) is None
    assert len(cache) == 0  # the expired entry is dropped, not kept around
    assert (cache.hits, cache.misses) == (1, 2)


def test_put_refreshes_the_ttl() -> None:
    clock = FakeClock()
    cache = ResponseCache(ttl_s=10, clock=clock.monotonic)
    cache.put("k", response("old"))
    clock.advance(8)
    cache.put("k", response("new"))
    clock.advance(8)
    hit = cache.get("k")
    assert hit is not None and hit.content == "new"


def test_lru_bound_evicts_the_least_recently_used() -> None:
    cache = ResponseCache(ttl_s=60, max_entries=2, clock=FakeClock().monotonic)
    cache.put("a", response("A"))
    cache.put("b", response("B"))
    assert cache.get("a") is not None  # "a" is now the most recently used
    cache.put("c", response("C"))
    assert len(cache) == 2
    assert cache.get("b") is None
    assert [cache.get(k).content for k in ("a", "c")] == ["A", "C"]  # type: ignore[union-attr]


def test_invalid_settings_are_rejected() -> None:
    with pytest.raises(ValueError):
        ResponseCache(ttl_s=0)
    with pytest.raises(ValueError):
        ResponseCache(ttl_s=1, max_entries=0)


# ----------------------------------------------------------------------------------- in front of a real provider


@pytest.fixture
async def caching(openai_server: FakeOpenAIServer) -> AsyncIterator[CachingProvider]:
    inner = OpenAIProvider(base_url=openai_server.base_url, api_key_env=None, default_timeout=5.0)
    provider = CachingProvider(inner, ResponseCache(ttl_s=60))
    yield provider
    await provider.aclose()


@pytest.mark.anyio
async def test_second_identical_call_is_served_from_the_cache(openai_server: FakeOpenAIServer,
                                                              caching: CachingProvider) -> None:
    openai_server.enqueue(text("first answer"), text("second answer"))
    fresh = await caching.complete(request())
    again = await caching.complete(request(agent="someone-else"))
    assert (fresh.content, fresh.cached) == ("first answer", False) and fresh.latency_s > 0
    assert (again.content, again.cached, again.latency_s) == ("first answer", True, 0.0)
    assert again.usage == fresh.usage
    assert openai_server.request_count == 1

    different = await caching.complete(request(tools=[]))
    assert (different.content, different.cached) == ("second answer", False)
    assert openai_server.request_count == 2
    assert caching.name == "openai"


@pytest.mark.anyio
async def test_failures_are_not_cached(openai_server: FakeOpenAIServer,
                                       caching: CachingProvider) -> None:
    openai_server.enqueue(server_error(503), text("recovered"))
    with pytest.raises(ProviderUnavailable):
        await caching.complete(request())
    assert len(caching.cache) == 0
    assert (await caching.complete(request())).content == "recovered"
    assert (await caching.complete(request())).cached
    assert openai_server.request_count == 2


@pytest.mark.anyio
async def test_aclose_closes_the_inner_provider(openai_server: FakeOpenAIServer) -> None:
    inner = OpenAIProvider(base_url=openai_server.base_url, api_key_env=None)
    caching = CachingProvider(inner, ResponseCache(ttl_s=60))
    await caching.complete(request())
    await caching.aclose()
    with pytest.raises(RuntimeError, match="after aclose"):
        await inner.complete(request())
