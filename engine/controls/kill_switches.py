"""Kill switches in control.db: set, release, read, acknowledge. Every function takes the caller's connection
(writes: inside its BEGIN IMMEDIATE transaction), so several actions (a runbook's apply) can share one transaction.
A change writes its audit row and binds the switch to it (engine.controls.binding) in that same transaction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine.controls import audit
from engine.controls.binding import bind
from engine.controls.labels import TARGET_WORD, switch_label
from engine.controls.validate import optional_text
from engine.errors import InputError
from engine.store.control_rows import KillSwitch, KillSwitchAck
from engine.store.dialect import SqlConnection, dialect_of, insert_id
from engine.store.rows import fetch_one_typed, fetch_typed

ACTIVE_SQL = "SELECT * FROM kill_switches WHERE released IS NULL ORDER BY id"


def checked_target(scope: str, target: Any, run_id: Any) -> tuple[str | None, str | None]:
    """The (target, run_id) a switch of `scope` may have; InputError when they do not fit the scope."""
    target = optional_text(target, "target")
    run_id = optional_text(run_id, "run_id")
    if scope == "global" and target is not None:
        raise InputError("a global kill switch has no target", field="target")
    if scope != "global" and target is None:
        raise InputError(f"a {scope} kill switch needs a target (the {TARGET_WORD[scope]})", field="target")
    if run_id is not None and scope != "agent":
        raise InputError("only an agent kill switch can be limited to one run", field="run_id")
    return target, run_id


def get(conn: SqlConnection, switch_id: int) -> KillSwitch | None:
    return fetch_one_typed(conn, KillSwitch, "SELECT * FROM kill_switches WHERE id = ?", (switch_id,))


def find_active(conn: SqlConnection, scope: str, target: str | None, run_id: str | None,
                mode: str) -> KillSwitch | None:
    """The oldest active switch exactly like this one (same scope, target, run and mode), if any."""
    same = dialect_of(conn).same
    return fetch_one_typed(conn, KillSwitch, f"SELECT * FROM kill_switches WHERE released IS NULL AND scope = ? "
                           f"AND target {same} ? AND run_id {same} ? AND mode = ? ORDER BY id LIMIT 1",
                           (scope, target, run_id, mode))


def active_for(conn: SqlConnection, scope: str, target: str | None, run_id: str | None) -> list[KillSwitch]:
    """Active switches of a scope and target, any mode; without run_id, also those limited to a run."""
    sql = f"SELECT * FROM kill_switches WHERE released IS NULL AND scope = ? AND target {dialect_of(conn).same} ?"
    params: list[Any] = [scope, target]
    if run_id is not None:
        sql += " AND run_id = ?"
        params.append(run_id)
    return fetch_typed(conn, KillSwitch, sql + " ORDER BY id", params)


def active_on_run(conn: SqlConnection, run_id: str) -> list[KillSwitch]:
    """Active switches that cover only this run: scope `run` on it, or an agent switch limited to it."""
    return fetch_typed(conn, KillSwitch, "SELECT * FROM kill_switches WHERE released IS NULL AND "
                       "((scope = 'run' AND target = ?) OR run_id = ?) ORDER BY id", (run_id, run_id))


def active(conn: SqlConnection) -> list[KillSwitch]:
    return fetch_typed(conn, KillSwitch, ACTIVE_SQL)


def create(conn: SqlConnection, *, scope: str, target: str | None, run_id: str | None, mode: str, reason: str,
           operator: str, now: float) -> KillSwitch:
    """Insert a switch set by `operator` (also its audit actor) with its bound `kill` audit row; returns the row."""
    switch_id = insert_id(conn, "INSERT INTO kill_switches (scope, target, run_id, mode, reason, operator, created) "
                                "VALUES (?, ?, ?, ?, ?, ?, ?)", (scope, target, run_id, mode, reason, operator, now))
    row = get(conn, switch_id)
    assert row is not None
    label = switch_label(row.scope, row.target, row.run_id)
    bind(conn, "kill_switches", row.id,
         audit.append(conn, ts=now, actor=operator, action="kill", target=label, after=row, reason=reason))
    return row


def release(conn: SqlConnection, row: KillSwitch, *, actor: str, reason: str, now: float) -> KillSwitch:
    """Release the active switch `row` (as read in this transaction) with its bound `release` audit row; returns
    the released row."""
    conn.execute("UPDATE kill_switches SET released = ?, released_by = ?, release_reason = ? "
                 "WHERE id = ? AND released IS NULL", (now, actor, reason, row.id))
    after = get(conn, row.id)
    assert after is not None
    bind(conn, "kill_switches", row.id,
         audit.append(conn, ts=now, actor=actor, action="release",
                      target=switch_label(row.scope, row.target, row.run_id), before=row, after=after, reason=reason))
    return after


def acknowledge(conn: SqlConnection, ids: Iterable[int], engine_id: str, now: float) -> int:
    """`engine_id` applied these switches (bookkeeping, not audited): one kill_switch_acks row per engine (a fleet
    on Postgres acknowledges a switch once per engine), and the switch's own acked/acked_by keep the first engine's.
    Returns how many this engine newly acknowledged (a switch it had acknowledged already, or one gone, counts 0)."""
    newly = 0
    for switch_id in ids:
        cursor = conn.execute("INSERT INTO kill_switch_acks (switch_id, engine_id, acked) SELECT id, ?, ? "
                              "FROM kill_switches WHERE id = ? ON CONFLICT (switch_id, engine_id) DO NOTHING",
                              (engine_id, now, switch_id))
        newly += max(cursor.rowcount, 0)
        conn.execute("UPDATE kill_switches SET acked = ?, acked_by = ? WHERE id = ? AND acked IS NULL",
                     (now, engine_id, switch_id))
    return newly


def acks(conn: SqlConnection, switch_ids: Iterable[int]) -> list[KillSwitchAck]:
    """Every engine's acknowledgement of these switches, oldest first."""
    id_list = list(switch_ids)
    if not id_list:
        return []
    marks = ", ".join("?" * len(id_list))
    if dialect_of(conn).name == "sqlite" and conn.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'kill_switch_acks'").fetchone() is None:
        # A read-only reader of a control.db from before v6 (not migrated: that would be a write): its one engine's
        # ack is the switch's own column.
        return fetch_typed(conn, KillSwitchAck, f"SELECT id AS switch_id, acked_by AS engine_id, acked FROM "
                           f"kill_switches WHERE id IN ({marks}) AND acked IS NOT NULL AND acked_by IS NOT NULL "
                           f"ORDER BY acked", id_list)
    return fetch_typed(conn, KillSwitchAck, f"SELECT switch_id, engine_id, acked FROM kill_switch_acks WHERE "
                       f"switch_id IN ({marks}) ORDER BY acked, engine_id", id_list)
