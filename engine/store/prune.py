"""Retention: delete ended runs older than a cutoff, with their spans, events and budget rows (`flightdeck store
prune`). The Postgres store's counterpart is engine/store/pg/prune.py; both take the same rules from here.

Which runs: ended before the cutoff, in a final status other than `needs_reconcile` (a durable run waiting for an
operator's decision keeps its record whatever its age). A running run is never pruned (it has no end). Events that
belong to no run (run_id NULL) are kept.

traces.db has exactly one writer: the trace-writer process of the engine holding engine.lock (docs/architecture.md,
"The store directory"; a second writer risks SQLite's WAL-reset corruption). So pruning a SQLite store takes
engine.lock itself, for as long as it deletes: while an engine holds the store, prune refuses (StoreLocked, with
who holds it and how to stop it), and an engine started meanwhile refuses to start until prune is done. Deletes go in
bounded transactions (PRUNE_BATCH_RUNS runs each), so a console reading the store never waits long on one.
"""

from __future__ import annotations

import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from engine.errors import StoreError, StoreLocked
from engine.store.files import TRACES_DB, connect, translate_sqlite_error

PRUNE_BATCH_RUNS = 500
# The runs prune may delete: `ended` < cutoff. Served by the partial index runs_ended (ended, status) on both stores.
PRUNABLE = "ended IS NOT NULL AND ended < ? AND status NOT IN ('running', 'needs_reconcile')"
# What goes with each run, children first (events and spans are found by their run_id indexes).
RUN_CHILDREN = ("events", "spans", "budgets")


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What prune removed (or, with dry_run, would remove): counts per table, the oldest and newest end among the
    pruned runs, and how many transactions it took."""

    cutoff: float
    dry_run: bool
    runs: int
    spans: int
    events: int
    budgets: int
    oldest_ended: float | None
    newest_ended: float | None
    transactions: int
    # Postgres only: `durable_executors` rows (pg/liveness.py) of dead engines whose runs a live engine took over,
    # started before the cutoff (pg/prune.py says which are safe to drop). Always 0 on a store directory.
    durable_executors: int = 0


def cutoff_for(older_than_s: float, now: float | None = None) -> float:
    return (time.time() if now is None else now) - older_than_s


def prune_sqlite(store_dir: Path, cutoff: float, *, dry_run: bool = False,
                 batch_runs: int = PRUNE_BATCH_RUNS) -> PruneReport:
    """Prune a store directory's traces.db (see the module docstring). Takes engine.lock: StoreLocked, naming the
    holder, while an engine runs on the store. StoreError when there is no traces.db. A dry run only counts (no
    lock: it can run beside an engine)."""
    from engine.store.lock import StoreLock

    path = store_dir / TRACES_DB
    if not path.is_file():
        raise StoreError(f"no store at {store_dir} (nothing to prune)")
    if dry_run:  # only reads: fine beside a running engine, no lock needed
        conn = connect(path, read_only=True)
        try:
            return _prune(conn, path, cutoff, dry_run=True, batch_runs=batch_runs)
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, path, "read") from exc
        finally:
            conn.close()
    try:
        lock = StoreLock.acquire(store_dir)
    except StoreLocked as exc:
        raise StoreLocked(f"{exc}: traces.db has one writer, the engine, so prune does not run beside it. Stop the "
                          "engine first (Ctrl-C or SIGTERM lets its runs finish; a wedged one: flightdeck engines "
                          "--terminate PID --reason ...), then prune") from None
    try:
        conn = connect(path)
        try:
            return _prune(conn, path, cutoff, dry_run=dry_run, batch_runs=batch_runs)
        except sqlite3.Error as exc:
            raise translate_sqlite_error(exc, path, "prune") from exc
        finally:
            conn.close()
    finally:
        lock.release()


def _prune(conn: sqlite3.Connection, path: Path, cutoff: float, *, dry_run: bool, batch_runs: int) -> PruneReport:
    if dry_run:
        runs, first, last = conn.execute(f"SELECT count(*), min(ended), max(ended) FROM runs WHERE {PRUNABLE}",
                                         (cutoff,)).fetchone()
        counts = [conn.execute(f"SELECT count(*) FROM {table} WHERE run_id IN (SELECT id FROM runs WHERE "
                               f"{PRUNABLE})", (cutoff,)).fetchone()[0] for table in RUN_CHILDREN]
        return PruneReport(cutoff, True, runs, counts[1], counts[0], counts[2], first, last, 0)
    totals = dict.fromkeys(("runs", *RUN_CHILDREN), 0)
    oldest: float | None = None
    newest: float | None = None
    transactions = 0
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            chosen = conn.execute(f"SELECT id, ended FROM runs WHERE {PRUNABLE} ORDER BY ended LIMIT ?",
                                  (cutoff, batch_runs)).fetchall()
            if not chosen:
                conn.execute("ROLLBACK")
                break
            ids = [row[0] for row in chosen]
            marks = ", ".join("?" * len(ids))
            for table in RUN_CHILDREN:
                totals[table] += conn.execute(f"DELETE FROM {table} WHERE run_id IN ({marks})", ids).rowcount
            totals["runs"] += conn.execute(f"DELETE FROM runs WHERE id IN ({marks})", ids).rowcount
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
        transactions += 1
        oldest = chosen[0][1] if oldest is None else oldest
        newest = chosen[-1][1]
    return PruneReport(cutoff, False, totals["runs"], totals["spans"], totals["events"], totals["budgets"], oldest,
                       newest, transactions)
