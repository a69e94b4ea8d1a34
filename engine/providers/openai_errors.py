"""The typed ProviderError for a non-2xx answer from an OpenAI-compatible server, and the key-scrubbing of every
server text that goes into an error message (servers are known to echo keys back in 401 bodies).
"""

from __future__ import annotations

import json
from typing import Any

from engine.providers.base import BadRequest, ProviderError, ProviderTimeout, ProviderUnavailable, RateLimited
from engine.retry import parse_retry_after

_EXCERPT_CHARS = 200


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
    text = error_text(data) if isinstance(data, dict) else None
    return redact(text, secret)[:_EXCERPT_CHARS * 2] if text else excerpt(body, secret)


def error_text(data: dict[str, Any]) -> str | None:
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


def excerpt(body: bytes, secret: str | None) -> str:
    """A short, whitespace-collapsed, key-free excerpt of a body, for error messages."""
    text = " ".join(body.decode("utf-8", errors="replace").split())
    if not text:
        return "(empty body)"
    text = redact(text, secret)
    return repr(text if len(text) <= _EXCERPT_CHARS else text[:_EXCERPT_CHARS] + "...")


def redact(text: str, secret: str | None) -> str:
    """`text` with the API key replaced by [redacted]."""
    return text.replace(secret, "[redacted]") if secret else text
