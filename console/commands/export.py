"""`flightdeck export otlp --run ID | --since 24h`: replay stored runs to an OpenTelemetry (OTLP/HTTP) backend.

The endpoint, headers, protocol and service name come from `[otel]` in the store's config.toml (on a Postgres store,
which has none: --config, else $FLIGHTDECK_CONFIG) and the standard OTEL_EXPORTER_OTLP_* variables
(docs/operations.md); `--endpoint`, `--protocol` and `--content` override them. Runs are read from traces.db or the
Postgres store alike (engine/store/sql_reads.py)."""

from __future__ import annotations

import argparse
import sys
import time

from console.cli import add_store_argument
from console.output import print_json
from engine.errors import InputError


def add_parsers(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser("export", help="replay stored runs to an OpenTelemetry backend",
                                 description="Export stored runs to another system.")
    formats = parser.add_subparsers(dest="format", metavar="FORMAT", required=True)
    otlp = formats.add_parser("otlp", help="OTLP/HTTP spans (GenAI semantic conventions)",
                              description="Replay stored runs as OTLP/HTTP spans following the OpenTelemetry GenAI "
                                          "semantic conventions, to [otel] in config.toml or "
                                          "OTEL_EXPORTER_OTLP_ENDPOINT (or --endpoint).")
    scope = otlp.add_mutually_exclusive_group(required=True)
    scope.add_argument("--run", metavar="ID", help="one ended run (a unique id prefix is enough)")
    scope.add_argument("--since", metavar="DURATION", help="every ended run started within this long, e.g. 24h")
    otlp.add_argument("--endpoint", metavar="URL", help="OTLP/HTTP base URL (/v1/traces is appended), e.g. "
                                                        "http://127.0.0.1:4318")
    otlp.add_argument("--protocol", choices=("http/protobuf", "http/json"), help="wire format (default "
                                                                                 "http/protobuf)")
    otlp.add_argument("--content", action="store_true", help="include message content (redacted)")
    otlp.add_argument("--config", metavar="FILE", help="settings file (default: STORE/config.toml; on a Postgres "
                                                       "store $FLIGHTDECK_CONFIG, else the defaults)")
    add_store_argument(otlp)
    otlp.add_argument("--json", action="store_true", help="print the report as JSON")
    otlp.set_defaults(handler=handle_otlp)


def handle_otlp(args: argparse.Namespace) -> int:
    from engine import __version__
    from engine.export.replay import replay, select_runs
    from engine.export.settings import resolve
    from engine.store import resolve_store_location
    from engine.store.config import load_config
    from engine.store.location import PostgresLocation
    from engine.store.redact import Redactor

    location = resolve_store_location(args.store)
    since = None
    if args.since:
        from engine.durations import parse_duration

        try:
            since = time.time() - parse_duration(args.since)
        except ValueError as exc:
            raise InputError(str(exc), field="--since") from None
    if args.endpoint is not None and not args.endpoint.startswith(("http://", "https://")):
        raise InputError(f"{args.endpoint!r} is not an http(s) URL", field="--endpoint")
    if isinstance(location, PostgresLocation):
        import os

        from engine.store.pg_engine_store import engine_config

        config = engine_config(args.config, os.environ)  # what an engine on that store reads
    else:
        config = load_config(location.path, args.config)
    overrides: dict[str, object] = {}
    if args.endpoint:
        overrides.update(endpoint=args.endpoint, traces_endpoint=None, enabled=True)
    if args.protocol:
        overrides["protocol"] = args.protocol
    if args.content:
        overrides["content"] = True
    settings = resolve(config.otel.model_copy(update=overrides))
    if settings is None:
        raise InputError("no OTLP endpoint: pass --endpoint, set [otel] endpoint in config.toml, or "
                         "OTEL_EXPORTER_OTLP_ENDPOINT", field="--endpoint")
    run_ids = select_runs(location, run_prefix=args.run, since=since)
    report = replay(location, run_ids, settings, Redactor.from_config(config), version=__version__)
    if args.json:
        print_json({"endpoint": settings.url, "protocol": settings.protocol, "runs": report.runs,
                    "spans": report.spans, "failed_spans": report.failed_spans, "errors": report.errors})
    else:
        print(f"exported {report.runs} run(s), {report.spans} span(s) to {settings.describe()}")
        for error in report.errors[:10]:
            print(f"flightdeck: {error}", file=sys.stderr)
        if report.failed_spans:
            print(f"flightdeck: {report.failed_spans} span(s) not delivered", file=sys.stderr)
    return 1 if report.failed_spans else 0
