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
from tests.test_store_support import rows, start_python, wait_until

_CHILD = """
import sys, time
from engine.store import open_engine_store
from tests.test_store_support import emit_model_call

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

    path = store_dir / "traces.db"
    # A read-only reader copes with the crashed engine's leftover WAL.
    with TraceReader(path) as reader:
        max_seq = reader.last_seq()
        assert max_seq > 20_000
    assert rows(path, "PRAGMA integrity_check")[0][0] == "ok"
    count, low, high = rows(path, "SELECT count(*), min(seq), max(seq) FROM events")[0]
    assert (count, low, high) == (max_seq, 1, max_seq)  # gap-free 1..max

    def none(sql: str) -> None:
        found = rows(path, sql)
        assert found == [], f"{sql} -> {[tuple(r) for r in found[:5]]}"

    # No half batch: every lifecycle event has its row in the state it announces, and vice versa.
    none("SELECT e.span_id FROM events e LEFT JOIN spans s ON s.id = e.span_id "
         "WHERE e.kind = 'span.started' AND s.id IS NULL")
    none("SELECT s.id FROM spans s WHERE NOT EXISTS "
         "(SELECT 1 FROM events e WHERE e.span_id = s.id AND e.kind = 'span.started')")
    none("SELECT e.span_id FROM events e JOIN spans s ON s.id = e.span_id "
         "WHERE e.kind = 'span.ended' AND s.status = 'running'")
    none("SELECT s.id FROM spans s WHERE s.status != 'running' AND NOT EXISTS "
         "(SELECT 1 FROM events e WHERE e.span_id = s.id AND e.kind = 'span.ended')")
    none("SELECT e.run_id FROM events e LEFT JOIN runs r ON r.id = e.run_id "
         "WHERE e.kind = 'run.started' AND r.id IS NULL")
    none("SELECT r.id FROM runs r WHERE (r.status = 'running') = EXISTS "
         "(SELECT 1 FROM events e WHERE e.run_id = r.id AND e.kind = 'run.ended')")
    # Bookkeeping columns were committed with the events they point at.
    none("SELECT r.id FROM runs r WHERE r.last_seq != (SELECT max(seq) FROM events e WHERE e.run_id = r.id)")
    none("SELECT s.id FROM spans s WHERE s.last_seq != (SELECT max(seq) FROM events e WHERE e.span_id = s.id)")
    none("SELECT id FROM runs WHERE status = 'completed' AND (tokens_in != 500 OR model_calls != 5)")
    running_before = {r[0] for r in rows(path, "SELECT id FROM runs WHERE status = 'running'")}
    assert {"long-0", "long-1"} <= running_before

    with open_engine_store(store_dir) as store:
        assert set(store.abandoned_runs) == running_before
        dead = [e for e in store.control.list_engines() if e["id"] != store.engine_id]
        assert len(dead) == 1 and dead[0]["stopped"] is not None and not dead[0]["alive"]
    with open_reader(store_dir) as reader:
        assert reader.running_spans() == []
        long_run = reader.get_run("long-0")
        assert long_run is not None and long_run["status"] == "abandoned"
        abandoned_events = reader.events_after(max_seq, kinds=["run.ended"])
        assert sorted(e["run_id"] for e in abandoned_events) == sorted(running_before)
        assert reader.last_seq() == max_seq + len(running_before)
