"""OpenTelemetry export: Flightdeck's runs as OTLP GenAI spans, live from the engine or replayed from a store.

    settings.py   [otel] in config.toml merged with the standard OTEL_EXPORTER_OTLP_* variables
    records.py    the rows an export reads from traces.db (typed), by id or by run
    mapping.py    rows -> an OTLP ExportTraceServiceRequest (gen_ai.* and flightdeck.* attributes, span events)
    encoding.py   protobuf or OTLP/JSON bytes
    sender.py     one POST with retries (engine/retry.py) and the exporter's own breaker
    pipeline.py   committed events in, requests out: what is due, pending spans, counts of sent and dropped
    worker.py     the exporter process (the engine's child) that runs the pipeline over traces.db
    live.py       LiveExporter: the engine's handle on that process, fed by TraceWriter.on_commit_seq
    replay.py     stored runs to a backend (`flightdeck export otlp`)

opentelemetry-proto (and protobuf) are imported only where an export happens (the exporter process, a replay): an
engine with export off, and the engine process with it on, never import them.
"""
