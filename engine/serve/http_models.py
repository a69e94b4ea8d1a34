"""What the serve API reads and writes: the pydantic models of its request bodies and query strings, the one error
shape (`{"error": reason, "field": name}`), and reading a body with a size cap. Every way a request can be wrong
ends here as an ApiError with a status and the field it names; nothing a caller sends becomes a 500.

Error messages are built from pydantic's error type and location, never from the value sent: a token or a secret
pasted into the wrong field is not echoed back."""

from __future__ import annotations

import math
import re
from dataclasses import asdict
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse

from engine.serve.contracts import Admitted, FleetService, Refused, RunView
from engine.serve.fleet import NAME_PATTERN

MAX_BODY_BYTES = 1024 * 1024  # 1 MiB: a larger body is refused with 413 before it is read whole
TENANT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,127}$"
ACTOR_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.:@\-]{0,63}$"
# Idempotency keys the engine makes itself: a caller of POST /runs may not claim them (it could pre-empt a webhook
# event or a schedule slot).
RESERVED_KEY_PREFIXES = ("webhook:", "schedule:")
MAX_KEY_CHARS = 255
FIELD_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,31}")
DEFAULT_RETRY_AFTER_S = {429: 1, 503: 5}

ModelT = TypeVar("ModelT", bound=BaseModel)


class ApiError(Exception):
    """A request refused with `status`: rendered as `{"error": reason, "field": field}`, with Retry-After (whole
    seconds, at least 1) on 429 and 503."""

    def __init__(self, status: int, reason: str, *, field: str | None = None,
                 retry_after_s: float | None = None) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason
        self.field = field
        self.retry_after_s = retry_after_s


def error_response(error: ApiError) -> JSONResponse:
    headers: dict[str, str] = {}
    if error.status in DEFAULT_RETRY_AFTER_S:
        wait = error.retry_after_s if error.retry_after_s is not None else DEFAULT_RETRY_AFTER_S[error.status]
        headers["Retry-After"] = str(max(1, math.ceil(wait)))
    if error.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="flightdeck"'
    return JSONResponse({"error": error.reason, "field": error.field}, status_code=error.status, headers=headers)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)


class SubmitBody(_Body):
    """POST /runs. The Idempotency-Key header (optional) names the run: a repeat returns the original run."""

    hierarchy: str = Field(pattern=NAME_PATTERN, max_length=128, description="a hierarchy this serve loaded")
    input: Any = Field(default=None, description="the run's input: text or any JSON value")
    tenant: str | None = Field(default=None, pattern=TENANT_PATTERN, description="customer/tenant label")
    priority: int = Field(default=500, ge=0, le=1000, description="0 is the highest, 1000 the lowest")
    seed: int = Field(default=0, ge=0, le=2**31 - 1, description="seed for the scripted model")


class CancelBody(_Body):
    """POST /runs/{run_id}/cancel: a queued run never starts; a running one is killed (audited)."""

    reason: str = Field(min_length=1, max_length=1000)
    actor: str | None = Field(default=None, pattern=ACTOR_PATTERN, description="who asks (recorded as api:ACTOR)")


class ResumeBody(_Body):
    """POST /runs/{run_id}/resume (the body may be empty)."""

    actor: str | None = Field(default=None, pattern=ACTOR_PATTERN, description="who asks (recorded as api:ACTOR)")


class RunsQuery(_Body):
    """GET /runs query string."""

    state: str | None = Field(default=None, max_length=32)
    hierarchy: str | None = Field(default=None, max_length=128)
    tenant: str | None = Field(default=None, max_length=128)
    limit: int = Field(default=100, ge=1, le=1000)


def field_of(loc: tuple[Any, ...], prefix: str = "") -> str:
    return prefix + ".".join(str(part) for part in loc) if loc else (prefix.rstrip(".") or "body")


def validation_error(exc: ValidationError, prefix: str = "") -> ApiError:
    """The first problem, naming its field; an unparseable body is a 400, a body of the wrong shape a 422."""
    err = exc.errors(include_input=False, include_url=False)[0]
    kind = err["type"]
    field = field_of(tuple(err["loc"]), prefix)
    if kind == "json_invalid":
        return ApiError(400, "the body is not valid JSON", field="body")
    if kind == "extra_forbidden":
        # A key is something the caller sent: named back only when it looks like a field name, so a token pasted
        # as a key is not echoed.
        if not FIELD_NAME.fullmatch(field.rpartition(".")[2]):
            return ApiError(422, "an unknown field (its name is not shown: it does not look like a field name)",
                            field=prefix + "(unknown)")
        return ApiError(422, f"unknown field {field!r}", field=field)
    if kind == "missing":
        return ApiError(422, f"{field} is required", field=field)
    return ApiError(422, f"{field}: {err['msg']}", field=field)


def parse_json(model: type[ModelT], raw: bytes) -> ModelT:
    if not raw.strip():
        raise ApiError(400, "the body must be a JSON object", field="body")
    try:
        return model.model_validate_json(raw, strict=True)
    except ValidationError as exc:
        raise validation_error(exc) from None


def parse_query(model: type[ModelT], request: Request) -> ModelT:
    params = request.query_params
    for name in params:
        if len(params.getlist(name)) > 1:
            raise ApiError(422, f"query parameter {name!r} is given more than once", field=name)
    try:
        return model.model_validate(dict(params))
    except ValidationError as exc:
        raise validation_error(exc) from None


async def read_body(request: Request, cap: int = MAX_BODY_BYTES) -> bytes:
    """The whole body, or ApiError(413) as soon as it is known to exceed `cap` (by Content-Length, else while
    reading): an oversized body is never held whole."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > cap:
        raise ApiError(413, f"the body is larger than {cap} bytes", field="body")
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > cap:
            raise ApiError(413, f"the body is larger than {cap} bytes", field="body")
        chunks.append(chunk)
    return b"".join(chunks)


def idempotency_key(request: Request) -> str | None:
    key = request.headers.get("idempotency-key")
    if key is None:
        return None
    if not key or len(key) > MAX_KEY_CHARS or not key.isprintable() or not key.isascii():
        raise ApiError(400, f"Idempotency-Key must be 1..{MAX_KEY_CHARS} printable ASCII characters",
                       field="Idempotency-Key")
    if key.startswith(RESERVED_KEY_PREFIXES):
        raise ApiError(400, f"Idempotency-Key may not start with {' or '.join(RESERVED_KEY_PREFIXES)} (the engine "
                            "names webhook events and schedule slots so)", field="Idempotency-Key")
    return key


def actor_of(given: str | None) -> str:
    return "api" if given is None else f"api:{given}"


def run_json(view: RunView) -> dict[str, Any]:
    return asdict(view)


async def submitted(service: FleetService, admitted: Admitted, hierarchy: str) -> JSONResponse:
    """The answer to an admitted submission: 201 + Location for a new run, 200 with the original run for a repeat
    (its state now, as GET /runs/{id} would show it)."""
    view = await service.get_run(admitted.run_id)
    body: dict[str, Any] = run_json(view) if view is not None else {
        "run_id": admitted.run_id, "hierarchy": hierarchy, "state": admitted.state, "queue": admitted.queue}
    body["created"] = admitted.created
    if admitted.created:
        return JSONResponse(body, status_code=201, headers={"Location": f"/runs/{admitted.run_id}"})
    return JSONResponse(body, status_code=200)


def refused(exc: Refused) -> ApiError:
    return ApiError(exc.status, exc.reason, field=exc.field, retry_after_s=exc.retry_after_s)
