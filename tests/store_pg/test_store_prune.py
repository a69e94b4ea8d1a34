"""`flightdeck store prune`: ended runs older than the cutoff go with their spans, events and budget rows, on both
backends, in bounded transactions; running runs and runs waiting for reconcile stay; a store directory is not
pruned beside its engine; the action is recorded."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest

from engine.errors import StoreLocked
from engine.store.lock import StoreLock
from engine.store.pg.prune import prune_postgres
from engine.store.prune import PruneReport, prune_sqlite
from tests.store_pg.test_pg_cli import flightdeck
from tests.store_support import emit_model_call
from tests.trace_backends import TraceBackend

DAY = 86400.0


def record_history(writer: Any, now: float) -> None:
    """Old: three ended runs (one waiting for reconcile), one still running; recent: one ended run. Each run has 2
    spans and 9 events (run.started, a model call with a tool call: 7, run.ended)."""
    old = now - 40 * DAY
    for run_id, status in (("old-1", "completed"), ("old-2", "failed"), ("old-3", "needs_reconcile"),
                           ("old-run", None), ("new-1", "completed")):
        started = now - 60 if run_id == "new-1" else old
        writer.run_started(run_id, "deal-desk", None, None, None, {"q": run_id}, 1, "acme", started, None)
        emit_model_call(writer, run_id, "root", 0, started + 1)
        if status is not None:
            writer.run_ended(run_id, status, started + 10, None, None)
    writer.state("budgets", ("old-1", "run"), ("old-1", "run", None, "{}", old))
    writer.event(None, None, "engine.note", None, None, {"kept": True}, old)  # belongs to no run: kept
    writer.close()


def prune(backend: TraceBackend, cutoff: float, *, dry_run: bool = False, batch_runs: int = 500) -> PruneReport:
    if backend.pg_url is None:
        return prune_sqlite(backend.tmp_path, cutoff, dry_run=dry_run, batch_runs=batch_runs)
    return prune_postgres(backend.location, cutoff, operator="alice", reason="retention", dry_run=dry_run,
                          batch_runs=batch_runs)


def test_prune_removes_old_ended_runs_with_their_rows_in_bounded_transactions(trace_backend: TraceBackend) -> None:
    now = time.time()
    record_history(trace_backend.writer(), now)
    cutoff = now - 30 * DAY
    preview = prune(trace_backend, cutoff, dry_run=True)
    assert (preview.runs, preview.spans, preview.events, preview.budgets) == (2, 4, 2 * 9, 1)
    with trace_backend.reader() as reader:
        assert len(reader.list_runs()) == 5  # a dry run changes nothing
    report = prune(trace_backend, cutoff, batch_runs=1)
    assert (report.runs, report.spans, report.events, report.budgets) == (2, 4, 18, 1)
    assert report.transactions == 2 and report.oldest_ended == pytest.approx(now - 40 * DAY + 10)
    with trace_backend.reader() as reader:
        assert sorted(run.id for run in reader.list_runs()) == ["new-1", "old-3", "old-run"]
        assert reader.spans("old-1") == [] and reader.events_after(0, run_id="old-2") == []
        assert len(reader.spans("old-3")) == 2  # waiting for an operator: kept whatever its age
        kinds = [event.kind for event in reader.events_after(0, limit=1000) if event.run_id is None]
        assert "engine.note" in kinds
    assert prune(trace_backend, cutoff).runs == 0  # nothing left to prune


def test_a_store_directory_is_not_pruned_beside_its_engine(tmp_path: Path) -> None:
    backend = TraceBackend("sqlite", tmp_path)
    now = time.time()
    record_history(backend.writer(), now)
    lock = StoreLock.acquire(tmp_path)  # what a running engine holds
    try:
        with pytest.raises(StoreLocked, match="Stop the engine first") as info:
            prune_sqlite(tmp_path, now - 30 * DAY)
        assert "flightdeck engines --terminate PID" in str(info.value)
        assert prune_sqlite(tmp_path, now - 30 * DAY, dry_run=True).runs == 2  # counting is fine beside it
    finally:
        lock.release()
    with backend.reader() as reader:
        assert len(reader.list_runs()) == 5


def test_the_cli_prunes_a_directory_and_audits_it(tmp_path: Path) -> None:
    backend = TraceBackend("sqlite", tmp_path)
    record_history(backend.writer(), time.time())
    store = str(tmp_path)
    dry = flightdeck("store", "prune", "--older-than", "30d", "--dry-run", "--store", store)
    assert dry.returncode == 0 and dry.stdout.startswith("would remove 2 runs") and "nothing was changed" in dry.stdout
    unconfirmed = flightdeck("store", "prune", "--older-than", "30d", "--reason", "retention", "--store", store)
    assert unconfirmed.returncode == 2 and "pass --yes" in unconfirmed.stderr
    no_reason = flightdeck("store", "prune", "--older-than", "30d", "--yes", "--store", store)
    assert no_reason.returncode == 2 and "--reason" in no_reason.stderr
    bad = flightdeck("store", "prune", "--older-than", "soon", "--yes", "--reason", "x", "--store", store)
    assert bad.returncode == 2 and "--older-than" in bad.stderr
    done = flightdeck("store", "prune", "--older-than", "30d", "--yes", "--reason", "retention", "--operator",
                      "alice", "--store", store)
    assert done.returncode == 0, done.stderr
    assert "removed 2 runs" in done.stdout and "4 spans, 18 events, 1 budget rows" in done.stdout
    audit = flightdeck("audit", "--json", "--store", store)
    rows = [row for row in json.loads(audit.stdout) if row["action"] == "store_prune"]
    assert len(rows) == 1 and rows[0]["actor"] == "alice" and rows[0]["reason"] == "retention"
    assert rows[0]["after"]["runs"] == 2
    runs = json.loads(flightdeck("runs", "--json", "--store", store).stdout)
    assert sorted(run["id"] for run in runs) == ["new-1", "old-3", "old-run"]


def test_the_cli_prunes_a_postgres_store_audits_it_and_records_it_in_the_feed(tmp_path: Path,
                                                                               pg_url: str) -> None:
    backend = TraceBackend("postgres", tmp_path, pg_url)
    record_history(backend.writer(), time.time())
    done = flightdeck("store", "prune", "--older-than", "30d", "--yes", "--reason", "retention", "--operator",
                      "alice", "--json", "--store", pg_url)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert (result["runs"], result["events"]) == (2, 18) and "store.pruned" in result["recorded"]
    with backend.reader() as reader:
        pruned = [event for event in reader.events_after(0, limit=1000) if event.kind == "store.pruned"]
    assert len(pruned) == 1 and pruned[0].data["operator"] == "alice" and pruned[0].data["runs"] == 2
    audit = flightdeck("audit", "--json", "--store", pg_url)
    rows = [row for row in json.loads(audit.stdout) if row["action"] == "store_prune"]
    assert [(r["actor"], r["target"], r["reason"], r["after"]["runs"]) for r in rows] == \
        [("alice", "traces", "retention", 2)]
    assert result["recorded"].startswith(f"audit row {rows[0]['id']} ")
    assert flightdeck("audit", "verify", "--store", pg_url).returncode == 0  # in the hash chain


def test_prune_drops_durable_executor_rows_of_dead_engines_taken_over_and_audits_the_count(tmp_path: Path,
                                                                                           pg_url: str) -> None:
    """durable_executors gets a row per life of every durable engine; prune drops those started before the cutoff
    of engines that are dead and whose runs a live engine took over for good, and never a live engine's, nor one
    nobody has taken over yet (a takeover finds the dead engine's runs through them)."""
    import os
    import socket

    from engine.store.pg.engine_registry import claim_engine_id
    from engine.store.pg.liveness import Liveness

    backend = TraceBackend("postgres", tmp_path, pg_url)
    now = time.time()
    record_history(backend.writer(), now)
    old = now - 40 * DAY
    for engine_id in ("dead-taken", "dead-untaken", "live"):
        claim_engine_id(backend.location, engine_id=engine_id, pid=os.getpid(), host=socket.gethostname(),
                        user="ops", version="9.9", started=now)
    liveness = Liveness(backend.location)
    try:
        liveness.mark_stopped(["dead-taken", "dead-untaken"], now)
        for executor_id, engine_id, started in (("dead-taken~1", "dead-taken", old), ("dead-taken~2", "dead-taken",
                                                now), ("dead-untaken~1", "dead-untaken", old), ("live~1", "live", old)):
            liveness.register_executor(executor_id, engine_id, started)
        assert liveness.claim("dead-taken", "live", now, 10.0) and liveness.claim("dead-untaken", "live", now, 10.0)
        liveness.finish(["dead-taken"], "live")  # dead-untaken's claim is not done: its runs may still be waiting
        preview = flightdeck("store", "prune", "--older-than", "30d", "--dry-run", "--json", "--store", pg_url)
        assert json.loads(preview.stdout)["durable_executors"] == 1, preview.stderr
        done = flightdeck("store", "prune", "--older-than", "30d", "--yes", "--reason", "retention", "--json",
                          "--store", pg_url)
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["durable_executors"] == 1
        left = liveness.executors_of(["dead-taken", "dead-untaken", "live"])
    finally:
        liveness.close()
    assert sorted(left[3:]) == ["dead-taken~2", "dead-untaken~1", "live~1"]
    audit = flightdeck("audit", "--json", "--store", pg_url)
    [row] = [row for row in json.loads(audit.stdout) if row["action"] == "store_prune"]
    assert row["after"]["durable_executors"] == 1
    with backend.reader() as reader:
        [event] = [e for e in reader.events_after(0, limit=1000) if e.kind == "store.pruned"]
    assert event.data["durable_executors"] == 1
    again = flightdeck("store", "prune", "--older-than", "30d", "--yes", "--reason", "retention", "--store", pg_url)
    assert "nothing to prune" in again.stdout
