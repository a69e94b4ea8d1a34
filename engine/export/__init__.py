"""OpenTelemetry export: Flightdeck's runs as OTLP GenAI spans, live from the engine or replayed from a store.

    settings.py   [otel] in config.toml merged with the standard OTEL_EXPORTER_OTLP_* variables
    records.py    the rows an export reads from traces.db (typed), by id or by run
    mapping.py    rows -> an OTLP ExportTraceServiceRequest (gen_ai.* and flightdeck.* attributes, span events)
    encoding.py   protobuf or OTLP/JSON bytes
    sender.py     one POST with retries (engine/retry.py) and the exporter's own breaker
    live.py       LiveExporter: fed by TraceWriter.on_commit, a bounded queue and a thread of its own
    replay.py     stored runs to a backend (`flightdeck export otlp`)

opentelemetry-proto (and protobuf) are imported only when an export happens: an engine with export off pays nothing.
"""
