"""Retention on a Postgres store: the same rule as engine/store/prune.py (ended runs older than the cutoff, never a
running one or one waiting for reconcile), in bounded transactions.

Unlike traces.db, a Postgres store has many writers by design (every engine's batch writer), and Postgres's row
locks and MVCC let prune run beside them: each transaction deletes at most PRUNE_BATCH_RUNS runs' rows, locking only
those (SKIP LOCKED: a run some writer is touching right now is left for the next prune), and never takes the
`event_seq` row that every batch with events needs, so writers are held up by one short transaction at most.

The record of the operator's action: prune appends a `store.pruned` event (operator, reason, cutoff and counts) to
the store's own event feed, which engines and consoles tail; `flightdeck store prune` then writes the audit row
(`store_prune`) in the store's control plane, as on a directory.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from engine.store.pg.connection import connect, store_error, to_driver_sql
from engine.store.pg.schema import check_version
from engine.store.prune import PRUNABLE, PRUNE_BATCH_RUNS, RUN_CHILDREN, PruneReport

if TYPE_CHECKING:
    import psycopg

    from engine.store.location import PostgresLocation

PRUNED_EVENT = "store.pruned"


def prune_postgres(location: PostgresLocation, cutoff: float, *, operator: str, reason: str | None,
                   dry_run: bool = False, batch_runs: int = PRUNE_BATCH_RUNS) -> PruneReport:
    """Prune a Postgres trace store (see the module docstring); StoreError (password masked) on a driver error."""
    import psycopg

    conn = connect(location, autocommit=True)
    try:
        check_version(conn, location)
        if dry_run:
            return _count(conn, cutoff)
        report = _delete(conn, cutoff, batch_runs)
        _record(conn, report, operator, reason)
        return report
    except psycopg.Error as exc:
        raise store_error(location, exc, "prune") from None
    finally:
        conn.close()


def _count(conn: psycopg.Connection[Any], cutoff: float) -> PruneReport:
    row = conn.execute(to_driver_sql(f"SELECT count(*), min(ended), max(ended) FROM runs WHERE {PRUNABLE}"),
                       (cutoff,)).fetchone()
    assert row is not None
    counts = []
    for table in RUN_CHILDREN:
        found = conn.execute(to_driver_sql(f"SELECT count(*) FROM {table} WHERE run_id IN (SELECT id FROM runs "
                                             f"WHERE {PRUNABLE})"), (cutoff,)).fetchone()
        counts.append(0 if found is None else int(found[0]))
    return PruneReport(cutoff, True, int(row[0]), counts[1], counts[0], counts[2], row[1], row[2], 0)


def _delete(conn: psycopg.Connection[Any], cutoff: float, batch_runs: int) -> PruneReport:
    totals = dict.fromkeys(("runs", *RUN_CHILDREN), 0)
    oldest: float | None = None
    newest: float | None = None
    transactions = 0
    while True:
        with conn.transaction():
            chosen = conn.execute(to_driver_sql(f"SELECT id, ended FROM runs WHERE {PRUNABLE} ORDER BY ended "
                                                  "LIMIT ? FOR UPDATE SKIP LOCKED"), (cutoff, batch_runs)).fetchall()
            if not chosen:
                break
            ids = [row[0] for row in chosen]
            for table in RUN_CHILDREN:
                totals[table] += conn.execute(f"DELETE FROM {table} WHERE run_id = ANY(%s)", (ids,)).rowcount
            totals["runs"] += conn.execute("DELETE FROM runs WHERE id = ANY(%s)", (ids,)).rowcount
        transactions += 1
        oldest = chosen[0][1] if oldest is None else oldest
        newest = chosen[-1][1]
    # A trace writer that has not committed since the cutoff is long gone: its exactly-once marker can go too.
    conn.execute("DELETE FROM trace_writers WHERE updated < %s", (cutoff,))
    return PruneReport(cutoff, False, totals["runs"], totals["spans"], totals["events"], totals["budgets"], oldest,
                       newest, transactions)


def _record(conn: psycopg.Connection[Any], report: PruneReport, operator: str, reason: str | None) -> None:
    """The `store.pruned` event: one number from event_seq, like any writer's batch."""
    import json

    data = {"operator": operator, "reason": reason, "cutoff": report.cutoff, "runs": report.runs,
            "spans": report.spans, "events": report.events, "budgets": report.budgets}
    with conn.transaction():
        row = conn.execute("UPDATE event_seq SET last = last + 1 WHERE id = 1 RETURNING last").fetchone()
        assert row is not None
        conn.execute("INSERT INTO events (seq, ts, run_id, span_id, kind, agent, name, data) "
                     "VALUES (%s, %s, NULL, NULL, %s, NULL, %s, %s)",
                     (row[0], time.time(), PRUNED_EVENT, operator, json.dumps(data)))
