"""TraceReader: paging, filters, prefixes, span trees, event tailing, usage, concurrency, and index use.

The reads every backend serves run against both traces.db and Postgres (the trace_backend fixture: the same rows
written by TraceWriter or PgBatchWriter, read by TraceReader or PgTraceReader); SQLite's own (data_version, WAL
checkpoints, query plans) against traces.db only."""

from __future__ import annotations

import re
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from engine.errors import InputError
from engine.store.reader import TraceReader
from engine.store.trace_rows import RunRow, RunSpend, SpanNode
from engine.store.writer import TraceWriter
from tests.store_support import T0, emit_model_call, new_writer, raw_conn
from tests.trace_backends import TraceBackend


def _populate(writer: Any) -> None:
    """25 runs (five pairs share a start time), mixed statuses, hierarchies and tenants."""
    for i in range(25):
        started = T0 + (i // 2) * 10  # runs 2k and 2k+1 start in the same instant
        run_id = f"run-{i:02d}"
        writer.run_started(run_id, "alpha" if i % 3 else "beta", "hash", "eng", "v", {"i": i}, i,
                           "acme" if i % 2 else "globex", started, None)
        if i % 5 == 0:
            continue  # still running
        writer.run_ended(run_id, "failed" if i % 4 == 0 else "completed", started + 5, {"i": i}, None)
    writer.flush()


@pytest.fixture
def populated(trace_backend: TraceBackend) -> Iterator[tuple[Any, Any]]:
    """_populate's runs on each backend: (writer, reader)."""
    writer = trace_backend.writer()
    _populate(writer)
    reader = trace_backend.reader()
    yield writer, reader
    reader.close()
    writer.close()


@pytest.fixture
def sqlite_populated(tmp_path: Path) -> Iterator[tuple[TraceWriter, TraceReader]]:
    """_populate's runs in traces.db, for SQLite's own checks (query plans)."""
    writer = new_writer(tmp_path)
    _populate(writer)
    reader = TraceReader(tmp_path / "traces.db")
    yield writer, reader
    reader.close()
    writer.close()


def test_paging_newest_first_visits_every_run_once(populated: tuple[Any, Any]) -> None:
    _, reader = populated
    seen: list[str] = []
    page = reader.list_runs(limit=4)
    while page:
        seen += [run.id for run in page]
        last = page[-1]
        page = reader.list_runs(limit=4, before_started=last.started, before_id=last.id)
    assert seen == [f"run-{i:02d}" for i in reversed(range(25))]
    newest = reader.list_runs(limit=1)[0]
    assert (newest.input, newest.output) == (None, None)  # payloads only in get_run


def test_list_filters(populated: tuple[Any, Any]) -> None:
    _, reader = populated
    running = reader.list_runs(status="running")
    assert [r.id for r in running] == ["run-20", "run-15", "run-10", "run-05", "run-00"]
    beta = reader.list_runs(hierarchy="beta", tenant="acme")
    assert [r.id for r in beta] == ["run-21", "run-15", "run-09", "run-03"]
    older = reader.list_runs(before_started=T0 + 20, limit=100)
    assert [r.id for r in older] == ["run-03", "run-02", "run-01", "run-00"]


def test_count_runs_for_the_header(populated: tuple[Any, Any]) -> None:
    _, reader = populated
    counts = reader.count_runs(since=T0 + 60)
    # Runs 12..24 started at or after T0+60; of those that ended, which way?
    assert counts["active"] == 5
    assert counts["started"] == 13
    assert counts["failed"] == sum(1 for i in range(12, 25) if i % 5 and i % 4 == 0)
    assert counts["completed"] == sum(1 for i in range(12, 25) if i % 5 and i % 4)
    assert counts["abandoned"] == 0


def test_get_run_by_id_or_unique_prefix(populated: tuple[Any, Any]) -> None:
    _, reader = populated
    run = reader.get_run("run-07")
    assert run is not None and run.input == {"i": 7} and run.output == {"i": 7}
    prefixed = reader.get_run("run-24")
    assert prefixed is not None and prefixed.id == "run-24"
    assert reader.get_run("nope") is None
    with pytest.raises(InputError) as info:
        reader.get_run("run-1")
    assert "ambiguous" in info.value.message and "run-10, run-11" in info.value.message
    assert info.value.field == "run_id"


def test_span_tree_nests_and_orders(trace_backend: TraceBackend) -> None:
    writer = trace_backend.writer()
    writer.span_started("root", "r", None, "run", None, "run", T0, None)
    writer.span_started("b", "r", "root", "agent", "billing", "billing", T0 + 2, None)
    writer.span_started("a", "r", "root", "agent", "triage", "triage", T0 + 1, None)
    writer.span_started("a1", "r", "a", "llm", "triage", "chat", T0 + 1.5, None)
    writer.span_started("a2", "r", "a", "tool", "triage", "search", T0 + 1.7, {"q": "x"})
    writer.span_started("lost", "r", "never-recorded", "tool", "x", "orphan", T0 + 3, None)
    writer.span_ended("a2", "r", "ok", T0 + 1.8)
    writer.close()
    with trace_backend.reader() as reader:
        tree = reader.span_tree("r")
        assert tree is not None and tree.span is not None and tree.span.id == "root"

        def shape(node: SpanNode) -> list[object]:
            return [node.span.id if node.span else None, [shape(child) for child in node.children]]

        assert shape(tree) == ["root", [["a", [["a1", []], ["a2", []]]], ["b", []], ["lost", []]]]
        a2 = tree.children[0].children[1].span
        assert a2 is not None and a2.attributes == {"q": "x"}
        assert [s.id for s in reader.running_spans("r")] == ["root", "a", "a1", "b", "lost"]
        assert reader.span_tree("no-such-run") is None


def test_events_after_tails_with_filters(trace_backend: TraceBackend) -> None:
    writer = trace_backend.writer()
    for i in range(10):
        emit_model_call(writer, "r1" if i % 2 else "r2", "root", i, T0 + i)
    writer.close()
    with trace_backend.reader() as reader:
        # One batch: each call's two spans start and end in it, so 7 events a call (not 9).
        assert reader.last_seq() == 70
        first = reader.events_after(0, limit=7)
        assert [e.seq for e in first] == list(range(1, 8))
        rest = reader.events_after(first[-1].seq, limit=1000)
        assert [e.seq for e in rest] == list(range(8, 71))
        r1 = reader.events_after(0, run_id="r1")
        assert len(r1) == 35 and all(e.run_id == "r1" for e in r1)
        kinds = reader.events_after(40, kinds=["tool.call", "span.ended"])
        assert {e.kind for e in kinds} == {"tool.call", "span.ended"} and all(e.seq > 40 for e in kinds)
        assert reader.events_after(70) == []


def test_usage_per_agent_and_model(trace_backend: TraceBackend) -> None:
    writer = trace_backend.writer()
    writer.run_started("r1", "h", None, None, None, None, 1, "acme", T0, None)
    writer.run_started("r2", "h", None, None, None, None, 1, "globex", T0 + 100, None)
    spans = [("r1", "l1", "llm", "triage", 100, 10, 0.1, "big"), ("r1", "l2", "llm", "triage", 50, 5, 0.05, "small"),
             ("r1", "t1", "tool", "triage", 0, 0, 0.0, None), ("r1", "l3", "llm", "billing", 10, 1, 0.01, "small"),
             ("r2", "l4", "llm", "billing", 1000, 100, 1.0, "big"), ("r2", "t2", "tool", "billing", 0, 0, 0.0, None),
             ("r2", "ag", "agent", "billing", 9999, 9999, 99.0, None)]  # an agent roll-up must not double count
    for run_id, span_id, kind, agent, t_in, t_out, cost, model in spans:
        writer.span_started(span_id, run_id, None, kind, agent, kind, T0, None)
        writer.span_ended(span_id, run_id, "ok", T0 + 1, t_in, t_out, cost, model)
    writer.close()
    with trace_backend.reader() as reader:
        everything = reader.usage()
        assert everything.total.as_dict() == {"tokens_in": 1160, "tokens_out": 116, "cost_usd": pytest.approx(1.16),
                                              "model_calls": 4, "tool_calls": 2}
        agents = {a.agent: a for a in everything.agents}
        assert agents["triage"].model_calls == 2 and agents["triage"].tool_calls == 1
        assert agents["billing"].tokens_in == 1010 and everything.agents[0].agent == "billing"
        models = {m.model: m for m in everything.models}
        assert models["big"].tokens_in == 1100 and models["small"].model_calls == 2
        assert "tool_calls" not in models["big"].as_dict()
        assert reader.usage(run_id="r1").total.tokens_in == 160
        assert reader.usage(tenant="globex").total.tokens_in == 1000
        assert reader.usage(since=T0 + 50).total.model_calls == 1
        assert reader.usage(tenant="nobody").agents == []


def test_data_version_changes_only_on_commit(tmp_path: Path) -> None:
    writer = new_writer(tmp_path)
    with TraceReader(tmp_path / "traces.db") as reader:
        before = reader.data_version()
        assert reader.data_version() == before
        writer.event(None, None, "x")
        writer.flush()
        assert reader.data_version() != before
    writer.close()


def test_concurrent_reader_sees_a_gap_free_growing_feed_and_never_blocks_checkpoints(tmp_path: Path) -> None:
    writer = new_writer(tmp_path, flush_interval=0.002)
    total_calls = 600
    done = threading.Event()

    def engine() -> None:
        for i in range(total_calls):
            emit_model_call(writer, f"r{i % 7}", "root", i, T0 + i)
        writer.flush()
        done.set()

    thread = threading.Thread(target=engine)
    reader = TraceReader(tmp_path / "traces.db")
    thread.start()
    seen: list[int] = []
    last = 0
    while True:  # tail like the console: poll, read what is new, repeat until the engine is done and drained
        finished = done.is_set()
        batch = reader.events_after(last, limit=500)
        seen += [e.seq for e in batch]
        if batch:
            last = batch[-1].seq
        elif finished:
            break
        reader.list_runs(limit=5)
        reader.running_spans()
    thread.join()
    assert seen == list(range(1, reader.last_seq() + 1)) and len(seen) >= total_calls * 7
    # The reader holds no read transaction between calls, so a full checkpoint can complete right now.
    checkpointer = raw_conn(tmp_path / "traces.db")
    busy, _, _ = checkpointer.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchone()
    assert busy == 0
    checkpointer.close()
    reader.close()
    writer.close()


_SCAN = re.compile(r"^SCAN (?!CONSTANT ROW)")
# Walking an index in order is fine when a LIMIT stops it early; the running-spans index is partial (small).
_BOUNDED_SCAN = re.compile(r"^SCAN \w+ USING (COVERING )?INDEX ")


def _unbounded_scans(sql: str, plan: list[str]) -> list[str]:
    bad = []
    for step in plan:
        if not _SCAN.match(step) or "USING INDEX spans_running" in step:
            continue
        if _BOUNDED_SCAN.match(step) and " LIMIT " in sql:
            continue
        bad.append(step)
    return bad


def test_reads_use_indexes(sqlite_populated: tuple[Any, Any]) -> None:
    writer, reader = sqlite_populated
    statements: list[str] = []
    reader._conn.set_trace_callback(statements.append)  # expanded SQL, as executed
    reader.list_runs()
    reader.list_runs(status="completed", before_started=T0 + 50, before_id="run-10")
    reader.list_runs(hierarchy="alpha")
    reader.list_runs(tenant="acme", before_started=T0 + 50)
    reader.count_runs(since=T0)
    with pytest.raises(InputError):
        reader.get_run("run-1")  # the prefix path, ambiguous: raises after its queries ran
    reader.get_run("run-07")
    reader.spans("run-01")
    reader.running_spans()
    reader.running_spans("run-00")
    reader.events_after(0)
    reader.events_after(0, run_id="run-01")
    reader.events_after(0, kinds=["run.ended"])
    reader.usage(run_id="run-01")
    reader.usage(tenant="acme")
    reader.usage(since=T0)
    reader.last_seq()
    reader._conn.set_trace_callback(None)
    checker = sqlite3.connect(reader.path)
    for sql in statements:
        if not sql.lstrip().upper().startswith("SELECT"):
            continue
        plan = [row[3] for row in checker.execute("EXPLAIN QUERY PLAN " + sql)]
        assert not _unbounded_scans(sql, plan), (sql, plan)
    checker.close()
    # The check itself can fail: usage() with no filter is a documented full read of spans.
    unfiltered = reader._conn.execute("EXPLAIN QUERY PLAN SELECT count(*) FROM spans s WHERE s.kind = 'llm'")
    assert _unbounded_scans("", [row[3] for row in unfiltered]) == ["SCAN s"]


def test_query_runs_custom_reads_and_refuses_writes(populated: tuple[Any, Any]) -> None:
    _, reader = populated
    rows = reader.query("SELECT id, input FROM runs WHERE id = ?", ("run-03",))
    assert rows == [{"id": "run-03", "input": {"i": 3}}]
    from engine.errors import StoreError

    with pytest.raises(StoreError, match="read-?only"):
        reader.query("DELETE FROM runs")


def test_query_rows_builds_typed_rows_and_refuses_other_columns(populated: tuple[Any, Any]) -> None:
    from engine.store.trace_rows import RunSpend

    _, reader = populated
    rows = reader.query_rows(RunSpend, "SELECT started, cost_usd FROM runs WHERE id = ?", ("run-03",))
    assert rows == [RunSpend(started=T0 + 10, cost_usd=0.0)]
    with pytest.raises(TypeError, match="RunSpend needs started, cost_usd"):
        reader.query_rows(RunSpend, "SELECT cost_usd, started FROM runs")  # right names, wrong order


def test_rows_are_frozen_typed_rows_equal_to_constructed_ones(populated: tuple[Any, Any]) -> None:
    import dataclasses

    _, reader = populated
    run = reader.get_run("run-07")
    assert type(run) is RunRow and run is not None
    assert run == RunRow(**run.as_dict())  # built positionally: the same row the constructor makes
    assert list(run.as_dict()) == [f.name for f in dataclasses.fields(RunRow)]
    with pytest.raises(dataclasses.FrozenInstanceError):
        run.status = "killed"  # type: ignore[misc]
    assert run.replace(status="killed").status == "killed" and run.status != "killed"


def test_several_roots_get_a_synthetic_root(trace_backend: TraceBackend) -> None:
    writer = trace_backend.writer()
    writer.span_started("one", "r", None, "agent", "a", "a", T0 + 1, None)
    writer.span_started("two", "r", None, "agent", "b", "b", T0 + 2, None)
    writer.close()
    with trace_backend.reader() as reader:
        tree = reader.span_tree("r")
    assert tree is not None and tree.span is None and (tree.run_id, tree.started) == ("r", T0 + 1)
    assert [child.span.id for child in tree.children if child.span] == ["one", "two"]


def test_the_positional_builder_refuses_a_row_type_it_cannot_build() -> None:
    from dataclasses import dataclass

    from engine.store.rows import row_builder

    @dataclass(frozen=True, slots=True)
    class Wider(RunSpend):  # a subclass adds slots of its own: the twin's layout would not match
        extra: int = 0

    with pytest.raises(TypeError, match="must be a slotted dataclass subclassing TypedRow directly"):
        row_builder(Wider)
    assert row_builder(RunSpend)((1.0, 2.0)) == RunSpend(1.0, 2.0)
