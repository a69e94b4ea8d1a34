"""GET /openapi.json: the API's OpenAPI 3.1 description, generated from the pydantic request models and the
contracts' dataclasses (pydantic's JSON Schema is draft 2020-12, which OpenAPI 3.1 uses as is), so the document
cannot drift from what the handlers validate. Built once per app."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, TypeAdapter

import engine
from engine.serve.contracts import Health, RunView
from engine.serve.http_models import CancelBody, ResumeBody, RunsQuery, SubmitBody
from engine.store.trace_rows import QueueRow, ScheduleRow

REF = "#/components/schemas/{model}"
ERROR_STATUSES = {
    400: "malformed request (bad JSON, a bad header)", 401: "missing or wrong bearer token or webhook signature",
    404: "no such run, hierarchy or webhook", 409: "the run cannot do that now", 413: "body over 1 MiB",
    422: "a field has a wrong type or value, or an unknown field", 429: "a queue is full: retry after Retry-After",
    503: "admission paused or draining, the engine stopping, or a webhook's secret unset: retry after Retry-After",
}


class _Schemas:
    def __init__(self) -> None:
        self.components: dict[str, Any] = {
            "Error": {"type": "object", "required": ["error", "field"], "properties": {
                "error": {"type": "string", "description": "why, in a sentence"},
                "field": {"type": ["string", "null"], "description": "the field, header or parameter at fault"}}}}

    def ref(self, name: str, tp: Any, mode: str = "serialization") -> dict[str, Any]:
        if name not in self.components:
            schema = TypeAdapter(tp).json_schema(ref_template=REF, mode=mode)  # type: ignore[arg-type]
            self.components.update(schema.pop("$defs", {}))
            self.components[name] = schema
        return {"$ref": REF.format(model=name)}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _errors(*statuses: int) -> dict[str, Any]:
    return {str(s): {"$ref": f"#/components/responses/E{s}"} for s in statuses}


def _body(schemas: _Schemas, model: type[BaseModel], required: bool = True) -> dict[str, Any]:
    return {"required": required, "content": {"application/json": {
        "schema": schemas.ref(model.__name__, model, "validation")}}}


def build_openapi(*, auth: bool) -> dict[str, Any]:
    s = _Schemas()
    run = s.ref("RunView", RunView)
    submitted = {"allOf": [run, {"type": "object", "required": ["created"], "properties": {"created": {
        "type": "boolean", "description": "false: the idempotency key named a run that already existed"}}}]}
    run_id = {"name": "run_id", "in": "path", "required": True, "schema": {"type": "string"}}
    submit_answers = {"201": _json(submitted, "queued: Location names the run"),
                      "200": _json(submitted, "the idempotency key's original run")}
    query = [{"name": name, "in": "query", "required": False,
              "schema": {k: v for k, v in field.items() if k not in ("title", "default")}}
             for name, field in RunsQuery.model_json_schema()["properties"].items()]
    paths: dict[str, Any] = {
        "/runs": {
            "post": {"summary": "Submit a run", "operationId": "submitRun", "requestBody": _body(s, SubmitBody),
                     "parameters": [{"name": "Idempotency-Key", "in": "header", "required": False,
                                     "schema": {"type": "string", "maxLength": 255},
                                     "description": "a repeat with the same key returns the original run (200)"}],
                     "responses": submit_answers | _errors(400, 401, 404, 413, 422, 429, 503)},
            "get": {"summary": "List runs, newest first", "operationId": "listRuns", "parameters": query,
                    "responses": {"200": _json({"type": "array", "items": run}, "runs")} | _errors(401, 422)}},
        "/runs/{run_id}": {"get": {
            "summary": "A run's state and result", "operationId": "getRun", "parameters": [run_id],
            "responses": {"200": _json(run, "the run")} | _errors(401, 404)}},
        "/runs/{run_id}/cancel": {"post": {
            "summary": "Cancel a queued run or kill a running one (audited)", "operationId": "cancelRun",
            "parameters": [run_id], "requestBody": _body(s, CancelBody),
            "responses": {"200": _json(run, "the run after the cancel")} | _errors(400, 401, 404, 409, 413, 422)}},
        "/runs/{run_id}/resume": {"post": {
            "summary": "Resume an ended durable run", "operationId": "resumeRun", "parameters": [run_id],
            "requestBody": _body(s, ResumeBody, required=False),
            "responses": {"200": _json(run, "the resumed run")} | _errors(400, 401, 404, 409, 413, 422)}},
        "/queues": {"get": {"summary": "Each queue's and tenant's depth, limits and admission",
                            "operationId": "listQueues", "responses": {"200": _json(
                                {"type": "array", "items": s.ref("QueueRow", QueueRow)}, "queues")} | _errors(401)}},
        "/schedules": {"get": {"summary": "Cron schedules with next and last fire time", "operationId": "listSchedules",
                               "responses": {"200": _json({"type": "array", "items": s.ref("ScheduleRow", ScheduleRow)},
                                                          "schedules")} | _errors(401)}},
        "/health": {"get": {"summary": "Engine and store state (no auth)", "operationId": "health", "security": [],
                            "responses": {"200": _json(s.ref("Health", Health), "ok or degraded"),
                                          "503": _json(s.ref("Health", Health), "stopping (draining on SIGTERM)")}}},
        "/hooks/{name}": {"post": {
            "summary": "A fleet.yaml webhook: HMAC-SHA256 signed JSON event (no bearer token)",
            "operationId": "webhook", "security": [],
            "parameters": [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}],
            "requestBody": {"required": True, "content": {"application/json": {"schema": {}}}},
            "responses": submit_answers | _errors(400, 401, 404, 413, 422, 429, 503)}},
        "/openapi.json": {"get": {"summary": "This document", "operationId": "openapi",
                                  "responses": {"200": {"description": "OpenAPI 3.1"}} | _errors(401)}},
    }
    doc: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {"title": "Flightdeck serve API", "version": engine.__version__,
                 "description": "Submit, watch, cancel and resume runs of a `flightdeck serve` fleet."},
        "paths": paths,
        "components": {"schemas": s.components,
                       "responses": {f"E{code}": _json({"$ref": REF.format(model="Error")}, text)
                                     for code, text in ERROR_STATUSES.items()},
                       "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}}},
    }
    if auth:
        doc["security"] = [{"bearer": []}]
    return doc
