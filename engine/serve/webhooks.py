"""POST /hooks/NAME: a fleet.yaml webhook turns a signed event into a run.

In order: the webhook exists (404); its secret's environment variable is set (503: the operator has not configured
it; `flightdeck serve` warns at start); the body fits (413); the signature header is `sha256=<hex>` of
HMAC-SHA256(secret, raw body), compared in constant time (401, before anything in the body is looked at); the body is
JSON (400); the event id is in its header or JSON path (400), and names the run: idempotency key
`webhook:NAME:<id>`, so a redelivered event returns the original run (200) and never starts a second; the input
template's `{{ $.a.b }}` placeholders are filled from the body (422 naming a missing path). The secret, the
signature and the body are never echoed."""

from __future__ import annotations

import hashlib
import hmac
import json
import re
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import Response

from engine.serve.contracts import FleetService, Refused, Submission
from engine.serve.fleet import WebhookSpec
from engine.serve.http_models import ApiError, read_body, refused, submitted

PLACEHOLDER = re.compile(r"\{\{\s*(\$(?:\.[A-Za-z0-9_\-]+)+)\s*\}\}")
MAX_EVENT_ID_CHARS = 200
UNSET_SECRET_RETRY_S = 60


class MissingPath(Exception):
    def __init__(self, path: str) -> None:
        super().__init__(path)
        self.path = path


def lookup(body: Any, path: str) -> Any:
    """`$.a.b.0` in a JSON value: object keys, and list indexes for digit segments. MissingPath if absent."""
    current = body
    for part in path.split(".")[1:]:
        if isinstance(current, dict) and part in current:
            current = current[part]
        elif isinstance(current, list) and part.isdigit() and int(part) < len(current):
            current = current[int(part)]
        else:
            raise MissingPath(path)
    return current


def fill(template: Any, body: Any) -> Any:
    """The template with every `{{ $.path }}` filled from `body`. A string that is one placeholder alone takes the
    value with its JSON type; a placeholder inside text is replaced by the value as text (JSON for non-strings)."""
    if isinstance(template, str):
        whole = PLACEHOLDER.fullmatch(template.strip())
        if whole:
            return lookup(body, whole.group(1))

        def text(match: re.Match[str]) -> str:
            value = lookup(body, match.group(1))
            return value if isinstance(value, str) else json.dumps(value)

        return PLACEHOLDER.sub(text, template)
    if isinstance(template, dict):
        return {key: fill(value, body) for key, value in template.items()}
    if isinstance(template, list):
        return [fill(value, body) for value in template]
    return template


def signature_ok(secret: str, raw: bytes, header: str | None) -> bool:
    if header is None or not header.startswith("sha256="):
        return False
    expected = hmac.new(secret.encode("utf-8"), raw, hashlib.sha256).hexdigest()
    return hmac.compare_digest(header[len("sha256="):].strip().lower().encode("latin-1", "replace"),
                               expected.encode("ascii"))


def event_id(spec: WebhookSpec, request: Request, body: Any) -> str:
    where = spec.event_id
    if where.header is not None:
        value: Any = request.headers.get(where.header)
        field = where.header
    else:
        assert where.json_path is not None
        field = where.json_path
        try:
            value = lookup(body, where.json_path)
        except MissingPath:
            value = None
    if isinstance(value, bool) or not isinstance(value, str | int) or value == "":
        raise ApiError(400, f"the event id is missing: expected it in {field} (a string or an integer)", field=field)
    text = str(value)
    if len(text) > MAX_EVENT_ID_CHARS or not text.isprintable():
        raise ApiError(400, f"the event id in {field} must be 1..{MAX_EVENT_ID_CHARS} printable characters",
                       field=field)
    return text


def unset_secrets(specs: list[WebhookSpec], environ: Mapping[str, str]) -> list[WebhookSpec]:
    """The webhooks whose secret variable is unset or empty: they answer 503 until it is set and serve restarts."""
    return [spec for spec in specs if not environ.get(spec.secret_env)]


async def handle_hook(request: Request, service: FleetService, environ: Mapping[str, str]) -> Response:
    name = request.path_params["name"]
    spec = service.webhook(name)
    if spec is None:
        raise ApiError(404, f"no webhook named {name!r} in this fleet", field="name")
    secret = environ.get(spec.secret_env)
    if not secret:
        raise ApiError(503, f"webhook {name!r} is not configured: its secret variable {spec.secret_env} is not set "
                            "in the serve's environment", field=spec.secret_env, retry_after_s=UNSET_SECRET_RETRY_S)
    raw = await read_body(request)
    signature = request.headers.get(spec.signature_header)
    if not signature_ok(secret, raw, signature):
        reason = "missing" if signature is None else "bad"
        raise ApiError(401, f"{reason} signature: {spec.signature_header} must be sha256=<hex of HMAC-SHA256 of the "
                            "body with the webhook's secret>", field=spec.signature_header)
    try:
        body = json.loads(raw)
    except ValueError:
        raise ApiError(400, "the body is not valid JSON", field="body") from None
    key = f"webhook:{name}:{event_id(spec, request, body)}"
    try:
        run_input = fill(spec.input, body)
        tenant = fill(spec.tenant, body)
    except MissingPath as exc:
        raise ApiError(422, f"the event has no {exc.path} (the webhook's input template needs it)",
                       field=exc.path) from None
    if tenant is not None and not isinstance(tenant, str):
        tenant = json.dumps(tenant)
    submission = Submission(hierarchy=spec.hierarchy, input=run_input, source=f"webhook:{name}", tenant=tenant,
                            priority=spec.priority, idempotency_key=key)
    try:
        admitted = await service.submit(submission)
    except Refused as exc:
        raise refused(exc) from None
    return await submitted(service, admitted, spec.hierarchy)
