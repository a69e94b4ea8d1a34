"""Crash safety: SIGKILL an engine process mid-stream; the store must be intact, gap-free, with no half batch,
and the next engine must close out what the dead one left running."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from engine.errors import StoreError
from engine.store import open_engine_store, open_reader
from engine.store.reader import TraceReader
from tests.store_support import rows, run_python, start_python, store_lock_free, wait_until

_CHILD = """
import sys, time
from engine.store import open_engine_store
from tests.store_support import emit_model_call

store = open_engine_store(sys.argv[1], flush_interval=0.005)
w = store.writer
for n in range(2):  # runs that are still going when the engine dies
    w.run_started(f"long-{n}", "h", None, store.engine_id, "v", {"n": n}, n, None, time.time(), None)
    w.span_started(f"long-{n}-root", f"long-{n}", None, "run", None, "run", time.time(), None)
i = 0
while True:
    run = f"run-{i}"
    now = time.time()
    w.run_started(run, "h", None, store.engine_id, "v", {"i": i}, i, None, now, {"k": "v"})
    w.span_started(f"{run}-root", run, None, "run", None, "run", now, None)
    for call in range(5):
        emit_model_call(w, run, f"{run}-root", call, now)
    w.span_ended(f"{run}-root", run, "ok", time.time(), attrs={"calls": 5})
    w.run_ended(run, "completed", time.time(), {"i": i}, None)
    w.event(f"long-{i % 2}", f"long-{i % 2}-root", "heartbeat", None, None, {"i": i})
    i += 1
    if w.over_capacity():
        w.wait_for_space_blocking()
"""


def _last_seq(store_dir: Path) -> int:
    try:
        with open_reader(store_dir) as reader:
            return reader.last_seq()
    except StoreError:  # the child has not created the store yet
        return 0


@pytest.mark.slow
def test_sigkill_mid_stream_leaves_a_consistent_store(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    child = start_python(_CHILD, str(store_dir))
    try:
        wait_until(lambda: child.poll() is not None or _last_seq(store_dir) > 20_000, timeout=60,
                   what="the child engine to commit 20000 events")
        assert child.poll() is None, child.stderr.read() if child.stderr else ""
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.wait(timeout=10)
        if child.stdout:
            child.stdout.close()
        if child.stderr:
            child.stderr.close()
    assert child.returncode == -signal.SIGKILL
    # The engine's trace-writer process commits what it had received, then exits and frees the lock.
    wait_until(lambda: store_lock_free(store_dir), what="the dead engine's writer process to finish")

    path = store_dir / "traces.db"
    # A read-only reader copes with the crashed engine's leftover WAL.
    with TraceReader(path) as reader:
        max_seq = reader.last_seq()
        assert max_seq > 20_000
    assert rows(path, "PRAGMA integrity_check")[0][0] == "ok"
    count, low, high = rows(path, "SELECT count(*), min(seq), max(seq) FROM events")[0]
    assert (count, low, high) == (max_seq, 1, max_seq)  # gap-free 1..max

    # No half batch: every lifecycle event has its row in the state it announces, and vice versa; bookkeeping
    # columns were committed with the events they point at. (Checked in Python: events has no span_id index.)
    events = rows(path, "SELECT seq, kind, run_id, span_id FROM events ORDER BY seq")
    spans = {r["id"]: r for r in rows(path, "SELECT id, status, last_seq FROM spans")}
    runs = {r["id"]: r for r in rows(path, "SELECT id, status, last_seq, tokens_in, model_calls FROM runs")}
    span_events: dict[str, set[str]] = {}
    run_events: dict[str, set[str]] = {}
    last_span_seq: dict[str, int] = {}
    last_run_seq: dict[str, int] = {}
    for seq, kind, run_id, span_id in events:
        if span_id is not None:
            span_events.setdefault(span_id, set()).add(kind)
            last_span_seq[span_id] = seq
        if run_id is not None:
            run_events.setdefault(run_id, set()).add(kind)
            last_run_seq[run_id] = seq
    # Every committed span has its lifecycle in the feed (span.started, or just span.ended when it started and
    # ended within one batch), and no event names a span that was not committed with it.
    assert {s for s, kinds in span_events.items() if kinds & {"span.started", "span.ended"}} == set(spans)
    for span_id, span in spans.items():
        assert ("span.ended" in span_events[span_id]) == (span["status"] != "running"), span_id
        assert span["last_seq"] == last_span_seq[span_id], span_id
    assert {r for r, kinds in run_events.items() if "run.started" in kinds} == set(runs)
    for run_id, run in runs.items():
        assert ("run.ended" in run_events[run_id]) == (run["status"] != "running"), run_id
        assert run["last_seq"] == last_run_seq[run_id], run_id
        if run["status"] == "completed":
            assert (run["tokens_in"], run["model_calls"]) == (500, 5), run_id
    running_before = {r[0] for r in rows(path, "SELECT id FROM runs WHERE status = 'running'")}
    assert {"long-0", "long-1"} <= running_before

    with open_engine_store(store_dir) as store:
        assert set(store.abandoned_runs) == running_before
        dead = [e for e in store.control.list_engines() if e.id != store.engine_id]
        assert len(dead) == 1 and dead[0].stopped is not None and not dead[0].alive
    with open_reader(store_dir) as reader:
        assert reader.running_spans() == []
        long_run = reader.get_run("long-0")
        assert long_run is not None and long_run.status == "abandoned"
        abandoned_events = reader.events_after(max_seq, kinds=["run.ended"])
        assert sorted(e.run_id for e in abandoned_events) == sorted(running_before)
        assert reader.last_seq() == max_seq + len(running_before)


_FORGETS_TO_CLOSE = """
import sys
from engine.store import open_engine_store
store = open_engine_store(sys.argv[1], flush_interval=3600)  # never commits on its own during this script
store.writer.event(None, None, "queued-at-exit", data={"n": 1})
"""


def test_normal_exit_without_close_still_writes_the_queue(tmp_path: Path) -> None:
    store_dir = tmp_path / "store"
    child = run_python(_FORGETS_TO_CLOSE, str(store_dir))
    assert child.returncode == 0, child.stderr
    with open_reader(store_dir) as reader:
        assert [e.kind for e in reader.events_after(0)] == ["queued-at-exit"]
        [engine] = reader.engines()
        assert engine.stopped is not None
