"""TraceWriter: ordering, gap-free seq, coalescing, attribute merge, back-pressure, failures, redaction on disk."""

from __future__ import annotations

import asyncio
import json
import threading
from pathlib import Path
from typing import Any

import pytest

from engine.errors import StoreError
from engine.store import open_engine_store, open_reader
from engine.store.engine_store import open_traces_db
from engine.store.reader import TraceReader
from engine.store.redact import REDACTED, Redactor
from engine.store.writer import TraceWriter
from tests.store_support import T0, emit_model_call, new_writer, raw_conn, rows, wait_until


def _reader(tmp_path: Path) -> TraceReader:
    return TraceReader(tmp_path / "traces.db")


def _seqs(path: Path) -> list[int]:
    return [r[0] for r in rows(path, "SELECT seq FROM events ORDER BY seq")]


def test_seq_is_gap_free_and_follows_emission_order_across_many_batches(tmp_path: Path) -> None:
    writer = new_writer(tmp_path, flush_interval=0.001, max_batch=300)
    batches: list[int] = []
    writer.on_commit(lambda events: batches.append(len(events)))
    per_thread = 2000

    def emit(thread: int) -> None:
        for i in range(per_thread):
            writer.event(None, None, "tick", data={"t": thread, "i": i})

    threads = [threading.Thread(target=emit, args=(t,)) for t in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    writer.flush()
    writer.close()
    path = tmp_path / "traces.db"
    assert _seqs(path) == list(range(1, 3 * per_thread + 1))
    assert len(batches) >= 20  # max_batch=300 forces many transactions
    seen: dict[int, list[int]] = {0: [], 1: [], 2: []}
    for (data,) in rows(path, "SELECT data FROM events ORDER BY seq"):
        item = json.loads(data)
        seen[item["t"]].append(item["i"])
    assert all(order == list(range(per_thread)) for order in seen.values())


def test_writer_events_for_run_and_span_lifecycle(tmp_path: Path) -> None:
    writer = new_writer(tmp_path)
    writer.run_started("r1", "triage", "h4sh", "eng", "0.1", {"q": "hello"}, 7, "acme", T0, {"source": "cli"})
    writer.span_started("s1", "r1", None, "agent", "triage", "triage", T0 + 1, None)
    writer.event("r1", "s1", "note", "triage", "thinking", {"step": 1}, T0 + 2)
    writer.span_ended("s1", "r1", "ok", T0 + 3, 10, 5, 0.5, "m1", None)
    writer.run_progress("r1", 10, 5, 0.5, 1, 0, 1)
    writer.run_ended("r1", "completed", T0 + 4, {"answer": 42}, None)
    writer.close()
    with _reader(tmp_path) as reader:
        events = reader.events_after(0)
        # The span started and ended within one batch: one span.ended event (with its duration) stands for both.
        assert [(e.seq, e.kind, e.span_id, e.ts) for e in events] == [
            (1, "run.started", None, T0), (2, "note", "s1", T0 + 2), (3, "span.ended", "s1", T0 + 3),
            (4, "run.ended", None, T0 + 4)]
        assert events[2].data == {"kind": "agent", "name": "triage", "status": "ok", "tokens_in": 10,
                                     "tokens_out": 5, "cost_usd": 0.5, "model": "m1", "duration_s": 2.0,
                                     "parent_id": None}
        assert events[3].data == {"status": "completed", "tokens_in": 10, "tokens_out": 5, "cost_usd": 0.5,
                                     "model_calls": 1, "tool_calls": 0}
        assert events[3].name == "triage"
        run = reader.get_run("r1")
        assert run is not None
        assert (run.status, run.tenant, run.seed, run.input, run.output, run.attributes) == (
            "completed", "acme", 7, {"q": "hello"}, {"answer": 42}, {"source": "cli"})
        assert run.last_seq == 4 and run.tokens_in == 10 and run.model_calls == 1
        assert reader.spans("r1")[0].last_seq == 3


def test_a_span_open_across_batches_gets_a_started_and_an_ended_event(tmp_path: Path) -> None:
    writer = new_writer(tmp_path)
    writer.span_started("s1", "r1", None, "tool", "a", "slow_tool", T0, None)
    writer.flush()
    writer.span_ended("s1", "r1", "ok", T0 + 5, 0, 0, 0.0, None, None)
    writer.close()
    with _reader(tmp_path) as reader:
        assert [(e.kind, e.span_id) for e in reader.events_after(0)] == [("span.started", "s1"),
                                                                                ("span.ended", "s1")]
        assert reader.events_after(0)[1].data["duration_s"] == 5.0


def _audited_db(tmp_path: Path) -> Path:
    """traces.db with triggers counting row writes: proves what the writer coalesced."""
    path = tmp_path / "traces.db"
    open_traces_db(path).close()
    conn = raw_conn(path)
    conn.executescript("""
        CREATE TABLE audit (tbl TEXT, op TEXT);
        CREATE TRIGGER a1 AFTER INSERT ON spans BEGIN INSERT INTO audit VALUES ('spans', 'insert'); END;
        CREATE TRIGGER a2 AFTER UPDATE ON spans BEGIN INSERT INTO audit VALUES ('spans', 'update'); END;
        CREATE TRIGGER a3 AFTER INSERT ON runs BEGIN INSERT INTO audit VALUES ('runs', 'insert'); END;
        CREATE TRIGGER a4 AFTER UPDATE ON runs BEGIN INSERT INTO audit VALUES ('runs', 'update'); END;
    """)
    conn.close()
    return path


def _audit(path: Path) -> dict[str, int]:
    counts = rows(path, "SELECT tbl || '.' || op, count(*) FROM audit GROUP BY 1")
    rows(path, "DELETE FROM audit")
    return {name: n for name, n in counts}


def test_coalescing_within_a_batch(tmp_path: Path) -> None:
    path = _audited_db(tmp_path)
    # A huge flush interval: batches end only at flush(), so each block below is exactly one batch.
    writer = TraceWriter(path, redactor=Redactor(), flush_interval=3600)
    writer.run_started("r1", "h", None, None, None, None, 1, None, T0, None)
    for i in range(1, 6):
        writer.run_progress("r1", i, i * 2, i / 10, i, 0, 1)
    writer.span_started("a", "r1", None, "llm", "ag", "call", T0, {"x": 1, "y": 1})
    writer.span_ended("a", "r1", "ok", T0 + 1, 7, 8, 0.25, "m", {"y": 2, "z": 3})
    writer.span_started("b", "r1", None, "tool", "ag", "search", T0 + 2, {"q": "start"})
    writer.flush()
    assert _audit(path) == {"runs.insert": 1, "spans.insert": 2}  # no updates: everything folded into inserts
    span_a = rows(path, "SELECT * FROM spans WHERE id = 'a'")[0]
    assert (span_a["status"], span_a["ended"], span_a["tokens_in"], span_a["tokens_out"], span_a["model"]) == (
        "ok", T0 + 1, 7, 8, "m")
    assert json.loads(span_a["attributes"]) == {"x": 1, "y": 2, "z": 3}
    run = rows(path, "SELECT tokens_in, tokens_out, cost_usd, model_calls FROM runs")[0]
    assert tuple(run) == (5, 10, 0.5, 5)

    for i in range(6, 9):
        writer.run_progress("r1", i, i * 2, i / 10, i, 1, 1)
    writer.span_ended("b", "r1", "error", T0 + 3, 0, 0, 0.0, None, {"q": "end", "error": "boom"})
    writer.flush()
    assert _audit(path) == {"runs.update": 1, "spans.update": 1}  # latest progress only; one span update
    span_b = rows(path, "SELECT status, attributes FROM spans WHERE id = 'b'")[0]
    assert span_b["status"] == "error" and json.loads(span_b["attributes"]) == {"q": "end", "error": "boom"}
    assert tuple(rows(path, "SELECT tokens_in, tool_calls FROM runs")[0]) == (8, 1)
    writer.close()


def test_end_attributes_merge_into_start_attributes(tmp_path: Path) -> None:
    writer = new_writer(tmp_path, flush_interval=3600)
    writer.span_started("kept", "r", None, "tool", None, "t", T0, {"a": 1})
    writer.span_started("merged", "r", None, "tool", None, "t", T0, {"a": 1, "b": 2})
    writer.flush()
    writer.span_ended("kept", "r", "ok", T0 + 1, attrs=None)
    writer.span_ended("merged", "r", "ok", T0 + 1, attrs={"b": 3, "c": None})
    writer.span_started("orphan", "r", None, "tool", None, "t", T0, {"a": 1, "b": 2})
    writer.close()
    # A writer that never saw "orphan" start (say, after a restart) still merges instead of overwriting.
    second = TraceWriter(tmp_path / "traces.db", flush_interval=3600)
    second.span_ended("orphan", "r", "ok", T0 + 1, attrs={"b": 5})
    second.close()
    attrs = {r["id"]: json.loads(r["attributes"]) for r in rows(tmp_path / "traces.db", "SELECT * FROM spans")}
    assert attrs == {"kept": {"a": 1}, "merged": {"a": 1, "b": 3, "c": None}, "orphan": {"a": 1, "b": 5}}


def test_on_commit_reports_every_event_once_on_the_writer_thread(tmp_path: Path) -> None:
    writer = new_writer(tmp_path, flush_interval=0.001)
    got: list[Any] = []
    threads: set[str] = set()

    def callback(events: list[Any]) -> None:
        threads.add(threading.current_thread().name)
        got.extend(events)

    writer.on_commit(callback)
    for i in range(50):
        emit_model_call(writer, "r1", "root", i, T0 + i)
    writer.flush()
    # Each call emits 9 events, 7 when its spans start and end within one batch: whatever the batching, every
    # committed event is reported exactly once, in order, with no gaps.
    assert [e[0] for e in got] == list(range(1, writer.last_committed_seq + 1))
    assert 50 * 7 <= writer.last_committed_seq <= 50 * 9
    assert threads == {"flightdeck-trace-writer"}
    assert got[0] == (1, "llm.request", "r1", "r1-llm-0", "worker", "chat", {"messages": 3, "tools": 2}) or \
        got[1] == (2, "llm.request", "r1", "r1-llm-0", "worker", "chat", {"messages": 3, "tools": 2})
    ended = [e for e in got if e[1] == "span.ended"]
    assert len(ended) == 100 and all(e[6]["status"] == "ok" for e in ended)  # type: ignore[index]
    writer.close()


def test_async_back_pressure_waits_and_drops_nothing(tmp_path: Path) -> None:
    writer = new_writer(tmp_path, max_queue=200, busy_timeout=0.02, retry_initial=0.005, retry_max=0.02)
    blocker = raw_conn(tmp_path / "traces.db")
    blocker.execute("BEGIN IMMEDIATE")  # another connection holds the write lock: the writer cannot commit
    steps, per_step = 100, 10
    peak = 0

    async def engine_like() -> None:
        nonlocal peak
        for step in range(steps):
            await writer.wait_for_space()
            for i in range(per_step):
                writer.event(None, None, "step", data={"step": step, "i": i})
            peak = max(peak, writer.queue_length)

    async def main() -> None:
        task = asyncio.create_task(engine_like())
        deadline = asyncio.get_running_loop().time() + 10
        while not (writer.over_capacity() and writer.error is not None):
            assert asyncio.get_running_loop().time() < deadline, "queue never reached its bound"
            assert not task.done()
            await asyncio.sleep(0.001)
        # The bound is reached while the writer is stuck: the emitter must be parked in wait_for_space.
        assert not task.done()
        assert "locked" in str(writer.error)
        blocker.execute("ROLLBACK")
        await asyncio.wait_for(task, timeout=10)

    asyncio.run(main())
    blocker.close()
    writer.flush()
    assert peak <= writer.max_queue + per_step
    assert writer.error is None  # recovered
    assert _seqs(tmp_path / "traces.db") == list(range(1, steps * per_step + 1))
    writer.close()


def test_uncooperative_thread_is_blocked_at_the_hard_limit(tmp_path: Path) -> None:
    writer = new_writer(tmp_path, max_queue=100, busy_timeout=0.02, retry_initial=0.005, retry_max=0.02)
    blocker = raw_conn(tmp_path / "traces.db")
    blocker.execute("BEGIN IMMEDIATE")
    total = 1000
    emitted = 0

    def flood() -> None:
        nonlocal emitted
        for i in range(total):
            writer.event(None, None, "flood", data={"i": i})
            emitted += 1

    thread = threading.Thread(target=flood)
    thread.start()
    wait_until(lambda: writer.queue_length >= 2 * writer.max_queue, what="queue at the hard limit")
    assert thread.is_alive() and emitted < total
    assert writer.queue_length <= 2 * writer.max_queue + 1
    blocker.execute("ROLLBACK")
    blocker.close()
    thread.join(timeout=10)
    assert not thread.is_alive()
    writer.flush()
    assert _seqs(tmp_path / "traces.db") == list(range(1, total + 1))
    writer.close()


def test_failing_commits_are_retried_and_reported(tmp_path: Path) -> None:
    writer = new_writer(tmp_path, busy_timeout=0.02, retry_initial=0.005, retry_max=0.02)
    blocker = raw_conn(tmp_path / "traces.db")
    blocker.execute("BEGIN IMMEDIATE")
    writer.event(None, None, "during-outage", data={"n": 1})
    wait_until(lambda: writer.error is not None, what="writer to report its failing commit")
    with pytest.raises(StoreError, match="did not commit within .*locked"):
        writer.flush(timeout=0.2)
    blocker.execute("ROLLBACK")
    blocker.close()
    writer.flush()
    assert writer.error is None
    assert [r["kind"] for r in rows(tmp_path / "traces.db", "SELECT kind FROM events")] == ["during-outage"]
    writer.close()


def test_rows_that_can_never_be_written_are_skipped_loudly(tmp_path: Path) -> None:
    writer = new_writer(tmp_path)
    # (A run's id may start again: a resumed durable run rewrites its row. A span's may not.)
    writer.run_started("dup", "h", None, None, None, None, 1, None, T0, None)
    writer.span_started("s0", "dup", None, "tool", None, "t", T0, None)
    writer.flush()
    writer.span_started("s0", "dup", None, "tool", None, "t", T0, None)  # duplicate id: a bug upstream
    writer.event("dup", None, "after", data={"kept": True})
    writer.span_started("s", "dup", None, "tool", None, "t", T0, {"seed": 2**70})
    with pytest.raises(StoreError, match="1 trace rows could not be written.*UNIQUE"):
        writer.flush()
    writer.flush()  # reported once
    assert writer.error is not None  # but still visible
    path = tmp_path / "traces.db"
    assert _seqs(path) == [1, 2, 3, 4, 5]  # the neighbours of the bad row were written, seq stays gap-free
    assert rows(path, "SELECT count(*) FROM spans")[0][0] == 2  # s0 once, and s
    writer.close()


def test_huge_seed_is_kept_exactly(tmp_path: Path) -> None:
    writer = new_writer(tmp_path)
    writer.run_started("r", "h", None, None, None, None, 2**70, None, T0, None)
    writer.close()
    seed, attrs = rows(tmp_path / "traces.db", "SELECT seed, attributes FROM runs")[0]
    assert seed is None and json.loads(attrs) == {"seed": str(2**70)}


def test_close_flushes_and_later_flush_reports_unwritten(tmp_path: Path) -> None:
    writer = new_writer(tmp_path, flush_interval=3600)
    writer.event(None, None, "last words")
    writer.close()
    writer.close()  # idempotent
    assert _seqs(tmp_path / "traces.db") == [1]
    writer.event(None, None, "too late")
    with pytest.raises(StoreError, match="closed; 1 queued items were not written"):
        writer.flush()


SECRET_ENV_VALUE = "env-secret-Zx9Qv7Lm2"
OPENAI_KEY = "sk-proj-T3stKeyAbcdefGhijklMnop"
BEARER = "eyJhbGciOiJIUzI1NiJ9.payload.sig"


def test_secrets_never_reach_the_database_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store_dir = tmp_path / "store"
    store_dir.mkdir(mode=0o700)
    (store_dir / "config.toml").write_text('[secrets]\nenv = ["SERVICE_TOKEN"]\n')
    monkeypatch.setenv("SERVICE_TOKEN", SECRET_ENV_VALUE)
    monkeypatch.setenv("OPENAI_API_KEY", "openai-env-Key-123456")
    secrets = [SECRET_ENV_VALUE, OPENAI_KEY, BEARER, "openai-env-Key-123456"]
    leaky = f"calling with {SECRET_ENV_VALUE} and {OPENAI_KEY}; Authorization: Bearer {BEARER}"
    with open_engine_store(store_dir) as store:
        w = store.writer
        w.run_started("r1", "h", None, store.engine_id, "v", {"prompt": leaky}, 1, None, T0, {"env": leaky})
        w.span_started("s1", "r1", None, "llm", "a", f"span {SECRET_ENV_VALUE}", T0, {"messages": [leaky]})
        w.span_ended("s1", "r1", "error", T0 + 1, attrs={"error": leaky, "openai": "openai-env-Key-123456"})
        w.event("r1", "s1", "tool.call", "a", "http", {"headers": {"Authorization": f"Bearer {BEARER}"},
                                                        "nested": [{"deep": leaky}]}, T0 + 2)
        w.run_ended("r1", "failed", T0 + 3, {"answer": leaky}, f"failed: {leaky}")
        w.flush()
        raw = b"".join(p.read_bytes() for p in store_dir.glob("traces.db*"))
        assert raw  # the WAL holds the fresh commits
        for secret in secrets:
            assert secret.encode() not in raw, secret
        with open_reader(store_dir) as reader:
            run = reader.get_run("r1")
            assert run is not None
            assert run.input["prompt"] == (f"calling with {REDACTED} and {REDACTED}; "
                                              f"Authorization: Bearer {REDACTED}")
            assert REDACTED in run.error
            event = reader.events_after(0, kinds=["tool.call"])[0]
            assert event.data["headers"]["Authorization"] == REDACTED  # a credential-named key: all of it
    raw = b"".join(p.read_bytes() for p in store_dir.glob("traces.db*"))
    for secret in secrets:
        assert secret.encode() not in raw, secret


def test_large_payloads_are_cut_with_a_marker(tmp_path: Path) -> None:
    writer = new_writer(tmp_path, redactor=Redactor(max_field_bytes=2048))
    writer.event(None, None, "big", data={"blob": "z" * 10_000, "small": "kept"})
    writer.close()
    data = json.loads(rows(tmp_path / "traces.db", "SELECT data FROM events")[0][0])
    assert data == {"blob": "z" * 2048 + f"…[truncated {10_000 - 2048} bytes]", "small": "kept"}


def test_flush_reaches_past_a_full_batch_without_waiting_for_the_interval(tmp_path: Path) -> None:
    # The flush marker sits behind more than max_batch items: the writer must keep draining, not nap for an hour.
    writer = new_writer(tmp_path, flush_interval=3600, max_batch=100)
    for i in range(1050):
        writer.event(None, None, "bulk", data={"i": i})
    writer.flush(timeout=10)
    assert writer.last_committed_seq == 1050
    stats = writer.stats
    # At least two transactions: the flush marker is urgent, so what is drained after the first batch starts
    # committing joins the one batch waiting behind it (engine/store/batch_handoff.py) instead of queuing.
    assert stats["events"] == 1050 and stats["batches"] >= 2 and stats["commit_cpu_s"] > 0
    writer.close()
