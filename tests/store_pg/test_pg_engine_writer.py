"""Issue 16, the engine writing its traces to Postgres: an engine whose store directory keeps the lock and control.db
but whose trace-writer process commits to a Postgres store (`open_engine_store(..., traces_to=...)`). The same
hierarchy runs record the same rows as on traces.db; a connection terminated mid-run, or a COMMIT whose
acknowledgement is lost, loses and duplicates nothing; Postgres down for longer than the give-up window stops the
engine starting work, saying why, and the next engine on the directory closes out the runs it left. Real engines
in this process, a real PostgreSQL on 127.0.0.1."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import psycopg
import pytest

from engine.errors import StoreError
from engine.hierarchy.loader import load_hierarchy
from engine.runtime.engine import Engine, RunRequest
from engine.store import open_engine_store, open_trace_reads
from engine.store.location import PostgresLocation, StoreDirectory, StoreLocation, parse_store_location
from tests.pg_proxy import CommitDropper
from tests.pg_support import EmbeddedPostgres, start_postgres
from tests.store_pg.test_pg_cli import flightdeck
from tests.store_support import wait_until

DEAL = {"account": "ACME-001", "product": "platform", "seats": 100, "requested_discount_pct": 5}


def pg(url: str) -> PostgresLocation:
    location = parse_store_location(url)
    assert isinstance(location, PostgresLocation)
    return location


def requests(count: int) -> list[RunRequest]:
    return [RunRequest(input=DEAL, seed=i, tenant="acme") for i in range(count)]


async def run_deal_desk(store: Any, count: int, *, latency_scale: float = 0.0, concurrency: int = 4,
                        during: Any = None) -> list[Any]:
    """`count` deal-desk runs on an engine over `store`; `during(engine)` (async) runs beside them."""
    hierarchy = load_hierarchy("deal-desk")
    async with Engine(store, latency_scale=latency_scale) as engine:
        async with anyio.create_task_group() as group:
            if during is not None:
                group.start_soon(during, engine)
            results = await engine.run_many(hierarchy, requests(count), concurrency=concurrency)
        if engine.store_failure is None:  # (else there is no writer left to flush)
            engine.writer.flush()
    return results


def record(location: StoreLocation) -> dict[str, Any]:
    """What a store holds for its runs, without ids, times or event numbers (which differ between any two runs).
    Runs are compared whole (totals, output, error); spans by kind, name, status and model, and their figures.
    span.started events are left out: whether a span gets one depends on batch boundaries (a span that starts and
    ends in one batch is recorded by its span.ended event alone), i.e. on timing."""
    reader = open_trace_reads(location)
    try:
        runs = reader.list_runs(limit=1000)
        spans = [span for run in runs for span in reader.spans(run.id)]
        events = [event for run in runs for event in reader.events_after(0, limit=100_000, run_id=run.id)]
        return {
            "runs": sorted((r.hierarchy, r.status, r.seed, r.tenant, r.tokens_in, r.tokens_out, round(r.cost_usd, 9),
                            r.model_calls, r.tool_calls, json.dumps(r.output, sort_keys=True), r.error) for r in runs),
            # An agent span's totals depend on how its parallel sub-agents interleave (so do two runs on traces.db);
            # every model and tool call span's own figures do not.
            "spans": sorted((s.kind, s.agent or "", s.name, s.status, s.model or "") + (
                () if s.kind == "agent" else (s.tokens_in, s.tokens_out, round(s.cost_usd, 9))) for s in spans),
            "events": Counter((e.kind, e.agent, e.name) for e in events if e.kind != "span.started"),
        }
    finally:
        reader.close()


def events_in_order(url: str) -> list[tuple[int, str, str | None, str | None]]:
    with psycopg.connect(url) as conn:
        return [(int(r[0]), r[1], r[2], r[3]) for r in
                conn.execute("SELECT seq, kind, run_id, span_id FROM events ORDER BY seq").fetchall()]


def assert_nothing_lost_or_doubled(url: str, runs: int, reference: dict[str, Any]) -> None:
    stored = events_in_order(url)
    assert [row[0] for row in stored] == list(range(1, len(stored) + 1)), "event numbers are not gap-free"
    ended = [row for row in stored if row[1] in ("span.ended", "run.ended", "run.started")]
    assert len(ended) == len(set(ended)), "an event was stored twice"
    got = record(pg(url))
    assert len(got["runs"]) == runs
    assert got == reference


@pytest.fixture
def own_server() -> Iterator[EmbeddedPostgres]:
    """A server of this test's own, which it may stop (the session's server is shared). With fsync and synchronous
    commits on: the tests' usual settings lose the last commits when a server stops at once, as this one does."""
    server = start_postgres(durable=True)
    try:
        yield server
    finally:
        server.stop()


@pytest.mark.anyio
async def test_an_engine_records_the_same_rows_in_postgres_as_in_traces_db(tmp_path: Path, pg_url: str) -> None:
    with open_engine_store(tmp_path / "sqlite") as store:
        sqlite_results = await run_deal_desk(store, 3, concurrency=1)
    with open_engine_store(tmp_path / "pg", traces_to=pg(pg_url)) as store:
        assert store.trace_location == pg(pg_url)
        pg_results = await run_deal_desk(store, 3, concurrency=1)
    assert [r.status for r in pg_results] == [r.status for r in sqlite_results] == ["completed"] * 3
    assert not (tmp_path / "pg" / "traces.db").exists()  # the traces went to Postgres only
    reference = record(StoreDirectory(tmp_path / "sqlite"))
    assert reference["spans"] and reference["events"][("run.ended", None, "deal-desk")] == 3
    assert record(pg(pg_url)) == reference
    stored = events_in_order(pg_url)
    assert [row[0] for row in stored] == list(range(1, len(stored) + 1))
    # The CLI shows it: `runs` lists the three, `trace` prints one's tree.
    runs = flightdeck("runs", "--json", "--store", pg_url)
    assert runs.returncode == 0, runs.stderr
    listed = json.loads(runs.stdout)
    assert sorted(row["status"] for row in listed) == ["completed"] * 3
    trace = flightdeck("trace", listed[0]["id"], "--store", pg_url)
    assert trace.returncode == 0, trace.stderr
    assert "deal-desk" in trace.stdout


@pytest.mark.anyio
async def test_a_terminated_connection_mid_run_loses_and_doubles_nothing(tmp_path: Path, pg_url: str) -> None:
    with open_engine_store(tmp_path / "sqlite") as store:
        await run_deal_desk(store, 6)
    reference = record(StoreDirectory(tmp_path / "sqlite"))
    terminated: list[int] = []

    async def terminate_writer(engine: Engine) -> None:
        # Once some runs are recorded and others still run: end the writer's connection from another one.
        def recorded() -> bool:
            with psycopg.connect(pg_url) as conn:
                row = conn.execute("SELECT count(*) FROM runs").fetchone()
                return row is not None and row[0] >= 2
        await anyio.to_thread.run_sync(lambda: wait_until(recorded, what="two runs recorded"))
        with psycopg.connect(pg_url, autocommit=True) as conn:
            terminated.extend(row[0] for row in conn.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() "
                "AND application_name = 'flightdeck-trace-writer'").fetchall())

    with open_engine_store(tmp_path / "pg", traces_to=pg(pg_url)) as store:
        results = await run_deal_desk(store, 6, latency_scale=0.05, concurrency=2, during=terminate_writer)
        assert store.writer.error is None
    assert terminated == [True]  # the writer's one connection
    assert [r.status for r in results] == ["completed"] * 6
    assert_nothing_lost_or_doubled(pg_url, 6, reference)
    # The writer saw its commit fail, reconnected and went on; the engine recorded both (its store gate's events).
    kinds = [row[1] for row in events_in_order(pg_url) if row[2] is None]
    assert kinds.count("store.degraded") == 1 and kinds.count("store.recovered") == 1


@pytest.mark.anyio
async def test_postgres_stopped_and_started_mid_run_holds_calls_then_loses_and_doubles_nothing(
        tmp_path: Path, own_server: EmbeddedPostgres) -> None:
    with open_engine_store(tmp_path / "sqlite") as store:
        await run_deal_desk(store, 6)
    reference = record(StoreDirectory(tmp_path / "sqlite"))
    url = own_server.create_database()
    held: list[str] = []

    async def restart_postgres(engine: Engine) -> None:
        def recorded() -> bool:
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT count(*) FROM runs").fetchone()
                return row is not None and row[0] >= 2
        await anyio.to_thread.run_sync(lambda: wait_until(recorded, what="two runs recorded"))
        await anyio.to_thread.run_sync(own_server.halt)
        await anyio.to_thread.run_sync(lambda: wait_until(lambda: engine.gate.health.state == "degraded",
                                                          what="the store gate to hold calls"))
        held.append(engine.gate.health.error or "")
        await anyio.to_thread.run_sync(own_server.restart)

    with open_engine_store(tmp_path / "pg", traces_to=pg(url)) as store:
        results = await run_deal_desk(store, 6, latency_scale=0.05, concurrency=2, during=restart_postgres)
        assert store.writer.error is None
    assert held and "Postgres store postgresql://postgres@127.0.0.1" in held[0]
    assert [r.status for r in results] == ["completed"] * 6
    assert_nothing_lost_or_doubled(url, 6, reference)


@pytest.mark.anyio
async def test_a_commit_whose_acknowledgement_is_lost_is_not_written_twice(
        tmp_path: Path, postgres_server: EmbeddedPostgres, pg_url: str) -> None:
    with open_engine_store(tmp_path / "sqlite") as store:
        await run_deal_desk(store, 4)
    reference = record(StoreDirectory(tmp_path / "sqlite"))
    relay = CommitDropper(postgres_server.port)
    try:
        async def lose_an_acknowledgement(engine: Engine) -> None:
            relay.arm()  # the next COMMIT the writer makes is in, but its acknowledgement never arrives

        with open_engine_store(tmp_path / "pg", traces_to=pg(relay.url(pg_url))) as store:
            results = await run_deal_desk(store, 4, latency_scale=0.02, concurrency=2, during=lose_an_acknowledgement)
            assert store.writer.error is None
    finally:
        relay.close()
    assert relay.dropped == 1
    assert [r.status for r in results] == ["completed"] * 4
    assert_nothing_lost_or_doubled(pg_url, 4, reference)


@pytest.mark.anyio
async def test_postgres_down_past_the_give_up_window_stops_the_engine_starting_work(
        tmp_path: Path, own_server: EmbeddedPostgres) -> None:
    url = own_server.create_database()
    secret_url = url.replace("postgres@", "postgres:not-a-secret-really@")  # trust auth ignores the password
    failure: list[StoreError | None] = []
    late: list[Any] = []

    async def stop_postgres(engine: Engine) -> None:
        def started() -> bool:
            with psycopg.connect(url) as conn:
                row = conn.execute("SELECT count(*) FROM runs").fetchone()
                return row is not None and row[0] >= 1
        await anyio.to_thread.run_sync(lambda: wait_until(started, what="a run recorded"))
        await anyio.to_thread.run_sync(own_server.halt)
        await anyio.to_thread.run_sync(lambda: wait_until(lambda: engine.store_failure is not None, timeout=30,
                                                          what="the engine to give up on its store"))
        failure.append(engine.store_failure)
        late.append(await engine.run(load_hierarchy("deal-desk"), RunRequest(input=DEAL, seed=99)))

    store = open_engine_store(tmp_path / "pg", traces_to=pg(secret_url), give_up_after=1.0)
    try:
        results = await run_deal_desk(store, 8, latency_scale=0.05, concurrency=2, during=stop_postgres)
    finally:
        with pytest.raises(StoreError):
            store.close()
    assert failure and failure[0] is not None
    message = str(failure[0])
    assert "gave up after 1s of failing commits" in message and "postgres:***@127.0.0.1" in message, message
    assert "not-a-secret-really" not in message
    # Nothing new starts: a run submitted after the failure is refused, saying why; the runs in flight were stopped
    # (run_many starts none of those still waiting).
    assert late[0].status == "refused" and late[0].model_calls == 0
    assert (late[0].error or "").startswith("refused: the trace store is unavailable: ")
    assert "gave up" in late[0].error
    assert results and len(results) < 8
    assert "killed" in {r.status for r in results} <= {"completed", "killed"}
    # The CLI, pointed at the stopped store, says so plainly.
    proc = flightdeck("runs", "--store", secret_url)
    assert proc.returncode == 3 and "cannot connect to the Postgres store" in proc.stderr
    assert "not-a-secret-really" not in proc.stderr
    # Postgres back: the next engine on the directory closes out the runs the stopped one could not record ending.
    own_server.restart()
    with psycopg.connect(url) as conn:
        left = {row[0] for row in conn.execute("SELECT id FROM runs WHERE status = 'running'").fetchall()}
    assert left
    with open_engine_store(tmp_path / "pg", traces_to=pg(url)) as store:
        assert set(store.abandoned_runs) == left
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT count(*) FROM runs WHERE status = 'running'").fetchone() == (0,)
        ended = conn.execute("SELECT count(*) FROM events WHERE kind = 'run.ended' AND data LIKE %s",
                             ('%"abandoned"%',)).fetchone()
        assert ended == (len(left),)
        assert conn.execute("SELECT count(*) FROM engines WHERE stopped IS NULL").fetchone() == (0,)
    assert [row[0] for row in events_in_order(url)] == list(range(1, len(events_in_order(url)) + 1))
