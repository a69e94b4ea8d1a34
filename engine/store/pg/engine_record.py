"""An engine's own rows in a Postgres trace store: its `engines` row (as traces.db has one per engine), and the runs
its predecessors on the same store directory left `running` when they died, closed out as `abandoned`.

Which engines are dead is known from the store directory's control.db (the engine holds its lock, so every other
engine registered there has stopped): only their runs are touched. Runs of engines on other directories -- other
machines of a fleet writing to the same database -- are theirs (taking over a dead host's runs is a later slice of
issue 16). The rest mirrors engine/store/recovery.py: one run.ended event per run (its number from `event_seq`, as
every writer's), running spans abandoned, the run's end time its last recorded activity.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from engine.store.pg.connection import connect, store_error
from engine.store.recovery import ABANDONED
from engine.store.traces_schema import RUN_ENDED

if TYPE_CHECKING:
    import psycopg

    from engine.store.location import PostgresLocation


def open_engine_record(location: PostgresLocation, *, engine_id: str, pid: int, host: str, user: str, version: str,
                       started: float, dead: Sequence[str]) -> list[str]:
    """Insert this engine's row, mark the `dead` engines' rows stopped and abandon their running runs (one
    transaction). Returns the abandoned run ids. StoreError (password masked) on a driver error."""
    import psycopg

    conn = connect(location, autocommit=True)
    try:
        with conn.transaction():
            conn.execute('INSERT INTO engines (id, pid, host, "user", version, started, heartbeat, stopped) '
                         "VALUES (%s, %s, %s, %s, %s, %s, %s, NULL)",
                         (engine_id, pid, host, user, version, started, started))
            if not dead:
                return []
            conn.execute("UPDATE engines SET stopped = %s WHERE id = ANY(%s) AND stopped IS NULL",
                         (started, list(dead)))
            return abandon_runs_of(conn, dead, started)
    except psycopg.Error as exc:
        raise store_error(location, exc, "registering the engine") from None
    finally:
        conn.close()


def abandon_runs_of(conn: psycopg.Connection[Any], engine_ids: Sequence[str], now: float) -> list[str]:
    """Close out the runs the engines `engine_ids` left `running` as `abandoned` (inside the caller's transaction):
    one run.ended event each, numbered from `event_seq`. Returns their ids."""
    runs = conn.execute(
        "SELECT r.id, r.hierarchy, r.started, r.engine_id, e.pid, r.tokens_in, r.tokens_out, r.cost_usd, "
        "r.model_calls, r.tool_calls FROM runs r LEFT JOIN engines e ON e.id = r.engine_id "
        "WHERE r.status = 'running' AND r.engine_id = ANY(%s) ORDER BY r.started FOR UPDATE OF r",
        (list(engine_ids),)).fetchall()
    if not runs:
        return []
    last = conn.execute("UPDATE event_seq SET last = last + %s WHERE id = 1 RETURNING last",
                        (len(runs),)).fetchone()
    assert last is not None
    seq = int(last[0]) - len(runs)
    for run_id, hierarchy, run_started, owner, owner_pid, t_in, t_out, cost, model_calls, tool_calls in runs:
        last_ts = conn.execute("SELECT ts FROM events WHERE run_id = %s ORDER BY seq DESC LIMIT 1",
                               (run_id,)).fetchone()
        ended = max(run_started, last_ts[0]) if last_ts else run_started
        who = f"engine {owner}" + (f" (pid {owner_pid})" if owner_pid is not None else "")
        reason = f"{who} stopped without ending this run"
        seq += 1
        conn.execute("INSERT INTO events (seq, ts, run_id, span_id, kind, agent, name, data) "
                     "VALUES (%s, %s, %s, NULL, %s, NULL, %s, %s)",
                     (seq, now, run_id, RUN_ENDED, hierarchy,
                      json.dumps({"status": ABANDONED, "tokens_in": t_in, "tokens_out": t_out,
                                  "cost_usd": cost, "model_calls": model_calls, "tool_calls": tool_calls,
                                  "error": reason})))
        conn.execute("UPDATE spans SET status = %s, ended = GREATEST(started, %s), last_seq = %s "
                     "WHERE run_id = %s AND status = 'running'", (ABANDONED, ended, seq, run_id))
        conn.execute("UPDATE runs SET status = %s, ended = %s, error = %s, last_seq = %s WHERE id = %s",
                     (ABANDONED, ended, reason, seq, run_id))
    return [row[0] for row in runs]


def close_engine_record(location: PostgresLocation, engine_id: str, stopped: float) -> None:
    """This engine stopped. StoreError (password masked) on a driver error."""
    import psycopg

    conn = connect(location, autocommit=True)
    try:
        conn.execute("UPDATE engines SET stopped = %s WHERE id = %s", (stopped, engine_id))
    except psycopg.Error as exc:
        raise store_error(location, exc, "recording the engine's stop") from None
    finally:
        conn.close()
