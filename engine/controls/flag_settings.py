"""Safe-mode flag rows in control.db: set (superseding the active one), clear, read, acknowledge. The flag
vocabulary and value checks are flags.py. Every function takes the caller's connection so several actions can share
one transaction; each change writes its audit row and binds the flag rows to it in that transaction."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from engine.controls import audit
from engine.controls.binding import SUPERSEDED, bind
from engine.controls.labels import TARGET_WORD, flag_scope_label
from engine.controls.validate import actor_for, optional_text
from engine.errors import InputError
from engine.store.control_rows import FlagSetting
from engine.store.dialect import SqlConnection, dialect_of, insert_id
from engine.store.rows import fetch_one_typed, fetch_typed

ACTIVE_SQL = "SELECT * FROM flags WHERE cleared IS NULL ORDER BY id"


def checked_target(scope: str, target: Any) -> str | None:
    text = optional_text(target, "target")
    if scope == "global" and text is not None:
        raise InputError("a global flag has no target", field="target")
    if scope != "global" and text is None:
        raise InputError(f"a {scope} flag needs a target (the {TARGET_WORD[scope]})", field="target")
    return text


def get(conn: SqlConnection, flag_id: int) -> FlagSetting | None:
    return fetch_one_typed(conn, FlagSetting, "SELECT * FROM flags WHERE id = ?", (flag_id,))


def find_active(conn: SqlConnection, name: str, scope: str, target: str | None) -> FlagSetting | None:
    """The active row of a flag at a scope and target (at most one: a unique partial index says so)."""
    return fetch_one_typed(conn, FlagSetting, "SELECT * FROM flags WHERE cleared IS NULL AND name = ? AND scope = ? "
                           f"AND target {dialect_of(conn).same} ?", (name, scope, target))


def active_by_name(conn: SqlConnection) -> list[FlagSetting]:
    return fetch_typed(conn, FlagSetting, "SELECT * FROM flags WHERE cleared IS NULL ORDER BY name, scope, target")


def set_value(conn: SqlConnection, name: str, value: str, scope: str, target: str | None, *, reason: str,
              source: str, operator: str, now: float) -> FlagSetting:
    """Set a validated flag. A flag already active at the same name, scope and target is cleared (cleared_by
    'superseded') first; the new row's previous_value is its value. Returns the new row."""
    old = find_active(conn, name, scope, target)
    if old is not None:
        # Cleared before the insert: the unique partial index allows one active row per flag.
        conn.execute("UPDATE flags SET cleared = ?, cleared_by = ?, clear_reason = ? WHERE id = ?",
                     (now, SUPERSEDED, reason, old.id))
    flag_id = insert_id(
        conn, "INSERT INTO flags (name, value, scope, target, previous_value, source, reason, operator, created) "
              "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (name, value, scope, target, old.value if old else None, source, reason, operator, now))
    row = get(conn, flag_id)
    assert row is not None
    entry = audit.append(conn, ts=now, actor=actor_for(source, operator), action="flag_set",
                         target=f"{name}@{flag_scope_label(scope, target)}",
                         before=None if old is None else {"id": old.id, "value": old.value}, after=row,
                         reason=reason)
    bind(conn, "flags", row.id, entry)
    if old is not None:  # the superseded row's record is its successor's flag_set (binding.py checks that)
        bind(conn, "flags", old.id, entry)
    return row


def clear(conn: SqlConnection, old: FlagSetting, *, reason: str, source: str, operator: str,
          now: float) -> FlagSetting:
    """Clear the active row `old` (as read in this transaction); returns the cleared row."""
    actor = actor_for(source, operator)
    conn.execute("UPDATE flags SET cleared = ?, cleared_by = ?, clear_reason = ? WHERE id = ? AND cleared IS NULL",
                 (now, actor, reason, old.id))
    row = get(conn, old.id)
    assert row is not None
    bind(conn, "flags", old.id,
         audit.append(conn, ts=now, actor=actor, action="flag_cleared",
                      target=f"{old.name}@{flag_scope_label(old.scope, old.target)}", before=old,
                      after={"id": old.id, "value": None}, reason=reason))
    return row


def acknowledge(conn: SqlConnection, ids: Iterable[int], now: float) -> int:
    id_list = list(ids)
    cursor = conn.execute(f"UPDATE flags SET acked = ? WHERE id IN ({', '.join('?' * len(id_list))}) "
                          f"AND acked IS NULL", (now, *id_list))
    return cursor.rowcount


def active(conn: SqlConnection) -> list[FlagSetting]:
    """Active flags in id order (what the engine obeys, as the snapshot reads them)."""
    return fetch_typed(conn, FlagSetting, ACTIVE_SQL)


def history(conn: SqlConnection, name: str) -> list[FlagSetting]:
    """Every row of one flag, set or cleared, oldest first."""
    return fetch_typed(conn, FlagSetting, "SELECT * FROM flags WHERE name = ? ORDER BY id", (name,))
