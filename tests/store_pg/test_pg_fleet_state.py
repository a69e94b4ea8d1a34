"""Issue 16, the fleet's current-state rows: on one Postgres store every engine publishes its own breakers (and
queues and schedules) under its engine id (schema v4), so two engines writing the same breaker name keep a row each
instead of overwriting each other; the reader shows one row per breaker (the worst view) and how many engines see it
open; a v3 database's rows are kept through the migration; a batch with only such rows is seen by a console's poll
(data_version). Real trace-writer processes, a real PostgreSQL on 127.0.0.1."""

from __future__ import annotations

from typing import Any

import psycopg

from engine.store.location import PostgresLocation, parse_store_location
from engine.store.pg.batch_writer import PgBatchWriter
from engine.store.pg.reader import PgTraceReader
from engine.store.pg.schema import PG_TRACES_MIGRATIONS, migrate
from engine.store.redact import Redactor
from engine.store.trace_rows import BreakerFleetRow
from engine.store.writer import TraceWriter
from tests.store_support import T0


def pg(url: str) -> PostgresLocation:
    location = parse_store_location(url)
    assert isinstance(location, PostgresLocation)
    return location


def stored(url: str, sql: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return [tuple(row) for row in conn.execute(sql).fetchall()]


def breaker(state: str, failed: int, calls: int, updated: float) -> tuple[Any, ...]:
    return ("deal-desk", "tool:price_quote", "tool", "price_quote", state, 100.0 * failed / calls, 0.0, calls, failed,
            0, 0, T0 + 30 if state == "open" else None, T0 if state == "open" else None, updated)


def test_two_engines_writing_the_same_breaker_keep_a_row_each(pg_url: str) -> None:
    # Real engine-side writers (trace-writer processes), as `flightdeck run --store postgresql://` opens them.
    writers = {engine: TraceWriter(pg(pg_url), redactor=Redactor(), engine_id=engine) for engine in ("eng-a", "eng-b")}
    try:
        writers["eng-a"].state("breakers", ("deal-desk", "tool:price_quote"), breaker("open", 6, 8, T0 + 1))
        writers["eng-a"].flush()
        writers["eng-b"].state("breakers", ("deal-desk", "tool:price_quote"), breaker("closed", 1, 10, T0 + 2))
        writers["eng-b"].flush()  # the later write: before v4 it replaced engine A's open breaker
        for engine, writer in writers.items():
            writer.state("queues", ("deal-desk", ""), ("deal-desk", "", "deal-desk", 3, 1, 2.0, 6.0, 0, 100, 4, None,
                                                       "open", T0 + (1 if engine == "eng-a" else 5)))
            writer.flush()
    finally:
        for writer in writers.values():
            writer.close()
    assert stored(pg_url, "SELECT engine_id, state FROM breakers ORDER BY engine_id") == [
        ("eng-a", "open"), ("eng-b", "closed")]
    with PgTraceReader.connect(pg(pg_url)) as reader:
        [row] = reader.breakers()  # one row per breaker, as on a store directory: the worst view of it
        assert (row.key, row.state, row.failed_calls) == ("tool:price_quote", "open", 6)
        assert reader.breakers("deal-desk") == [row]
        assert reader.breaker_fleet() == [BreakerFleetRow("deal-desk", "tool:price_quote", 2, 1)]
        [queue] = reader.queues()  # the fleet's queue: the freshest publication of it
        assert (queue.queue, queue.updated) == ("deal-desk", T0 + 5)
        assert sorted((r.engine_id, r.queue) for r in reader.engine_queues()) == [
            ("eng-a", "deal-desk"), ("eng-b", "deal-desk")]


def test_a_stopped_engines_view_no_longer_counts(pg_url: str) -> None:
    from engine.store.pg.engine_registry import claim_engine_id, mark_stopped

    location = pg(pg_url)
    for engine in ("eng-a", "eng-b"):
        claim_engine_id(location, engine_id=engine, pid=1, host="elsewhere", user="ops", version="1", started=T0)
    for engine, state in (("eng-a", "open"), ("eng-b", "closed")):
        writer = PgBatchWriter(location, engine_id=engine)
        writer.state("breakers", ("deal-desk", "tool:price_quote"), breaker(state, 6, 8, T0))
        writer.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        mark_stopped(conn, "eng-a", T0 + 10)  # the engine that saw it open is gone
    with PgTraceReader.connect(location) as reader:
        assert reader.breaker_fleet() == [BreakerFleetRow("deal-desk", "tool:price_quote", 1, 0)]
        [row] = reader.breakers()
        assert row.state == "closed"  # a live engine's view before a stopped one's


def test_rows_from_before_v4_survive_the_migration(pg_url: str) -> None:
    location = pg(pg_url)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        migrate(conn, location, "traces", PG_TRACES_MIGRATIONS[:3])  # a v3 store
        conn.execute("INSERT INTO breakers (hierarchy, key, kind, name, state, updated) VALUES "
                     "('deal-desk', 'tool:crm', 'tool', 'crm', 'open', 1)")
        conn.execute("INSERT INTO queues (queue, tenant, hierarchy, depth, running, admitted_per_min, rejected_total, "
                     "admission, updated) VALUES ('deal-desk', '', 'deal-desk', 2, 0, 0, 0, 'open', 1)")
    writer = PgBatchWriter(location, engine_id="eng-new")  # opening a writer upgrades the schema
    writer.state("breakers", ("deal-desk", "tool:crm"), ("deal-desk", "tool:crm", "tool", "crm", "closed", 0.0, 0.0,
                                                         5, 0, 0, 0, None, None, T0))
    writer.close()
    assert stored(pg_url, "SELECT engine_id, state FROM breakers ORDER BY engine_id") == [
        ("", "open"), ("eng-new", "closed")]
    assert stored(pg_url, "SELECT engine_id, queue FROM queues") == [("", "deal-desk")]


def test_a_batch_of_only_current_state_rows_changes_the_data_version(pg_url: str) -> None:
    writer = TraceWriter(pg(pg_url), redactor=Redactor(), engine_id="eng-a")
    try:
        writer.run_started("r1", "deal-desk", None, "eng-a", None, {}, 1, None, T0, None)
        writer.flush()
        with PgTraceReader.connect(pg(pg_url)) as reader:
            before = reader.data_version()
            last = reader.last_seq()
            writer.state("breakers", ("deal-desk", "tool:price_quote"), breaker("open", 6, 8, T0 + 1))
            writer.run_progress("r1", 10, 5, 0.01, 1, 0, 1)
            writer.flush()
            assert reader.last_seq() == last  # no event: the event number alone would not have told the console
            assert reader.data_version() != before
            quiet = reader.data_version()
            assert reader.data_version() == quiet  # nothing committed: unchanged (the poll skips its reads)
    finally:
        writer.close()
