"""OpenAI-compatible chat completions over httpx (OpenAI, vLLM, Ollama, llama.cpp, LiteLLM, ...).

Every problem with the remote side becomes a typed ProviderError; nothing else escapes ``complete``. The API key is
read from its environment variable on every call (so a rotated key takes effect without a restart) and is scrubbed
from every error message: servers are known to echo keys back in 401 bodies.

httpx and anyio are imported inside functions, not at module level: the hierarchy loader imports this module to
build providers, and ``import engine`` must stay fast for the CLI.
"""

from __future__ import annotations

import json
import os
import time
from typing import TYPE_CHECKING

from engine.providers.base import (
    BadRequest,
    MalformedResponse,
    ModelRequest,
    ModelResponse,
    ProviderError,
    ProviderTimeout,
    ProviderUnavailable,
)
from engine.providers.openai_errors import error_for_status, redact
from engine.providers.openai_wire import decode_response, encode_request

# Re-exported: callers and tests import it from here.
from engine.retry import parse_retry_after as parse_retry_after

if TYPE_CHECKING:
    import httpx

    # The name `httpx` is a local variable in the request methods (the lazily imported module), which shadows this one.
    from httpx import Response as HttpxResponse


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
            failure = BadRequest(f"bad base_url {self.base_url!r}: {redact(str(exc), key)}")
        except httpx.DecodingError as exc:
            failure = MalformedResponse(f"response body cannot be decoded: {redact(str(exc), key)}")
        except httpx.HTTPError as exc:
            failure = ProviderUnavailable(f"cannot reach {self._url}: {type(exc).__name__}: "
                                          f"{redact(str(exc), key) or 'connection failed'}")
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
