"""Which audit row records a control row's state: the matching rules of the binding between control.db's control rows
and their audit rows, and schema v4's data step that bound the rows existing before it (bind_existing).

They live in the store because a migration is the store's and the store imports no feature package: v4 runs whenever
any process (engine, CLI, console) opens an older control.db. engine.controls.binding uses the same rules to check a
row before the engine obeys it (problem()) and to bind the rows ControlAPI writes (bind()); its docstring says what a
binding proves.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Mapping
from typing import Any

from engine.store.audit_rows import canonical_json, decode_row
from engine.store.control_ddl import BOUND_TABLES, CONTROLS_V4_BINDING_SQL
from engine.store.migrate import split_statements
from engine.store.rows import fetch_rows, row_dicts

__all__ = ["MATCHERS", "SUPERSEDED", "TIMEOUT_POLICY_ACTOR", "Matcher", "bind_existing", "parsed"]

SUPERSEDED = "superseded"  # cleared_by of a flag replaced by a newer setting
TIMEOUT_POLICY_ACTOR = "timeout-policy"  # decided_by of an approval its on_timeout policy decided
_HUMAN_DECISIONS = {"approve": "approved", "deny": "denied", "edit_approve": "approved"}


def _sha(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def parsed(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _differs(recorded: Any, row: Mapping[str, Any], fields: tuple[str, ...]) -> str | None:
    if not isinstance(recorded, Mapping):
        return "its audit entry records no row"
    for name in fields:
        if recorded.get(name) != row.get(name):
            return f"its {name} ({row.get(name)!r}) differs from what the audit log recorded ({recorded.get(name)!r})"
    return None


def _action(entry: Mapping[str, Any], *expected: str) -> str | None:
    if entry["action"] not in expected:
        return f"is bound to an audit entry for '{entry['action']}', not {' or '.join(repr(e) for e in expected)}"
    return None


# Each matcher: (the control row, its decoded audit row) -> None if the audit row records exactly this state.

def _kill_switch(row: Mapping[str, Any], entry: Mapping[str, Any]) -> str | None:
    fields = ("id", "scope", "target", "run_id", "mode")
    if row.get("released") is None:
        return _action(entry, "kill") or _differs(entry["after"], row, fields)
    return _action(entry, "release") or _differs(entry["after"], row, (*fields, "released"))


def _flag(row: Mapping[str, Any], entry: Mapping[str, Any]) -> str | None:
    fields = ("id", "name", "value", "scope", "target")
    if row.get("cleared") is None:
        return _action(entry, "flag_set") or _differs(entry["after"], row, fields)
    if row.get("cleared_by") == SUPERSEDED:  # cleared by the flag_set of its successor
        before = entry["before"] if isinstance(entry["before"], Mapping) else {}
        return _action(entry, "flag_set") or _differs(before, row, ("id", "value"))
    return _action(entry, "flag_cleared") or _differs(entry["before"], row, fields)


def _approval(row: Mapping[str, Any], entry: Mapping[str, Any]) -> str | None:
    if str(entry.get("target")) != str(row["id"]):
        return f"is bound to the audit entry of {entry.get('target')}"
    after = entry["after"] if isinstance(entry["after"], Mapping) else {}
    status = row.get("status")
    edited = parsed(row.get("edited_arguments"))
    if status == "pending":
        return _action(entry, "approval_requested", "approval_escalated")
    if status == "cancelled":
        return _action(entry, "approval_cancelled") or _differs(after, row, ("status",))
    if row.get("decided_by") == TIMEOUT_POLICY_ACTOR or status == "timed_out":
        problem = _action(entry, "approval_timeout") or _differs(after, row, ("status", "decided_by"))
        return problem or (None if edited is None else "has edited arguments no audit entry recorded")
    problem = _action(entry, *_HUMAN_DECISIONS)
    if problem:
        return problem
    if _HUMAN_DECISIONS[entry["action"]] != status:
        return f"says {status}, but the audit log recorded '{entry['action']}'"
    if entry.get("actor") != row.get("decided_by"):
        return f"says decided by {row.get('decided_by')!r}, but the audit log says {entry.get('actor')!r}"
    if after.get("args_hash") != row.get("args_hash"):
        return "has arguments other than those the decision was recorded for"
    if edited is None:
        return "approves with edits no audit entry recorded" if entry["action"] == "edit_approve" else None
    if entry["action"] != "edit_approve" or after.get("edited_args_hash") != _sha(edited):
        return "has edited arguments other than those the audit log recorded"
    return None


def _breaker_override(row: Mapping[str, Any], entry: Mapping[str, Any]) -> str | None:
    return _action(entry, "breaker_override") or _differs(entry["after"], row, ("id", "key", "action"))


def _budget_override(row: Mapping[str, Any], entry: Mapping[str, Any]) -> str | None:
    problem = _action(entry, "budget_change") or _differs(entry["after"], row, ("id", "run_id"))
    if problem:
        return problem
    recorded = entry["after"].get("limits")
    if canonical_json(parsed(recorded)) != canonical_json(parsed(row.get("limits"))):
        return "its limits differ from what the audit log recorded"
    return None


Matcher = Callable[[Mapping[str, Any], Mapping[str, Any]], str | None]

MATCHERS: dict[str, Matcher] = {
    "kill_switches": _kill_switch, "flags": _flag, "approvals": _approval,
    "breaker_overrides": _breaker_override, "budget_overrides": _budget_override}

def _audit_target(table: str, row: Mapping[str, Any]) -> str:
    """The `target` ControlAPI gives the audit rows of a control row (as api.switch_label / flag_scope_label)."""
    if table == "kill_switches":
        label = "global" if row["scope"] == "global" else f"{row['scope']}:{row['target']}"
        return f"{label} in run:{row['run_id']}" if row.get("run_id") else label
    if table == "flags":
        return f"{row['name']}@" + ("global" if row["scope"] == "global" else f"{row['scope']}:{row['target']}")
    if table == "breaker_overrides":
        return str(row["key"])
    if table == "budget_overrides":
        return f"run:{row['run_id']}"
    return str(row["id"])


def bind_existing(conn: sqlite3.Connection) -> None:
    """Schema v4: add the binding columns, then bind every row that existed before (they were obeyed without a
    binding until now; the newest audit row recording each one's state is taken as its record). Rows no audit row
    matches stay unbound, and the engine will report them. Audit rows are grouped by target, so each control row is
    compared only with the few that name it."""
    for statement in split_statements(CONTROLS_V4_BINDING_SQL):
        conn.execute(statement)
    by_target: dict[str, list[dict[str, Any]]] = {}
    for raw in row_dicts(conn.execute("SELECT * FROM audit ORDER BY id DESC")):
        entry = decode_row(raw)
        by_target.setdefault(str(entry["target"]), []).append(entry)
    for table in BOUND_TABLES:
        for row in fetch_rows(conn, f"SELECT * FROM {table}"):
            if table == "budget_overrides":
                row["limits"] = parsed(row["limits"])
            for entry in by_target.get(_audit_target(table, row), ()):
                try:
                    matched = MATCHERS[table](row, entry) is None
                except (KeyError, AttributeError, TypeError):  # an audit row of another shape
                    matched = False
                if matched:
                    conn.execute(f"UPDATE {table} SET audit_hash = ? WHERE id = ?", (entry["hash"], row["id"]))
                    break
