"""The serve API on Starlette: submit, inspect, cancel and resume runs, see queues and schedules, health, the OpenAPI
description and the webhooks. `build_app(service, token=...)` is the whole HTTP face; uvicorn serves it on the
engine's own event loop (console/commands/serve.py), so every handler calls the FleetService directly.

Every refusal is `{"error": reason, "field": name}` with its status (http_models.py); 429 and 503 carry Retry-After
in whole seconds. A handler's own bug is a 500 with a generic sentence (the traceback goes to the serve's log,
never to the caller)."""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from engine.serve.auth import BearerAuth
from engine.serve.contracts import FleetService, Refused, Submission
from engine.serve.http_models import (
    ApiError,
    CancelBody,
    ResumeBody,
    RunsQuery,
    SubmitBody,
    actor_of,
    error_response,
    idempotency_key,
    parse_json,
    parse_query,
    read_body,
    refused,
    run_json,
    submitted,
)
from engine.serve.openapi import build_openapi
from engine.serve.webhooks import handle_hook

log = logging.getLogger("flightdeck.serve")
STOPPING_RETRY_S = 30
MAX_RUN_ID_CHARS = 200


class _Api:
    """The route handlers, bound to one service."""

    def __init__(self, service: FleetService, environ: Mapping[str, str], openapi: dict[str, Any]) -> None:
        self.service = service
        self.environ = environ
        self.openapi = openapi

    async def submit(self, request: Request) -> Response:
        key = idempotency_key(request)
        body = parse_json(SubmitBody, await read_body(request))
        submission = Submission(hierarchy=body.hierarchy, input=body.input, source="api", tenant=body.tenant,
                                priority=body.priority, idempotency_key=key, seed=body.seed)
        try:
            admitted = await self.service.submit(submission)
        except Refused as exc:
            raise refused(exc) from None
        return await submitted(self.service, admitted, body.hierarchy)

    async def get_run(self, request: Request) -> Response:
        run_id = _run_id(request)
        view = await self.service.get_run(run_id)
        if view is None:
            raise ApiError(404, f"no run {run_id!r}", field="run_id")
        return JSONResponse(run_json(view))

    async def list_runs(self, request: Request) -> Response:
        query = parse_query(RunsQuery, request)
        views = await self.service.list_runs(state=query.state, hierarchy=query.hierarchy, tenant=query.tenant,
                                             limit=query.limit)
        return JSONResponse([run_json(view) for view in views])

    async def cancel(self, request: Request) -> Response:
        run_id = _run_id(request)
        body = parse_json(CancelBody, await read_body(request))
        try:
            view = await self.service.cancel(run_id, reason=body.reason, actor=actor_of(body.actor))
        except KeyError:
            raise ApiError(404, f"no run {run_id!r}", field="run_id") from None
        except Refused as exc:
            raise refused(exc) from None
        return JSONResponse(run_json(view))

    async def resume(self, request: Request) -> Response:
        run_id = _run_id(request)
        raw = await read_body(request)
        body = parse_json(ResumeBody, raw) if raw.strip() else ResumeBody()
        try:
            view = await self.service.resume(run_id, actor=actor_of(body.actor))
        except KeyError:
            raise ApiError(404, f"no run {run_id!r}", field="run_id") from None
        except Refused as exc:
            raise refused(exc) from None
        return JSONResponse(run_json(view))

    async def queues(self, request: Request) -> Response:
        return JSONResponse([row.as_dict() for row in self.service.queues()])

    async def schedules(self, request: Request) -> Response:
        return JSONResponse([row.as_dict() for row in self.service.schedules()])

    async def health(self, request: Request) -> Response:
        health = self.service.health()
        if health.status == "stopping":
            return JSONResponse(asdict(health), status_code=503, headers={"Retry-After": str(STOPPING_RETRY_S)})
        return JSONResponse(asdict(health))

    async def openapi_json(self, request: Request) -> Response:
        return JSONResponse(self.openapi)

    async def hook(self, request: Request) -> Response:
        return await handle_hook(request, self.service, self.environ)


def _run_id(request: Request) -> str:
    run_id: str = request.path_params["run_id"]
    if len(run_id) > MAX_RUN_ID_CHARS or not run_id.isprintable():
        raise ApiError(404, "no such run (not a run id)", field="run_id")
    return run_id


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    reason = {404: f"no route {request.url.path}", 405: f"{request.method} is not allowed on {request.url.path}"}
    response = error_response(ApiError(exc.status_code, reason.get(exc.status_code, str(exc.detail))))
    if exc.headers:
        response.headers.update(exc.headers)
    return response


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("%s %s failed", request.method, request.url.path, exc_info=exc)
    return JSONResponse({"error": "internal error: see the serve's log", "field": None}, status_code=500)


def build_app(service: FleetService, *, token: str | None, environ: Mapping[str, str] | None = None) -> Starlette:
    """The API for `service`. `token`: when given, every route but /health and /hooks/* needs `Authorization:
    Bearer <token>`. `environ`: where webhook secrets are read (default os.environ)."""
    api = _Api(service, os.environ if environ is None else environ, build_openapi(auth=token is not None))
    routes = [
        Route("/runs", api.submit, methods=["POST"]),
        Route("/runs", api.list_runs, methods=["GET"]),
        Route("/runs/{run_id}", api.get_run, methods=["GET"]),
        Route("/runs/{run_id}/cancel", api.cancel, methods=["POST"]),
        Route("/runs/{run_id}/resume", api.resume, methods=["POST"]),
        Route("/queues", api.queues, methods=["GET"]),
        Route("/schedules", api.schedules, methods=["GET"]),
        Route("/health", api.health, methods=["GET"]),
        Route("/openapi.json", api.openapi_json, methods=["GET"]),
        Route("/hooks/{name}", api.hook, methods=["POST"]),
    ]
    middleware = [Middleware(BearerAuth, token=token)] if token is not None else []
    return Starlette(routes=routes, middleware=middleware,
                     exception_handlers={ApiError: _api_error, HTTPException: _http_error, Exception: _internal_error})
