"""Flightdeck's spans and events as OTLP spans, following the OpenTelemetry GenAI semantic conventions.

    run         -> "run {hierarchy}"        root span, flightdeck.run.* attributes and the run's totals
    agent       -> "invoke_agent {agent}"   gen_ai.operation.name=invoke_agent, gen_ai.agent.name
    llm         -> "chat {model}"           gen_ai.request.model, gen_ai.provider.name, gen_ai.usage.input_tokens /
                                            output_tokens, gen_ai.response.finish_reasons (span kind CLIENT)
    tool        -> "execute_tool {tool}"    gen_ai.tool.name, gen_ai.tool.call.id, gen_ai.tool.type=function
    delegation  -> "execute_tool {tool}"    a handoff to a child agent (the tool the model called, ask_<child>):
                                            gen_ai.tool.type=agent and flightdeck.delegation.to
    route/stage -> "{kind} {name}"          flightdeck.* only

Trace ids derive from the run id and span ids from ours (BLAKE2b), so a replay of the same run yields the same ids
(backends then merge or deduplicate). Flightdeck's own facts are flightdeck.* attributes (cost, reservation, tier,
risk, approvals), its events on a span or run (budget breaches, retries, fallbacks, approval requests and
decisions, tools withheld or blocked, routing decisions) are span events named by their kind, and events of no run
(breaker transitions, kill switches applied, runbooks firing) are each a one-span trace named by their kind.

Message content (run input and output, agent tasks, model output, tool arguments and results) is exported only with
`content` on, as gen_ai.input.messages / gen_ai.output.messages / gen_ai.tool.call.arguments / .result; every string
that leaves, content or not, goes through the redactor first.

A span still running is exported as a *pending* span: its own id (derived from the real one), the real span's
parent, start = the real start, end = now, flightdeck.pending = true and the name suffixed " (running)". It stays a
separate, zero-risk record: backends never see one span id twice.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.export.records import EventRecord, RunRecord, SpanRecord
from engine.store.redact import Redactor

SCOPE_NAME = "flightdeck"
OK_STATUSES = frozenset({"ok", "completed"})
CONTENT_KEYS = frozenset({"input", "output", "task", "context", "content", "tool_calls", "args", "arguments",
                          "result", "messages", "edited_args", "original_args", "reason"})
PROVIDERS = {"scripted": "flightdeck.scripted", "openai": "openai"}
_MAX_ATTRIBUTE_CHARS = 8192
_CACHED_CHARS = 120
_CACHE_LIMIT = 8192


@dataclass(frozen=True, slots=True)
class MappingOptions:
    service_name: str = "flightdeck"
    resource_attributes: Mapping[str, str | int | float | bool] = field(default_factory=dict)
    content: bool = False
    version: str = ""


def trace_id(run_id: str) -> bytes:
    return hashlib.blake2b(run_id.encode(), digest_size=16).digest()


def span_id(flightdeck_span_id: str) -> bytes:
    return hashlib.blake2b(flightdeck_span_id.encode(), digest_size=8).digest()


def sampled(run_id: str, ratio: float) -> bool:
    """TraceIdRatioBased: the run is exported when the trace id's low 8 bytes fall below ratio x 2^64."""
    if ratio >= 1.0:
        return True
    return int.from_bytes(trace_id(run_id)[8:], "big") < int(ratio * 2**64)


def _nanos(seconds: float) -> int:
    return int(round(seconds * 1e9))


class SpanMapper:
    """Builds ExportTraceServiceRequests. One per exporter (it keeps the protobuf classes and the redactor)."""

    def __init__(self, options: MappingOptions, redactor: Redactor) -> None:
        from opentelemetry.proto.collector.trace.v1 import trace_service_pb2
        from opentelemetry.proto.common.v1 import common_pb2
        from opentelemetry.proto.resource.v1 import resource_pb2
        from opentelemetry.proto.trace.v1 import trace_pb2

        self.options = options
        self.redactor = redactor
        self._cache: dict[str, str] = {}
        self._pb = trace_pb2
        self._common = common_pb2
        self._service = trace_service_pb2
        resource = resource_pb2.Resource()
        attrs = {"service.name": options.service_name, "telemetry.sdk.name": "flightdeck",
                 "telemetry.sdk.language": "python", **dict(options.resource_attributes)}
        if options.version:
            attrs.setdefault("service.version", options.version)
        self._put_all(resource.attributes, attrs)
        self._resource = resource

    # -- requests -----------------------------------------------------------------------------------------------

    def request(self, spans: Iterable[SpanRecord], events: Mapping[str, list[EventRecord]],
                runs: Mapping[str, RunRecord], *, pending: Iterable[tuple[SpanRecord, float]] = (),
                engine_events: Iterable[EventRecord] = (), engine_id: str = "") -> Any:
        """An ExportTraceServiceRequest with `spans` (ended), their `events` (by our span id), `pending` spans (a
        running span and the time it was seen running) and `engine_events` (events of no run: each a one-span
        trace)."""
        request = self._service.ExportTraceServiceRequest()
        resource_spans = request.resource_spans.add()
        resource_spans.resource.CopyFrom(self._resource)
        scope_spans = resource_spans.scope_spans.add()
        scope_spans.scope.name = SCOPE_NAME
        scope_spans.scope.version = self.options.version
        out = scope_spans.spans
        for record in spans:
            self._fill(out.add(), record, events.get(record.id, ()), runs.get(record.run_id), None)
        for record, now in pending:
            self._fill(out.add(), record, (), runs.get(record.run_id), now)
        for event in engine_events:
            self._engine_event(out.add(), event, engine_id)
        return request

    def _engine_event(self, span: Any, event: EventRecord, engine_id: str) -> None:
        """An event of no run (a breaker transition, a kill switch applied, a runbook firing) as a zero-length span
        of its own trace, so a backend can search for it by name next to the runs it affected."""
        key = f"{engine_id}:{event.seq}"
        span.trace_id = trace_id(key)
        span.span_id = span_id(key)
        span.start_time_unix_nano = span.end_time_unix_nano = _nanos(event.ts)
        span.name = f"{event.kind} {event.name}" if event.name else event.kind
        span.kind = self._pb.Span.SpanKind.SPAN_KIND_INTERNAL
        values: dict[str, Any] = {"flightdeck.event": event.kind, "flightdeck.engine.id": engine_id}
        if event.name:
            values["flightdeck.name"] = event.name
        for field_name, value in event.payload().items():
            if self.options.content or field_name not in CONTENT_KEYS:
                values[f"flightdeck.{field_name}"] = value
        self._put_all(span.attributes, values)

    # -- one span -----------------------------------------------------------------------------------------------

    def _fill(self, span: Any, record: SpanRecord, events: Iterable[EventRecord], run: RunRecord | None,
              pending_now: float | None) -> None:
        span.trace_id = trace_id(record.run_id)
        span.span_id = span_id(record.id + "/pending" if pending_now is not None else record.id)
        if record.parent_id:
            span.parent_span_id = span_id(record.parent_id)
        span.start_time_unix_nano = _nanos(record.started)
        ended = record.ended if pending_now is None else max(pending_now, record.started)
        span.end_time_unix_nano = _nanos(ended if ended is not None else record.started)
        attrs = record.attrs()
        name, kind, values = self._describe(record, attrs, run)
        span.name = name if pending_now is None else f"{name} (running)"
        span.kind = kind
        # Kept few on purpose: every attribute costs the exporter per span (the trace id already names the run, the
        # span name and gen_ai.operation.name the kind, the status code an ok status).
        values["flightdeck.span.id"] = record.id
        if record.status not in OK_STATUSES:
            values["flightdeck.status"] = record.status
        if record.agent:
            values["flightdeck.agent"] = record.agent
        if record.cost_usd:
            values["flightdeck.cost_usd"] = record.cost_usd
        if pending_now is not None:
            values["flightdeck.pending"] = True
            values["flightdeck.pending_for"] = span_id(record.id).hex()
        else:
            self._status(span, record, attrs)
        if self.options.content and pending_now is None:
            self._content(values, record, attrs)
        self._put_all(span.attributes, values)
        for event in events:
            added = span.events.add()
            added.time_unix_nano = _nanos(event.ts)
            added.name = event.kind
            payload: dict[str, Any] = {}
            if event.name:
                payload["name"] = event.name
            if event.agent:
                payload["agent"] = event.agent
            for key, value in event.payload().items():
                if self.options.content or key not in CONTENT_KEYS:
                    payload[key] = value
            self._put_all(added.attributes, {f"flightdeck.{key}": value for key, value in payload.items()})

    def _describe(self, record: SpanRecord, attrs: dict[str, Any], run: RunRecord | None
                  ) -> tuple[str, int, dict[str, Any]]:
        kinds = self._pb.Span.SpanKind
        values: dict[str, Any] = {}
        kind = record.kind
        if kind == "run":
            hierarchy = run.hierarchy if run is not None else record.name
            values["flightdeck.hierarchy"] = hierarchy
            values["flightdeck.run.id"] = record.run_id
            if run is not None:
                values.update({"flightdeck.run.status": run.status, "flightdeck.tokens_in": run.tokens_in,
                               "flightdeck.tokens_out": run.tokens_out, "flightdeck.run.cost_usd": run.cost_usd,
                               "flightdeck.model_calls": run.model_calls, "flightdeck.tool_calls": run.tool_calls})
                if run.tenant:
                    values["flightdeck.tenant"] = run.tenant
                if run.engine_id:
                    values["flightdeck.engine.id"] = run.engine_id
            return f"run {hierarchy}", kinds.SPAN_KIND_SERVER, values
        if kind == "agent":
            agent = record.agent or record.name
            values.update({"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": agent})
            if isinstance(attrs.get("contract"), str):
                values["gen_ai.agent.description"] = attrs["contract"]
            return f"invoke_agent {agent}", kinds.SPAN_KIND_INTERNAL, values
        if kind == "llm":
            model = record.model or record.name
            provider = str(attrs.get("provider") or "")
            values.update({"gen_ai.operation.name": "chat", "gen_ai.request.model": model,
                           "gen_ai.usage.input_tokens": record.tokens_in,
                           "gen_ai.usage.output_tokens": record.tokens_out})
            if provider:
                values["gen_ai.provider.name"] = PROVIDERS.get(provider, provider)
            if attrs.get("finish_reason"):
                values["gen_ai.response.finish_reasons"] = [str(attrs["finish_reason"])]
            if isinstance(attrs.get("max_output_tokens"), int):
                values["gen_ai.request.max_tokens"] = attrs["max_output_tokens"]
            for key in ("attempt", "tier", "reserved_usd"):
                if attrs.get(key) is not None:
                    values[f"flightdeck.{key}"] = attrs[key]
            if attrs.get("cached"):
                values["flightdeck.cached"] = True
            return f"chat {model}", kinds.SPAN_KIND_CLIENT, values
        if kind in ("tool", "delegation"):
            tool = str(attrs.get("tool") or record.name) if kind == "delegation" else record.name
            values.update({"gen_ai.operation.name": "execute_tool", "gen_ai.tool.name": tool,
                           "gen_ai.tool.type": "function" if kind == "tool" else "agent"})
            if attrs.get("call_id"):
                values["gen_ai.tool.call.id"] = str(attrs["call_id"])
            if kind == "delegation" and attrs.get("to"):
                values["flightdeck.delegation.to"] = str(attrs["to"])
            for key in ("risk", "side_effects", "approval", "error_kind", "reason"):
                if attrs.get(key) is not None and (key != "reason" or self.options.content):
                    values[f"flightdeck.tool.{key}"] = attrs[key]
            return f"execute_tool {tool}", kinds.SPAN_KIND_INTERNAL, values
        return f"{kind} {record.name}", kinds.SPAN_KIND_INTERNAL, values

    def _status(self, span: Any, record: SpanRecord, attrs: dict[str, Any]) -> None:
        codes = self._pb.Status.StatusCode
        if record.status in OK_STATUSES:
            span.status.code = codes.STATUS_CODE_OK
            return
        span.status.code = codes.STATUS_CODE_ERROR
        error = attrs.get("error")
        if error and not isinstance(error, str):
            error = json.dumps(error, default=str)
        message = f"{record.status}: {error}" if error else record.status
        span.status.message = self.redactor.clean_text(message)[:500]
        span.attributes.add(key="error.type", value=self._any(str(attrs.get("error_kind") or record.status)))

    def _content(self, values: dict[str, Any], record: SpanRecord, attrs: dict[str, Any]) -> None:
        attrs = self.redactor.clean(attrs)  # structured first: a credential-named key hides its value
        kind = record.kind
        if kind in ("run", "agent", "delegation"):
            given = {k: attrs[k] for k in ("input", "task", "context") if attrs.get(k) is not None}
            if given:
                values["gen_ai.input.messages"] = _messages("user", given)
            if attrs.get("output") is not None:
                values["gen_ai.output.messages"] = _messages("assistant", attrs["output"])
        elif kind == "llm":
            parts: list[dict[str, Any]] = []
            if attrs.get("content"):
                parts.append({"type": "text", "content": attrs["content"]})
            for call in attrs.get("tool_calls") or ():
                if isinstance(call, dict):
                    parts.append({"type": "tool_call", "id": call.get("id"), "name": call.get("name"),
                                  "arguments": call.get("arguments")})
            if parts:
                values["gen_ai.output.messages"] = json.dumps(
                    [{"role": "assistant", "parts": parts, "finish_reason": attrs.get("finish_reason")}],
                    default=str)
        elif kind == "tool":
            if attrs.get("args") is not None:
                values["gen_ai.tool.call.arguments"] = json.dumps(attrs["args"], default=str)
            if attrs.get("result") is not None:
                values["gen_ai.tool.call.result"] = json.dumps(attrs["result"], default=str)

    # -- attribute values ---------------------------------------------------------------------------------------

    def _put_all(self, target: Any, values: Mapping[str, Any]) -> None:
        add = target.add
        for key, value in values.items():
            if value is None:
                continue
            kv = add()
            kv.key = key
            self._set(kv.value, value)

    def _set(self, any_value: Any, value: Any) -> None:
        """Fill an AnyValue in place (no temporary message and copy): scalars as themselves, lists of scalars as
        arrays, anything else as (redacted) JSON text."""
        kind = type(value)
        if kind is str:
            any_value.string_value = self._text(value)
        elif kind is bool:
            any_value.bool_value = value
        elif kind is int and -2**63 <= value < 2**63:
            any_value.int_value = value
        elif kind is float:
            any_value.double_value = value
        elif kind in (list, tuple) and all(type(item) in (str, bool, int, float) for item in value):
            values = any_value.array_value.values
            for item in value:
                self._set(values.add(), item)
        else:
            any_value.string_value = self._text(json.dumps(self.redactor.clean(value), default=str))

    def _any(self, value: Any) -> Any:
        any_value = self._common.AnyValue()
        self._set(any_value, value)
        return any_value

    def _text(self, text: str) -> str:
        """Every string leaves through the redactor. Short strings repeat (names, models, statuses, kinds): their
        cleaned form is remembered, so the redactor runs once per distinct value, not once per span."""
        if len(text) <= _CACHED_CHARS:
            cleaned = self._cache.get(text)
            if cleaned is None:
                cleaned = self.redactor.clean_text(text)
                if len(self._cache) >= _CACHE_LIMIT:
                    self._cache.clear()
                self._cache[text] = cleaned
            return cleaned
        cleaned = self.redactor.clean_text(text)
        return cleaned if len(cleaned) <= _MAX_ATTRIBUTE_CHARS else cleaned[:_MAX_ATTRIBUTE_CHARS] + "…[truncated]"


def _messages(role: str, content: Any) -> str:
    text = content if isinstance(content, str) else json.dumps(content, default=str)
    return json.dumps([{"role": role, "parts": [{"type": "text", "content": text}]}])
