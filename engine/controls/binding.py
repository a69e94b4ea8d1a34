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

The matching rules themselves (which audit row records a row's state) are the store's,
engine.store.control_binding, because schema v4's data step applies them while control.db is migrated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from engine.controls.schema import BOUND_TABLES
from engine.store.audit_rows import decode_row, row_hash
from engine.store.control_binding import MATCHERS, SUPERSEDED, TIMEOUT_POLICY_ACTOR, bind_existing
from engine.store.control_rows import AuditEntry, ControlRow
from engine.store.dialect import SqlConnection
from engine.store.rows import fetch_one

# bind_existing is re-exported: it is schema v4's entry in CONTROL_MIGRATIONS, and tests look it up by this name.
__all__ = ["LABELS", "SUPERSEDED", "TIMEOUT_POLICY_ACTOR", "Tampered", "bind", "bind_existing", "problem"]

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


def bind(conn: SqlConnection, table: str, row_id: Any, audit_row: AuditEntry) -> None:
    """Record in the row which audit row describes its current state. Call in the transaction that appended it."""
    if table not in BOUND_TABLES:
        raise ValueError(f"not a bound table: {table}")
    conn.execute(f"UPDATE {table} SET audit_hash = ? WHERE id = ?", (audit_row.hash, row_id))


_AUDIT_BY_HASH = ("SELECT id, ts, actor, action, target, before, after, reason, prev_hash, hash FROM audit "
                  "WHERE hash = ? ORDER BY id LIMIT 1")


def problem(conn: SqlConnection, table: str, row: ControlRow) -> str | None:
    """None if `row` (as read from `table`) is bound to an intact audit row recording exactly its state; else what
    is wrong, as a phrase ("has no audit entry")."""
    digest = row.audit_hash
    if not digest:
        return "has no audit entry (it was written outside Flightdeck)"
    raw = fetch_one(conn, _AUDIT_BY_HASH, (digest,))
    if raw is None:
        return f"points at audit entry {str(digest)[:12]}, which does not exist"
    if row_hash(raw["prev_hash"], raw) != raw["hash"]:
        return f"is bound to audit row {raw['id']}, which was altered"
    # The matching rules are the store's and read mappings (schema v4's data step applies them to raw rows).
    return MATCHERS[table](row.as_dict(), decode_row(raw))
