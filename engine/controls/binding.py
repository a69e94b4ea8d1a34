"""Binding control rows to the audit log: what lets the engine refuse a row someone edited in control.db directly.

Every ControlAPI path (and every runbook action) that creates or changes a kill switch, flag, approval or override
stores, in the row's `audit_hash` column, the hash of the audit row it appended in the same transaction. That audit
row records the state the row was given (a switch's scope, target and mode; a flag's name, value and scope; an
approval's decision, who made it, the hash of the arguments and of any edited arguments; an override's key and
action or limits). Before the engine obeys a row, `problem()` looks that audit row up and checks that

- it exists and its own hash still matches its contents (it was not edited either), and
- it records exactly this row's state (action, id, and the fields the engine acts on).

A row inserted or edited with plain SQL fails one of these: it has no hash, a hash of no audit row, or the hash of an
audit row that records something else. What this does not stop: someone with write access who also appends a
matching, correctly chained audit row. That is what anyone can do through ControlAPI anyway (an operator action,
attributed in the log); rewriting the chain to hide it is what the audit head the engine records in traces.db is for
(engine.controls.anchor).
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from engine.controls import audit
from engine.controls.audit import canonical_json
from engine.controls.schema import BOUND_TABLES
from engine.store.control_ddl import CONTROLS_V4_BINDING_SQL
from engine.store.migrate import split_statements
from engine.store.rows import fetch_one, fetch_rows, row_dicts

SUPERSEDED = "superseded"  # cleared_by of a flag replaced by a newer setting
TIMEOUT_POLICY_ACTOR = "timeout-policy"  # decided_by of an approval its on_timeout policy decided
_HUMAN_DECISIONS = {"approve": "approved", "deny": "denied", "edit_approve": "approved"}
LABELS = {"kill_switches": "kill switch #{}", "flags": "flag #{}", "approvals": "approval {}",
          "breaker_overrides": "breaker override #{}", "budget_overrides": "budget override #{}"}


@dataclass(frozen=True, slots=True)
class Tampered:
    """A control row the engine refused because it does not match the audit log."""

    table: str
    row_id: str
    problem: str

    @property
    def label(self) -> str:
        return LABELS.get(self.table, self.table + " {}").format(self.row_id)

    @property
    def text(self) -> str:
        return f"{self.label} in control.db {self.problem}; not applied"


def bind(conn: sqlite3.Connection, table: str, row_id: Any, audit_row: Mapping[str, Any]) -> None:
    """Record in the row which audit row describes its current state. Call in the transaction that appended it."""
    if table not in BOUND_TABLES:
        raise ValueError(f"not a bound table: {table}")
    conn.execute(f"UPDATE {table} SET audit_hash = ? WHERE id = ?", (audit_row["hash"], row_id))


def _sha(value: Any) -> str:
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def _parsed(value: Any) -> Any:
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
    edited = _parsed(row.get("edited_arguments"))
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
    if canonical_json(_parsed(recorded)) != canonical_json(_parsed(row.get("limits"))):
        return "its limits differ from what the audit log recorded"
    return None


_MATCHERS: dict[str, Callable[[Mapping[str, Any], Mapping[str, Any]], str | None]] = {
    "kill_switches": _kill_switch, "flags": _flag, "approvals": _approval,
    "breaker_overrides": _breaker_override, "budget_overrides": _budget_override}

_AUDIT_BY_HASH = ("SELECT id, ts, actor, action, target, before, after, reason, prev_hash, hash FROM audit "
                  "WHERE hash = ? ORDER BY id LIMIT 1")


def problem(conn: sqlite3.Connection, table: str, row: Mapping[str, Any]) -> str | None:
    """None if `row` (as read from `table`) is bound to an intact audit row recording exactly its state; else what
    is wrong, as a phrase ("has no audit entry")."""
    digest = row.get("audit_hash")
    if not digest:
        return "has no audit entry (it was written outside Flightdeck)"
    raw = fetch_one(conn, _AUDIT_BY_HASH, (digest,))
    if raw is None:
        return f"points at audit entry {str(digest)[:12]}, which does not exist"
    if audit.row_hash(raw["prev_hash"], raw) != raw["hash"]:
        return f"is bound to audit row {raw['id']}, which was altered"
    return _MATCHERS[table](row, audit.decode_row(raw))


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
        entry = audit.decode_row(raw)
        by_target.setdefault(str(entry["target"]), []).append(entry)
    for table in BOUND_TABLES:
        for row in fetch_rows(conn, f"SELECT * FROM {table}"):
            if table == "budget_overrides":
                row["limits"] = _parsed(row["limits"])
            for entry in by_target.get(_audit_target(table, row), ()):
                try:
                    matched = _MATCHERS[table](row, entry) is None
                except (KeyError, AttributeError, TypeError):  # an audit row of another shape
                    matched = False
                if matched:
                    conn.execute(f"UPDATE {table} SET audit_hash = ? WHERE id = ?", (entry["hash"], row["id"]))
                    break
