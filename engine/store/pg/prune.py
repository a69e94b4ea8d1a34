"""Retention on a Postgres store: the same rule as engine/store/prune.py (ended runs older than the cutoff, never a
running one or one waiting for reconcile), in bounded transactions.

Unlike traces.db, a Postgres store has many writers by design (every engine's batch writer), and Postgres's row
locks and MVCC let prune run beside them: each transaction deletes at most PRUNE_BATCH_RUNS runs' rows, locking only
those (SKIP LOCKED: a run some writer is touching right now is left for the next prune), and never takes the
`event_seq` row that every batch with events needs, so writers are held up by one short transaction at most.

Durable executors: `durable_executors` (pg/liveness.py) gets a row per life of every durable engine and nothing
removed them. Prune drops the rows started before the cutoff of engines that are dead (stopped, or no heartbeat
for STALE_AFTER_S) and whose runs a live engine has taken over for good (their `durable_takeovers` claim is
`done`): those rows are how a takeover finds a dead engine's runs in DBOS, so an engine nobody has taken over yet
keeps them, and a live engine never loses one (not even its earlier lives': it carried those on at start).

The record of the operator's action: prune appends a `store.pruned` event (operator, reason, cutoff and counts) to
the store's own event feed, which engines and consoles tail; `flightdeck store prune` then writes the audit row
(`store_prune`) in the store's control plane, as on a directory.
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from engine.store.control import STALE_AFTER_S
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
    executors = 0
    if _has_executors(conn):
        found = conn.execute(f"SELECT count(*) FROM durable_executors x WHERE {_EXECUTOR_GONE}",
                             _executor_params(cutoff)).fetchone()
        executors = 0 if found is None else int(found[0])
    return PruneReport(cutoff, True, int(row[0]), counts[1], counts[0], counts[2], row[1], row[2], 0, executors)


# A durable executor row prune may drop (x: durable_executors): started before the cutoff, its engine not alive
# (stopped, or silent for STALE_AFTER_S; an unregistered engine id counts as not alive), and that engine's runs
# taken over for good by a live engine (a done claim). Parameters: _executor_params.
_EXECUTOR_GONE = ("x.started < %s AND NOT EXISTS (SELECT 1 FROM engines e WHERE e.id = x.engine_id "
                  "AND e.stopped IS NULL AND e.heartbeat >= %s) AND EXISTS (SELECT 1 FROM durable_takeovers t "
                  "WHERE t.engine_id = x.engine_id AND t.done)")


def _executor_params(cutoff: float) -> tuple[float, float]:
    return cutoff, time.time() - STALE_AFTER_S


def _has_executors(conn: psycopg.Connection[Any]) -> bool:
    """durable_executors and durable_takeovers exist once a durable engine has run here (created on first use)."""
    row = conn.execute("SELECT to_regclass('durable_executors') IS NOT NULL AND "
                       "to_regclass('durable_takeovers') IS NOT NULL").fetchone()
    return bool(row and row[0])


def _delete_executors(conn: psycopg.Connection[Any], cutoff: float) -> int:
    if not _has_executors(conn):
        return 0
    return int(conn.execute(f"DELETE FROM durable_executors x WHERE {_EXECUTOR_GONE}",
                            _executor_params(cutoff)).rowcount)


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
    executors = _delete_executors(conn, cutoff)
    return PruneReport(cutoff, False, totals["runs"], totals["spans"], totals["events"], totals["budgets"], oldest,
                       newest, transactions, executors)


def _record(conn: psycopg.Connection[Any], report: PruneReport, operator: str, reason: str | None) -> None:
    """The `store.pruned` event: one number from event_seq, like any writer's batch."""
    import json

    data = {"operator": operator, "reason": reason, "cutoff": report.cutoff, "runs": report.runs,
            "spans": report.spans, "events": report.events, "budgets": report.budgets,
            "durable_executors": report.durable_executors}
    with conn.transaction():
        row = conn.execute("UPDATE event_seq SET last = last + 1 WHERE id = 1 RETURNING last").fetchone()
        assert row is not None
        conn.execute("INSERT INTO events (seq, ts, run_id, span_id, kind, agent, name, data) "
                     "VALUES (%s, %s, NULL, NULL, %s, NULL, %s, %s)",
                     (row[0], time.time(), PRUNED_EVENT, operator, json.dumps(data)))
