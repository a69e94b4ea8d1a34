"""An ExportTraceServiceRequest as the bytes of an OTLP/HTTP request body: binary protobuf, or OTLP/JSON (the
protobuf JSON mapping with the OTLP exceptions: trace and span ids as hex, enums as integers)."""

from __future__ import annotations

import json
from typing import Any

CONTENT_TYPES = {"http/protobuf": "application/x-protobuf", "http/json": "application/json"}
_ID_KEYS = frozenset({"traceId", "spanId", "parentSpanId"})


def encode(request: Any, protocol: str) -> bytes:
    if protocol == "http/json":
        from google.protobuf.json_format import MessageToDict

        return json.dumps(_hex_ids(MessageToDict(request, use_integers_for_enums=True)),
                          separators=(",", ":")).encode()
    data: bytes = request.SerializeToString()
    return data


def _hex_ids(value: Any) -> Any:
    """MessageToDict writes bytes as base64; OTLP/JSON wants trace and span ids as lower-case hex."""
    import base64

    if isinstance(value, dict):
        return {key: (base64.b64decode(item).hex() if key in _ID_KEYS and isinstance(item, str) else _hex_ids(item))
                for key, item in value.items()}
    if isinstance(value, list):
        return [_hex_ids(item) for item in value]
    return value


def decode(body: bytes, content_type: str) -> Any:
    """The other way (tests and the bench's receiver): an ExportTraceServiceRequest from a request body."""
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    request = ExportTraceServiceRequest()
    if content_type.startswith("application/json"):
        import base64

        from google.protobuf.json_format import ParseDict

        def b64_ids(value: Any) -> Any:
            if isinstance(value, dict):
                return {key: (base64.b64encode(bytes.fromhex(item)).decode() if key in _ID_KEYS else b64_ids(item))
                        for key, item in value.items()}
            if isinstance(value, list):
                return [b64_ids(item) for item in value]
            return value

        ParseDict(b64_ids(json.loads(body)), request)
    else:
        request.ParseFromString(body)
    return request
