"""Close out what a dead engine left open. Runs only while holding the store lock, before the new TraceWriter starts:
holding the lock proves no other engine is alive, so every run still 'running' belongs to a dead one."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

from engine.store.files import translate_sqlite_error
from engine.store.traces_schema import RUN_ENDED

ABANDONED = "abandoned"


def abandon_dead_runs(conn: sqlite3.Connection, path: Path, now: float) -> list[str]:
    """Mark runs left 'running' (and their running spans) 'abandoned', appending one run.ended event per run.
    A run's end time is its last recorded activity, not now: the engine may have died long ago. Returns the ids."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            runs = conn.execute(
                "SELECT r.id, r.hierarchy, r.started, r.engine_id, e.pid, r.tokens_in, r.tokens_out, r.cost_usd, "
                "r.model_calls, r.tool_calls FROM runs r LEFT JOIN engines e ON e.id = r.engine_id "
                "WHERE r.status = 'running'").fetchall()
            seq = int(conn.execute("SELECT max(seq) FROM events").fetchone()[0] or 0)
            for run_id, hierarchy, started, engine_id, pid, t_in, t_out, cost, model_calls, tool_calls in runs:
                last_ts = conn.execute("SELECT ts FROM events WHERE run_id = ? ORDER BY seq DESC LIMIT 1",
                                       (run_id,)).fetchone()
                ended = max(started, last_ts[0]) if last_ts else started
                who = f"engine {engine_id}" + (f" (pid {pid})" if pid is not None else "")
                reason = f"{who} stopped without ending this run"
                seq += 1
                conn.execute(
                    "INSERT INTO events (seq, ts, run_id, span_id, kind, agent, name, data) "
                    "VALUES (?, ?, ?, NULL, ?, NULL, ?, ?)",
                    (seq, now, run_id, RUN_ENDED, hierarchy,
                     json.dumps({"status": ABANDONED, "tokens_in": t_in, "tokens_out": t_out, "cost_usd": cost,
                                 "model_calls": model_calls, "tool_calls": tool_calls, "error": reason})))
                conn.execute("UPDATE spans SET status = ?, ended = max(started, ?), last_seq = ? "
                             "WHERE run_id = ? AND status = 'running'", (ABANDONED, ended, seq, run_id))
                conn.execute("UPDATE runs SET status = ?, ended = ?, error = ?, last_seq = ? WHERE id = ?",
                             (ABANDONED, ended, reason, seq, run_id))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise translate_sqlite_error(exc, path, "recover runs in") from exc
    return [row[0] for row in runs]


def mark_engines_stopped(conn: sqlite3.Connection, path: Path, last_seen: dict[str, float], now: float) -> None:
    """traces.engines rows still open belong to dead engines: stopped = last heartbeat if known, else now."""
    try:
        conn.execute("BEGIN IMMEDIATE")
        try:
            for engine_id, seen in last_seen.items():
                conn.execute("UPDATE engines SET stopped = ? WHERE id = ? AND stopped IS NULL", (seen, engine_id))
            conn.execute("UPDATE engines SET stopped = ? WHERE stopped IS NULL", (now,))
            conn.execute("COMMIT")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    except sqlite3.Error as exc:
        raise translate_sqlite_error(exc, path, "update engines in") from exc
