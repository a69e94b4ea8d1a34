"""Who may talk to a serve: a bearer token from an environment variable (config.toml `[serve] token_env`, default
FLIGHTDECK_API_TOKEN) guards every route but /health (supervisors and load balancers probe it) and /hooks/* (each
webhook carries its own HMAC signature). Without a token, a serve listens on a loopback address only."""

from __future__ import annotations

import hmac
import ipaddress
from collections.abc import Mapping

from starlette.datastructures import Headers
from starlette.types import ASGIApp, Receive, Scope, Send

from engine.serve.http_models import ApiError, error_response

OPEN_PATHS = frozenset({"/health"})
OPEN_PREFIXES = ("/hooks/",)


def api_token(environ: Mapping[str, str], token_env: str) -> str | None:
    """The token the API requires, or None (unset or empty: no auth)."""
    return environ.get(token_env) or None


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def listen_problem(host: str, token: str | None, token_env: str) -> str | None:
    """Why a serve must not start on `host`, or None: without a token only a loopback address is safe."""
    if token is None and not is_loopback(host):
        return (f"refusing to listen on {host} without an API token: anyone who reaches it could start and cancel "
                f"runs. Set {token_env} (config.toml [serve] token_env names the variable), or listen on 127.0.0.1")
    return None


def token_matches(header: str | None, token: str) -> bool:
    """`Authorization: Bearer <token>`, compared in constant time."""
    scheme, _, given = (header or "").partition(" ")
    # Both sides as bytes: compare_digest takes str only when it is ASCII, and a header is latin-1.
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode("latin-1", "replace"),
                                                              token.encode("utf-8"))


class BearerAuth:
    """ASGI middleware: 401 (JSON, naming the Authorization header, never echoing what was sent) on every route but
    the open ones unless the request carries the token."""

    def __init__(self, app: ASGIApp, token: str) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            path: str = scope["path"]
            if path not in OPEN_PATHS and not path.startswith(OPEN_PREFIXES):
                header = Headers(scope=scope).get("authorization")
                if not token_matches(header, self.token):
                    reason = ("missing bearer token" if header is None else "wrong bearer token")
                    response = error_response(ApiError(401, reason + ": send Authorization: Bearer <token>",
                                                       field="Authorization"))
                    await response(scope, receive, send)
                    return
        await self.app(scope, receive, send)
