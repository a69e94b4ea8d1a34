"""OpenTelemetry export from a Postgres store (issue 16): the live exporter of an engine on Postgres, and `flightdeck
export otlp --store postgresql://...`, read spans, events and runs through `engine.store.sql_reads` and send the
same spans as from traces.db. Two engines on one database export every span exactly once between them (each
exporter follows only its own runs on the shared event feed). A real PostgreSQL, real `flightdeck` processes and a
real OTLP/HTTP receiver on 127.0.0.1."""

from __future__ import annotations

import json
from collections import Counter
from functools import partial
from pathlib import Path

import anyio
import pytest

from engine.export.mapping import span_id
from engine.hierarchy.loader import load_hierarchy
from engine.runtime.engine import Engine, RunRequest
from engine.store import open_engine_store, open_trace_reads
from engine.store.trace_rows import SpanRow
from tests.console.test_export_cli import FIXTURES, flightdeck
from tests.engine.test_otel_export import has_root
from tests.fakes.otlp_receiver import OtlpReceiver
from tests.store_pg.test_pg_runbooks_engine import pg

DEAL = {"account": "ACME-001", "product": "platform", "seats": 100, "requested_discount_pct": 5}


def stored_spans(url: str) -> dict[str, list[SpanRow]]:
    """Every run's spans in the store, by run id."""
    reader = open_trace_reads(pg(url))
    try:
        return {run.id: reader.spans(run.id) for run in reader.list_runs(limit=1000)}
    finally:
        reader.close()


@pytest.fixture
def collector():
    with OtlpReceiver() as receiver:
        yield receiver


def test_flightdeck_run_on_postgres_exports_live_and_export_otlp_replays(pg_url: str, tmp_path: Path,
                                                                         collector: OtlpReceiver) -> None:
    done = flightdeck("run", str(FIXTURES / "orchestrator.yaml"), "--input", '{"sku": "pear"}', "--speed", "0",
                      "--store", pg_url, env={"OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint})
    assert done.returncode == 0, done.stderr
    line = next(line for line in done.stderr.splitlines() if "otel export" in line)
    assert " 0 dropped" in line, line
    [(run_id, stored)] = stored_spans(pg_url).items()
    received = collector.wait_for_spans(has_root)
    finished = [s for s in received if not s.attrs.get("flightdeck.pending")]
    assert sorted(s.span.span_id for s in finished) == sorted(span_id(s.id) for s in stored)  # each exactly once
    root = next(s for s in finished if s.name == "run fixture-orchestrator")
    assert root.attrs["flightdeck.run.status"] == "completed" and root.attrs["flightdeck.model_calls"] == 6

    with OtlpReceiver() as replayed:
        again = flightdeck("export", "otlp", "--run", run_id[:8], "--json", "--store", pg_url, "--endpoint",
                           replayed.endpoint)
        assert again.returncode == 0, again.stderr
        report = json.loads(again.stdout)
        assert (report["runs"], report["spans"], report["failed_spans"]) == (1, len(stored), 0)
        # The replay carries the ids the live export sent: a backend that deduplicates shows the run once.
        assert sorted(s.span.span_id for s in replayed.spans()) == sorted(s.span.span_id for s in finished)
    unknown = flightdeck("export", "otlp", "--run", "nope", "--store", pg_url, "--endpoint", "http://127.0.0.1:9")
    assert unknown.returncode == 2 and "no run 'nope'" in unknown.stderr


@pytest.mark.anyio
async def test_two_engines_on_one_database_export_every_span_exactly_once(pg_url: str, tmp_path: Path,
                                                                          collector: OtlpReceiver) -> None:
    config = tmp_path / "engine.toml"
    config.write_text(f'[otel]\nendpoint = "{collector.endpoint}"\n')
    hierarchy = load_hierarchy("deal-desk")
    first = open_engine_store(pg(pg_url), flush_interval=0.01, config_file=config)
    second = open_engine_store(pg(pg_url), flush_interval=0.01, config_file=config)
    try:
        async with Engine(first, latency_scale=0.0, runbooks=False) as a, \
                Engine(second, latency_scale=0.0, runbooks=False) as b:
            assert a.otel is not None and b.otel is not None
            async with anyio.create_task_group() as tg:  # their events interleave on the one feed
                for engine in (a, b):
                    tg.start_soon(partial(engine.run_many, hierarchy,
                                          [RunRequest(input=DEAL, seed=n) for n in range(4)], concurrency=2))
    finally:
        first.close()
        second.close()
    stored = stored_spans(pg_url)
    assert len(stored) == 8
    expected = sorted(span_id(s.id) for spans in stored.values() for s in spans)
    received = [s for s in collector.spans() if not s.attrs.get("flightdeck.pending")]
    counts = Counter(s.span.span_id for s in received)
    assert [sid for sid, n in counts.items() if n > 1] == []  # no engine exported another's spans
    assert sorted(counts) == expected


def test_the_exporters_reads_are_read_only_and_survive_a_terminated_connection(pg_url: str, tmp_path: Path) -> None:
    import psycopg

    from engine.errors import StoreError
    from engine.store.sql_reads import open_sql_reads
    from tests.trace_backends import TraceBackend

    with pytest.raises(StoreError, match="nothing has written traces there yet"):
        open_sql_reads(pg(pg_url))  # no trace store: a clear error, as a directory without traces.db
    TraceBackend("postgres", tmp_path, pg_url).writer().close()  # the schema, no rows
    reads = open_sql_reads(pg(pg_url))
    try:
        with pytest.raises(StoreError, match="read-only"):
            reads.execute("INSERT INTO engines (id) VALUES (?)", ("sneaky",))
        pid = reads.execute("SELECT pg_backend_pid()").fetchone()[0]
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("SELECT pg_terminate_backend(%s)", (pid,))
        with pytest.raises(StoreError, match="read failed"):  # the statement in flight fails, password-safe
            reads.execute("SELECT count(*) FROM events")
        assert reads.execute("SELECT count(*) FROM events").fetchone()[0] == 0  # the next one reconnects
    finally:
        reads.close()
