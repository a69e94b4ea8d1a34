"""A real OTLP/HTTP trace receiver on 127.0.0.1: the webhook Receiver (tests/fakes/receiver.py) answering like a
collector, plus decoding with opentelemetry-proto (binary protobuf or OTLP/JSON, by Content-Type).

    with OtlpReceiver() as collector:
        ... export to collector.endpoint ...
        spans = collector.wait_for_spans(lambda spans: any(s.name.startswith("run ") for s in spans))
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Span

from engine.export.encoding import decode
from tests.fakes.receiver import Receiver, Reply, reply

__all__ = ["OtlpReceiver", "ReceivedSpan", "attributes", "reply"]


def _value(any_value: Any) -> Any:
    which = any_value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in any_value.array_value.values]
    return getattr(any_value, which) if which else None


def attributes(items: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in items}


@dataclass(frozen=True, slots=True)
class ReceivedSpan:
    span: Span
    resource: dict[str, Any]

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def attrs(self) -> dict[str, Any]:
        return attributes(self.span.attributes)

    @property
    def events(self) -> list[tuple[str, dict[str, Any]]]:
        return [(e.name, attributes(e.attributes)) for e in self.span.events]


class OtlpReceiver(Receiver):
    def __init__(self, default: Reply | None = None) -> None:
        super().__init__(default or reply(200, b""))

    @property
    def endpoint(self) -> str:
        return self.url("")

    def decoded(self) -> list[ExportTraceServiceRequest]:
        return [decode(r.body, r.headers.get("content-type", "")) for r in self.requests
                if r.path == "/v1/traces" and r.body]

    def spans(self) -> list[ReceivedSpan]:
        out = []
        for request in self.decoded():
            for resource_spans in request.resource_spans:
                resource = attributes(resource_spans.resource.attributes)
                for scope_spans in resource_spans.scope_spans:
                    out += [ReceivedSpan(span, resource) for span in scope_spans.spans]
        return out

    def wait_for_spans(self, done: Callable[[list[ReceivedSpan]], bool], timeout: float = 15.0
                       ) -> list[ReceivedSpan]:
        """The spans received so far once `done(spans)` holds (checked on every request); TimeoutError."""
        deadline = time.monotonic() + timeout
        seen = -1
        while True:
            count = len(self.requests)
            if count != seen:
                seen = count
                spans = self.spans()
                if done(spans):
                    return spans
            left = deadline - time.monotonic()
            if left <= 0:
                raise TimeoutError(f"the receiver got {len(self.spans())} span(s) in {count} request(s), not what "
                                   f"the test waits for")
            try:
                self.wait_for(count + 1, timeout=left)
            except TimeoutError:
                pass


